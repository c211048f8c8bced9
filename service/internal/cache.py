"""/internal/cache: the cache's analysis views and its tuning commands.

GET  stats, performance-analysis, usage-patterns, hit-miss-analysis, key-analysis,
     optimization-recommendations, optimization-results
POST optimize-keys, configure-ttl, enable-warming, configure-size, configure-pressure, optimize-memory,
     enable-auto-cleanup (no body), weekly-optimization (no body), emergency-cleanup (no body),
     invalidate {operation | pattern | all}

Every tuning command is a change of the "cache" config section through the
store (validated first: a bad body is a 422 naming the field and changes
nothing); the cache hears the change and acts at once.
"""
from __future__ import annotations

import time

from aiohttp import web

from service.cache import views
from service.config.schema import ConfigValidationError
from service.context import CTX
from service.errors import validation_error
from service.http import json_response, query_number, read_object
from service.internal.audit import actor
from service.providers.base import OPERATIONS

BASE = "/internal/cache"


def _cache(request: web.Request):
    return request.app[CTX].cache


def _memory_state(cache) -> dict:
    return {"entries": len(cache.l1), "memory_bytes": cache.l1.bytes}


# ---- cross-field checks (on the values after the change) ---------------------------
def _check_ttl(new: dict, body: dict) -> None:
    if new["max_ttl_seconds"] < new["base_ttl_seconds"]:
        field = "max_ttl_seconds" if "max_ttl_seconds" in body else "base_ttl_seconds"
        raise ConfigValidationError("cache", field, "max_ttl_seconds must be >= base_ttl_seconds")
    for op in body.get("ttl_by_operation", {}):
        if op not in OPERATIONS:
            raise ConfigValidationError("cache", f"ttl_by_operation.{op}", f"unknown operation; one of {list(OPERATIONS)}")


def _check_pressure(new: dict, body: dict) -> None:
    if new["pressure_threshold"] > new["emergency_threshold"]:
        field = "emergency_threshold" if "emergency_threshold" in body else "pressure_threshold"
        raise ConfigValidationError("cache", field, "pressure_threshold must be <= emergency_threshold")


# ---- tuning commands -----------------------------------------------------------------
COMMANDS: dict[str, dict] = {
    "optimize-keys": {"fields": ("enable_normalization", "use_content_hash", "include_metadata",
                                 "normalize_whitespace", "normalize_case", "normalize_unicode")},
    "configure-ttl": {"fields": ("base_ttl_seconds", "adaptive_ttl", "max_ttl_seconds", "popularity_factor",
                                 "popularity_threshold", "ttl_by_operation", "stale_ttl_seconds"),
                      "check": _check_ttl},
    "enable-warming": {"fields": ("enable_background_warming", "warming_threshold", "max_warming_operations",
                                  "warming_interval_seconds"),
                       "default": {"enable_background_warming": True}},
    "configure-size": {"fields": ("max_entries", "max_memory_mb", "eviction_policy", "size_check_interval")},
    "configure-pressure": {"fields": ("pressure_threshold", "pressure_response", "emergency_threshold",
                                      "emergency_response", "emergency_cleanup_target"),
                           "check": _check_pressure},
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
        unknown = sorted(set(body) - set(fields))
        if unknown:
            raise validation_error(unknown[0], f"unknown field for {name}; accepted: {list(fields)}")
        body = {**spec.get("fixed", {}), **body}
        new = ctx.store.validate("cache", body)
        if "check" in spec:
            spec["check"](new, body)
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
    body = await read_object(request, allow_empty=True)
    if body:
        raise validation_error(sorted(body)[0], f"{name} takes no body")


async def weekly_optimization(request: web.Request) -> web.Response:
    await _no_body(request, "weekly-optimization")
    run = await _cache(request).weekly_optimization(source=f"api:{BASE}/weekly-optimization",
                                                    **actor(request))
    return json_response({"status": "completed", **run})


async def emergency_cleanup(request: web.Request) -> web.Response:
    await _no_body(request, "emergency-cleanup")
    return json_response({"status": "completed", "time": time.time(), **_cache(request).emergency_cleanup()})


async def invalidate(request: web.Request) -> web.Response:
    body = await read_object(request, allow_empty=False)
    unknown = sorted(set(body) - {"operation", "pattern", "all"})
    if unknown:
        raise validation_error(unknown[0], "unknown field; send one of operation, pattern, all")
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
