"""The upstream's HTTP/1.1 client: a keep-alive connection pool on asyncio protocols.

What an OpenAI-compatible call needs and nothing else: one request written in one piece, one answer
read into bytes (Content-Length, chunked, or until the server closes), its status and headers.  It
replaces aiohttp's ClientSession on the provider's path because that session's machinery was most of
what an uncached request cost the service: at c=256 against the 50 ms fake upstream, `proxy_floor`
(an aiohttp server and ClientSession) took 291 µs of CPU per request and the same server with an
asyncio-protocol client 115 µs; at c=1 the client's share of what a proxy adds over the upstream was
0.12 ms with a 0 ms upstream and 0.41 ms with a 50 ms one (README, "where the time of an uncached
request goes").

The pool: at most `limit` connections handed out or being opened (0: no limit); a call that finds
none free waits in a FIFO queue; up to `max_idle` idle connections are kept for `keepalive_seconds`
(the most recently used first), none when `pooling` is off.  A PoolMeter (poolmeter.py) sees every
acquisition, every wait in the queue and the connections in use.  `connect_timeout` bounds the wait
for a slot and the connection's opening together, as aiohttp's `connect` timeout did.  TLS for
https with the system's default context (certificates and host name verified).  No cookies, no
redirects, no proxies, no compression asked for (an answer sent gzip- or deflate-encoded anyway is
decoded).
"""
from __future__ import annotations

import asyncio
import functools
import ssl
import time
import zlib
from collections import deque
from time import perf_counter
from urllib.parse import urlsplit

from multidict import CIMultiDict

MAX_HEAD = 64 * 1024     # bytes of status line and headers before the answer is refused
MAX_BODY = 64 * 1024 * 1024


class WireError(Exception):
    """The call failed on the wire: refused, reset, closed before the answer, a malformed answer."""


class WireTimeout(asyncio.TimeoutError):
    """No slot and connection within connect_timeout (`phase` "pool wait or connect")."""


class WireDeadline(asyncio.TimeoutError):
    """No answer by the call's deadline (`until`, loop time), from the pool wait to the answer's last byte."""


def _expire(w: asyncio.Future) -> None:
    """A call's deadline passed: its answer's waiter fails (the caller closes the connection)."""
    if not w.done():
        w.set_exception(WireDeadline("no answer by the deadline"))


class Answer:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: CIMultiDict, body: bytes):
        self.status, self.headers, self.body = status, headers, body


