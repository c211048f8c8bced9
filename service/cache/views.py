"""The read side of /internal/cache: every answer computed from measurements.

No view walks the whole memory tier (it may hold ten million entries): counts
kept as entries come and go are exact (entries, bytes, keys by operation, key
lengths, duplicates); what depends on each entry's state now (expired, hits)
is read from `cache.analysis_sample_size` entries drawn at random, and the
answer says so in `sampling` {sampled, sample_size, entries}.
"""
from __future__ import annotations

import heapq
import itertools
import time

from exporter.kpis import BY_KEY
from exporter.metrics import CACHE_HITS, CACHE_MISSES, PROCESS_WORKERS
from exporter.read import counter_sums, samples
from service import spans
from service.cache import ttl as ttlmod
from service.cache.analytics import MB, expired_estimate, recommendations, sample
from service.providers.base import OPERATIONS

HIT_KPI = BY_KEY["cache_hit_ratio"]


def _r(x: float, n: int = 6) -> float:
    return round(x, n)


def _kpi(ratio: float, lookups: int, store) -> dict:
    alerts = store.values.get("alerts", {})
    target = alerts.get("cache_hit_ratio_threshold", HIT_KPI.target)
    critical = alerts.get("cache_hit_ratio_critical", HIT_KPI.critical)
    return {"value": ratio, "target": target, "good": HIT_KPI.good, "critical": critical,
            "status": HIT_KPI.status(ratio, target, critical) if lookups else None}


def _memory(cache) -> dict:
    cfg = cache.store.get("cache")
    l1 = cache.l1
    max_bytes = cfg["max_memory_mb"] * MB
    st = cache.stats
    entries, sampling = sample(cache)
    return {"entries": len(l1), "memory_bytes": l1.bytes, "memory_mb": _r(l1.bytes / MB, 4),
            "max_entries": cfg["max_entries"], "max_memory_mb": cfg["max_memory_mb"],
            "memory_utilization": _r(l1.bytes / max_bytes, 4), "entry_utilization": _r(len(l1) / cfg["max_entries"], 4),
            "avg_entry_bytes": round(l1.bytes / len(l1)) if len(l1) else 0,
            "expired_entries": expired_estimate(entries, len(l1), time.time()), "sampling": sampling,
            "popular_entries": len(cache.hot),
            # keys evicted for room remembered (capacity misses): the list fills only once the cache is full
            "ghost_keys": len(st.ghosts), "max_ghost_keys": cfg["ghost_keys"],
            "compression_ratio": _r(st.stored_bytes / st.set_bytes, 4) if st.set_bytes else None,
            "compressed_values": st.compressed_sets}


def service_wide() -> dict:
    """Hits and misses of every worker since it started (the Prometheus counters,
    summed over workers by the multiprocess collector when WORKERS > 1)."""
    by_tier = counter_sums(CACHE_HITS, "tier")
    hits = sum(by_tier.values())
    misses = sum(counter_sums(CACHE_MISSES, "operation").values())
    workers = sum(s.value for s in samples((PROCESS_WORKERS,)) if s.name == PROCESS_WORKERS._name)
    n = hits + misses
    return {"workers": int(workers) or 1, "hits": int(hits), "misses": int(misses), "lookups": int(n),
            "hit_ratio": _r(hits / n) if n else 0.0, "hits_by_tier": {t: int(v) for t, v in sorted(by_tier.items())}}


async def stats(cache) -> dict:
    st = cache.stats
    tot = st.totals()
    redis = cache.l2.status()
    if cache.l2.configured:
        redis["entries"] = await cache.maint.count_l2(5.0)
    return {
        "hit_ratio": tot["hit_ratio"], "hit_ratio_percent": _r(tot["hit_ratio"] * 100, 2),
        "hits": tot["hits"], "misses": tot["misses"], "lookups": tot["lookups"],
        "hits_by_tier": {"memory": tot["memory_hits"], "redis": tot["redis_hits"]},
        "enabled": cache.enabled, "backend": "memory+redis" if cache.l2.configured else "memory",
        **_memory(cache),
        "sets": st.sets, "evictions": dict(st.evictions), "single_flight_joins": st.single_flight_joins,
        "stale_served": dict(st.stale_served), "in_flight": len(cache._flights),
        "redis": redis, "warming": cache.warmer.status(), **cache.maint.status(),
        "pressure": st.pressure, "key_strategy": cache.keys.strategy,
        "uptime_seconds": round(time.time() - st.started, 1),
        # the figures above are this worker's (its memory tier and counts); "service" sums every worker
        "worker": cache.ctx.settings.worker_id, "service": service_wide(),
    }


