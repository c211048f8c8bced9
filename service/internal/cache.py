"""/internal/cache: the cache's analysis views and its tuning commands.

GET  stats, performance-analysis, usage-patterns, hit-miss-analysis, key-analysis,
     optimization-recommendations, optimization-results
POST optimize-keys, configure-ttl, enable-warming, configure-size, configure-pressure, optimize-memory,
     enable-auto-cleanup (no body), weekly-optimization (no body), emergency-cleanup (no body),
     invalidate {operation | pattern | all}

Every tuning command is a change of the "cache" config section through the
store, which validates it with the section's rules (base_ttl <= max_ttl,
pressure < emergency threshold, known operations): a bad body is a 422 naming
every offending field and changes nothing; the cache hears the change and
acts at once.
"""
from __future__ import annotations

import time

from aiohttp import web

from service.cache import views
from service.context import CTX
from service.errors import validation_error
from service.http import json_response, only, query_number, read_object
from service.internal.audit import actor
from service.providers.base import OPERATIONS

BASE = "/internal/cache"


def _cache(request: web.Request):
    return request.app[CTX].cache


def _memory_state(cache) -> dict:
    return {"entries": len(cache.l1), "memory_bytes": cache.l1.bytes}


# ---- tuning commands -----------------------------------------------------------------
COMMANDS: dict[str, dict] = {
    "optimize-keys": {"fields": ("enable_normalization", "use_content_hash", "include_metadata",
                                 "normalize_whitespace", "normalize_case", "normalize_unicode")},
    "configure-ttl": {"fields": ("base_ttl_seconds", "adaptive_ttl", "max_ttl_seconds", "popularity_factor",
                                 "popularity_threshold", "ttl_by_operation", "stale_ttl_seconds")},
    "enable-warming": {"fields": ("enable_background_warming", "warming_threshold", "max_warming_operations",
                                  "warming_interval_seconds"),
                       "default": {"enable_background_warming": True}},
    "configure-size": {"fields": ("max_entries", "max_memory_mb", "eviction_policy", "size_check_interval")},
    "configure-pressure": {"fields": ("pressure_threshold", "pressure_response", "emergency_threshold",
                                      "emergency_response", "emergency_cleanup_target")},
    "optimize-memory": {"fields": ("max_memory_mb", "compression_threshold_mb", "cleanup_interval_minutes",
                                   "compression_level", "stale_ttl_seconds")},
    "enable-auto-cleanup": {"fields": ("auto_cleanup", "cleanup_interval_minutes"),
                            "default": {"auto_cleanup": True}, "fixed": {"auto_cleanup": True}},
}


def _command(name: str, spec: dict):
    fields = spec["fields"]

    async def handler(request: web.Request) -> web.Response:
        ctx = request.app[CTX]
        cache = ctx.cache
        body = await read_object(request, allow_empty=True)
        if not body:
            if "default" not in spec:
                raise validation_error("body", f"send one or more of {list(fields)}")
            body = dict(spec["default"])
        only(body, fields)
        body = {**spec.get("fixed", {}), **body}  # the store validates it, rules included
        before = _memory_state(cache)
        entry = await ctx.store.update("cache", body, source=f"api:{BASE}/{name}", **actor(request))
        cfg = ctx.store.get("cache")
        return json_response({"status": "applied" if entry["changes"] else "unchanged", "command": name,
                              "changes": entry["changes"], "previous": entry["previous"],
                              "values": {k: cfg[k] for k in fields}, "config_version": ctx.store.version,
                              "cache": {"before": before, "after": _memory_state(cache)}})

    handler.__name__ = "cache_" + name.replace("-", "_")
    return handler


async def _no_body(request: web.Request, name: str) -> None:
    only(await read_object(request, allow_empty=True), ())


async def weekly_optimization(request: web.Request) -> web.Response:
    await _no_body(request, "weekly-optimization")
    run = await _cache(request).weekly_optimization(source=f"api:{BASE}/weekly-optimization",
                                                    **actor(request))
    return json_response({"status": "completed", **run})


async def emergency_cleanup(request: web.Request) -> web.Response:
    await _no_body(request, "emergency-cleanup")
    return json_response({"status": "completed", "time": time.time(), **(await _cache(request).emergency_cleanup())})


async def invalidate(request: web.Request) -> web.Response:
    body = await read_object(request, allow_empty=False)
    only(body, ("operation", "pattern", "all"))
    given = [k for k in ("operation", "pattern", "all") if k in body]
    if len(given) != 1:
        raise validation_error("body", "send exactly one of operation, pattern, all")
    if "operation" in body:
        op = body["operation"]
        if op not in OPERATIONS:
            raise validation_error("operation", f"must be one of {list(OPERATIONS)}")
        match = f"{op}:*"
    elif "pattern" in body:
        p = body["pattern"]
        if not isinstance(p, str) or not 1 <= len(p) <= 200 or not p.isprintable():
            raise validation_error("pattern", "must be a glob of 1-200 printable characters over "
                                              "'<operation>:<digest>', e.g. 'summarize:*'")
        match = p
    else:
        if body["all"] is not True:
            raise validation_error("all", "must be true")
        match = "*"
    res = await _cache(request).invalidate(match)
    return json_response({"status": "completed", **res})


# ---- views -------------------------------------------------------------------------------
def _view(fn):
    async def handler(request: web.Request) -> web.Response:
        return json_response(await fn(_cache(request)))
    handler.__name__ = "cache_" + fn.__name__
    return handler


async def usage_patterns(request: web.Request) -> web.Response:
    minutes = query_number(request, "minutes", 60, 1, 1440, integer=True)
    return json_response(await views.usage_patterns(_cache(request), minutes))


def register(app: web.Application, ctx) -> None:
    r = app.router
    r.add_get(f"{BASE}/stats", _view(views.stats))
    r.add_get(f"{BASE}/performance-analysis", _view(views.performance_analysis))
    r.add_get(f"{BASE}/usage-patterns", usage_patterns)
    r.add_get(f"{BASE}/hit-miss-analysis", _view(views.hit_miss_analysis))
    r.add_get(f"{BASE}/key-analysis", _view(views.key_analysis))
    r.add_get(f"{BASE}/optimization-recommendations", _view(views.optimization_recommendations))
    r.add_get(f"{BASE}/optimization-results", _view(views.optimization_results))
    for name, spec in COMMANDS.items():
        r.add_post(f"{BASE}/{name}", _command(name, spec))
    r.add_post(f"{BASE}/weekly-optimization", weekly_optimization)
    r.add_post(f"{BASE}/emergency-cleanup", emergency_cleanup)
    r.add_post(f"{BASE}/invalidate", invalidate)
