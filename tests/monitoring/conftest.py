"""In-process apps with test-only routes (slow, span-recording, allocating)."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from service import spans
from service.context import CTX
from tests.helpers import API_KEY

KEEP: list = []  # allocations the memory tests hold on purpose


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "0.2")))
    return web.json_response({"slow": True})


async def fast(request: web.Request) -> web.Response:
    return web.json_response({"fast": True})


async def spanned(request: web.Request) -> web.Response:
    """Simulates a cache miss whose time goes mostly to the AI service (spans shaped like the real ones)."""
    await asyncio.sleep(0.06)
    spans.record("cache.l2_get", 0.0005)   # inside cache.lookup
    spans.record("cache.lookup", 0.001)
    spans.record("ai.call", 0.05)          # inside cache.compute, with 2 ms of rendering
    spans.record("cache.compute", 0.052)
    spans.record("cache.warm", 0.5)        # background: no request's time
    return web.json_response({"ok": True})


async def allocate(request: web.Request) -> web.Response:
    KEEP.append(bytearray(int(request.query.get("bytes", str(4 * 2 ** 20)))))
    return web.json_response({"held": len(KEEP)})


async def hold(request: web.Request) -> web.Response:
    """Holds the event loop for `ms` milliseconds of the loop thread's CPU time."""
    import time
    end = time.thread_time() + float(request.query.get("ms", "20")) / 1000
    while time.thread_time() < end:
        pass
    return web.json_response({"held": True})


TEST_ROUTES = (("GET", "/v1/text/test/slow", slow), ("GET", "/v1/text/test/fast", fast), ("GET", "/v1/text/test/spanned", spanned),
               ("POST", "/v1/text/test/allocate", allocate), ("GET", "/v1/text/test/hold", hold))


@pytest.fixture
async def mon_client(aiohttp_client, tmp_path):
    """mon_client(**env) -> test client of the real app plus TEST_ROUTES, API key preset."""
    from service.app import create_app
    from service.settings import Settings

    async def make(**env):
        env = {"API_KEY": API_KEY, "STATE_DIR": str(tmp_path / "state"), "LOG_LEVEL": "WARNING",
               "MONITORING_SNAPSHOT_INTERVAL": "3600", **{k: str(v) for k, v in env.items()}}
        app = create_app(Settings.from_env(env), env=env)
        for method, path, handler in TEST_ROUTES:
            app.router.add_route(method, path, handler)
        client = await aiohttp_client(app)
        client.session.headers.update({"X-API-Key": API_KEY})
        return client

    yield make
    KEEP.clear()


def ctx_of(client):
    return client.server.app[CTX]