async def performance_analysis(cache) -> dict:
    st = cache.stats
    tot = st.totals()
    sp = spans.snapshot()
    avg_compute = st.avg_compute_seconds()
    by_op = st.breakdown(0)
    saved = sum(g["hits"] * avg_compute.get(op, 0.0) for op, g in by_op.items())
    return {
        "hit_ratio": tot["hit_ratio"], "lookups": tot["lookups"], "hits": tot["hits"], "misses": tot["misses"],
        "kpi": _kpi(tot["hit_ratio"], tot["lookups"], cache.store),
        "latency_ms": {name.split(".", 1)[1]: sp[name] for name in
                       ("cache.lookup", "cache.l2_get", "cache.compute", "cache.warm") if name in sp},
        "compute_avg_seconds_by_operation": avg_compute,
        "estimated_compute_seconds_saved": _r(saved, 3),
        "memory": _memory(cache),
        "redis": cache.l2.status(),
        "evictions": dict(st.evictions),
        "miss_causes": {"expired": st.expired_misses, "popular_expired": st.popular_expired_misses,
                        "evicted_for_room": st.capacity_misses, "normalization": st.normalization_misses,
                        "first_seen": max(0, tot["misses"] - st.expired_misses - st.capacity_misses)},
        "single_flight_joins": st.single_flight_joins,
        "by_operation": by_op,
    }


