"""service/answer.py: an Answer is the web.Response aiohttp would build, and goes out byte for byte as aiohttp
would send it; only the plain case (HTTP/1.1 kept alive, a bytes body, nothing set through aiohttp's own
response machinery) skips aiohttp's prepare."""
from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web

from service.answer import JSON, WHOLE, Answer

BODY = b'{"ok":true}'


def test_an_answer_holds_what_aiohttp_builds_for_the_same_json_body():
    for status, headers in ((200, None), (201, {"X-A": "1"}), (404, {"Retry-After": "3", "X-B": "2"}), (599, None)):
        mine = Answer(BODY, status, headers)
        theirs = web.Response(body=BODY, status=status, content_type=JSON, headers=headers)
        a, b = vars(mine), vars(theirs)
        assert a.keys() == b.keys()
        assert {k: v for k, v in a.items() if k != "_headers"} == {k: v for k, v in b.items() if k != "_headers"}
        assert list(mine.headers.items()) == list(theirs.headers.items())
        assert (mine.status, mine.reason, mine.body, mine.content_type) == (theirs.status, theirs.reason, BODY, JSON)
    assert type(Answer(BODY)) in WHOLE and web.Response in WHOLE


async def _exchange(port: int, request: bytes) -> bytes:
    """One request on a fresh connection: the raw answer (head, and body by its Content-Length, or to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        m = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
        if request.startswith(b"HEAD") or b" 204 " in head.split(b"\r\n", 1)[0]:
            return head
        if m:
            return head + await reader.readexactly(int(m.group(1)))
        return head + await reader.read()
    finally:
        writer.close()


def _undated(raw: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]+\r\n", b"\r\nDate: -\r\n", raw)


REQUESTS = {
    "kept alive": b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n",
    "Connection: close": b"GET /%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "HTTP/1.0": b"GET /%s HTTP/1.0\r\n\r\n",
    "HTTP/1.0 keep-alive": b"GET /%s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "HEAD": b"HEAD /%s HTTP/1.1\r\nHost: x\r\n\r\n",
}
CASES = {  # name -> (how the response is made after construction, whether an Answer takes its own path)
    "plain": (lambda r: None, True),
    "a header": (lambda r: r.headers.__setitem__("X-Request-ID", "abc"), True),
    "status 201": (lambda r: r.set_status(201), True),
    "status 204": (lambda r: r.set_status(204), False),
    "status 500": (lambda r: r.set_status(500), True),
    "force_close": (lambda r: r.force_close(), False),
    "a cookie": (lambda r: r.set_cookie("a", "b"), False),
    "Content-Length by hand": (lambda r: r.headers.__setitem__("Content-Length", str(len(BODY))), False),
    "Connection by hand": (lambda r: r.headers.__setitem__("Connection", "close"), False),
    "aiohttp's compression": (lambda r: r.enable_compression(force=web.ContentCoding.gzip), False),
}


@pytest.fixture
async def twin_server(monkeypatch):
    """/answer/CASE answers with an Answer, /response/CASE with aiohttp's web.Response; aiohttp's prepare counted."""
    calls = []
    aiohttp_prepare = web.StreamResponse.prepare

    async def counted(self, request):
        calls.append(type(self))
        return await aiohttp_prepare(self, request)

    monkeypatch.setattr(web.StreamResponse, "prepare", counted)

    async def handler(request):
        kind, case = request.match_info["kind"], request.match_info["case"]
        resp = Answer(BODY) if kind == "answer" else web.Response(body=BODY, content_type=JSON)
        CASES[case][0](resp)
        return resp

    app = web.Application()
    app.router.add_get("/{kind}/{case}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], calls
    await runner.cleanup()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("variant", list(REQUESTS))
async def test_an_answer_goes_out_byte_for_byte_as_aiohttp_sends_the_same_response(twin_server, case, variant):
    port, calls = twin_server
    path = case.encode()
    path = path.replace(b" ", b"%20").replace(b"'", b"%27").replace(b":", b"%3A")
    mine = await _exchange(port, REQUESTS[variant] % (b"answer/" + path))
    own_path = not calls
    theirs = await _exchange(port, REQUESTS[variant] % (b"response/" + path))
    assert _undated(mine) == _undated(theirs)
    assert own_path == (CASES[case][1] and variant == "kept alive")  # every other case went through aiohttp's prepare
    assert calls[-1] is web.Response


async def test_a_large_answer_waits_for_a_slow_reader_and_arrives_whole(twin_server, monkeypatch):
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than the transport's buffer limit
    monkeypatch.setitem(CASES, "big", (lambda r: setattr(r, "body", big), True))
    port, calls = twin_server
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**16)
    writer.write(b"GET /answer/big HTTP/1.1\r\nHost: x\r\n\r\nGET /answer/plain HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.2)  # the server fills its buffer and waits (drain) while nothing is read
    got = []
    for _ in range(2):
        head = await reader.readuntil(b"\r\n\r\n")
        n = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head).group(1))
        got.append(await reader.readexactly(n))
    writer.close()
    assert got == [big, BODY] and not calls  # both on the Answer's own path, the connection kept for the second
