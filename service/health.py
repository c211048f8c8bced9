"""GET /v1/health: liveness plus readiness, one time-bounded check per component.

The two probes an orchestrator polls are separate and cheap:
GET /v1/health/live answers 200 while the event loop answers (a restart would
not help otherwise); GET /v1/health/ready answers 503 while the process drains
after SIGTERM (service/lifecycle.py), so it stops getting traffic before it
stops serving.  A failing dependency (Redis, the AI service) does not make a
replica unready: every replica shares it, and each still answers from its
memory cache and local limits; /v1/health says `degraded` then.
"""
from __future__ import annotations

import asyncio
import os
import time

from aiohttp import web

from service import __version__
from service.context import CTX
from service.http import json_response
from service.redis_client import topology

CHECK_TIMEOUT = 1.0
RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}
STARTED = time.time()


async def _timed(name: str, coro) -> dict:
    start = time.perf_counter()
    try:
        res = await asyncio.wait_for(coro, CHECK_TIMEOUT)
    except asyncio.TimeoutError:
        res = {"status": "unhealthy", "error": f"check timed out after {CHECK_TIMEOUT}s"}
    except Exception as e:  # a failing check is a result, not an error
        res = {"status": "unhealthy", "error": type(e).__name__}
    res["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
    return res


async def _config_check(ctx) -> dict:
    out = {"status": "healthy", "version": ctx.store.version, "backend": "redis" if ctx.store.shared else "file"}
    if ctx.store.shared:
        out["redis_topology"] = topology(ctx.redis)
    return out


async def health(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    names = ("ai_provider", "cache", "config_store")
    results = await asyncio.gather(_timed("ai_provider", ctx.providers.health()),
                                   _timed("cache", ctx.cache.health()),
                                   _timed("config_store", _config_check(ctx)))
    checks = dict(zip(names, results))
    # the cache degrades to memory when Redis is gone: never worse than degraded
    if checks["cache"]["status"] == "unhealthy":
        checks["cache"]["status"] = "degraded"
    status = max((c["status"] for c in checks.values()), key=RANK.__getitem__)
    body = {"status": status, "live": True, "ready": status != "unhealthy" and ctx.draining_since is None,
            "version": __version__,
            "uptime_seconds": round(time.time() - STARTED, 1), "pid": os.getpid(),
            "worker": ctx.settings.worker_id, "checks": checks}
    return json_response(body, status=503 if status == "unhealthy" else 200)


async def live(request: web.Request) -> web.Response:
    return json_response({"live": True, "pid": os.getpid()})


async def ready(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    if ctx.draining_since is not None:
        return json_response({"ready": False, "reason": "draining after SIGTERM",
                              "draining_for_seconds": round(time.time() - ctx.draining_since, 3)}, status=503)
    return json_response({"ready": True})


def register(app: web.Application, ctx) -> None:
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/health/live", live)
    app.router.add_get("/v1/health/ready", ready)
