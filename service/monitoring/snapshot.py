"""Build one history snapshot from what the process measured, and merge many.

A snapshot covers [start, ts) and holds only mergeable figures: counts, sums,
maxima, sparse histograms, and for gauges (RSS, cache size) the last value,
the maximum and a running sum for averages.  Counters kept elsewhere
(Prometheus metrics, spans) enter as the delta since the previous snapshot.
"""
from __future__ import annotations

import tracemalloc

from exporter import metrics as M
from exporter.tally import flush_all
from service import spans
from service.monitoring import process
from service.monitoring.analytics import merge_route, quantile

AI_EDGES = M.AI_BUCKETS


def _samples(metric):
    for fam in metric.collect():
        yield from fam.samples


def counter_total(metric, **labels) -> float:
    total = 0.0
    for s in _samples(metric):
        if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def gauge_total(metric) -> float:
    flush_all()
    return sum(s.value for s in _samples(metric))


def histogram_state(metric) -> dict:
    """{"count", "sum", "le": [cumulative per AI_EDGES + inf]} summed over label sets."""
    le: dict[float, float] = {}
    count = total = 0.0
    for s in _samples(metric):
        if s.name.endswith("_bucket"):
            b = float(s.labels["le"])
            le[b] = le.get(b, 0.0) + s.value
        elif s.name.endswith("_count"):
            count += s.value
        elif s.name.endswith("_sum"):
            total += s.value
    cum = [le.get(float(e), 0.0) for e in AI_EDGES] + [le.get(float("inf"), count)]
    return {"count": count, "sum": total, "le": cum}


def failed_attempts() -> float:
    """AI attempts whose outcome was an error (llmapi_ai_request_duration_seconds by outcome)."""
    return sum(s.value for s in _samples(M.AI_DURATION)
               if s.name.endswith("_count") and s.labels.get("outcome") != "success")


def tokens_used() -> float:
    """Tokens of every AI call (the _sum of gen_ai_client_token_usage, both token types)."""
    return sum(s.value for s in _samples(M.GENAI_TOKENS) if s.name.endswith("_sum"))


def counters() -> dict:
    """The cumulative process counters a snapshot diffs against."""
    flush_all()
    return {"cache_hits": counter_total(M.CACHE_HITS), "cache_misses": counter_total(M.CACHE_MISSES),
            "cache_evictions": counter_total(M.CACHE_EVICTIONS),
            "ai": histogram_state(M.AI_DURATION), "ai_errors": failed_attempts(),
            "ai_tokens": tokens_used(), "retries": counter_total(M.RETRIES),
            "fallbacks": counter_total(M.FALLBACKS), "shed": counter_total(M.ADMISSION_SHED),
            "spans": {k: (v[0], v[1], v[2]) for k, v in spans._spans.items()}}


def _delta_spans(now: dict, before: dict) -> dict:
    out = {}
    for name, (c, t, m) in now.items():
        bc, bt, _ = before.get(name, (0, 0.0, 0.0))
        if c > bc:
            out[name] = [c - bc, round(t - bt, 9), m]
    return out


def build(start: float, end: float, routes: dict, ops: dict, now: dict, before: dict, cpu: dict,
          extra: dict) -> dict:
    """One snapshot from the interval's request analytics and counter deltas."""
    ai_now, ai_before = now["ai"], before["ai"]
    cum = [a - b for a, b in zip(ai_now["le"], ai_before["le"])]
    ai_buckets = [max(0.0, cum[0])] + [max(0.0, cum[i] - cum[i - 1]) for i in range(1, len(cum))]
    mem = process.memory_info()
    tm = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
    snap = {
        "ts": end, "start": start, "seconds": round(end - start, 6),
        "routes": routes, "ops": ops,
        "spans": _delta_spans(now["spans"], before["spans"]),
        "cache": {"hits": now["cache_hits"] - before["cache_hits"],
                  "misses": now["cache_misses"] - before["cache_misses"],
                  "evictions": now["cache_evictions"] - before["cache_evictions"],
                  "entries": gauge_total(M.CACHE_ENTRIES), "memory_bytes": gauge_total(M.CACHE_MEMORY)},
        "ai": {"n": ai_now["count"] - ai_before["count"], "sum": ai_now["sum"] - ai_before["sum"],
               "buckets": ai_buckets, "errors": now["ai_errors"] - before["ai_errors"],
               "tokens": now["ai_tokens"] - before["ai_tokens"],
               "retries": now["retries"] - before["retries"], "fallbacks": now["fallbacks"] - before["fallbacks"]},
        "mem": {"rss": mem["rss_bytes"], "rss_max": mem["rss_bytes"], "rss_sum": mem["rss_bytes"], "samples": 1,
                "limit": mem["limit_bytes"], "tracemalloc": tm},
        "cpu": {"busy": cpu["busy_seconds"], "seconds": cpu["seconds"], "cores": cpu["cores"],
                "percent_max": cpu["percent"], "load1": (process.load_average() or [None])[0]},
        "admission": {"shed": now["shed"] - before["shed"], "max_queue": extra.get("max_queue", 0),
                      "max_active": extra.get("max_active", 0)},
        "loop_lag_max": extra.get("loop_lag_max", 0.0),
    }
    return snap


