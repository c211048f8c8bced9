"""/internal/ai tuning and GET /internal/monitoring/ai-performance.

optimize-performance changes the "ai" section (deadline, retries, batching
switch, connection pooling); configure-batching changes ai.batch_processing
and the "batching" section in one atomic update.  ai-performance is computed
from what the resilience layer measured.
"""
from __future__ import annotations

import time

from aiohttp import web

from exporter.kpis import BY_KEY
from service.config.schema import ConfigValidationError
from service.context import CTX
from service.http import json_response, only, read_object
from service.internal.audit import actor
from service.monitoring import report
from service.resilience.analysis import RECENT_SECONDS, latency_summary, op_metrics

AI_FIELDS = ("timeout_seconds", "max_retries", "batch_processing", "connection_pooling", "max_connections",
             "keepalive_connections", "pool_timeout")
BATCH_FIELDS = ("enable_batching", "batch_size", "batch_timeout_ms", "max_concurrent_batches")
AI_KPI = BY_KEY["ai_response_time_p95"]


async def optimize_performance(request: web.Request) -> web.Response:
    """Set AI deadline, retries, batching switch and connection pooling."""
    ctx = request.app[CTX]
    body = await read_object(request, allow_empty=False)
    only(body, AI_FIELDS)
    entry = await ctx.store.update("ai", body, source="api:/internal/ai/optimize-performance",
                                   **actor(request))
    ai = ctx.store.get("ai")
    return json_response({"status": "applied", "changes": entry["changes"], "previous": entry.get("previous", {}),
                          "settings": {k: ai[k] for k in AI_FIELDS},
                          "effective": {op: ctx.resilience.effective(op).as_dict()
                                        for op in ("summarize", "sentiment", "key_points", "questions", "qa")}})


async def configure_batching(request: web.Request) -> web.Response:
    """Switch micro-batching and set batch size, wait and concurrent batches."""
    ctx = request.app[CTX]
    body = await read_object(request, allow_empty=False)
    only(body, BATCH_FIELDS)
    changes: dict[str, dict] = {}
    if "enable_batching" in body:
        changes["ai"] = {"batch_processing": body["enable_batching"]}
    rest = {k: v for k, v in body.items() if k != "enable_batching"}
    if rest:
        changes["batching"] = rest
    try:
        entries = await ctx.store.update_many(changes, source="api:/internal/ai/configure-batching",
                                               **actor(request))
    except ConfigValidationError as e:
        raise e.renamed({"batch_processing": "enable_batching"}) from None
    cfg = ctx.store.get("batching")
    return json_response({"status": "applied", "changes": {e["section"]: e["changes"] for e in entries},
                          "settings": {"enable_batching": ctx.store.get("ai")["batch_processing"], **cfg},
                          "upstream_concurrency_bound": cfg["batch_size"] * cfg["max_concurrent_batches"],
                          "batching": ctx.resilience.batcher.stats()})


def ai_performance(ctx) -> dict:
    res = ctx.resilience
    st = res.stats
    since = time.time() - RECENT_SECONDS
    ai = ctx.store.get("ai")
    ops = {op: op_metrics(s, since) for op, s in st.ops.items()}
    attempts = [a[1] for s in st.ops.values() for a in s.recent_attempts if a[0] >= since and a[2]]
    calls = sum(s.calls for s in st.ops.values())
    ok = sum(s.successes for s in st.ops.values())
    att_n = sum(s.attempts for s in st.ops.values())
    errs: dict[str, int] = {}
    tokens = {"prompt": 0, "completion": 0, "total": 0}
    for s in st.ops.values():
        for k, v in s.attempt_errors.items():
            errs[k] = errs.get(k, 0) + v
        for k in tokens:
            tokens[k] += s.tokens[k]
    lat = latency_summary(attempts)
    kpi = _kpi(ctx, lat["p95_ms"])
    provider = ctx.providers.current
    info = {"name": provider.name, "model": provider.model}
    pool = getattr(provider, "pool_info", None)
    findings = []
    if pool is not None:
        info["pool"] = pool()
        found = pool_bottleneck(info["pool"], [a[1] for s in st.ops.values() for a in s.recent_attempts
                                                if a[0] >= since])
        if found:
            findings.append(found)
    return {
        "timestamp": time.time(), "window_seconds": RECENT_SECONDS, "provider": info,
        "summary": {"calls": calls, "successes": ok, "success_rate": round(ok / calls, 6) if calls else None,
                    "attempts": att_n, "error_rate": round(sum(errs.values()) / att_n, 6) if att_n else None,
                    "errors_by_kind": errs, "tokens": tokens,
                    "retries": sum(s.retries for s in st.ops.values()),
                    "in_flight": st.in_flight, "max_in_flight": st.max_in_flight,
                    "response_time": lat},
        "kpi": kpi,
        "operations": ops,
        "settings": {k: ai[k] for k in AI_FIELDS},
        "batching": res.batcher.stats(),
        "circuit_breakers": {n: b.state for n, b in res.breakers.items()},
        "findings": findings,
    }


def pool_bottleneck(pool: dict, recent_attempt_seconds: list) -> dict | None:
    """The pool named when recent AI attempts (ok or failed) waited for a connection a large share of their time."""
    recent = pool.get("recent") or {}
    spent = sum(recent_attempt_seconds)
    waited = recent.get("wait_total_s", 0.0)
    if not spent or waited / spent < report.POOL_SHARE:
        return None
    return {"kind": "connection_pool", "share_of_ai_time": round(waited / spent, 6),
            "message": f"the upstream connection pool is where the time goes: {round(waited / spent * 100, 1)}% of "
                       f"AI call time in the last {int(recent['window_seconds'])} s was spent waiting for one of "
                       f"{pool['max_connections']} connections (up to {pool['max_waiting']} requests queued); "
                       "raise ai.max_connections",
            "action": {"method": "POST", "path": "/internal/ai/optimize-performance",
                       "body": {"max_connections": pool["max_connections"] * 2}}}


def _kpi(ctx, p95_ms: float | None) -> dict:
    """The catalog's KPI (exporter/kpis.py) at the live thresholds of the "alerts" section."""
    k = AI_KPI
    th = report.thresholds(ctx.store)[k.key]
    status = k.status(None if p95_ms is None else p95_ms / 1000, th["target"], th["critical"])
    return {"name": k.title, "value_ms": p95_ms, "status": status or "no_data",
            "thresholds_ms": {lvl: round(v * 1000, 3) for lvl, v in th.items()}}


async def get_ai_performance(request: web.Request) -> web.Response:
    """Measured AI service performance: latency quantiles, errors, tokens, KPI status."""
    return json_response(ai_performance(request.app[CTX]))


def register(app: web.Application, ctx) -> None:
    app.router.add_post("/internal/ai/optimize-performance", optimize_performance)
    app.router.add_post("/internal/ai/configure-batching", configure_batching)
    app.router.add_get("/internal/monitoring/ai-performance", get_ai_performance)
