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


async def test_a_route_added_by_a_startup_step_runs_inside_the_stack_too(aiohttp_client, tmp_path):
    from service.app import create_app
    from service.settings import Settings
    from tests.helpers import API_KEY
    env = {"API_KEY": API_KEY, "STATE_DIR": str(tmp_path / "state"), "LOG_LEVEL": "WARNING"}
    app = create_app(Settings.from_env(env), env=env)

    async def late(request):
        return web.json_response({"late": True})

    async def add_route(app):
        app.router.add_get("/v1/text/late", late)
    app.on_startup.append(add_route)
    client = await aiohttp_client(app)
    r = await client.get("/v1/text/late")  # no key: auth, in the stack, answers
    assert r.status == 401 and r.headers["X-Request-ID"]
    r = await client.get("/v1/text/late", headers={"X-API-Key": API_KEY})
    assert r.status == 200 and await r.json() == {"late": True}