def empty() -> dict:
    return {"ts": 0.0, "start": 0.0, "seconds": 0.0, "routes": {}, "ops": {}, "spans": {},
            "cache": {"hits": 0, "misses": 0, "evictions": 0, "entries": 0, "memory_bytes": 0},
            "ai": {"n": 0, "sum": 0.0, "buckets": [0.0] * (len(AI_EDGES) + 1), "errors": 0, "tokens": 0,
                   "retries": 0, "fallbacks": 0},
            "mem": {"rss": 0, "rss_max": 0, "rss_sum": 0, "samples": 0, "limit": 0, "tracemalloc": None},
            "cpu": {"busy": 0.0, "seconds": 0.0, "cores": 0, "percent_max": 0.0, "load1": None},
            "admission": {"shed": 0, "max_queue": 0, "max_active": 0}, "loop_lag_max": 0.0, "count": 0}


def merge(snaps) -> dict:
    """Aggregate snapshots (oldest first) into one of the same shape."""
    out = empty()
    for s in snaps:
        out["count"] += s.get("count", 1)
        out["start"] = s["start"] if not out["start"] else min(out["start"], s["start"])
        out["ts"] = max(out["ts"], s["ts"])
        out["seconds"] += s["seconds"]
        for k, r in s["routes"].items():
            merge_route(out["routes"].setdefault(k, {}), r)
        for k, v in s["ops"].items():
            out["ops"][k] = out["ops"].get(k, 0) + v
        for k, (c, t, m) in s["spans"].items():
            cur = out["spans"].get(k)
            out["spans"][k] = [c, t, m] if cur is None else [cur[0] + c, cur[1] + t, max(cur[2], m)]
        oc, sc = out["cache"], s["cache"]
        for k in ("hits", "misses", "evictions"):
            oc[k] += sc.get(k, 0)
        oc["entries"], oc["memory_bytes"] = sc.get("entries", 0), sc.get("memory_bytes", 0)
        oa, sa = out["ai"], s["ai"]
        for k in ("n", "sum", "errors", "tokens", "retries", "fallbacks"):
            oa[k] += sa.get(k, 0)
        for i, c in enumerate(sa.get("buckets", ())[:len(oa["buckets"])]):
            oa["buckets"][i] += c
        om, sm = out["mem"], s["mem"]
        om["rss"], om["limit"] = sm["rss"], sm.get("limit", 0)
        om["rss_max"] = max(om["rss_max"], sm.get("rss_max", 0))
        om["rss_sum"] += sm.get("rss_sum", 0)
        om["samples"] += sm.get("samples", 0)
        if sm.get("tracemalloc") is not None:
            om["tracemalloc"] = sm["tracemalloc"]
        ocp, scp = out["cpu"], s["cpu"]
        ocp["busy"] += scp.get("busy", 0.0)
        ocp["seconds"] += scp.get("seconds", 0.0)
        ocp["cores"] = scp.get("cores", ocp["cores"])
        ocp["percent_max"] = max(ocp["percent_max"], scp.get("percent_max", 0.0))
        ocp["load1"] = scp.get("load1", ocp["load1"])
        oad, sad = out["admission"], s["admission"]
        oad["shed"] += sad.get("shed", 0)
        oad["max_queue"] = max(oad["max_queue"], sad.get("max_queue", 0))
        oad["max_active"] = max(oad["max_active"], sad.get("max_active", 0))
        out["loop_lag_max"] = max(out["loop_lag_max"], s.get("loop_lag_max", 0.0))
    return out


