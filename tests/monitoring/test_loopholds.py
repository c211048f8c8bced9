"""monitoring.loop_hold_timing: each task step's hold of the event loop, by kind and label
(GET /internal/monitoring/loop-holds).  The holds asserted are lower bounds the code makes itself (a
route spinning for a known CPU time): never a timing of the service's own speed."""
from __future__ import annotations

import asyncio
import time

import pytest

from service.monitoring import loopholds
from service.monitoring.loopholds import LoopHolds, labelled
from tests.monitoring.conftest import ctx_of

M = "/internal/monitoring"
CLOSE = {"Connection": "close"}   # a new connection, so a new (timed) connection task, each request


class _Store:
    def __init__(self, on: bool):
        self.cfg = {"loop_hold_timing": on}
        self.subscribers = []

    def get(self, section):
        return self.cfg

    def subscribe(self, fn):
        self.subscribers.append(fn)


def _spin(ms: float) -> None:
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


async def test_timing_is_off_by_default_and_no_task_is_wrapped(mon_client):
    c = await mon_client()
    assert (await c.get("/metrics", headers=CLOSE)).status == 200
    d = await (await c.get(f"{M}/loop-holds")).json()
    assert d["enabled"] is False and d["steps"] == 0 and d["labels"] == {}
    assert asyncio.get_running_loop().get_task_factory() is None
    assert not isinstance(asyncio.current_task().get_coro(), loopholds._Timed)


async def test_switched_on_live_a_scrape_and_a_holding_route_are_attributed(mon_client):
    c = await mon_client()
    r = await c.post("/internal/config/monitoring", json={"loop_hold_timing": True})
    assert r.status == 200
    for _ in range(3):
        assert (await c.get("/metrics", headers=CLOSE)).status == 200
    assert (await c.get("/v1/text/test/hold?ms=30", headers=CLOSE)).status == 200
    d = await (await c.get(f"{M}/loop-holds", headers=CLOSE)).json()
    assert d["enabled"] is True and d["steps"] > 0 and d["busy_wall_seconds"] >= 0.03
    scrape = d["labels"]["scrape"]
    assert scrape["runs"] == 3 and scrape["steps"] >= 3 and scrape["max_cpu_ms"] > 0
    assert scrape["max_cpu_ms"] / 3 <= scrape["cpu_ms_per_run"] <= scrape["max_cpu_ms"] * scrape["steps"] / 3
    conn = d["kinds"]["GET /v1/text/test/hold"]   # a request's kind: its method and route
    assert conn["max_cpu_ms"] >= 30 and conn["max_held_ms"] >= 30 and conn["over_5_ms"] >= 1
    top = d["longest"][0]
    assert top["kind"] == "GET /v1/text/test/hold" and top["label"] is None and top["cpu_ms"] >= 30

    # reset clears what was recorded, the timing stays on
    d = await (await c.post(f"{M}/loop-holds/reset", headers=CLOSE)).json()
    assert d["enabled"] is True and d["labels"] == {} and d["kinds"] == {} and d["longest"] == []

    # off again: the loop's factory is put back and new tasks are no longer timed
    r = await c.post("/internal/config/monitoring", json={"loop_hold_timing": False}, headers=CLOSE)
    assert r.status == 200
    assert asyncio.get_running_loop().get_task_factory() is None
    ctx_of(c).monitoring.holds.reset()
    assert (await c.get("/v1/text/test/hold?ms=10", headers=CLOSE)).status == 200
    d = await (await c.get(f"{M}/loop-holds", headers=CLOSE)).json()
    assert d["enabled"] is False and d["kinds"] == {}


async def test_on_from_the_environment_times_a_named_task_under_its_name(mon_client):
    c = await mon_client(LOOP_HOLD_TIMING="true")

    async def busy():
        await asyncio.sleep(0)
        _spin(12)
    await asyncio.create_task(busy(), name="test:busy")
    d = ctx_of(c).monitoring.holds.view()
    assert d["enabled"] is True and d["kinds"]["test:busy"]["max_cpu_ms"] >= 12
    assert d["kinds"]["test:busy"]["steps"] == 1   # the first step (up to the sleep) was under 1 ms


