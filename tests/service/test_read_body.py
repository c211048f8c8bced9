"""service/http.py read_body: a body whose end has arrived is taken without an await, and leaves the request's
payload as aiohttp's read_nowait() would (empty, at EOF, counted), however it arrived."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from service import http

BODY = b'{"text": "' + b"x" * 3000 + b'"}'


@pytest.fixture
def app_and_calls(monkeypatch):
    calls = {"read_nowait": 0}
    from aiohttp.streams import EmptyStreamReader, StreamReader
    for cls in (StreamReader, EmptyStreamReader):
        def counted(self, n=-1, _theirs=cls.read_nowait):
            calls["read_nowait"] += 1
            return _theirs(self, n)
        monkeypatch.setattr(cls, "read_nowait", counted)
    seen = []

    async def handler(request: web.Request) -> web.Response:
        for _ in range(2000):  # until every piece of the body has arrived (its end fed to the payload)
            if request._payload.is_eof():
                break
            await asyncio.sleep(0.005)
        raw = await http.read_body(request)
        content = request._payload
        seen.append((raw, content.at_eof(), getattr(content, "_size", 0), getattr(content, "_cursor", 0),
                     await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/x", handler)
    return app, calls, seen


async def _send(port: int, pieces: list[bytes]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for p in pieces:
        writer.write(p)
        await writer.drain()
        await asyncio.sleep(0.005)
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return head


@pytest.mark.parametrize("how, own_path", [
    ("one piece", True),
    ("head, then body", True),
    ("body in three pieces", False),
    ("chunked", False),
    ("empty", False),
])
async def test_a_body_read_without_await_is_the_body_and_leaves_the_payload_as_read_nowait_does(
        aiohttp_server, app_and_calls, how, own_path):
    app, calls, seen = app_and_calls
    server = await aiohttp_server(app)
    body = b"" if how == "empty" else BODY
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    if how == "one piece":
        pieces = [head + body]
    elif how == "head, then body":
        pieces = [head, body]
    elif how == "body in three pieces":
        pieces = [head + body[:1000], body[1000:2000], body[2000:]]
    elif how == "chunked":
        pieces = [b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                  b"%x\r\n%s\r\n" % (1500, body[:1500]), b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 1500, body[1500:])]
    else:
        pieces = [head]
    assert (await _send(server.port, pieces)).startswith(b"HTTP/1.1 200")
    raw, at_eof, size, cursor, read_again = seen[-1]
    assert raw == body == read_again and at_eof and size == 0
    assert cursor == len(body) or how == "empty"
    assert (calls["read_nowait"] == 0) == own_path
