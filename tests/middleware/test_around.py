"""service/middleware/around.py: the stack is around every route's handler (no aiohttp middleware), an
unmatched request runs through it too, and a re-routed request runs the stack once."""
from __future__ import annotations

import functools

from aiohttp import web

from service.context import CTX
from service.middleware import around


async def test_every_route_runs_inside_the_stack_once_the_app_has_started(make_client):
    client = await make_client()
    app = client.server.app
    assert not app.middlewares  # nothing for aiohttp to chain on each request
    stack = app[around.STACK]
    for route in app.router.routes():
        h = route.handler
        assert type(h) is functools.partial and h.func is stack, route
        assert around.inner(h) is h.keywords["handler"] and around.inner(around.inner(h)) is around.inner(h)
    r = await client.get("/v1/text/operations")
    assert r.status == 200 and r.headers["X-Request-ID"] and r.headers.getall("X-Content-Type-Options") == ["nosniff"]
    r = await client.get("/v1/text/operations", headers={"X-API-Key": "wrong"})
    assert r.status == 401 and (await r.json())["error_code"] == "INVALID_API_KEY"


async def test_unmatched_requests_get_the_stacks_answers(make_client):
    client = await make_client()
    r = await client.get("/v1/nowhere")
    body = await r.json()
    assert r.status == 404 and body["error_code"] == "NOT_FOUND" and body["request_id"] == r.headers["X-Request-ID"]
    assert r.headers.getall("X-Content-Type-Options") == ["nosniff"]
    r = await client.delete("/v1/text/operations")
    assert r.status == 405 and (await r.json())["details"]["field"] == "method"


async def test_a_rerouted_request_runs_the_stack_once(make_client, monkeypatch):
    from service.middleware.errors import ErrorsLayer
    entered = []
    errors_enter = ErrorsLayer.enter
    monkeypatch.setattr(ErrorsLayer, "enter", lambda self, request: entered.append(1) or errors_enter(self, request))
    client = await make_client(API_SUPPORTED_VERSIONS="v1,v2")
    ver = client.server.app[CTX].extras["versioning"]
    before = ver.rewrites
    r = await client.get("/v2/text/operations")
    assert r.status == 200 and ver.rewrites == before + 1 and len(entered) == 1
    assert r.headers.getall("X-Content-Type-Options") == ["nosniff"]  # (the security headers once, not twice)
    assert r.headers.getall("X-Request-ID") == [r.headers["X-Request-ID"]]


async def test_an_app_without_the_stack_keeps_aiohttps_unmatched_answer(aiohttp_client):
    around.install()
    client = await aiohttp_client(web.Application())
    r = await client.get("/nowhere")
    assert r.status == 404 and r.content_type == "text/plain"
