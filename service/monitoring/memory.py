"""Memory analysis: process figures, GC, tracemalloc, and what each subsystem holds.

Subsystem sizes are found defensively: a subsystem may expose
`memory_stats()` / `memory_usage()` (dict or number of bytes); otherwise its
container attributes (dict, list, deque, set) are counted and their size
estimated from a sample of up to 64 items (sys.getsizeof of keys and values,
one level deep).  Estimates say so.
"""
from __future__ import annotations

import asyncio
import collections
import gc
import sys
import time
import tracemalloc

from service import spans
from service.monitoring import heap, process

SAMPLE = 64
CONTAINERS = (dict, list, collections.deque, set, frozenset, collections.OrderedDict)


def _item_size(x) -> int:
    n = sys.getsizeof(x)
    if isinstance(x, (tuple, list)) and len(x) <= 16:
        n += sum(sys.getsizeof(i) for i in x)
    elif isinstance(x, dict) and len(x) <= 16:
        n += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in x.items())
    return n


def container_size(c) -> tuple[int, int]:
    """(entries, estimated bytes) of a container, sampling at most SAMPLE items."""
    n = len(c)
    base = sys.getsizeof(c)
    if not n:
        return 0, base
    if isinstance(c, dict):
        sample = [_item_size(k) + _item_size(v) for k, v in _take(c.items())]
    else:
        sample = [_item_size(v) for v in _take(c)]
    return n, int(base + sum(sample) / len(sample) * n)


def _take(it):
    out = []
    for x in it:
        out.append(x)
        if len(out) >= SAMPLE:
            break
    return out


def describe(obj) -> dict | None:
    """Entries and estimated bytes of one subsystem object, or None if it is absent."""
    if obj is None:
        return None
    out: dict = {"type": type(obj).__name__}
    for meth in ("memory_stats", "memory_usage"):
        fn = getattr(obj, meth, None)
        if callable(fn):
            try:
                v = fn()
            except Exception:
                continue
            if hasattr(v, "__await__"):
                v.close()
                continue
            if isinstance(v, dict):
                out.update({"reported": v, "source": meth})
                return out
            if isinstance(v, (int, float)):
                out.update({"bytes": int(v), "source": meth})
                return out
    parts = {}
    total = 0
    entries = 0
    if isinstance(obj, CONTAINERS):
        e, b = container_size(obj)
        return {**out, "entries": e, "estimated_bytes": b, "source": "estimate"}
    for name, val in list(vars(obj).items()) if hasattr(obj, "__dict__") else []:
        if isinstance(val, CONTAINERS):
            e, b = container_size(val)
            parts[name] = {"entries": e, "estimated_bytes": b}
            total += b
            entries = max(entries, e)
    out.update({"entries": entries, "estimated_bytes": total, "containers": parts, "source": "estimate"})
    return out


def subsystems(ctx, monitor) -> dict:
    out = {}
    cache = describe(ctx.cache)
    if cache is not None:
        from exporter.metrics import CACHE_ENTRIES, CACHE_MEMORY
        from service.monitoring.snapshot import gauge_total
        cache["metric_memory_bytes"] = gauge_total(CACHE_MEMORY)
        cache["metric_entries"] = gauge_total(CACHE_ENTRIES)
        out["cache"] = cache
    out["monitoring_history"] = monitor.history.stats()
    out["request_analytics"] = {"live_routes": len(monitor.analytics.routes)}
    rl = ctx.ratelimiter if ctx.ratelimiter is not None else ctx.extras.get("ratelimiter")
    out["rate_limit"] = describe(rl) if rl is not None else {"present": False}
    if ctx.secret is not None:
        out["client_ids"] = describe(ctx.secret)
    if ctx.access_log is not None:
        out["access_log"] = describe(ctx.access_log)
    out["config_history"] = {"entries": len(ctx.store.history),
                             "estimated_bytes": container_size(ctx.store.history)[1]}
    out["spans"] = {"entries": len(spans._spans)}
    if ctx.text is not None:
        out["validation_memo"] = describe(ctx.text.memo)
    for name, obj in ctx.extras.items():
        if name in ("analytics", "admission", "tasks"):
            continue
        try:
            d = describe(obj)
        except Exception:
            d = None
        if d is not None:
            out[f"extras.{name}"] = d
    if ctx.resilience is not None:
        out["resilience"] = describe(ctx.resilience)
    return out


def tracemalloc_state() -> dict:
    if not tracemalloc.is_tracing():
        return {"enabled": False}
    cur, peak = tracemalloc.get_traced_memory()
    return {"enabled": True, "current_bytes": cur, "peak_bytes": peak,
            "overhead_bytes": tracemalloc.get_tracemalloc_memory(), "frames": tracemalloc.get_traceback_limit()}


