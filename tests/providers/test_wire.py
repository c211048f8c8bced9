"""service/providers/wire.py against a scripted HTTP server on loopback: the answer's framings, a
connection kept or dropped as the server says, and failures as WireError."""
from __future__ import annotations

import asyncio
import gzip
import ssl

import pytest

from service.providers.poolmeter import PoolMeter
from exporter.metrics import AI_POOL_IN_USE
from exporter.tally import flush_all
from service import spans
from service.providers.wire import WireDeadline, WireError, WirePool, WireTimeout

JSON = b'{"ok": true}'


class Script:
    """A server answering each request with the next scripted bytes (None: close without answering)."""

    def __init__(self, answers: list):
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.server = None

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + (await reader.readexactly(length) if length else b""))
                answer = self.answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer or b"Content-Length" not in answer and b"chunked" not in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()


def pool(port: int, **kw) -> WirePool:
    args = dict(limit=4, max_idle=4, keepalive_seconds=30.0, pooling=True, meter=PoolMeter("wire-test"),
                user_agent="llmapi-test")
    args.update(kw)
    return WirePool(f"http://127.0.0.1:{port}/v1", **args)


async def post(p: WirePool, body: bytes = b'{"q": 1}'):
    head = p.head("POST", "/chat/completions", {"Content-Type": "application/json"})
    return await p.request(head + b"Content-Length: %d\r\n\r\n" % len(body), body, 2.0)


def answer(body: bytes = JSON, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + \
        b"Content-Length: %d\r\n\r\n" % len(body) + body


async def test_keep_alive_answers_reuse_one_connection_and_the_request_is_well_formed():
    async with Script([answer(), answer(b'{"n": 2}', b"X-Ratelimit-Remaining-Requests: 9\r\n")]) as s:
        p = pool(s.port)
        a1, a2 = await post(p), await post(p)
        await p.close()
    assert (a1.status, a1.body, a2.body) == (200, JSON, b'{"n": 2}')
    assert a2.headers["x-ratelimit-remaining-requests"] == "9"  # names read case-insensitively
    assert s.connections == 1 and p.used == 0
    head = s.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{s.port}".encode() in head and b"User-Agent: llmapi-test" in head
    assert s.requests[0].endswith(b'\r\n\r\n{"q": 1}')


async def test_chunked_gzip_and_interim_answers_are_read_whole():
    zipped = gzip.compress(JSON)
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\n" + JSON[:5] + b"\r\n" + b"%x\r\n" % (len(JSON) - 5) + JSON[5:] + b"\r\n"
               b"0\r\nX-Trailer: t\r\n\r\n")
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + answer()
    async with Script([chunked, answer(zipped, b"Content-Encoding: gzip\r\n"), interim]) as s:
        p = pool(s.port)
        got = [(await post(p)).body for _ in range(3)]
        await p.close()
    assert got == [JSON, JSON, JSON] and s.connections == 1


async def test_the_server_decides_whether_a_connection_is_kept():
    until_close = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + JSON
    async with Script([answer(extra=b"Connection: close\r\n"), until_close, answer(), answer()]) as s:
        p = pool(s.port)
        got = [(await post(p)).body for _ in range(4)]
        await p.close()
    assert got == [JSON] * 4 and s.connections == 3  # after the close and after the body ended by closing


async def test_pooling_off_asks_for_and_opens_a_connection_per_call():
    async with Script([answer(), answer()]) as s:
        p = pool(s.port, max_idle=0, pooling=False)
        await post(p)
        await post(p)
        await p.close()
    assert s.connections == 2 and b"Connection: close" in s.requests[0]


@pytest.mark.parametrize("script", [None, b"HTTP/1.1 2x0 OK\r\n\r\n", b"HTTP/1.1 999 Odd\r\n\r\n", b"SMTP ready\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 20\r\n\r\n{\"cut\":"])
async def test_no_usable_answer_is_a_wire_error(script):
    async with Script([script]) as s:
        p = pool(s.port)
        with pytest.raises(WireError):
            await post(p)
        await p.close()
    assert p.used == 0 and p.meter.stats(4)["acquisitions"] >= 1


