"""The fast path: a plain request to a fixed route served without aiohttp's request loop.

aiohttp serves each request through its connection's `start()` loop: the
message queued and the loop woken, a `StreamWriter`, the request, the
`_handle_request` coroutine, the router's `resolve` (a walk of the resource
index, a `UrlMappingMatchInfo` made, `add_app`, `freeze`), the app's
`_handle`, `finish_response`, `write_eof`, the keep-alive bookkeeping and a
new future to wait on: about 40 Python functions a request.  At c=1 with a
50 ms upstream each of them runs cold (what has not run for 50 ms has left
this VM's caches), so each one costs several times its warm cost.

`FastHandler` is aiohttp's `RequestHandler` (a subclass, made by the
service's patch of `web_server.Server.__call__`, service/protocol.py) whose
`data_received` parses with aiohttp's own C parser as before and, for a
message that is plain, serves it itself: HTTP/1.1 kept alive (no
`Connection: close`), not upgraded, not chunked, no Content-Encoding, no
Expect, its body complete, the only message of the read, no other request
in flight or queued on the connection, and a (method, request-target) found
in a table of the app's fixed routes (a PlainResource's routes, the target
exactly its path: no query, no escapes), built once per server when the
first connection arrives (the router is frozen by then).  The request is
still a `web.Request`, holding what the app's request factory puts in one
(made from what every request of the connection holds alike, and the
message's own parts), with a match info made once per route (frozen, no
dynamic parts); the route's handler (the stack around it,
service/middleware/around.py) runs in the connection's fast task, and an
`Answer` is written in one write by `Answer.send` (service/answer.py).
Everything else goes down aiohttp's path unchanged, on the same connection.

The fast task is one per connection: after an answer it waits for the
connection's next fast request, so a request costs no task of its own (its
creation, its registration in asyncio's weak set of tasks and its removal
from it); the request id is reset after each request, as
service/protocol.py does for the requests aiohttp runs inline.  While the
loop has a task factory (loop-hold timing, service/monitoring/loopholds.py)
each request gets a task of its own instead, so that each task step is one
request's and is attributed to its route.

What aiohttp's loop does around a request is done the same way: the
request counts as in progress (a graceful shutdown waits for it, and
cancels it when its timeout ends), `_current_request` is set (a disconnect
sets the payload's exception; with `handler_cancellation` the handler is
cancelled), the keep-alive timer is re-armed after the answer, a closing
connection or an answer that closes (`force_close`, an error) closes the
transport, and an exception from the handler gets aiohttp's own error
handling.  While a fast request is in flight aiohttp's loop stays parked on
its waiter, which the fast path holds back: what arrives meanwhile (a
pipelined request) is queued by aiohttp's `data_received` and served by
aiohttp's loop, in order, once the answer is written.  aiohttp is pinned in
pyproject.toml; tests/service/test_fastpath.py compares the request with
the one the factory makes and every kind of answer with aiohttp's bytes.

Measured (README, "The server side made short"): 145.5 -> 112 Python calls
per uncached request; CPU per request 11 % less uncached at c=64 and 13-26 %
less on cache hits; no change of the c=1 latency beyond the noise (0 and
50 ms upstream).
"""
from __future__ import annotations

import asyncio

from aiohttp import hdrs, web, web_protocol
from aiohttp.http import HttpVersion11, RawRequestMessage, StreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_exceptions import HTTPException
from aiohttp.web_urldispatcher import PlainResource, UrlMappingMatchInfo

from service.answer import Answer
from service.log import request_id_var

_ErrInfo = web_protocol._ErrInfo
_PAYLOAD_ACCESS_ERROR = web_protocol._PAYLOAD_ACCESS_ERROR
_EXPECT, _HEAD, _ANY = hdrs.EXPECT, hdrs.METH_HEAD, hdrs.METH_ANY
_PER_REQUEST = frozenset({"_message", "_payload_writer", "_payload", "_headers", "_method", "_version", "_rel_url",
                          "_cache", "_state", "_match_info"})
_new = object.__new__


def routes_of(app: web.Application) -> dict:
    """(method, path) -> (match info, handler) for the app's fixed routes that resolve the same way here as
    through aiohttp's router; {} for an app that runs middlewares, has sub-apps matched by domain, or is not
    frozen yet (a route table that could still change)."""
    router = app.router
    if not app.frozen or app._run_middlewares or router._matched_sub_app_resources:
        return {}
    table: dict = {}
    for path, resources in router._resource_index.items():
        claimed: set = set()
        for resource in resources:  # (the router tries a path's resources in the order they were added)
            if type(resource) is not PlainResource or resource.canonical != path:
                break  # (a resource that may match some requests for this path: leave the rest to aiohttp)
            for method, route in resource._routes.items():
                if method in claimed:
                    continue
                claimed.add(method)
                if method in (_ANY, _HEAD) or "%" in path:
                    continue
                info = UrlMappingMatchInfo({}, route)
                info.add_app(app)
                info.freeze()
                table[(method, path)] = (info, route._handler, bool(app._on_response_prepare))
            if _ANY in resource._routes:
                break
    return table


