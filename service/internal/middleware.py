"""/internal/middleware: tune and inspect the middleware stack; its /internal/monitoring views.

Every change goes through ctx.store.update (one source of truth, history,
rollback, other processes follow).  Bodies are strict: an unknown field, a
wrong type or an out-of-range value is a 422 naming the body field, and
nothing changes.  auto-optimize decides from the measurements
(service/middleware/advisor.py) and answers
{optimization_applied: [..] | false, reason}.
"""
from __future__ import annotations

import re

from aiohttp import web

from service.config.schema import ConfigValidationError
from service.context import CTX
from service.errors import validation_error
from service.http import json_response, only, read_object
from service.internal.audit import actor
from service.middleware import ORDER, advisor
from service.middleware.stackperf import module_name
from service.middleware.versioning import normalize
from service.keys import NAME_PATTERN, NAME_RE

P = "/internal/middleware"
M = "/internal/monitoring"
SECTIONS = ("security_headers", "cors", "request_size", "compression", "versioning", "rate_limit")


def _ctx(request: web.Request):
    return request.app[CTX]


async def _apply(request: web.Request, section: str, changes: dict, body_names: dict, source: str) -> dict:
    """store.update, reporting bad values under the names the body used for them."""
    ctx = _ctx(request)
    try:
        entry = await ctx.store.update(section, changes, source=source, **actor(request))
    except ConfigValidationError as e:
        raise e.renamed(body_names) from None
    return {"status": "applied" if entry["changes"] else "unchanged", "section": section,
            "changes": entry["changes"], "previous": entry.get("previous", {}),
            "config": ctx.store.get(section), "config_version": ctx.store.version}


async def _body(request: web.Request, allowed, require: bool = True) -> dict:
    body = await read_object(request, allow_empty=not require)
    only(body, allowed)
    if require and not body:
        raise validation_error("body", f"set at least one of {sorted(allowed)}")
    return body


def _auto_result(applied: list, reason: str, measured: dict, changed: dict | None = None) -> dict:
    out = {"optimization_applied": applied or False, "reason": reason, "measured": measured}
    if changed is not None:
        out["config"] = changed
    return out


async def _auto(request: web.Request, section: str, plan) -> web.Response:
    ctx = _ctx(request)
    body = await _body(request, ("dry_run",), require=False)
    dry = body.get("dry_run", False)
    if not isinstance(dry, bool):
        raise validation_error("dry_run", "must be a boolean")
    changes, applied, reason, measured = plan(ctx)
    if applied and not dry:
        other = {k: changes.pop(k) for k in list(changes) if k in ctx.store.sections}  # e.g. "redis" timeouts
        await ctx.store.update_many({**({section: changes} if changes else {}), **other},
                                    source=f"auto-optimize:{section}", **actor(request))
    out = _auto_result(applied, reason, measured, ctx.store.get(section))
    out["dry_run"] = dry
    return json_response(out)