async def analysis(ctx, monitor) -> dict:
    """The loop is given back between listing the young generations, the collector's figures and the
    subsystems' sizes: one step of all three held it 7.7-9 ms after the seed replay (with the young
    threshold at 50,000 the young generations hold tens of thousands of objects, and
    gc.get_freeze_count() walks the ~60,000 frozen ones)."""
    mem = process.memory_info()
    # the young generations only: listing the old one costs O(every object) (millions with a full cache)
    young = len(gc.get_objects(0)) + len(gc.get_objects(1))
    await asyncio.sleep(0)
    gc_figures = process.gc_stats()
    await asyncio.sleep(0)
    subs = subsystems(ctx, monitor)
    sized = {k: (v.get("bytes") or v.get("estimated_bytes") or v.get("approx_bytes")
                 or (v.get("reported") or {}).get("memory_bytes") or v.get("metric_memory_bytes") or 0)
             for k, v in subs.items() if isinstance(v, dict)}
    largest = max(sized.items(), key=lambda kv: kv[1], default=(None, 0))
    rec = []
    th = mem.get("percent_of_limit") or 0
    if th > 70:
        rec.append("memory above 70% of the limit: shrink the cache or monitoring retention")
    if tracemalloc.is_tracing():
        rec.append("tracemalloc is on: switch it off after reading memory-hotspots (it slows allocation)")
    return {"process": mem, "gc": {**gc_figures, "young_objects": young},
            "tracemalloc": tracemalloc_state(), "heap": monitor.heap.stats(), "subsystems": subs,
            "largest_subsystem": {"name": largest[0], "bytes": largest[1]} if largest[0] else None,
            "recommendations": rec}


def hotspots(monitor, limit: int, key_type: str) -> dict:
    if not tracemalloc.is_tracing():
        return {"tracing": False, "hotspots": [], "growth": [],
                "message": "memory tracing is off (the default, for speed); enable it with "
                           "POST /internal/monitoring/memory-hotspots {\"enabled\": true}"}
    t = time.perf_counter()
    snap = tracemalloc.take_snapshot().filter_traces((
        tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"), tracemalloc.Filter(False, "<unknown>")))
    stats = snap.statistics(key_type)
    total = sum(s.size for s in stats)
    top = []
    for s in stats[:limit]:
        fr = s.traceback[0]
        top.append({"file": fr.filename, "line": fr.lineno, "size_bytes": s.size, "count": s.count,
                    "avg_bytes": round(s.size / s.count, 1) if s.count else 0,
                    "share": round(s.size / total, 6) if total else 0.0,
                    "traceback": [f"{f.filename}:{f.lineno}" for f in s.traceback] if key_type == "traceback" else None})
    growth = []
    prev = monitor._hotspot_prev
    if prev is not None:
        for d in snap.compare_to(prev, key_type)[:limit]:
            if d.size_diff == 0:
                continue
            fr = d.traceback[0]
            growth.append({"file": fr.filename, "line": fr.lineno, "size_diff_bytes": d.size_diff,
                           "count_diff": d.count_diff, "size_bytes": d.size})
    monitor._hotspot_prev = snap
    cur, peak = tracemalloc.get_traced_memory()
    return {"tracing": True, "group_by": key_type, "traced_bytes": total, "current_bytes": cur, "peak_bytes": peak,
            "frames": tracemalloc.get_traceback_limit(), "hotspots": top, "growth": growth,
            "growth_since": "previous memory-hotspots call" if prev is not None else None,
            "snapshot_ms": round((time.perf_counter() - t) * 1000, 3)}


def collect(generation: int, trim: bool) -> dict:
    rss_before = process.rss()
    objects_before = len(gc.get_objects())
    counts_before = list(gc.get_count())
    t = time.perf_counter()
    unreachable = gc.collect(generation)
    gc_ms = (time.perf_counter() - t) * 1000
    trimmed = heap.trim() if trim else False
    objects_after = len(gc.get_objects())
    rss_after = process.rss()
    return {"generation": generation, "unreachable_found": unreachable,
            "objects_before": objects_before, "objects_after": objects_after,
            "objects_freed": max(0, objects_before - objects_after),
            "rss_before_bytes": rss_before, "rss_after_bytes": rss_after,
            "rss_freed_bytes": rss_before - rss_after,
            "rss_before_mb": round(rss_before / 2 ** 20, 3), "rss_after_mb": round(rss_after / 2 ** 20, 3),
            "counts_before": counts_before, "counts_after": list(gc.get_count()),
            "duration_ms": round(gc_ms, 3), "malloc_trim": trimmed, "garbage": len(gc.garbage)}
