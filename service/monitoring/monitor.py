"""The process's monitor: snapshots on a timer, history, tasks, benchmarks, memory tracing.

Created by service/internal/monitoring.py:register (as ctx.monitoring) and
started from the app's startup hooks.  Reads the request analytics the
metrics middleware feeds (ctx.extras["analytics"]) and the admission state
(ctx.extras["admission"]).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import tracemalloc
from collections import deque

from exporter.collectors import lag_probe
from exporter.metrics import ADMISSION_ACTIVE, EMERGENCY_MODE, MONITORING_SNAPSHOTS
from service.background import cancel_and_wait
from service.monitoring import snapshot as S
from service.monitoring.analytics import RequestAnalytics
from service.monitoring.benchmark import Benchmarks
from service.monitoring.heap import HeapTrimmer
from service.monitoring.history import History
from service.monitoring.loopholds import LoopHolds
from service.monitoring.process import CpuMeter
from service.monitoring.tasks import TaskPool

log = logging.getLogger("service.monitoring")

TICK = 1.0  # seconds between admission-gauge and short-term CPU samples


def instance_id(settings, env=None) -> str:
    env = os.environ if env is None else env
    if env.get("MONITORING_INSTANCE"):
        return env["MONITORING_INSTANCE"]
    return f"{socket.gethostname()}:{settings.port}:{settings.worker_id}"


class Monitor:
    def __init__(self, ctx, env=None):
        self.ctx = ctx
        self.store = ctx.store
        self.analytics: RequestAnalytics = ctx.extras.setdefault("analytics", RequestAnalytics())
        if "admission" not in ctx.extras:
            from service.middleware.admission import Admission
            ctx.extras["admission"] = Admission(ctx.store)
        self.admission = ctx.extras["admission"]
        # each worker keeps its own history, so each has its own file (they share STATE_DIR)
        self.history = History(ctx.store, ctx.redis, instance_id(ctx.settings, env),
                               ctx.settings.state_file("monitoring"))
        self.tasks = TaskPool(ctx.store)
        ctx.extras["tasks"] = self.tasks
        self.benchmarks = Benchmarks(self)
        self.cpu = CpuMeter()
        self.heap = HeapTrimmer(ctx.store)
        self.holds = LoopHolds(ctx.store)  # started by the app's lifecycle right after the config
        self.recent_cpu: deque = deque(maxlen=20)  # (wall seconds, busy seconds) per lag tick batch
        self._cpu_short = CpuMeter()
        self.base_counters = S.counters()
        self.interval_start = time.time()
        self.started = time.time()
        self.lag = lag_probe(ctx)  # the process's one event-loop lag probe (run by exporter/collectors.py)
        self._tasks: list[asyncio.Task] = []
        self._hotspot_prev = None
        self._snap_lock = asyncio.Lock()

    @property
    def cfg(self) -> dict:
        return self.store.get("monitoring")

    # ---- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        await self.history.load()
        await self.benchmarks.load_baseline()
        self.store.subscribe(self._on_config)
        self._apply_tracing(self.cfg)
        EMERGENCY_MODE.set(1 if self.cfg["emergency_mode"] else 0)
        self.tasks.start()
        self.base_counters = S.counters()
        self.cpu = CpuMeter()
        self.interval_start = time.time()
        self._tasks = [asyncio.create_task(self._snapshot_loop(), name="monitoring:snapshots"),
                       asyncio.create_task(self._tick_loop(), name="monitoring:tick"),
                       asyncio.create_task(self.heap.loop(), name="monitoring:heap-trim")]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        if self.benchmarks.running:
            try:
                await self.benchmarks.cancel()
            except Exception:
                pass
        await self.tasks.close()
        if self.analytics.routes:  # keep the partial interval
            try:
                await self.take_snapshot()
            except Exception:
                log.exception("monitoring: final snapshot failed")
        self.history.save_file()

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section != "monitoring":
            return
        if new["memory_tracing"] != old.get("memory_tracing") or new["tracing_frames"] != old.get("tracing_frames"):
            self._apply_tracing(new)
        if new["enable_compression"] != old.get("enable_compression"):
            self.history.recompress()
        if new["retention_hours"] != old.get("retention_hours") or new["max_events"] != old.get("max_events"):
            self.history.prune()
        EMERGENCY_MODE.set(1 if new["emergency_mode"] else 0)

    def _apply_tracing(self, cfg: dict) -> None:
        if cfg["memory_tracing"]:
            if tracemalloc.is_tracing() and tracemalloc.get_traceback_limit() != cfg["tracing_frames"]:
                tracemalloc.stop()
            if not tracemalloc.is_tracing():
                tracemalloc.start(cfg["tracing_frames"])
                log.info("tracemalloc started", extra={"frames": cfg["tracing_frames"]})
        elif tracemalloc.is_tracing():
            tracemalloc.stop()
            self._hotspot_prev = None
            log.info("tracemalloc stopped")

    # ---- snapshots ---------------------------------------------------------
    async def _snapshot_loop(self) -> None:
        while True:
            interval = self.cfg["snapshot_interval_seconds"]
            due = self.interval_start + interval
            await asyncio.sleep(max(0.01, min(1.0, due - time.time())))
            if time.time() >= self.interval_start + self.cfg["snapshot_interval_seconds"]:
                try:
                    await self.take_snapshot()
                except Exception:
                    log.exception("monitoring: snapshot failed")

    @property
    def lag_max(self) -> float:
        """The worst event-loop lag since the last snapshot."""
        return self.lag.peak

    @property
    def lag_last(self) -> float:
        return self.lag.last

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            ADMISSION_ACTIVE.set(self.admission.active)
            r = self._cpu_short.read()
            self.recent_cpu.append((r["seconds"], r["busy_seconds"], r["cores"]))

    def _extra(self, reset: bool) -> dict:
        if reset:
            max_active, max_queue = self.admission.take_peaks()
            lag = self.lag.take_peak()
        else:
            max_active, max_queue = self.admission.max_active, self.admission.max_queue
            lag = self.lag.peak
        return {"max_active": max_active, "max_queue": max_queue, "loop_lag_max": lag}

    async def take_snapshot(self) -> dict:
        """The interval's figures are taken in one step (the analytics swapped, the counters read, the next
        interval started), then built and stored in two more: the loop is given back between them (under
        the seed replay's load tests one step of all three held it 4.5-7 ms)."""
        async with self._snap_lock:
            end = time.time()
            routes, ops = self.analytics.swap()
            now, before, start = S.counters(), self.base_counters, self.interval_start
            cpu, extra = self.cpu.read(), self._extra(True)
            self.base_counters = now
            self.interval_start = end
            await asyncio.sleep(0)
            snap = S.build(start, end, routes, ops, now, before, cpu, extra)
            await asyncio.sleep(0)
            await self.history.add(snap)
            MONITORING_SNAPSHOTS.set(len(self.history.minutes))
            return snap

    def live(self) -> dict:
        """The current, unfinished interval as a snapshot (nothing reset)."""
        routes, ops = self.analytics.peek()
        return S.build(self.interval_start, time.time(), routes, ops, S.counters(), self.base_counters,
                       self.cpu.read(reset=False), self._extra(False))

    def window(self, seconds: float, live: dict | None = None) -> tuple[dict, list[dict], str]:
        """The snapshots of the last `seconds` merged, with the live interval (`live`: one already built)."""
        return self.history.window(seconds, self.live() if live is None else live)

    async def service_window(self, seconds: float, live: dict | None = None) -> tuple[dict, list[dict], str, dict]:
        """window() over every instance that shares this Redis: each instance's
        snapshots of one period (a snapshot interval, or an hour for long
        windows) are combined side by side, the periods end to end.  Only this
        instance's unfinished interval is live; the others count up to their
        last snapshot.  Also returns which instances were included."""
        live = self.live() if live is None else live
        agg, snaps, resolution = self.history.window(seconds, live)
        peers = await self.history.peers(time.time() - seconds, hourly=resolution == "hour")
        me = self.history.instance
        info = {"scope": "service" if self.history.redis is not None else "this instance", "this": me,
                "included": sorted([me, *(peers or {})])}
        if peers is None:
            info["note"] = "redis did not answer: this instance only"
        if not peers:
            return agg, snaps, resolution, info
        info["live"] = "this instance's current interval; the others up to their last snapshot"
        step = 3600.0 if resolution == "hour" else self.cfg["snapshot_interval_seconds"]
        mine = [(me, s) for s in snaps]
        theirs = [(inst, s) for inst, ss in peers.items() for s in ss]
        series = _side_by_side(mine + theirs, step)
        with_live = _side_by_side(mine + theirs + ([(me, live)] if live.get("seconds") else []), step)
        return S.merge(with_live), series, resolution, info

    def short_cpu_percent(self) -> float | None:
        if not self.recent_cpu:
            return None
        wall = sum(w for w, _, _ in self.recent_cpu)
        busy = sum(b for _, b, _ in self.recent_cpu)
        cores = self.recent_cpu[-1][2]
        return round(busy / wall / cores * 100, 3) if wall and cores else None


def _side_by_side(items: list[tuple[str, dict]], step: float) -> list[dict]:
    """(instance, snapshot) pairs as one snapshot per period of `step` seconds, oldest first."""
    periods: dict[int, dict[str, list]] = {}
    for inst, snap in items:
        periods.setdefault(int(snap["start"] // step), {}).setdefault(inst, []).append(snap)
    return [S.combine([S.merge(ss) for ss in by_inst.values()]) for _, by_inst in sorted(periods.items())]