def ai_quantile(buckets: list, q: float) -> float | None:
    """Quantile (seconds) from per-bucket AI duration counts, interpolated linearly like PromQL."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank, seen = q * total, 0.0
    for i, c in enumerate(buckets):
        if seen + c >= rank and c > 0:
            if i >= len(AI_EDGES):
                return AI_EDGES[-1]
            lo = AI_EDGES[i - 1] if i else 0.0
            return lo + (AI_EDGES[i] - lo) * (rank - seen) / c
        seen += c
    return None


def totals(agg: dict) -> dict:
    """Headline figures of a (merged) snapshot."""
    n = sum(r["n"] for r in agg["routes"].values())
    e5 = sum(c for r in agg["routes"].values() for s, c in r["status"].items() if s.startswith("5"))
    hits, misses = agg["cache"]["hits"], agg["cache"]["misses"]
    ai = agg["ai"]
    mem, cpu = agg["mem"], agg["cpu"]
    secs = agg["seconds"] or 0.0
    lat: dict = {}
    vmax = 0.0
    for r in agg["routes"].values():
        vmax = max(vmax, r["max"])
        for b, c in r["lat"].items():
            lat[b] = lat.get(b, 0) + c
    p95 = quantile(lat, 0.95, vmax)

    def _ms(v):
        return None if v is None else round(v * 1000, 3)

    return {
        "requests": n, "requests_per_second": round(n / secs, 4) if secs else 0.0,
        "errors_5xx": e5, "error_rate": round(e5 / n, 6) if n else 0.0,
        "p95_ms": _ms(p95),
        "avg_ms": round(sum(r["sum"] for r in agg["routes"].values()) / n * 1000, 3) if n else None,
        "cache_hits": hits, "cache_misses": misses,
        "cache_hit_ratio": round(hits / (hits + misses), 6) if hits + misses else None,
        "ai_calls": ai["n"], "ai_avg_ms": round(ai["sum"] / ai["n"] * 1000, 3) if ai["n"] else None,
        "ai_p95_ms": _ms(ai_quantile(ai["buckets"], 0.95)),
        "ai_errors": ai["errors"],
        "rss_bytes": mem["rss"], "rss_avg_bytes": round(mem["rss_sum"] / mem["samples"]) if mem["samples"] else None,
        "rss_max_bytes": mem["rss_max"],
        "memory_percent": round(mem["rss"] / mem["limit"] * 100, 3) if mem.get("limit") else None,
        "cpu_percent": round(cpu["busy"] / cpu["seconds"] / cpu["cores"] * 100, 3) if cpu["seconds"] and cpu["cores"] else None,
        "cpu_percent_max": cpu["percent_max"],
        "shed": agg["admission"]["shed"],
        "loop_lag_max_ms": round(agg["loop_lag_max"] * 1000, 3),
    }


def combine(parts) -> dict:
    """Snapshots of the same period from different instances (workers, replicas) as one.

    `merge` adds periods end to end; here they run side by side: counts,
    histograms, CPU busy time and gauges (RSS, cache size) add up, while the
    period (start, ts, seconds) and the core count are the widest single
    one's.  Peaks (max queue, RSS max) add up too: an upper bound.
    """
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    out = merge(parts)
    out["seconds"] = max(p["seconds"] for p in parts)
    cache = out["cache"]
    cache["entries"] = sum(p["cache"].get("entries", 0) for p in parts)
    cache["memory_bytes"] = sum(p["cache"].get("memory_bytes", 0) for p in parts)
    mem = out["mem"]
    samples = max(p["mem"].get("samples", 0) for p in parts)
    mem["rss"] = sum(p["mem"]["rss"] for p in parts)
    mem["rss_max"] = sum(p["mem"].get("rss_max", 0) for p in parts)
    mem["samples"] = samples
    mem["rss_sum"] = samples * sum(p["mem"].get("rss_sum", 0) / p["mem"]["samples"]
                                   for p in parts if p["mem"].get("samples"))
    mem["limit"] = max(p["mem"].get("limit", 0) for p in parts)
    tms = [p["mem"]["tracemalloc"] for p in parts if p["mem"].get("tracemalloc") is not None]
    mem["tracemalloc"] = sum(tms) if tms else None
    cpu = out["cpu"]
    cpu["seconds"] = max(p["cpu"].get("seconds", 0.0) for p in parts)
    cpu["cores"] = max(p["cpu"].get("cores", 0) for p in parts)
    cpu["percent_max"] = sum(p["cpu"].get("percent_max", 0.0) for p in parts)
    adm = out["admission"]
    adm["max_queue"] = sum(p["admission"].get("max_queue", 0) for p in parts)
    adm["max_active"] = sum(p["admission"].get("max_active", 0) for p in parts)
    return out
