"""Analyses behind /internal/monitoring: all computed from merged snapshots.

Every function takes a merged snapshot (service/monitoring/snapshot.py:merge)
of the window asked for, plus what it needs from the live process.
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timezone

from exporter import kpis
from service.monitoring import snapshot as S
from service.monitoring.analytics import SIZE_LABELS, merge_route, route_summary, size_summary

TEXT_PREFIX = kpis.API_ROUTE_PREFIX

# span name prefix -> where the time goes
CATEGORIES = {"middleware": "middleware", "ratelimit": "middleware", "compression": "middleware",
              "auth": "middleware", "security": "middleware", "versioning": "middleware",
              "request_size": "middleware", "cache": "cache", "redis": "cache", "ai": "ai_service",
              "provider": "ai_service", "resilience": "resilience", "breaker": "resilience",
              "serialization": "serialization", "json": "serialization", "render": "serialization",
              "validation": "validation", "admission": "queueing"}
# a composite span is the sum of the spans inside it plus a remainder: counted through them
COMPOSITE = {"cache.compute": ("ai.call",)}  # the miss path: AI call + rendering the answer
# a part is measured inside a parent span that is counted itself
PARTS = {"cache.l2_get": "cache.lookup", "ai.pool_wait": "ai.call"}
POOL_SHARE = 0.2  # pool wait at least this share of AI call time: the pool is where the time goes
BACKGROUND = frozenset({"cache.warm"})  # not part of any request's time
SAMPLED = frozenset({"middleware.stack"})  # recorded for 1 request in middleware.sample_every


def thresholds(store) -> dict:
    return kpis.thresholds_from_config(store.get("alerts") if "alerts" in store.sections else {})


def split_key(key: str) -> tuple[str, str]:
    method, _, route = key.partition(" ")
    return method, route


def is_api(route: str) -> bool:
    """API traffic, as the catalog defines it (exporter/kpis.py: the /v1/text routes)."""
    return kpis.is_api_route(route)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def coverage(agg: dict, seconds: float, resolution: str) -> dict:
    return {"requested_hours": round(seconds / 3600, 4), "covered_hours": round(agg["seconds"] / 3600, 4),
            "from": _iso(agg["start"]) if agg["start"] else None, "to": _iso(agg["ts"]) if agg["ts"] else None,
            "snapshots": agg.get("count", 0), "resolution": resolution}


# ---- slow endpoints --------------------------------------------------------
def slow_endpoints(agg: dict, th: dict, limit: int, scope: str, min_requests: int) -> dict:
    threshold_ms = th["api_response_time_p95"]["target"] * 1000
    critical_ms = th["api_response_time_p95"]["critical"] * 1000
    rows = []
    for key, r in agg["routes"].items():
        method, route = split_key(key)
        if scope == "api" and not is_api(route):
            continue
        if r["n"] < min_requests:
            continue
        s = route_summary(r, agg["seconds"] or None)
        p95 = s["p95_ms"] or 0.0
        s.update(endpoint=key, method=method, route=route, kind="api" if is_api(route) else "operational",
                 status_level="critical" if p95 > critical_ms else "slow" if p95 > threshold_ms else "ok",
                 slow=p95 > threshold_ms)
        rows.append(s)
    rows.sort(key=lambda x: (x["p95_ms"] or 0.0, x["p99_ms"] or 0.0), reverse=True)
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return {"ranked_by": ["p95_ms", "p99_ms"], "threshold_ms": threshold_ms, "critical_ms": critical_ms,
            "scope": scope, "total_endpoints": len(rows), "slow_count": sum(1 for r in rows if r["slow"]),
            "slowest": rows[0]["endpoint"] if rows else None,
            "slow_endpoints": [r for r in rows if r["slow"]][:limit], "endpoints": rows[:limit]}


# ---- request patterns ------------------------------------------------------
def request_patterns(agg: dict, snaps: list[dict], live: dict | None) -> dict:
    secs = agg["seconds"] or 0.0
    total = sum(r["n"] for r in agg["routes"].values())
    routes = []
    for key, r in sorted(agg["routes"].items(), key=lambda kv: -kv[1]["n"]):
        method, route = split_key(key)
        routes.append({"endpoint": key, "method": method, "route": route, "requests": r["n"],
                       "share": round(r["n"] / total, 6) if total else 0.0,
                       "requests_per_minute": round(r["n"] / secs * 60, 4) if secs else 0.0,
                       "avg_request_bytes": round(r["req_sum"] / r["req_n"], 1) if r["req_n"] else None,
                       "avg_response_bytes": round(r["resp_sum"] / r["resp_n"], 1) if r["resp_n"] else None})
    # operations: named by the route (/v1/text/<op>) or recorded by the handler (process, batch)
    ops = dict(agg["ops"])
    for key, r in agg["routes"].items():
        _, route = split_key(key)
        if route.startswith(TEXT_PREFIX):
            op = route[len(TEXT_PREFIX):]
            if op not in ("process", "batch", "operations") and "{" not in op:
                ops[op] = ops.get(op, 0) + r["n"]
    op_total = sum(ops.values())
    operations = [{"operation": k, "requests": v, "share": round(v / op_total, 6) if op_total else 0.0,
                   "requests_per_minute": round(v / secs * 60, 4) if secs else 0.0}
                  for k, v in sorted(ops.items(), key=lambda kv: -kv[1])]
    # hours: each snapshot's requests land in the UTC hour it started in
    by_hour: dict[int, int] = {}
    timeline: dict[int, int] = {}
    for s in snaps + ([live] if live and live.get("seconds") else []):
        n = sum(r["n"] for r in s["routes"].values())
        h = int(s["start"] // 3600 * 3600)
        timeline[h] = timeline.get(h, 0) + n
        hod = datetime.fromtimestamp(s["start"], timezone.utc).hour
        by_hour[hod] = by_hour.get(hod, 0) + n
    peak = sorted(by_hour.items(), key=lambda kv: -kv[1])[:3]
    status_codes: dict[str, int] = {}
    methods: dict[str, int] = {}
    req_all: dict = {}
    for key, r in agg["routes"].items():
        merge_route(req_all, r)
        m, _ = split_key(key)
        methods[m] = methods.get(m, 0) + r["n"]
    for code, c in req_all.get("status", {}).items():
        status_codes[code] = c
    classes: dict[str, int] = {}
    for code, c in status_codes.items():
        cls = f"{code[0]}xx" if code[:1].isdigit() else "other"
        classes[cls] = classes.get(cls, 0) + c
    return {
        "total_requests": total, "requests_per_second": round(total / secs, 4) if secs else 0.0,
        "requests_per_minute": round(total / secs * 60, 4) if secs else 0.0,
        "routes": routes, "operations": operations, "methods": methods,
        "peak_hours": [{"hour_utc": f"{h:02d}:00", "requests": c, "share": round(c / total, 6) if total else 0.0}
                       for h, c in peak if c],
        "hourly": [{"hour_start": _iso(h), "requests": c} for h, c in sorted(timeline.items())],
        "payload_sizes": {
            "request": size_summary(req_all.get("req", {}), req_all.get("req_n", 0), req_all.get("req_sum", 0)),
            "response": size_summary(req_all.get("resp", {}), req_all.get("resp_n", 0), req_all.get("resp_sum", 0)),
            "buckets": list(SIZE_LABELS)},
        "status_mix": {"classes": {k: {"requests": v, "share": round(v / total, 6) if total else 0.0}
                                   for k, v in sorted(classes.items())},
                       "by_code": dict(sorted(status_codes.items()))},
    }


# ---- bottlenecks -----------------------------------------------------------
def _category(name: str) -> str:
    head = name.split(".", 1)[0].lower()
    return CATEGORIES.get(head, head)


def _span_rows(agg: dict, sample_every: int) -> list[dict]:
    """One row per span: measured, sampled spans scaled up, nested ones marked, serialization derived."""
    rows = {}
    for name, (count, total, mx) in agg["spans"].items():
        row = {"span": name, "category": _category(name), "calls": count, "total_s": total,
               "avg_ms": round(total / count * 1000, 4) if count else 0.0, "max_ms": round(mx * 1000, 3)}
        if name in SAMPLED and sample_every > 1:
            row.update(total_s=total * sample_every, sampled_1_in=sample_every, estimated=True)
        if name in BACKGROUND:
            row["background"] = True
        if PARTS.get(name) in agg["spans"]:
            row["inside"] = PARTS[name]
        inner = [c for c in COMPOSITE.get(name, ()) if c in agg["spans"]]
        if inner:
            row["contains"] = inner
        rows[name] = row
    comp, ai = agg["spans"].get("cache.compute"), agg["spans"].get("ai.call")
    if comp and ai and comp[1] >= ai[1]:
        # the miss path is the AI call plus rendering the answer: what is left is serialization
        rows["serialization"] = {"span": "serialization", "category": "serialization", "calls": comp[0],
                                 "total_s": comp[1] - ai[1], "avg_ms": round((comp[1] - ai[1]) / comp[0] * 1000, 4),
                                 "max_ms": None, "derived": "cache.compute - ai.call"}
        rows["cache.compute"]["contains"] = ["ai.call", "serialization"]
    return list(rows.values())


def pool_finding(spans: dict) -> dict | None:
    """A finding naming the upstream connection pool when waiting for it is a large part of AI call time."""
    wait, call = spans.get("ai.pool_wait"), spans.get("ai.call")
    if not wait or not call or call[1] <= 0 or wait[1] / call[1] < POOL_SHARE:
        return None
    share = wait[1] / call[1]
    return {"kind": "connection_pool", "category": "ai_service", "share_of_ai_time": round(share, 6),
            "wait_avg_ms": round(wait[1] / wait[0] * 1000, 3) if wait[0] else None,
            "message": f"the upstream connection pool: AI calls spent {round(share * 100, 1)}% of their time "
                       "waiting for a connection; raise ai.max_connections (POST /internal/ai/optimize-performance)",
            "action": {"method": "POST", "path": "/internal/ai/optimize-performance", "field": "max_connections"}}


def bottlenecks(agg: dict, th: dict, sample_every: int = 1) -> dict:
    api = {k: r for k, r in agg["routes"].items() if is_api(split_key(k)[1])}
    api_n = sum(r["n"] for r in api.values())
    api_time = sum(r["sum"] for r in api.values())
    components = []
    cats: dict[str, dict] = {}
    for row in _span_rows(agg, sample_every):
        total = row.pop("total_s")
        row.update(total_ms=round(total * 1000, 3),
                   share_of_request_time=round(total / api_time, 6) if api_time else None,
                   per_request_ms=round(total / api_n * 1000, 4) if api_n else None)
        components.append(row)
        if row.get("background") or row.get("contains") or row.get("inside"):
            continue  # not request time, or counted through the spans it contains / the span it is part of
        c = cats.setdefault(row["category"], {"category": row["category"], "total_ms": 0.0, "calls": 0, "spans": []})
        c["total_ms"] += total * 1000
        c["calls"] += row["calls"]
        c["spans"].append(row["span"])
    components.sort(key=lambda x: -x["total_ms"])
    categories = sorted(cats.values(), key=lambda c: -c["total_ms"])
    for c in categories:
        c["total_ms"] = round(c["total_ms"], 3)
        c["share_of_request_time"] = round(c["total_ms"] / 1000 / api_time, 6) if api_time else None
        c["per_request_ms"] = round(c["total_ms"] / api_n, 4) if api_n else None
    top = categories[0] if categories else None
    threshold_ms = th["api_response_time_p95"]["target"] * 1000
    slow = slow_endpoints({"routes": api, "seconds": agg["seconds"]}, th, 3, "api", 1)["endpoints"]
    t = S.totals(agg)
    signals = {"event_loop_lag_max_ms": t["loop_lag_max_ms"], "cpu_percent": t["cpu_percent"],
               "cpu_percent_max": t["cpu_percent_max"], "requests_shed": t["shed"],
               "admission_queue_peak": agg["admission"]["max_queue"], "ai_p95_ms": t["ai_p95_ms"],
               "cache_hit_ratio": t["cache_hit_ratio"]}
    findings = []
    if top and top["share_of_request_time"] and top["share_of_request_time"] >= 0.2:
        findings.append({"kind": "time_share", "category": top["category"],
                         "message": f"{top['category']} takes {round(top['share_of_request_time'] * 100, 1)}% "
                                    f"of API request time ({top['per_request_ms']} ms per request)"})
    for r in slow:
        if r["p95_ms"] and r["p95_ms"] > threshold_ms:
            findings.append({"kind": "slow_endpoint", "endpoint": r["endpoint"],
                             "message": f"{r['endpoint']} p95 {r['p95_ms']} ms exceeds {threshold_ms:g} ms"})
    pool = pool_finding(agg["spans"])
    if pool:
        findings.append(pool)
    if t["loop_lag_max_ms"] > 100:
        findings.append({"kind": "event_loop_lag", "message": f"event loop stalled up to {t['loop_lag_max_ms']} ms: "
                                                              "blocking work on the loop"})
    if t["shed"]:
        findings.append({"kind": "load_shedding", "message": f"{t['shed']} requests shed by admission control"})
    cpu_target = th["cpu_usage"]["target"] * 100
    if t["cpu_percent_max"] and t["cpu_percent_max"] > cpu_target:
        findings.append({"kind": "cpu", "message": f"CPU peaked at {t['cpu_percent_max']}% of the available cores"})
    return {"api_requests": api_n, "api_request_time_ms": round(api_time * 1000, 3),
            "avg_request_ms": round(api_time / api_n * 1000, 4) if api_n else None,
            "top_bottleneck": top["category"] if top else None,
            "categories": categories, "components": components,
            "unattributed_ms": round(max(0.0, api_time * 1000 - sum(c["total_ms"] for c in categories)), 3)
            if categories else None,
            "slowest_endpoints": slow, "signals": signals, "findings": findings,
            "note": "spans are measured by the subsystems (service/spans.py); a span that contains others "
                    "(cache.compute) counts through them, sampled ones (middleware.stack) are scaled up"}


# ---- trends ------------------------------------------------------------------
def linear_trend(points: list[tuple[float, float]]) -> dict:
    """Least-squares slope (per hour) and r^2 of (epoch seconds, value) points."""
    n = len(points)
    if n < 2:
        return {"slope_per_hour": None, "r_squared": None, "samples": n}
    xs = [(x - points[0][0]) / 3600 for x, _ in points]
    ys = [y for _, y in points]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    if sxx == 0:
        return {"slope_per_hour": None, "r_squared": None, "samples": n}
    slope = sxy / sxx
    r2 = (sxy * sxy) / (sxx * syy) if syy else 1.0
    return {"slope_per_hour": slope, "r_squared": round(r2, 4), "samples": n}


def memory_trends(snaps: list[dict], hours: float, live: dict | None) -> dict:
    series = []
    for s in snaps + ([live] if live else []):
        m = s["mem"]
        if not m.get("samples"):
            continue
        series.append({"timestamp": _iso(s["ts"]), "ts": s["ts"], "rss_mb": round(m["rss"] / 2 ** 20, 3),
                       "rss_max_mb": round(m["rss_max"] / 2 ** 20, 3),
                       "memory_percent": round(m["rss"] / m["limit"] * 100, 3) if m.get("limit") else None,
                       "tracemalloc_mb": round(m["tracemalloc"] / 2 ** 20, 3) if m.get("tracemalloc") else None,
                       "cache_memory_mb": round(s["cache"].get("memory_bytes", 0) / 2 ** 20, 3)})
    tr = linear_trend([(p["ts"], p["rss_mb"]) for p in series])
    slope = tr["slope_per_hour"]
    avg = sum(p["rss_mb"] for p in series) / len(series) if series else 0.0
    span_h = (series[-1]["ts"] - series[0]["ts"]) / 3600 if len(series) > 1 else 0.0
    growth = series[-1]["rss_mb"] - series[0]["rss_mb"] if len(series) > 1 else 0.0
    leak = bool(slope is not None and tr["samples"] >= 5 and tr["r_squared"] is not None and tr["r_squared"] >= 0.7
                and span_h >= 0.25 and slope > max(1.0, 0.02 * avg) and growth > 1.0)
    direction = ("unknown" if slope is None or span_h < 0.25 else "growing" if slope > max(0.5, 0.01 * avg)
                 else "shrinking" if slope < -max(0.5, 0.01 * avg) else "stable")
    return {"hours": hours, "samples": len(series), "span_hours": round(span_h, 4),
            "current_rss_mb": series[-1]["rss_mb"] if series else None,
            "min_rss_mb": min((p["rss_mb"] for p in series), default=None),
            "max_rss_mb": max((p["rss_max_mb"] for p in series), default=None),
            "growth_mb": round(growth, 3),
            "trend": {"direction": direction,
                      "slope_mb_per_hour": None if slope is None else round(slope, 4),
                      "r_squared": tr["r_squared"]},
            "leak_suspected": leak,
            "verdict": ("steady growth: a leak is likely; enable memory tracing and read memory-hotspots"
                        if leak else "not enough data yet (5 samples over 15 minutes)"
                        if len(series) < 5 or span_h < 0.25 else "no leak pattern"),
            "series": [{k: v for k, v in p.items() if k != "ts"} for p in series]}


def _direction(first, last, lower_is_better: bool) -> str:
    if first is None or last is None:
        return "unknown"
    if first == 0:
        return "stable" if last == 0 else ("degrading" if lower_is_better else "improving")
    ch = (last - first) / abs(first)
    if abs(ch) < 0.1:
        return "stable"
    return ("degrading" if ch > 0 else "improving") if lower_is_better else ("improving" if ch > 0 else "degrading")


def performance_trends(snaps: list[dict], days: float) -> dict:
    step = 86400 if days >= 2 else 3600
    groups: dict[int, list] = {}
    for s in snaps:
        groups.setdefault(int(s["start"] // step * step), []).append(s)
    points = []
    for b in sorted(groups):
        t = S.totals(S.merge(groups[b]))
        points.append({"period_start": _iso(b), "requests": t["requests"],
                       "requests_per_second": t["requests_per_second"], "p95_ms": t["p95_ms"],
                       "avg_ms": t["avg_ms"], "error_rate": t["error_rate"], "cache_hit_ratio": t["cache_hit_ratio"],
                       "memory_percent": t["memory_percent"], "cpu_percent": t["cpu_percent"],
                       "ai_p95_ms": t["ai_p95_ms"], "shed": t["shed"]})
    summary = {}
    half = len(points) // 2
    for field, lower in (("p95_ms", True), ("error_rate", True), ("requests_per_second", False),
                         ("cache_hit_ratio", False), ("memory_percent", True), ("cpu_percent", True),
                         ("ai_p95_ms", True)):
        vals = [p[field] for p in points if p[field] is not None]
        if len(points) >= 2 and half:
            a = [p[field] for p in points[:half] if p[field] is not None]
            b = [p[field] for p in points[half:] if p[field] is not None]
            first = sum(a) / len(a) if a else None
            last = sum(b) / len(b) if b else None
        else:
            first = last = vals[0] if vals else None
        summary[field] = {"first_half": None if first is None else round(first, 6),
                          "second_half": None if last is None else round(last, 6),
                          "direction": _direction(first, last, lower) if len(points) >= 2 else "unknown"}
    return {"resolution": "day" if step == 86400 else "hour", "points": points, "summary": summary}


# ---- opportunities -----------------------------------------------------------
def opportunities(agg: dict, th: dict, store, mem_trend: dict | None, history_stats: dict | None,
                  sample_every: int = 1) -> list[dict]:
    t = S.totals(agg)
    cfg = store.get("monitoring")
    out = []

    def add(oid, area, severity, finding, recommendation, evidence, action=None):
        out.append({"id": oid, "area": area, "severity": severity, "finding": finding,
                    "recommendation": recommendation, "evidence": evidence, "action": action})

    p95_t = th["api_response_time_p95"]["target"] * 1000
    p95_c = th["api_response_time_p95"]["critical"] * 1000
    slow = slow_endpoints(agg, th, 5, "api", 1)
    for r in slow["slow_endpoints"]:
        add(f"slow_endpoint:{r['endpoint']}", "latency", "critical" if r["p95_ms"] > p95_c else "warning",
            f"{r['endpoint']} p95 is {r['p95_ms']} ms (target {p95_t:g} ms)",
            "look at bottlenecks for where its time goes; cache or batch its AI calls",
            {"p95_ms": r["p95_ms"], "p99_ms": r["p99_ms"], "requests": r["requests"]},
            {"method": "GET", "path": "/internal/monitoring/bottlenecks"})
    ratio = t["cache_hit_ratio"]
    if not cfg["enable_caching"]:
        add("enable_caching", "cache", "warning", "response caching is switched off",
            "switch caching back on", {"enable_caching": False},
            {"method": "POST", "path": "/internal/monitoring/optimize", "body": {"enable_caching": True}})
    elif ratio is not None and ratio < th["cache_hit_ratio"]["target"]:
        add("cache_hit_ratio", "cache", "critical" if ratio < th["cache_hit_ratio"]["critical"] else "warning",
            f"cache hit ratio {round(ratio * 100, 1)}% is below the {th['cache_hit_ratio']['target'] * 100:g}% target",
            "normalise keys and lengthen TTLs for popular operations (adaptive TTL), warm hot keys",
            {"hits": t["cache_hits"], "misses": t["cache_misses"]},
            {"method": "GET", "path": "/internal/cache/optimization-recommendations"})
    if t["error_rate"] > th["error_rate"]["target"] and t["requests"]:
        add("error_rate", "reliability", "critical" if t["error_rate"] > th["error_rate"]["critical"] else "warning",
            f"{round(t['error_rate'] * 100, 2)}% of requests failed with 5xx",
            "check the AI upstream and breakers; fallbacks answer from the cache",
            {"errors_5xx": t["errors_5xx"], "requests": t["requests"]},
            {"method": "GET", "path": "/internal/resilience/performance-metrics"})
    ai_p95 = t["ai_p95_ms"]
    if ai_p95 is not None and ai_p95 > th["ai_response_time_p95"]["target"] * 1000:
        add("ai_latency", "ai_service", "warning", f"AI provider p95 is {ai_p95} ms",
            "batch concurrent provider calls and tighten the timeout",
            {"ai_p95_ms": ai_p95, "ai_calls": t["ai_calls"]},
            {"method": "POST", "path": "/internal/ai/configure-batching", "body": {"enable_batching": True}})
    b = bottlenecks(agg, th, sample_every)
    for c in b["categories"][:1]:
        if c["share_of_request_time"] and c["share_of_request_time"] >= 0.5:
            add(f"dominant:{c['category']}", "bottleneck", "info",
                f"{c['category']} takes {round(c['share_of_request_time'] * 100, 1)}% of API request time",
                "optimise that stage first: it bounds every other gain",
                {"per_request_ms": c["per_request_ms"], "spans": c["spans"]})
    val = sum(c["total_ms"] for c in b["categories"] if c["category"] == "validation")
    if cfg["validation_mode"] == "strict" and val and b["api_request_time_ms"] and \
            val / b["api_request_time_ms"] > 0.05:
        add("validation_mode", "validation", "info", "strict request validation costs over 5% of request time",
            "switch to fast validation", {"validation_ms": val},
            {"method": "POST", "path": "/internal/monitoring/optimize", "body": {"validation_mode": "fast"}})
    if t["shed"]:
        add("load_shedding", "capacity", "warning", f"{t['shed']} requests were shed by admission control",
            "raise max_concurrent_requests / queue_size if CPU allows, or add workers",
            {"shed": t["shed"], "max_concurrent_requests": cfg["max_concurrent_requests"],
             "queue_size": cfg["queue_size"]},
            {"method": "POST", "path": "/internal/monitoring/configure",
             "body": {"max_concurrent_requests": max(1, cfg["max_concurrent_requests"]) * 2}})
    if t["cpu_percent"] is not None and t["cpu_percent"] > th["cpu_usage"]["target"] * 100:
        add("cpu", "capacity", "warning", f"CPU averaged {t['cpu_percent']}% of the available cores",
            "add workers or lower the compression level", {"cpu_percent": t["cpu_percent"]})
    if t["memory_percent"] is not None and t["memory_percent"] > th["memory_usage"]["target"] * 100:
        add("memory", "memory", "warning", f"memory at {t['memory_percent']}% of the limit",
            "shrink the cache (max_memory_mb) and the monitoring retention",
            {"memory_percent": t["memory_percent"]},
            {"method": "POST", "path": "/internal/cache/optimize-memory",
             "body": {"max_memory_mb": round(max(0.01, store.get("cache")["max_memory_mb"] * 0.75), 3)}})
    if mem_trend and mem_trend.get("leak_suspected"):
        add("memory_leak", "memory", "warning",
            f"RSS grows {mem_trend['trend']['slope_mb_per_hour']} MB/h steadily",
            "enable memory tracing and compare memory-hotspots over time", mem_trend["trend"],
            {"method": "POST", "path": "/internal/monitoring/memory-hotspots", "body": {"enabled": True}})
    if t["loop_lag_max_ms"] > 100:
        add("event_loop_lag", "runtime", "warning", f"event loop stalled up to {t['loop_lag_max_ms']} ms",
            "move blocking work off the loop", {"loop_lag_max_ms": t["loop_lag_max_ms"]})
    if history_stats and not cfg["enable_compression"] and history_stats.get("approx_bytes", 0) > 8 * 2 ** 20:
        add("history_compression", "memory", "info",
            f"monitoring history holds {round(history_stats['approx_bytes'] / 2 ** 20, 1)} MiB uncompressed",
            "enable history compression or shorten retention", {"approx_bytes": history_stats["approx_bytes"]},
            {"method": "POST", "path": "/internal/monitoring/configure", "body": {"enable_compression": True}})
    if cfg["memory_tracing"]:
        add("memory_tracing_on", "runtime", "info", "tracemalloc is on and slows allocation-heavy code",
            "switch it off when done with memory-hotspots", {"memory_tracing": True},
            {"method": "POST", "path": "/internal/monitoring/memory-hotspots", "body": {"enabled": False}})
    order = {"critical": 0, "warning": 1, "info": 2}
    out.sort(key=lambda o: order[o["severity"]])
    return out


def kpi_summary(agg: dict, th: dict) -> dict:
    t = S.totals(agg)
    values = {"api_response_time_p95": None if t["p95_ms"] is None else t["p95_ms"] / 1000,
              "cache_hit_ratio": t["cache_hit_ratio"],
              "memory_usage": None if t["memory_percent"] is None else t["memory_percent"] / 100,
              "cpu_usage": None if t["cpu_percent"] is None else t["cpu_percent"] / 100,
              "error_rate": t["error_rate"] if t["requests"] else None,
              "ai_response_time_p95": None if t["ai_p95_ms"] is None else t["ai_p95_ms"] / 1000}
    out = {}
    for k in kpis.KPIS:
        v = values[k.key]
        out[k.key] = {"value": None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 6),
                      "unit": k.unit, "status": k.status(v, th[k.key]["target"], th[k.key]["critical"]),
                      "thresholds": th[k.key]}
    return out


def now_iso() -> str:
    return _iso(time.time())