def table_for(server) -> dict:
    """The fast routes of the app a server serves (made once per server, at its first connection)."""
    table = getattr(server, "_fast_routes", None)
    if table is None:
        app = getattr(server.request_handler, "__self__", None)
        plain = isinstance(app, web.Application) and server.request_factory == app._make_request
        table = routes_of(app) if plain else {}  # (a request factory of its own: every request through it)
        server._fast_routes = table
    return table


class FastHandler(web_protocol.RequestHandler):
    """aiohttp's RequestHandler, serving plain requests to fixed routes itself (see the module's docstring)."""

    __slots__ = ("_fast_routes", "_fast_task", "_fast_next", "_parked", "_real_loop", "_request_base", "_writer_base")

    def __init__(self, manager, *, routes: dict, real_loop, **kwargs) -> None:
        super().__init__(manager, **kwargs)
        self._fast_routes = routes
        self._fast_task = None  # the fast path's task (serving a request, or waiting for the next: _fast_next)
        self._fast_next = None  # the future it waits on for the connection's next fast request
        self._parked = None  # aiohttp's loop's waiter, held back while a fast request is in flight
        self._real_loop = real_loop
        self._request_base = None  # what every request on this connection holds alike (made at the first)
        self._writer_base = {"_protocol": self, "loop": real_loop, "_on_chunk_sent": None, "_on_headers_sent": None,
                             "_headers_buf": None, "_headers_written": False, "on_body_write": None}

    def resume_reading(self, resume_parser: bool = True) -> None:
        if resume_parser or self._reading_paused or self._buffer_paused:
            return super().resume_reading(resume_parser)
        # (what the payload's feed_eof asks at the end of every body: nothing paused, nothing to resume)

    def _request_base_of(self, message, payload) -> dict:
        """What every request on this connection holds alike, from one the app's request factory makes."""
        made = self._request_factory(message, payload, self, StreamWriter(self, self._real_loop), self._task_handler)
        self._request_base = {k: v for k, v in vars(made).items() if k not in _PER_REQUEST}
        return self._request_base

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if (waiter is None or waiter.done() or self._messages or self._force_close or self._close
                or self._upgraded or self._payload_parser is not None or self._buffer_paused):
            return super().data_received(data)  # (while a fast request is in flight: queued for aiohttp's loop)
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            messages, upgraded, tail = [(_ErrInfo(status=400, exc=exc, message=exc.message), EMPTY_PAYLOAD)], False, b""
        route = None
        if len(messages) == 1 and not upgraded:
            message, payload = messages[0]
            if (type(message) is RawRequestMessage and message.version == HttpVersion11 and not message.should_close
                    and not message.chunked and message.compression is None and not message.upgrade
                    and (payload is EMPTY_PAYLOAD
                         or type(payload) is StreamReader and payload._eof and payload._exception is None)
                    and _EXPECT not in message.headers):
                route = self._fast_routes.get((message.method, message.path))
        if route is None:  # what aiohttp's data_received does with what it parsed
            for message, payload in messages:
                self._request_count += 1
                self._messages.append((message, payload))
            if messages:
                waiter.set_result(None)
            if not self._buffer_paused and len(self._messages) >= self._max_msg_queue_size:
                self._pause_reading_for_buffer()
            self._upgraded = upgraded
            if upgraded and tail:
                self._message_tail = tail
            return
        # the fast path: what start() does with a message, less its loop
        self._request_count += 1
        self._parser.message_consumed()
        self._manager.requests_count += 1
        loop = self._real_loop
        info, handler, hooked = route
        # what the app's request factory makes, web.Request(message, payload, self, StreamWriter(self, loop), the
        # connection's task, loop, client_max_size=, client_max_fields=), from what every request on this
        # connection holds alike (tests/service/test_fastpath.py compares the two)
        writer = _new(StreamWriter)
        writer.__dict__.update(self._writer_base)
        request = _new(web.Request)
        d = request.__dict__
        d.update(self._request_base or self._request_base_of(message, payload))
        d["_message"], d["_payload_writer"], d["_payload"] = message, writer, payload
        d["_headers"], d["_method"], d["_version"] = message.headers, message.method, message.version
        d["_rel_url"], d["_cache"], d["_state"], d["_match_info"] = message.url, {}, {}, info
        self._current_request = request
        self._request_in_progress = True
        self._waiter, self._parked = None, waiter  # aiohttp's loop stays parked until the answer is written
        start = loop.time() if self._logging_enabled else None
        next_one = self._fast_next
        if next_one is not None:  # the connection's fast task, waiting for its next request
            self._fast_next = None
            next_one.set_result((request, handler, hooked, start))
        else:
            self._fast_task = loop.create_task(self._fast(request, handler, hooked, start))

    async def _fast(self, request, handler, hooked, start) -> None:
        """The fast path's task on this connection: what aiohttp's _handle_request and one turn of start()'s loop
        do for the request; then, unless the loop has a task factory (loop-hold timing: each request a task
        of its own), it waits for the connection's next fast request and serves it in turn (one task and its
        registration less a request), until the connection ends."""
        loop = self._real_loop
        while True:
            resp, reset = None, True
            try:
                try:
                    try:
                        resp = await handler(request)
                    finally:
                        self._current_request = None
                except HTTPException as exc:
                    resp = exc
                except asyncio.CancelledError:
                    raise
                except asyncio.TimeoutError as exc:
                    self.log_debug("Request handler timed out.", exc_info=exc)
                    resp = self.handle_error(request, 504)
                except Exception as exc:
                    resp = self.handle_error(request, 500, exc)
                if type(resp) is Answer and request._post is None and resp.send(request, hooked):
                    if self._paused:
                        await request._payload_writer.drain()
                    if self._logging_enabled:
                        self.log_access(request, resp, start)
                    reset = False
                else:
                    resp, reset = await self.finish_response(request, resp, start)
            except ConnectionError:
                self.log_debug("Ignored premature client disconnection")
            except asyncio.CancelledError:
                self.log_debug("Ignored premature client disconnection")
                self._fast_end()
                self.force_close()
                raise
            except Exception as exc:
                self.log_exception("Unhandled exception", exc_info=exc)
                self._fast_end()
                self.force_close()
                return
            finally:
                request_id_var.set(None)  # (what a task of its own would have: see service/protocol.py)
            self._request_in_progress = False
            if self._handler_waiter is not None:
                self._handler_waiter.set_result(None)
            if reset or self.transport is None:
                self._fast_task = None
                self._close_after()
                return
            self._keepalive = bool(resp._keep_alive)  # (resp.keep_alive)
            payload = request._payload
            if payload is not EMPTY_PAYLOAD:  # (payload.set_exception(_PAYLOAD_ACCESS_ERROR): its end came, no waiter)
                payload._exception = _PAYLOAD_ACCESS_ERROR
                payload._eof_callbacks.clear()
            request._task = request = resp = None
            if not self._keepalive or self._close or self._force_close:
                self._fast_task = None
                self._close_after()
                return
            close_time = loop.time() + self._keepalive_timeout
            self._next_keepalive_close_time = close_time
            if self._keepalive_handle is None:
                self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)
            waiter, self._parked = self._parked, None
            self._waiter = waiter
            if self._messages and not waiter.done():  # (what was pipelined behind it, for aiohttp's loop)
                waiter.set_result(None)
            if loop.get_task_factory() is not None:
                self._fast_task = None
                return
            next_one = self._fast_next = loop.create_future()
            try:
                request, handler, hooked, start = await next_one
            except asyncio.CancelledError:  # the connection ended (_end_fast_wait), or the task was cancelled
                self._fast_task = None
                if self._request_in_progress:  # (a request handed over just before: it ends unserved, as the task)
                    self._fast_end()
                    self.force_close()
                raise

    def _fast_end(self) -> None:
        self._fast_task = None
        self._request_in_progress = False
        if self._handler_waiter is not None:
            self._handler_waiter.set_result(None)

    def _close_after(self) -> None:
        """The connection ends after this answer (as start() ends its loop): its parked loop too."""
        waiter, self._parked = self._parked, None
        if waiter is not None and not waiter.done():
            waiter.cancel()
        if not self._force_close:
            self._task_handler = None
            if self.transport is not None:
                self.transport.close()

    def close(self) -> None:
        super().close()
        self._end_fast_wait()

    def force_close(self) -> None:
        super().force_close()
        waiter, self._parked = self._parked, None
        if waiter is not None and not waiter.done():
            waiter.cancel()
        self._end_fast_wait()

    def _end_fast_wait(self) -> None:
        """The connection ends: the fast task waiting for a next request stops waiting."""
        next_one, self._fast_next = self._fast_next, None
        if next_one is not None and not next_one.done():
            next_one.cancel()

    def connection_lost(self, exc) -> None:
        cancel = self._manager is not None and self._manager.handler_cancellation
        super().connection_lost(exc)
        if cancel and self._fast_task is not None:
            self._fast_task.cancel()

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        try:
            await super().shutdown(timeout)  # (waits for the fast request as for any in progress)
        finally:
            task = self._fast_task
            if task is not None and not task.done():
                task.cancel()