async def test_a_timed_coroutine_keeps_its_results_exceptions_and_cancellation():
    holds = LoopHolds(_Store(True))
    holds.start()
    try:
        async def value():
            await asyncio.sleep(0)
            return 42

        async def fails():
            await asyncio.sleep(0)
            raise KeyError("x")

        async def waits(started):
            started.set()
            await asyncio.sleep(60)
        assert await asyncio.create_task(value()) == 42
        with pytest.raises(KeyError):
            await asyncio.create_task(fails())
        started = asyncio.Event()
        t = asyncio.create_task(waits(started))
        assert isinstance(t.get_coro(), loopholds._Timed) and "waits" in repr(t)
        await started.wait()
        before = holds.steps
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert holds.steps == before + 1 and before >= 5   # the cancellation thrown in is a step too
    finally:
        holds.stop()
    assert asyncio.get_running_loop().get_task_factory() is None


async def test_a_label_covers_the_step_it_ends_in_and_not_the_next():
    holds = LoopHolds(_Store(True))
    holds.start()
    try:
        async def handler(request):
            await asyncio.sleep(0)      # a step under the label
            return "answer"

        async def connection():
            out = await labelled("scrape", handler)(None)
            _spin(3)                     # after the handler returned, the same step: still the scrape's
            await asyncio.sleep(0)
            _spin(2)                     # the next step: the connection's own
            return out
        assert await asyncio.create_task(connection()) == "answer"
    finally:
        holds.stop()
    scrape = holds.labels["scrape"]
    assert holds.runs["scrape"] == 1 and scrape.steps == 2 and scrape.cpu >= 0.003
    recorded = {h["label"]: h["cpu_ms"] / 1000 for h in holds.view()["longest"]}   # the steps of 1 ms or more
    assert set(recorded) == {"scrape", None} and recorded["scrape"] >= 0.003 and recorded[None] >= 0.002


async def test_a_factory_installed_before_still_makes_the_tasks():
    made = []

    def factory(loop, coro, **kw):
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kw)
    loop = asyncio.get_running_loop()
    loop.set_task_factory(factory)
    holds = LoopHolds(_Store(True))
    try:
        holds.start()

        async def one():
            return 1
        assert await asyncio.create_task(one()) == 1
        assert isinstance(made[-1], loopholds._Timed)
        holds.stop()
        assert loop.get_task_factory() is factory
    finally:
        loop.set_task_factory(None)


async def test_the_store_switches_it():
    store = _Store(False)
    holds = LoopHolds(store)
    holds.start()
    assert not holds.enabled
    store.cfg = {"loop_hold_timing": True}
    for fn in store.subscribers:
        fn("monitoring", store.cfg, {"loop_hold_timing": False})
    assert holds.enabled and asyncio.get_running_loop().get_task_factory() == holds._factory
    store.cfg = {"loop_hold_timing": False}
    for fn in store.subscribers:
        fn("monitoring", store.cfg, {"loop_hold_timing": True})
    assert not holds.enabled and asyncio.get_running_loop().get_task_factory() is None


class _FakeClock:
    def __init__(self):
        self.now = (0, b"0 0 0", 0)   # (thread CPU ns, schedstat: run ns, ns waiting for a core, ...; blocks)

    def read(self):
        return self.now


def test_held_is_the_cpu_time_unless_the_step_blocked_then_the_wall_time_less_the_wait_for_a_core():
    holds = LoopHolds(_Store(False))
    holds.clock = _FakeClock()
    w = loopholds._Timed(None, holds)
    w.kind = "k"
    # 30 ms of wall time, 2 ms on the CPU, blocked once, 25 ms runnable but waiting for a core: 5 ms held
    # (not over 5)
    holds.clock.now = (2_001_000, b"9 25007000 9", 4)
    holds.note(w, 0.030, (1000, b"3 7000 3", 3), holds.gc.seconds)
    # 8 ms of wall time, 1 ms of CPU, no wait, blocked (a system call, say): 8 ms held, over; 4 ms of it
    # in the collector
    holds.clock.now = (1_000_000, b"0 0 1", 1)
    holds.gc.seconds += 0.004
    holds.note(w, 0.008, (0, b"0 0 0", 0), holds.gc.seconds - 0.004)
    # 9 ms of wall time, 1.5 ms of CPU, never blocked: 1.5 ms held (the rest was not the process's)
    holds.clock.now = (1_500_000, b"0 100000 4", 7)
    holds.note(w, 0.009, (0, b"0 0 3", 7), holds.gc.seconds)
    holds.note(w, 0.0005, (0, b"0 0 0", 0), holds.gc.seconds)   # under 1 ms: only counted
    v = holds.view()
    assert v["steps"] == 4 and v["kinds"]["k"] == {"steps": 3, "max_held_ms": 8.0, "max_cpu_ms": 2.0,
                                                   "max_wall_ms": 30.0, "over_5_ms": 1}
    assert [(h["held_ms"], h["cpu_ms"], h["wall_ms"], h["gc_ms"]) for h in v["longest"]] == [
        (8.0, 1.0, 8.0, 4.0), (5.0, 2.0, 30.0, 0.0), (1.5, 1.5, 9.0, 0.0)]