class _Conn(asyncio.Protocol):
    """One connection: reads one answer at a time into `waiter`."""

    __slots__ = ("transport", "buf", "waiter", "closed", "keep_alive", "idle_since", "_head", "_length",
                 "_chunked", "_chunks", "_until_close")

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self._head = None  # (status, headers) once the head is read
        self._length: int | None = None
        self._chunked = False
        self._chunks: list[bytes] = []
        self._until_close = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, data: bytes, waiter: asyncio.Future) -> None:
        self.waiter = waiter
        self._head = None
        self._until_close = False
        self.keep_alive = False
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: this connection cannot be trusted again
            self.close()
            return
        self.buf += data
        try:
            self._parse()
        except WireError as e:
            self._fail(e)

    def _parse(self) -> None:
        buf = self.buf
        while self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise WireError("the answer's head is too long")
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[:end + 4]
            version, _, rest = lines[0].partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or not code.isdigit() or not 100 <= int(code) <= 599:
                raise WireError(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
            status = int(code)
            if 100 <= status < 200:  # 100 Continue and the like: the answer follows
                continue
            headers = CIMultiDict()
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers.add(name.strip(), value.strip())
            conn = headers.get("Connection", "").lower()
            self.keep_alive = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
            self._chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
            self._chunks = []
            length = headers.get("Content-Length")
            self._until_close = False
            if self._chunked:
                self._length = None
            elif status in (204, 304):
                self._length = 0
            elif length is not None:
                try:
                    self._length = int(length)
                except ValueError:
                    raise WireError("a malformed Content-Length") from None
                if not 0 <= self._length <= MAX_BODY:
                    raise WireError(f"a Content-Length out of bounds: {self._length}")
            else:  # the body ends when the server closes
                self._length = None
                self._until_close = True
                self.keep_alive = False
            self._head = (status, headers)
        if self._chunked:
            self._parse_chunks()
        elif self._until_close:
            if len(buf) > MAX_BODY:
                raise WireError("the answer is too long")
        elif len(buf) >= self._length:
            body = bytes(buf[:self._length])
            if len(buf) > self._length:  # more than the answer: never reuse this connection
                self.keep_alive = False
            buf.clear()
            self._done(body)

    def _parse_chunks(self) -> None:
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                return
            try:
                size = int(bytes(buf[:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise WireError("a malformed chunk size") from None
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)  # the trailers (usually none) end with an empty line
                if end < 0:
                    return
                del buf[:end + 4]
                self.keep_alive = self.keep_alive and not buf
                buf.clear()
                self._done(b"".join(self._chunks))
                return
            if len(buf) < eol + 2 + size + 2:
                return
            self._chunks.append(bytes(buf[eol + 2:eol + 2 + size]))
            del buf[:eol + 2 + size + 2]
            if sum(map(len, self._chunks)) > MAX_BODY:
                raise WireError("the answer is too long")

    def _done(self, body: bytes) -> None:
        status, headers = self._head
        enc = headers.get("Content-Encoding", "").lower()
        if enc in ("gzip", "deflate"):
            try:
                body = zlib.decompress(body, 47)  # gzip or zlib, told apart by the header
            except zlib.error:
                self._fail(WireError(f"the answer is not valid {enc}"))
                return
        w, self.waiter = self.waiter, None
        if not w.done():
            w.set_result(Answer(status, headers, body))

    def _fail(self, exc: Exception) -> None:
        self.close()
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(exc)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None:
            if self._until_close and self._head is not None:
                body, self.buf = bytes(self.buf), bytearray()
                self._done(body)
            else:
                self._fail(WireError("the server closed the connection before answering"
                                     if exc is None else f"connection lost: {type(exc).__name__}"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@functools.cache
def _tls() -> ssl.SSLContext:
    """The system's default client context (certificates and host names verified), built once: loading the
    CA bundle takes milliseconds, and a pool is rebuilt on the loop whenever its settings change."""
    return ssl.create_default_context()


class WirePool:
    """Connections to one origin (scheme://host:port) and the queue for them."""

    def __init__(self, base_url: str, *, limit: int, max_idle: int, keepalive_seconds: float, pooling: bool,
                 meter, user_agent: str):
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl = _tls() if u.scheme == "https" else None
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if u.port is None else f"{host}:{u.port}"
        self.prefix = u.path.rstrip("/")
        self.limit = limit
        self.max_idle = max_idle if pooling else 0
        self.keepalive_seconds = keepalive_seconds
        self.meter = meter
        self.user_agent = user_agent
        self.used = 0        # connections handed out or being opened (what the limit bounds)
        self._idle: list[_Conn] = []
        self._queue: deque[asyncio.Future] = deque()
        self.closed = False
        meter.attach(self, limit)

    def head(self, method: str, path: str, headers: dict) -> bytes:
        """A request's head for `path` under the base URL's path, each line ended, but for the blank line
        that ends it (a caller with a body adds its Content-Length line before it)."""
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.authority}", f"User-Agent: {self.user_agent}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("a line break in a request header")  # (a key or URL would smuggle headers)
        if not self.max_idle:
            lines.append("Connection: close")
        return "".join(line + "\r\n" for line in lines).encode("latin-1")

    async def request(self, head: bytes, body: bytes, connect_timeout: float, until: float | None = None) -> Answer:
        """The answer to one request; WireTimeout when no connection came within `connect_timeout`,
        WireDeadline when the answer was not read by `until` (loop time; None: no bound here).  The
        deadline is one timer on the answer's waiter: no asyncio.timeout, no cancellation of the task."""
        conn = None
        if not self._queue and not (self.limit and self.used >= self.limit) and not self.closed:
            conn = self._take_idle_slot()  # the usual call: a free slot and an idle connection, no wait
        loop = asyncio.get_running_loop()
        if conn is None:
            conn = await self._acquire(connect_timeout, until)
        else:
            self.used += 1
            self.meter.free_slot()
        reuse = False
        timer = None
        try:
            w = loop.create_future()
            conn.send(head + body if body else head, w)
            if until is not None:
                timer = loop.call_at(until, _expire, w)
            answer = await w
            reuse = conn.keep_alive
            return answer
        finally:
            if timer is not None:
                timer.cancel()
            self._release(conn, reuse)

    async def _acquire(self, timeout: float, until: float | None = None) -> _Conn:
        """A slot, then an idle connection or a new one, within `timeout` and by `until` (loop time: past it,
        WireDeadline); the meter sees the acquisition (and a call that gave up in the queue as such)."""
        if self.closed:
            raise WireError("the pool is closed")
        m = self.meter
        waited = 0.0
        queued_at = None
        deadline_first = False
        if until is not None:
            left = until - asyncio.get_running_loop().time()
            if left < timeout:
                timeout, deadline_first = max(0.0, left), True
        try:
            async with asyncio.timeout(timeout):
                if self._queue or (self.limit and self.used >= self.limit):
                    queued_at = perf_counter()
                    m.enter_queue()
                    await self._wait()
                    waited = perf_counter() - queued_at
                    queued_at = None
                    m.leave_queue(waited, gave_up=False)
                self.used += 1
                try:
                    c = self._take_idle_slot()
                    if c is None:
                        _, c = await asyncio.get_running_loop().create_connection(
                            _Conn, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None)
                except BaseException:
                    self.used -= 1
                    self._wake()
                    raise
        except BaseException as e:
            if queued_at is not None:  # gave up in the queue: leave_queue observes it
                m.leave_queue(perf_counter() - queued_at, gave_up=True)
            else:  # it had its slot, then connecting failed
                m.observe(waited)
            if isinstance(e, TimeoutError):
                if deadline_first:
                    raise WireDeadline("no connection by the deadline") from None
                raise WireTimeout("pool wait or connect") from None
            if isinstance(e, OSError):
                raise WireError(f"cannot connect: {type(e).__name__}") from None
            raise
        m.observe(waited)
        return c

    def _take_idle_slot(self) -> _Conn | None:
        """The most recently used idle connection still open and fresh (the others are closed on the way)."""
        idle, now = self._idle, time.monotonic()
        while idle:
            c = idle.pop()
            if not c.closed and now - c.idle_since <= self.keepalive_seconds:
                return c
            c.close()
        return None

    async def _wait(self) -> None:
        """Queue (FIFO) until a slot is free."""
        loop = asyncio.get_running_loop()
        first = True
        while True:
            fut = loop.create_future()
            if first:
                self._queue.append(fut)
            else:  # woken, but another call took the slot first: keep the place at the front
                self._queue.appendleft(fut)
            first = False
            try:
                await fut
            except BaseException:
                try:
                    self._queue.remove(fut)
                except ValueError:
                    pass
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._wake()  # woken for a slot it will not take: the next one's
                raise
            if not (self.limit and self.used >= self.limit):
                return

    def _wake(self) -> None:
        q = self._queue
        while q:
            f = q.popleft()
            if not f.done():
                f.set_result(None)
                return

    def _release(self, conn: _Conn, reuse: bool) -> None:
        self.used -= 1
        if reuse and not conn.closed and not self.closed and len(self._idle) < self.max_idle:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        if self._queue:
            self._wake()

    async def close(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for c in idle:
            c.close()
        while self._queue:
            f = self._queue.popleft()
            if not f.done():
                f.set_exception(WireError("the pool is closed"))

