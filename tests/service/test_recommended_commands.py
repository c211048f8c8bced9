"""Every command the service recommends runs as written: each one, sent to the service, succeeds.

The recommenders are driven into every branch that carries a command
(performance-report's opportunities, the cache's recommendations, the
middleware advisor, system-load's advice); then each command is sent exactly
as recommended (method, path, body) and must answer 2xx.
"""
from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

from bench.fill import fill
from service.cache.analytics import recommendations as cache_recommendations
from service.context import CTX
from service.middleware import advisor
from service.monitoring import report

TEXT_COMMAND = re.compile(r"\b(GET|POST) (/internal/[\w/.-]+)(?: (\{.*?\}))?")


def _report_commands(store, monkeypatch) -> list[dict]:
    """opportunities() with every condition met (its inputs stubbed), caching on and then off."""
    totals = {"cache_hit_ratio": 0.1, "cache_hits": 1, "cache_misses": 9, "error_rate": 0.5, "requests": 100,
              "errors_5xx": 50, "ai_p95_ms": 120_000, "ai_calls": 10, "shed": 5, "cpu_percent": 99.0,
              "memory_percent": 99.0, "loop_lag_max_ms": 500}
    monkeypatch.setattr(report.S, "totals", lambda agg: totals)
    monkeypatch.setattr(report, "slow_endpoints", lambda *a, **k: {"slow_endpoints": [
        {"endpoint": "POST /v1/text/summarize", "p95_ms": 9000, "p99_ms": 9500, "requests": 50}]})
    monkeypatch.setattr(report, "bottlenecks", lambda *a, **k: {
        "categories": [{"category": "validation", "share_of_request_time": 0.9, "per_request_ms": 5, "spans": [],
                        "total_ms": 500}], "api_request_time_ms": 600})
    th = report.thresholds(store)
    trend = {"leak_suspected": True, "trend": {"slope_mb_per_hour": 50}}
    cmds = []
    for mon in ({"validation_mode": "strict", "memory_tracing": True},
                {"enable_caching": False, "enable_compression": False}):
        cfg = dict(store.get("monitoring"), **mon)
        fake = SimpleNamespace(get=lambda name, cfg=cfg: cfg if name == "monitoring" else store.get(name),
                               sections=store.sections)
        opps = report.opportunities({}, th, fake, trend, {"approx_bytes": 64 * 2 ** 20})
        cmds += [o["action"] for o in opps if o["action"]]
    return cmds


def _cache_commands(cache) -> list[dict]:
    """The cache's recommendations with every measured cause present."""
    fill(cache, 40, expired_share=1.0)  # entries waiting for eviction: auto cleanup is advised
    st = cache.stats
    st.cell("summarize", "small")[2] = 1000  # misses
    st.cell("summarize", "small")[0] = 10  # memory hits
    st.capacity_misses, st.expired_misses, st.popular_expired_misses = 300, 400, 10
    st.normalization_misses = 100
    st.sets, st.set_bytes = 100, 100 * 8192
    st.started = time.time() - 7200
    cache.store.values["cache"] = dict(cache.store.get("cache"), compression_threshold_mb=1.0, max_memory_mb=0.05,
                                       max_entries=1)
    try:
        recs = cache_recommendations(cache)
    finally:
        cache.store.values["cache"] = dict(cache.store.seed["cache"])
    return [{"method": "POST", "path": r["action"]["endpoint"], "body": r["action"]["body"]}
            for r in recs if r["action"]]


def _advisor_commands(store) -> list[dict]:
    snap = {"samples": 3, "sample_every": 64,
            "breakdown": {n: {"avg_ms": 99.0} for n in ("compression", "rate_limit", "versioning", "request_size",
                                                       "security")}}
    ctx = SimpleNamespace(store=store, ratelimiter=None, extras={
        "compression": SimpleNamespace(stats=lambda: {"cpu_overhead_percentage": 50}),
        "versioning": SimpleNamespace(stats=lambda: {"cache": {"hits": 1, "misses": 500, "hit_ratio": 0.002}})})
    out = []
    for r in advisor.recommendations(ctx, snap):
        method, path = r["endpoint"].split(" ", 1)
        out.append({"method": method, "path": path, "body": r.get("body")})
    return out


async def _run(client, cmd: dict) -> int:
    kw = {} if cmd.get("body") is None else {"data": json.dumps(cmd["body"]),
                                               "headers": {"Content-Type": "application/json"}}
    r = await client.request(cmd["method"], cmd["path"], **kw)
    await r.read()
    return r.status


async def test_every_recommended_command_runs_as_written(make_client, monkeypatch):
    client = await make_client()
    ctx = client.server.app[CTX]
    cmds = _cache_commands(ctx.cache) + _advisor_commands(ctx.store)
    with monkeypatch.context() as m:
        cmds += _report_commands(ctx.store, m)
    # advice given as text names its command in the same words
    load = await (await client.get("/internal/monitoring/system-load")).json()
    texts = list(load.get("recommendations", [])) + [
        'POST /internal/monitoring/emergency-mode {"enabled": true} to shed load and tighten timeouts']
    for text in texts:
        for method, path, body in TEXT_COMMAND.findall(text):
            cmds.append({"method": method, "path": path, "body": json.loads(body) if body else None})
    paths = {c["path"] for c in cmds}
    # every recommender contributed (the stubs reached the branches that carry commands)
    assert {"/internal/cache/optimize-memory", "/internal/cache/configure-size", "/internal/cache/configure-ttl",
            "/internal/cache/enable-warming", "/internal/cache/optimize-keys", "/internal/cache/enable-auto-cleanup",
            "/internal/config/middleware", "/internal/middleware/compression/auto-optimize",
            "/internal/monitoring/optimize", "/internal/monitoring/configure", "/internal/ai/configure-batching",
            "/internal/monitoring/memory-hotspots", "/internal/monitoring/emergency-mode"} <= paths, paths
    failed = []
    for cmd in cmds:
        status = await _run(client, cmd)
        if not 200 <= status < 300:
            failed.append((status, cmd))
    await client.post("/internal/monitoring/memory-hotspots", json={"enabled": False})
    assert failed == []
