"""memory-analysis, memory-hotspots (tracemalloc on demand), memory-trends, gc."""
from __future__ import annotations

import gc
import time
import tracemalloc

from service.monitoring import process
from tests.monitoring.conftest import ctx_of
from tests.monitoring.test_analytics import _snap

M = "/internal/monitoring"


async def test_memory_analysis_reports_process_gc_and_subsystems(mon_client):
    c = await mon_client()
    for i in range(5):
        await c.post("/v1/text/summarize", json={"text": f"Some text to cache, number {i}. It has two sentences."})
    d = await (await c.get(f"{M}/memory-analysis")).json()
    assert d["process"]["rss_bytes"] > 10 * 2 ** 20 and d["process"]["limit_bytes"] > d["process"]["rss_bytes"]
    assert isinstance(d["gc"]["young_objects"], int) and len(d["gc"]["generations"]) == 3
    assert d["tracemalloc"] == {"enabled": False}
    subs = d["subsystems"]
    assert "cache" in subs and "monitoring_history" in subs and "config_history" in subs
    assert "rate_limit" in subs
    assert d["largest_subsystem"]["name"] in subs


async def test_hotspots_are_computed_off_the_event_loop(mon_client, monkeypatch):
    """tracemalloc's snapshot and statistics take seconds on a big heap: they run in a worker thread."""
    from service.monitoring import memory
    from tests.helpers import calls_on_main_thread
    seen = calls_on_main_thread(monkeypatch, memory, "hotspots")
    c = await mon_client()
    assert (await c.get(f"{M}/memory-hotspots")).status == 200
    assert seen == [False]


async def test_hotspots_off_by_default_then_on_demand(mon_client):
    c = await mon_client()
    try:
        d = await (await c.get(f"{M}/memory-hotspots")).json()
        assert d["tracing"] is False and d["hotspots"] == [] and not tracemalloc.is_tracing()
        r = await c.post(f"{M}/memory-hotspots", json={"enabled": True, "frames": 2})
        assert (await r.json())["tracing"] is True and tracemalloc.is_tracing()
        assert tracemalloc.get_traceback_limit() == 2
        assert (await c.post("/v1/text/test/allocate?bytes=6000000")).status == 200
        d = await (await c.get(f"{M}/memory-hotspots?limit=5")).json()
        top = d["hotspots"][0]
        assert top["file"].endswith("tests/monitoring/conftest.py") and top["size_bytes"] >= 6_000_000
        assert (await c.post("/v1/text/test/allocate?bytes=3000000")).status == 200
        d = await (await c.get(f"{M}/memory-hotspots?limit=5")).json()
        growth = d["growth"][0]
        assert growth["file"].endswith("tests/monitoring/conftest.py") and growth["size_diff_bytes"] >= 3_000_000
        a = await (await c.get(f"{M}/memory-analysis")).json()
        assert a["tracemalloc"]["enabled"] is True and a["tracemalloc"]["current_bytes"] >= 9_000_000
        r = await c.post(f"{M}/memory-hotspots", json={"enabled": "sure"})
        assert r.status == 422 and (await r.json())["details"]["field"] == "memory_tracing"
        # a GET never switches tracing: it answers with the state and how to switch it (POST)
        version = ctx_of(c).store.version
        r = await c.get(f"{M}/memory-hotspots?enable=false")
        d = await r.json()
        assert r.status == 200 and d["tracing"] is True and tracemalloc.is_tracing()
        assert d["enable"]["applied"] is False and "POST /internal/monitoring/memory-hotspots" in d["enable"]["message"]
        r = await c.post(f"{M}/memory-hotspots", json={"enabled": False})
        assert (await r.json())["tracing"] is False and not tracemalloc.is_tracing()
        d = await (await c.get(f"{M}/memory-hotspots?enable=true")).json()
        assert d["tracing"] is False and not tracemalloc.is_tracing() and d["enable"]["requested"] is True
        assert ctx_of(c).store.version == version + 1  # only the POST changed the config
    finally:
        await ctx_of(c).store.update("monitoring", {"memory_tracing": False})
    assert not tracemalloc.is_tracing()


async def test_gc_reports_objects_freed(mon_client):
    c = await mon_client()
    gc.disable()
    try:
        for _ in range(20000):
            a: list = []
            a.append(a)
        del a
        r = await c.post(f"{M}/gc")
        d = await r.json()
    finally:
        gc.enable()
    assert r.status == 200
    assert d["unreachable_found"] >= 20000 and d["objects_freed"] >= 19000
    assert d["objects_after"] < d["objects_before"] and d["rss_before_bytes"] > 0 and d["rss_after_bytes"] > 0
    r = await c.post(f"{M}/gc", json={"generation": 5})
    assert r.status == 422 and (await r.json())["details"]["field"] == "generation"
    ev = await (await c.get(f"{M}/events?kind=gc")).json()
    assert ev["total"] == 1


async def test_memory_trends_detect_steady_growth(mon_client):
    c = await mon_client()
    h = ctx_of(c).monitoring.history
    now = time.time()
    cur = process.rss()
    for i in range(60):  # one hour of minutes growing 0.5 MB a minute up to the live RSS
        await h.add(_snap(now - 3600 + i * 60, 60, 1, cur - (59 - i) * 2 ** 19))
    d = await (await c.get(f"{M}/memory-trends?hours=2")).json()
    assert d["samples"] >= 60 and d["leak_suspected"] is True, d["trend"]
    assert d["trend"]["direction"] == "growing" and 25 < d["trend"]["slope_mb_per_hour"] < 35
    assert d["growth_mb"] > 25


async def test_memory_trends_flat_is_no_leak(mon_client):
    c = await mon_client()
    h = ctx_of(c).monitoring.history
    now = time.time()
    cur = process.rss()
    for i in range(60):
        await h.add(_snap(now - 3600 + i * 60, 60, 1, cur + (i % 3) * 2 ** 16))
    d = await (await c.get(f"{M}/memory-trends?hours=0.5")).json()
    assert d["leak_suspected"] is False and d["trend"]["direction"] == "stable"
    assert 29 <= d["samples"] <= 32


async def test_memory_analysis_gives_the_loop_back_between_its_parts(mon_client):
    """Listing the young generations, the collector's figures and the subsystems' sizes: three steps."""
    import asyncio

    from service.monitoring import memory
    from service.monitoring.loopholds import LoopHolds
    c = await mon_client()
    ctx = ctx_of(c)

    class On:
        def get(self, section):
            return {"loop_hold_timing": True}

        def subscribe(self, fn):
            pass
    holds = LoopHolds(On())
    holds.start()   # times the tasks created from now on: the analysis' own
    try:
        d = await asyncio.create_task(memory.analysis(ctx, ctx.monitoring))
    finally:
        holds.stop()
    assert holds.steps >= 3 and isinstance(d["gc"]["young_objects"], int) and "frozen" in d["gc"]
