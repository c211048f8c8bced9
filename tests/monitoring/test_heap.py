"""The heap trimmer (service/monitoring/heap.py): free pages inside the heap go back to the OS, on the interval
monitoring.heap_trim_seconds sets live."""
from __future__ import annotations

import asyncio
import time

import pytest

from service.monitoring import heap, process
from tests.monitoring.conftest import ctx_of

needs_trim = pytest.mark.skipif(not heap.HeapTrimmer(None).available, reason="no malloc_trim (not glibc)")
M = "/internal/monitoring"


@needs_trim
def test_trim_gives_back_the_free_pages_between_live_objects():
    """What the soak found: values above pymalloc's 512 bytes freed between live ones stay resident until
    malloc_trim hands their pages back (free() trims only the heap's top, pinned here by a kept value)."""
    class Store:
        def get(self, section):
            return {"heap_trim_seconds": 1.0, "heap_trim_max_ms": 1000.0}
    trimmer = heap.HeapTrimmer(Store())
    heap.trim()
    values = [bytes(2048) + i.to_bytes(4, "little") for i in range(12_000)]   # ~24 MB on the heap
    kept = values[7::8]    # one in eight stays, the last one included: the heap cannot shrink from its top
    del values
    resident = process.rss()
    released = trimmer.run_once()
    assert released >= 10 * 2 ** 20, (released, resident)
    assert process.rss() <= resident - 10 * 2 ** 20
    assert trimmer.runs == 1 and trimmer.released_bytes == released and trimmer.max_seconds > 0
    assert len(kept) == 1500


@needs_trim
async def test_the_interval_is_read_live_and_memory_analysis_reports_the_trims(mon_client):
    c = await mon_client(HEAP_TRIM_SECONDS="0.05")
    # a budget no trim of this test process's heap reaches, whatever the box's load (the pause is tested below)
    assert (await c.post("/internal/config/monitoring", json={"heap_trim_max_ms": 1000})).status == 200
    trimmer = ctx_of(c).monitoring.heap
    for _ in range(200):
        if trimmer.runs >= 3:
            break
        await asyncio.sleep(0.05)
    assert trimmer.runs >= 3
    d = (await (await c.get(f"{M}/memory-analysis")).json())["heap"]
    assert d["trim_available"] is True and d["trim_interval_seconds"] == 0.05 and d["trims"] >= 3
    assert d["malloc"]["heap_bytes"] > 0 and d["malloc"]["in_use_bytes"] > 0
    r = await c.post("/internal/config/monitoring", json={"heap_trim_seconds": 0})
    assert r.status == 200, await r.text()
    runs = trimmer.runs
    await asyncio.sleep(0.3)
    assert trimmer.runs == runs    # off: no trim after the change
    r = await c.post("/internal/config/monitoring", json={"heap_trim_seconds": 0.05})
    assert r.status == 200
    for _ in range(100):           # back on within the idle check (1 s) plus one interval
        if trimmer.runs > runs:
            break
        await asyncio.sleep(0.05)
    assert trimmer.runs > runs


async def test_a_negative_interval_is_refused_and_leaves_the_config(mon_client):
    c = await mon_client()
    r = await c.post("/internal/config/monitoring", json={"heap_trim_seconds": -1})
    assert r.status in (400, 422) and (await r.json())["details"]["field"].endswith("heap_trim_seconds")
    assert ctx_of(c).store.get("monitoring")["heap_trim_seconds"] == 2.0


async def test_trims_over_their_budget_pause_the_trimming_until_the_settings_change(mon_client, monkeypatch):
    """A heap of many scattered free chunks makes each malloc_trim long: three in a row over
    monitoring.heap_trim_max_ms and the trimmer stops holding the loop with them."""
    c = await mon_client(HEAP_TRIM_SECONDS="0.02")
    trimmer = ctx_of(c).monitoring.heap
    trimmer.available = True
    monkeypatch.setattr(heap, "trim", lambda: time.sleep(0.004) or True)   # 4 ms a trim
    # over a 2 ms budget, and far from the 10 ms (5x) that pauses at once: a 4 ms sleep took 5.3 ms on a busy box
    r = await c.post("/internal/config/monitoring", json={"heap_trim_max_ms": 2.0})
    assert r.status == 200
    for _ in range(200):
        if trimmer.paused:
            break
        await asyncio.sleep(0.02)
    runs = trimmer.runs
    assert trimmer.paused and runs >= heap.OVER_BUDGET_STREAK
    await asyncio.sleep(0.2)
    assert trimmer.runs == runs
    d = (await (await c.get(f"{M}/memory-analysis")).json())["heap"]
    assert d["trim_paused_over_budget"] is True and d["trim_max_ms"] >= 4
    r = await c.post("/internal/config/monitoring", json={"heap_trim_max_ms": 50.0})   # a budget it fits in
    assert r.status == 200
    for _ in range(100):
        if trimmer.runs > runs + 3:
            break
        await asyncio.sleep(0.05)
    assert trimmer.runs > runs + 3 and not trimmer.paused


def test_one_trim_far_over_its_budget_pauses_at_once(monkeypatch):
    class Store:
        def get(self, section):
            return {"heap_trim_seconds": 1.0, "heap_trim_max_ms": 2.0}
    trimmer = heap.HeapTrimmer(Store())
    monkeypatch.setattr(heap, "trim", lambda: time.sleep(heap.FAR_OVER * 0.002 + 0.002) or True)
    assert trimmer.due()
    trimmer.run_once()
    assert trimmer.paused and not trimmer.due() and trimmer.runs == 1