async def test_a_step_that_blocks_is_held_for_its_wall_time():
    holds = LoopHolds(_Store(True))
    holds.start()
    try:
        async def sleeps_in_a_system_call():
            await asyncio.sleep(0)
            time.sleep(0.02)   # off the CPU, the loop blocked
        await asyncio.create_task(sleeps_in_a_system_call())
    finally:
        holds.stop()
    top = holds.view()["longest"][0]
    assert top["held_ms"] >= 20 and top["cpu_ms"] < top["held_ms"]


async def test_the_collector_s_time_lands_in_the_step_that_collected_and_where_it_waits_is_named():
    import gc
    holds = LoopHolds(_Store(True))
    holds.start()
    try:
        async def collects():
            _spin(2)                 # a recorded step: where it waits is where the next one starts
            await asyncio.sleep(0)
            junk = [[i] for i in range(200_000)]   # a full collection walks these
            gc.collect()
            _spin(1)
            await asyncio.sleep(0)
            return len(junk)
        assert await asyncio.create_task(collects()) == 200_000
    finally:
        holds.stop()
    assert holds.gc not in gc.callbacks
    top = holds.view()["longest"][0]
    assert top["gc_ms"] > 0 and top["wall_ms"] >= top["gc_ms"] and top["to"].startswith("test_loopholds.py:")
    assert top["to"].endswith(" collects") and top["from"].endswith(" collects") and top["from"] != top["to"]
    assert holds.view()["gc"]["gen2"]["collections"] >= 1
    assert holds.view()["gc"]["thresholds"] == list(gc.get_threshold())


def test_without_schedstat_the_cpu_time_comes_from_thread_time(monkeypatch):
    def refuse(*a):
        raise OSError("no schedstat")
    monkeypatch.setattr(loopholds.os, "open", refuse)
    clock = loopholds._Clock()
    a = clock.read()
    _spin(3)
    cpu, queued, blocked = loopholds._cpu_and_queued(a, clock.read())
    assert clock.fd is None and cpu >= 0.003 and queued == 0
    assert loopholds.held_seconds(0.010, cpu, queued, blocked) == 0.010   # nothing known: the wall time


async def test_a_minute_snapshot_gives_the_loop_back_between_taking_building_and_storing_it(mon_client):
    c = await mon_client(LOOP_HOLD_TIMING="true")
    assert (await c.get("/v1/text/test/fast")).status == 200
    mon = ctx_of(c).monitoring
    mon.holds.reset()
    snap = await asyncio.create_task(mon.take_snapshot(), name="test:snapshot")
    assert snap["routes"]["GET /v1/text/test/fast"]["n"] == 1
    assert mon.holds.steps >= 3   # (its task's steps; every step of under 1 ms is only counted)
    # the next interval started when the figures were taken: a live view right after sees none of them
    assert "GET /v1/text/test/fast" not in mon.live()["routes"]


def test_a_request_s_kind_is_its_method_and_registered_route_never_its_raw_path():
    from types import SimpleNamespace as NS
    matched = NS(method="GET", match_info=NS(route=NS(resource=NS(canonical="/internal/config/{section}"))))
    assert loopholds._route(matched) == "GET /internal/config/{section}"
    assert loopholds._route(NS(method="GET", match_info=NS(route=NS(resource=None)))) == "GET (no route)"
    assert loopholds._route(NS(method="GET")) is None   # not matched yet: the task's own name then


async def test_an_aiohttp_request_task_brings_its_request():
    from aiohttp.web_protocol import RequestHandler

    class Proto(RequestHandler):
        def __init__(self):   # only what building the coroutine needs
            pass
    req = object()
    coro = Proto()._handle_request(req, 0.0, None)
    try:
        assert loopholds._request_of(coro) is req
    finally:
        coro.close()

    async def other(request):
        return request
    c = other(req)
    assert loopholds._request_of(c) is None
    c.close()