async def usage_patterns(cache, minutes: int = 60) -> dict:
    st = cache.stats
    tot = st.totals()
    entries, sampling = sample(cache)
    hits = sorted((e.hits for e in entries), reverse=True)
    total_hits = sum(hits)
    # the most hit keys are popular ones: look at (up to a sample's worth of) those too
    n = sampling["sample_size"] or 1
    candidates = {id(e): e for e in itertools.chain(entries, itertools.islice(cache.hot.values(), n))}
    top = heapq.nlargest(10, candidates.values(), key=lambda e: e.hits)
    buckets = {"0": 0, "1": 0, "2-4": 0, "5-9": 0, "10-99": 0, "100+": 0}
    for h in hits:
        k = "0" if h == 0 else "1" if h == 1 else "2-4" if h < 5 else "5-9" if h < 10 else "10-99" if h < 100 else "100+"
        buckets[k] += 1
    if sampling["sampled"]:  # the sample's counts, scaled to the whole tier
        buckets = {k: round(v * sampling["entries"] / len(entries)) for k, v in buckets.items()}
    top10 = max(1, len(hits) // 10)
    ops = {op: g["lookups"] for op, g in st.breakdown(0).items()}
    n_ops = sum(ops.values())
    return {
        "lookups": tot["lookups"], "hit_ratio": tot["hit_ratio"],
        "per_minute": st.series(minutes), "by_hour_utc": st.hourly(),
        "operation_mix": {op: {"lookups": n, "share": _r(n / n_ops, 4) if n_ops else 0.0} for op, n in ops.items()},
        "sampling": sampling,
        "popularity": {"entries": sampling["entries"], "hits_per_entry": buckets,
                       "top_10_percent_hit_share": _r(sum(hits[:top10]) / total_hits, 4) if total_hits else None,
                       "popular_entries": len(cache.hot), "popularity_threshold": cache._pop_thr},
        "top_keys": [{"key": e.key, "operation": e.op, "hits": e.hits, "age_seconds": round(time.time() - e.stored_at, 1),
                      "ttl_left_seconds": round(e.expires_at - time.time(), 1)} for e in top if e.hits],
        "repeat_rate": _r(tot["hits"] / tot["lookups"], 4) if tot["lookups"] else 0.0,
    }


async def hit_miss_analysis(cache) -> dict:
    st = cache.stats
    tot = st.totals()
    cfg = cache.store.get("cache")
    by_size = st.breakdown(1)
    return {
        "overall": tot,
        "by_operation": st.breakdown(0),
        "by_text_size": by_size,
        "text_size_tiers": {**{k: f"< {v} chars" for k, v in sorted(cfg["text_size_tiers"].items(), key=lambda kv: kv[1])},
                            "xlarge": f">= {max(cfg['text_size_tiers'].values())} chars"},
        "by_tier": {"memory": tot["memory_hits"], "redis": tot["redis_hits"], "miss": tot["misses"]},
        "miss_causes": {"expired": st.expired_misses, "popular_expired": st.popular_expired_misses,
                        "evicted_for_room": st.capacity_misses, "normalization": st.normalization_misses},
        "recent": st.series(15),
    }


async def key_analysis(cache) -> dict:
    """Every figure is exact: the memory tier counts key lengths and operations as entries come and go."""
    l1 = cache.l1
    n = len(l1)
    prefix = len("{llmapi}:cache:")
    lengths = l1.key_lengths  # memory key length -> entries
    dist: dict[str, int] = {}
    for length, count in sorted(lengths.items()):
        s = length + prefix
        b = f"{(s // 16) * 16}-{(s // 16) * 16 + 15}"
        dist[b] = dist.get(b, 0) + count
    total_len = sum(length * count for length, count in lengths.items())
    dup = cache.duplicate_entries()
    st = cache.stats
    return {
        "keys": n,
        "key_format": "{llmapi}:cache:<operation>:<digest> (no raw text)",
        "strategy": cache.keys.strategy,
        "key_size_bytes": {"min": min(lengths, default=-prefix) + prefix, "max": max(lengths, default=-prefix) + prefix,
                           "avg": _r(total_len / n + prefix, 2) if n else 0,
                           "memory_key_avg": _r(total_len / n, 2) if n else 0,
                           "distribution": dist},
        "keys_by_operation": dict(sorted(l1.by_op.items())),
        "duplication": {"duplicate_entries": dup, "duplicate_ratio": _r(dup / n, 4) if n else 0.0,
                        "removable_by": "whitespace, case and Unicode NFC normalization",
                        "bytes_removable": round(dup * l1.bytes / n) if n else 0,
                        "bytes_removable_from": "duplicate entries x average entry bytes",
                        "misses_normalization_would_hit": st.normalization_misses},
    }


async def optimization_recommendations(cache) -> dict:
    recs = recommendations(cache)
    tot = cache.stats.totals()
    return {"recommendations": recs, "count": len(recs), "generated_at": time.time(),
            "based_on": {"lookups": tot["lookups"], "hit_ratio": tot["hit_ratio"],
                         "window_seconds": round(time.time() - cache.stats.started, 1)}}


def snapshot(cache) -> dict:
    """The measured state an optimization run compares against."""
    tot = cache.stats.totals()
    return {"time": time.time(), "hits": tot["hits"], "misses": tot["misses"], "hit_ratio": tot["hit_ratio"],
            "entries": len(cache.l1), "memory_bytes": cache.l1.bytes,
            "evictions": sum(cache.stats.evictions.values())}


async def optimization_results(cache) -> dict:
    now = snapshot(cache)
    runs = []
    for run in reversed(cache.optimizations):
        b = run["before"]["measured"]
        hits, misses = now["hits"] - b["hits"], now["misses"] - b["misses"]
        since = {"lookups": hits + misses, "hit_ratio": _r(hits / (hits + misses)) if hits + misses else None}
        if since["hit_ratio"] is not None:
            since["hit_ratio_change"] = _r(since["hit_ratio"] - b["hit_ratio"])
        runs.append({**run, "since": since})
    return {"runs": runs, "count": len(runs), "last_run": runs[0]["time"] if runs else None, "current": now,
            "ttl_table": ttlmod.table(cache.store.get("cache"), OPERATIONS, cache._mon())}
