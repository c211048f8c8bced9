"""The answer to a request aiohttp's HTTP parser rejects, in the service's JSON error shape.

A bad header byte, an over-long line or a broken chunk is refused by aiohttp
itself, before any middleware runs, with a text/plain 400 that quotes the
offending line (an API key with a stray control character included).
`install()` wraps `RequestHandler.handle_error` (aiohttp is pinned in
pyproject.toml; tests/service/test_log.py checks the answer) so that such a
4xx is the usual {error, error_code, message, details} naming only the
reason (a Content-Encoding the parser knows but cannot decode, zstd without
its package, is a 415 UNSUPPORTED_CONTENT_ENCODING).  Everything else, and non-HTTP bytes on the port (BadHttpMethod,
logged at debug by aiohttp), keeps aiohttp's own handling.

On Python 3.11 aiohttp also runs each request in a task of its own (3.12 and
later start it eagerly, inline), which costs a task, its registration and two
turns of the event loop a request (about 11 k instructions of a cache hit's
290 k).  `install()` gives each connection's RequestHandler a `RequestLoop`:
the event loop, but for the one task aiohttp makes per request, whose
coroutine then runs inline in the connection's own task (the handler's
`start()`, which awaits it in any case).  Nothing else changes: the same
code runs in the same order, a client going away or a shutdown cancels the
same await.  What a task of its own also gave is a fresh copy of the
context variables; the service has one, `service.log.request_id_var`, and
it is reset when each inline request ends (tests/service/test_protocol.py
checks that it is the only one).  While loop-hold timing is on (a task
factory on the loop, service/monitoring/loopholds.py), requests get their
tasks as before, so each task step is still one request's.

The same patch makes each connection's handler a `FastHandler`
(service/fastpath.py) when the app has fixed routes the fast path can
serve: a plain request to one of them is served without aiohttp's request
loop, anything else as above.
"""
from __future__ import annotations

import sys

from aiohttp import web_protocol, web_server
from aiohttp.http_exceptions import BadHttpMethod, ContentEncodingError, HttpProcessingError

from service.errors import error_response, parse_reason
from service.fastpath import FastHandler, table_for
from service.log import request_id_var
from service.middleware.compression import REQUEST_ENCODINGS
from service.middleware.errors import new_request_id

_aiohttp_handle_error = web_protocol.RequestHandler.handle_error


def _handle_error(self, request, status: int = 500, exc: BaseException | None = None, message: str | None = None):
    if not isinstance(exc, HttpProcessingError) or isinstance(exc, BadHttpMethod) or not 400 <= status < 500:
        return _aiohttp_handle_error(self, request, status, exc, message)
    self.log_exception("Error handling request from %s", request.remote, exc_info=exc)  # service/log.py shortens it
    if request.writer.output_size > 0:
        raise ConnectionError("Response is sent already, cannot send another response with the error message")
    rid = new_request_id()  # (the request's own X-Request-ID, if any, is in the part the parser refused)
    if isinstance(exc, ContentEncodingError):  # a coding aiohttp knows but cannot decode here (zstd)
        resp = error_response(None, 415, "UNSUPPORTED_CONTENT_ENCODING", "request Content-Encoding is not accepted",
                              {"field": "Content-Encoding", "supported": sorted(REQUEST_ENCODINGS)}, request_id=rid)
    else:
        resp = error_response(None, status, "MALFORMED_REQUEST", f"malformed HTTP request: {parse_reason(exc)}",
                              {"field": "request"}, request_id=rid)
    resp.headers["X-Request-ID"] = rid
    resp.force_close()
    return resp


_HANDLE_REQUEST = web_protocol.RequestHandler._handle_request.__code__  # the coroutine of aiohttp's task per request
_aiohttp_new_handler = web_server.Server.__call__


class RequestLoop:
    """The event loop as one connection's RequestHandler sees it: its request coroutines run inline."""

    __slots__ = ("_loop", "time", "call_at", "create_future")

    def __init__(self, loop) -> None:
        self._loop = loop
        self.time, self.call_at, self.create_future = loop.time, loop.call_at, loop.create_future  # (no __getattr__)

    def create_task(self, coro, **kwargs):
        if getattr(coro, "cr_code", None) is _HANDLE_REQUEST and self._loop.get_task_factory() is None:
            return _inline(coro)
        return self._loop.create_task(coro, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._loop, name)


async def _inline(coro):
    try:
        return await coro
    finally:
        request_id_var.set(None)  # (what the request's own task's context copy did)


_INLINE = sys.version_info < (3, 12)  # (later, aiohttp starts the request's task eagerly itself)


def _new_handler(self):
    routes = table_for(self)
    if routes:
        try:
            handler = FastHandler(self, routes=routes, real_loop=self._loop, loop=self._loop, **self._kwargs)
        except TypeError:  # (kwargs RequestHandler does not take: aiohttp's own fallback, below)
            handler = _aiohttp_new_handler(self)
    else:
        handler = _aiohttp_new_handler(self)
    if _INLINE:
        handler._loop = RequestLoop(handler._loop)
    return handler


def install() -> None:
    web_protocol.RequestHandler.handle_error = _handle_error
    web_server.Server.__call__ = _new_handler
