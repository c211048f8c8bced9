"""The stack around every route's handler, instead of an aiohttp middleware.

An app with middlewares makes aiohttp, on every request, look the chain up
in an lru_cache keyed by the handler and the apps (hashing the app through
a Python `__hash__`), call the stack through a `functools.partial`, and run
`_fix_request_current_app`, a middleware of its own, as one more coroutine
(about 10 k instructions of a cache hit).  The service's app has no
aiohttp middleware: when it is served (aiohttp's `Application._make_handler`,
which a runner calls once the app and its router are frozen, after the
startup steps: no route can be added after it) each route's handler becomes
`partial(stack, handler=the handler)`, the call aiohttp made, and an
unmatched request (aiohttp's SystemRoute: 404, 405) runs through the same
stack with aiohttp's handler, which raises the HTTP error, inside it
(`install`, for apps that hold a STACK).  `inner(handler)` is the route's own
handler, for whoever looks it up (the versioning layer's re-route, the
OpenAPI document).
"""
from __future__ import annotations

import functools

from aiohttp import web, web_app
from aiohttp.web_urldispatcher import SystemRoute

STACK: web.AppKey = web.AppKey("stack", object)  # the stack's middleware function (service/middleware/stack.py)

_aiohttp_unmatched = SystemRoute._handle
_aiohttp_make_handler = web_app.Application._make_handler


def inner(handler):
    """The route's own handler, whether or not the stack is around it."""
    if type(handler) is functools.partial and "handler" in handler.keywords and not handler.args:
        return handler.keywords["handler"]
    return handler


def wrap_routes(app: web.Application) -> None:
    """Put the stack around every route's handler (again: a handler already inside it is left as it is)."""
    stack = app[STACK]
    for route in app.router.routes():
        h = route._handler  # (the attribute behind route.handler)
        if not (type(h) is functools.partial and h.func is stack):
            route._handler = functools.partial(stack, handler=h)


async def _unmatched(self: SystemRoute, request: web.Request):
    stack = request._match_info.current_app.get(STACK)
    if stack is None:  # an app without the service's stack
        return await _aiohttp_unmatched(self, request)
    return await stack(request, handler=functools.partial(_aiohttp_unmatched, self))


def _make_handler(self: web.Application, *args, **kwargs):
    if STACK in self:
        wrap_routes(self)
    return _aiohttp_make_handler(self, *args, **kwargs)


def install() -> None:
    SystemRoute._handle = _unmatched
    web_app.Application._make_handler = _make_handler