async def test_a_refused_connection_and_a_full_pool_fail_as_their_kind():
    async with Script([]) as s:
        port = s.port
    p = pool(port)
    with pytest.raises(WireError, match="cannot connect"):
        await post(p)
    async with Script([answer()]) as s:
        p = pool(s.port, limit=1)
        p.used = 1  # the one slot taken
        head = p.head("GET", "/models", {})
        with pytest.raises(WireTimeout):
            await p.request(head + b"\r\n", b"", 0.05)
        assert p.meter.stats(1)["queue_timeouts"] == 1 and p.meter.waiting == 0
        p.used = 0
        assert (await p.request(head + b"\r\n", b"", 1.0)).status == 200
        await p.close()


def test_heads_name_the_base_path_and_refuse_line_breaks():
    p = pool(8080)
    assert p.head("GET", "/models", {"Authorization": "Bearer k"}).startswith(
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    with pytest.raises(ValueError):
        p.head("GET", "/models", {"Authorization": "Bearer k\r\nX-Evil: 1"})
    with pytest.raises(ValueError):
        WirePool("ftp://example.com/", limit=1, max_idle=1, keepalive_seconds=1, pooling=True,
                 meter=PoolMeter("wire-test"), user_agent="x")
    tls = WirePool("https://example.com/v1/", limit=1, max_idle=1, keepalive_seconds=1, pooling=True,
                   meter=PoolMeter("wire-test"), user_agent="x")
    assert tls.head("GET", "/m", {}).startswith(b"GET /v1/m HTTP/1.1\r\nHost: example.com\r\n")
    assert tls.port == 443 and tls.ssl.verify_mode == ssl.CERT_REQUIRED and tls.ssl.check_hostname
    assert p.ssl is None


async def test_a_deadline_fails_the_wait_for_the_answer_and_drops_its_connection():
    seen = []

    async def hold(reader, writer):  # reads a request and never answers
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        try:
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    p = pool(server.sockets[0].getsockname()[1])
    loop = asyncio.get_running_loop()
    head = p.head("GET", "/models", {}) + b"\r\n"
    try:
        t0 = loop.time()
        with pytest.raises(WireDeadline):
            await p.request(head, b"", 60.0, until=t0 + 0.1)
        assert 0.09 <= loop.time() - t0 < 10.0 and len(seen) == 1  # the deadline's, not the 60 s timeout's
        assert p.used == 0 and not p._idle  # closed, never handed out again
        # the deadline counts from the pool's queue on: one slot, taken, and a deadline before connect_timeout
        p.limit, p.used = 1, 1
        with pytest.raises(WireDeadline):
            await p.request(head, b"", 5.0, until=loop.time() + 0.05)
        with pytest.raises(WireTimeout):  # connect_timeout first: the pool wait's own kind
            await p.request(head, b"", 0.05, until=loop.time() + 5.0)
        assert p.meter.stats(1)["queue_timeouts"] == 2 and p.meter.waiting == 0
    finally:
        p.used = 0
        await p.close()
        server.close()


async def test_the_usual_acquisition_is_counted_in_place_and_in_use_is_read_at_flush():
    """free_slot: the acquisition, its second, the first bucket of the wait histogram and the span; the
    in-use gauge holds what the pool holds when a flush (a scrape) reads it, not when a call changes it."""
    async with Script([answer(), answer()]) as s:
        p = pool(s.port)
        m = p.meter
        span0 = spans.snapshot().get("ai.pool_wait", {}).get("count", 0)
        await post(p)
        await post(p)
        assert m.acquired == 2 and m.queued == 0 and m.recent[-1][1] >= 1
        assert spans.snapshot()["ai.pool_wait"]["count"] - span0 == 2
        assert m._free_cell[0] == 2  # pending in the tally's cell (bucket 0: no wait)
        gauge = AI_POOL_IN_USE.labels("wire-test")
        p.used = 3  # three calls in flight, as flushed
        flush_all()
        assert gauge._value.get() == 3 and m._free_cell[0] == 0
        p.used = 0
        flush_all()
        assert gauge._value.get() == 0
        await p.close()


def test_a_meter_made_before_the_loop_flushes_on_its_own_once_calls_come():
    """The provider (and its PoolMeter) is made before the loop runs; its free-slot counts must still reach
    Prometheus within a second, without a scrape of that process (a worker of several)."""
    m = PoolMeter("wire-test-early")

    async def calls():
        m.free_slot()
        m.free_slot()
        assert m.wait_h._timer is not None  # armed: the histogram (and the in-use gauge) flush within 1 s
        m.wait_h.flush()
        return m._free_cell[0]

    assert asyncio.run(calls()) == 0
    m.wait_h.close()