# ---- overview -----------------------------------------------------------------------
async def overview(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    stack = []
    for m in ORDER:
        name = module_name(m)
        section = {"security": "security_headers"}.get(name, name)
        cfg = ctx.store.get(section) if section in ctx.store.sections else None
        stack.append({"name": name, "enabled": cfg.get("enabled", True) if cfg else True,
                      "config_section": section if cfg is not None else None,
                      "timed": True})  # (every layer's own time is sampled: stackperf.py)
    return json_response({"order": stack, "config": {s: ctx.store.get(s) for s in SECTIONS}})


# ---- stack performance --------------------------------------------------------------
def _stack(ctx) -> dict:
    prof = ctx.extras["stackperf"]
    snap = prof.snapshot()
    recs = advisor.recommendations(ctx, snap)
    st = advisor.status(snap["total"], snap["samples"], ctx.store.get("middleware"))
    return {"middleware_overhead": snap, "recommendations": recs, "performance_status": st}


async def stack_performance(request: web.Request) -> web.Response:
    return json_response(_stack(_ctx(request)))


async def monitoring_middleware_performance(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    s = _stack(ctx)
    snap = s["middleware_overhead"]
    return json_response({"total_overhead_ms": snap["total"], "performance_status": s["performance_status"],
                          "active_recommendations": s["recommendations"], "per_middleware_ms":
                          {k: v["avg_ms"] for k, v in snap["breakdown"].items()},
                          "handler_avg_ms": snap["handler_avg_ms"], "overhead_share": snap["overhead_share"],
                          "p95_overhead_ms": snap["p95_ms"], "samples": snap["samples"],
                          "thresholds_ms": {"optimal": ctx.store.get("middleware")["overhead_target_ms"],
                                            "degraded_above": ctx.store.get("middleware")["overhead_warning_ms"]}})


async def reset_stats(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    await _body(request, (), require=False)
    ctx.extras["stackperf"].reset()
    ctx.extras["compression"].reset_stats()
    ctx.ratelimiter.reset_stats()
    return json_response({"status": "reset"})


# ---- compression ----------------------------------------------------------------------
COMPRESSION_FIELDS = ("enabled", "algorithm", "level", "minimum_size", "exclude_content_types", "allowed_algorithms",
                      "decompress_requests", "max_decompressed_size", "executor_threshold")


async def compression_optimize(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    body = await _body(request, COMPRESSION_FIELDS)
    if body.get("algorithm") == "brotli":
        body["algorithm"] = "br"
    out = await _apply(request, "compression", body, {}, "api:compression/optimize")
    return json_response(out)


def _stats(section: str):
    """GET <section>/stats: the middleware's measured stats and its live config."""
    async def handler(request: web.Request) -> web.Response:
        ctx = _ctx(request)
        st = ctx.extras[section].stats()
        st["config"] = ctx.store.get(section)
        return json_response(st)
    handler.__name__ = f"{section}_stats"
    return handler


def _plan_compression(ctx):
    st = ctx.extras["compression"].stats()
    changes, applied, reason = advisor.plan_compression(st, ctx.store.get("compression"))
    return changes, applied, reason, {k: st[k] for k in ("responses_attempted", "average_compression_ratio",
                                                          "cpu_overhead_percentage", "bandwidth_savings_bytes",
                                                          "by_size", "skipped")}


async def compression_auto(request: web.Request) -> web.Response:
    return await _auto(request, "compression", _plan_compression)


async def monitoring_compression(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    comp = ctx.extras["compression"]
    st = comp.stats()
    prof = ctx.extras["stackperf"].breakdown().get("compression")
    cfg = ctx.store.get("compression")
    return json_response({
        "enabled": cfg["enabled"], "algorithm": cfg["algorithm"], "level": cfg["level"],
        "minimum_size": cfg["minimum_size"],
        "average_compression_ratio": st["average_compression_ratio"],
        "bandwidth_savings_bytes": st["bandwidth_savings_bytes"],
        "cpu_overhead_percentage": st["cpu_overhead_percentage"],
        "responses_compressed": st["responses_compressed"],
        "average_compression_ms": st["average_compression_ms"],
        "middleware_overhead_ms": prof["avg_ms"] if prof else None,
        "by_algorithm": st["by_algorithm"], "skipped": st["skipped"], "requests": st["requests"],
        "since": st["since"]})


# ---- rate limiting ----------------------------------------------------------------------
RATE_FIELDS = ("enabled", "requests_per_minute", "burst_size", "redis_pool_size", "local_cache_size", "use_redis",
               "lease_window_ms", "redis_retry_seconds", "client_tier_limits", "client_tiers",
               "adaptive_limits", "peak_multiplier", "off_peak_multiplier", "peak_hours", "paths", "headers")


def _tier_client(ctx, raw: str, field: str) -> str:
    """A client is named by its key's name (GET /internal/auth/keys lists them), never by the key."""
    if not isinstance(raw, str) or not NAME_RE.match(raw):
        raise validation_error(field, f"must be a key name ({NAME_PATTERN})")
    if ctx.keys.get(raw) is None:
        raise validation_error(field, f"no configured key has this name; configured: {ctx.keys.names()}")
    return raw


async def rate_optimize(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    body = await _body(request, RATE_FIELDS)
    cfg = ctx.store.get("rate_limit")
    names = {}
    if "client_tiers" in body:
        tiers = body["client_tiers"]
        if not isinstance(tiers, dict):
            raise validation_error("client_tiers", "must be an object of key name -> tier")
        mapped = dict(cfg["client_tiers"])
        for i, (who, tier) in enumerate(tiers.items()):
            cid = _tier_client(ctx, who, f"client_tiers[{i}]")
            if tier is None:
                mapped.pop(cid, None)
                continue
            mapped[cid] = tier  # the store checks it names one of client_tier_limits
            names[f"client_tiers.{cid}"] = f"client_tiers[{i}]"
        body["client_tiers"] = mapped
    out = await _apply(request, "rate_limit", body, names, "api:rate-limiting/optimize")
    out["config"] = _public_rate_cfg(out["config"])
    return json_response(out)


def _public_rate_cfg(cfg: dict) -> dict:
    return dict(cfg)  # clients are key names, never keys


def _rate_perf(ctx) -> dict:
    rl = ctx.ratelimiter
    st = rl.stats()
    prof = ctx.extras["stackperf"].breakdown().get("rate_limit")
    cfg = ctx.store.get("rate_limit")
    st["average_processing_time"] = prof["avg_ms"] if prof else st["slow_path_average_ms"]
    st["processing_time_samples"] = prof["samples"] if prof else 0
    st["enabled"] = cfg["enabled"]
    st["global_throttle_per_minute"] = cfg["global_limit_per_minute"]
    st["redis_configured"] = bool(ctx.settings.redis_url)
    return st


async def rate_performance(request: web.Request) -> web.Response:
    return json_response(_rate_perf(_ctx(request)))


async def monitoring_rate(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    st = _rate_perf(ctx)
    d = st["decisions"]
    st["denial_ratio"] = round(d["denied"] / d["total"], 4) if d["total"] else 0.0
    return json_response(st)


def _plan_rate(ctx):
    st = _rate_perf(ctx)
    changes, applied, reason = advisor.plan_rate_limit(st, ctx.store.get("rate_limit"),
                                                       ctx.store.get("redis")["rate_limit_timeout_ms"])
    return changes, applied, reason, {k: st[k] for k in ("mode", "decisions", "redis_average_latency",
                                                          "redis_p95_latency", "local_cache_stats")}


async def rate_auto(request: web.Request) -> web.Response:
    return await _auto(request, "rate_limit", _plan_rate)


async def enable_throttling(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    body = await _body(request, ("max_requests_per_minute", "enabled"))
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise validation_error("enabled", "must be a boolean")
    if enabled and "max_requests_per_minute" not in body:
        raise validation_error("max_requests_per_minute", "is required (an integer, or null to switch off)")
    limit = body.get("max_requests_per_minute") if enabled else None
    out = await _apply(request, "rate_limit", {"global_limit_per_minute": limit},
                       {"global_limit_per_minute": "max_requests_per_minute"}, "api:enable-throttling")
    cfg = ctx.store.get("rate_limit")
    return json_response({"throttling": {"enabled": cfg["global_limit_per_minute"] is not None,
                                         "max_requests_per_minute": cfg["global_limit_per_minute"],
                                         "burst_size": cfg["burst_size"], "paths": cfg["paths"],
                                         "scope": "all clients together, across processes sharing Redis"},
                          "status": out["status"], "changes": out["changes"], "config_version": out["config_version"]})


# ---- request size ------------------------------------------------------------------------
SIZE_FIELDS = ("enabled", "max_request_size", "max_json_size", "max_form_size", "max_streaming_size", "check_async",
               "async_validation", "enable_streaming", "chunk_size", "progressive_limits")
PROGRESSIVE = {"json": "max_json_size", "form": "max_form_size", "file": "max_request_size",
               "streaming": "max_streaming_size"}


async def size_optimize(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    body = await _body(request, SIZE_FIELDS)
    changes = {k: v for k, v in body.items() if k not in ("async_validation", "progressive_limits")}
    names = {}
    if "async_validation" in body:
        if "check_async" in body:
            raise validation_error("async_validation", "give check_async or async_validation, not both")
        changes["check_async"] = body["async_validation"]
        names["check_async"] = "async_validation"
    if "progressive_limits" in body:
        pl = body["progressive_limits"]
        if not isinstance(pl, dict):
            raise validation_error("progressive_limits", "must be an object of json, form, file, streaming -> bytes")
        for k, v in pl.items():
            if k not in PROGRESSIVE:
                raise validation_error(f"progressive_limits.{k}", f"unknown content class; use {sorted(PROGRESSIVE)}")
            field = PROGRESSIVE[k]
            if field in changes:
                raise validation_error(f"progressive_limits.{k}", f"also given as {field}")
            changes[field] = v
            names[field] = f"progressive_limits.{k}"
    out = await _apply(request, "request_size", changes, names, "api:request-size/optimize")
    return json_response(out)


async def size_stats(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    rs = ctx.extras["request_size"]
    return json_response({"by_content_class": rs.stats(), "rejected_while_streaming": rs.rejected_streaming,
                          "checked_before_handler": dict(rs.checked), "config": ctx.store.get("request_size")})


def _plan_size(ctx):
    rs = ctx.extras["request_size"]
    changes, applied, reason = advisor.plan_request_size(rs, ctx.store.get("request_size"))
    return changes, applied, reason, rs.stats()


async def size_auto(request: web.Request) -> web.Response:
    return await _auto(request, "request_size", _plan_size)


# ---- versioning ----------------------------------------------------------------------------
VERSION_FIELDS = ("enabled", "supported_versions", "default_version", "detection_strategy", "fallback_enabled",
                  "enable_caching", "cache_size", "cache_ttl", "metrics_enabled", "fast_path_versions",
                  "deprecated_versions", "query_param")


def _version(v, field: str) -> str:
    if not isinstance(v, str) or normalize(v) is None:
        raise validation_error(field, "must be a version like v1 or v2.1")
    return normalize(v)[0]


async def versioning_optimize(request: web.Request) -> web.Response:
    body = await _body(request, VERSION_FIELDS)
    for field in ("supported_versions", "fast_path_versions"):
        if field in body:
            if not isinstance(body[field], list) or not body[field] and field == "supported_versions":
                raise validation_error(field, "must be a non-empty list of versions")
            body[field] = [_version(v, f"{field}[{i}]") for i, v in enumerate(body[field])]
    if "default_version" in body:
        body["default_version"] = _version(body["default_version"], "default_version")
    if "deprecated_versions" in body:
        dv = body["deprecated_versions"]
        if not isinstance(dv, dict):
            raise validation_error("deprecated_versions", "must be an object of version -> sunset date (YYYY-MM-DD)")
        body["deprecated_versions"] = {_version(k, f"deprecated_versions.{k}"): v for k, v in dv.items()}
    # the store checks the rest: sunset dates, the query parameter, default_version in supported_versions
    out = await _apply(request, "versioning", body, {}, "api:versioning/optimize")
    return json_response(out)


def _plan_versioning(ctx):
    st = ctx.extras["versioning"].stats()
    changes, applied, reason = advisor.plan_versioning(st, ctx.store.get("versioning"))
    return changes, applied, reason, st


async def versioning_auto(request: web.Request) -> web.Response:
    return await _auto(request, "versioning", _plan_versioning)


def register(app: web.Application, ctx) -> None:
    r = app.router
    r.add_get(P, overview)
    r.add_get(f"{P}/stack/performance", stack_performance)
    r.add_post(f"{P}/stack/reset-stats", reset_stats)
    r.add_post(f"{P}/compression/optimize", compression_optimize)
    r.add_get(f"{P}/compression/stats", _stats("compression"))
    r.add_post(f"{P}/compression/auto-optimize", compression_auto)
    r.add_post(f"{P}/rate-limiting/optimize", rate_optimize)
    r.add_post(f"{P}/rate-limiting/auto-optimize", rate_auto)
    r.add_get(f"{P}/rate-limiting/performance", rate_performance)
    r.add_post(f"{P}/request-size/optimize", size_optimize)
    r.add_get(f"{P}/request-size/stats", size_stats)
    r.add_post(f"{P}/request-size/auto-optimize", size_auto)
    r.add_post(f"{P}/versioning/optimize", versioning_optimize)
    r.add_get(f"{P}/versioning/stats", _stats("versioning"))
    r.add_post(f"{P}/versioning/auto-optimize", versioning_auto)
    r.add_get(f"{M}/compression-metrics", monitoring_compression)
    r.add_get(f"{M}/rate-limiting-performance", monitoring_rate)
    r.add_get(f"{M}/middleware-performance", monitoring_middleware_performance)
    r.add_post(f"{M}/enable-throttling", enable_throttling)
