"""Size checks, memory-pressure responses, cleanup (auto and emergency).

Pressure is the memory tier's bytes over max_memory_mb.  Checked after each
insert and every size_check_interval seconds:
  >= emergency_threshold -> emergency_response
  >= pressure_threshold  -> pressure_response
Responses: none, clear_expired (drop every expired entry), evict_old (least
recently used first), evict_lfu, evict_policy (the eviction_policy) - the
evicting ones go down to 90 % of pressure_threshold - and clear_all.  A
response's cost per call is bounded whatever the tier's size: it works in steps
of memory.CHUNK entries, the first in the caller (an insert, a config change,
the size check), the others in a task that yields to the event loop between two.

With auto_cleanup on, a background pass every cleanup_interval_minutes drops
entries that expired more than stale_ttl_seconds ago (older than any
fallback may use).  emergency-cleanup drops every expired entry and evicts
down to emergency_cleanup_target of max memory.
"""
from __future__ import annotations

import asyncio
import logging
import time

from exporter.metrics import CACHE_ENTRIES, CACHE_PRESSURE
from service.background import cancel_and_wait
from service.cache.analytics import MB

log = logging.getLogger("service.cache")

HYSTERESIS = 0.9        # evicting responses go down to this fraction of pressure_threshold
SCAN_MIN_INTERVAL = 1.0  # an O(n) response (clear_expired) runs at most this often per level
L2_COUNT_INTERVAL = 60.0
ENFORCING = "limits"     # the responding key of the evictions down to max_entries and max_memory_mb (enforce)
LEVELS = ("pressure", "emergency")  # llmapi_cache_pressure_events{level}; a level's response: cache.<level>_response


class Maintenance:
    def __init__(self, cache):
        self.cache = cache
        self.task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self.checks = 0
        self.last_check: float | None = None
        self.last_cleanup = 0.0
        self._last_scan: dict[str, float] = {}
        self._l2_counted = 0.0
        self.l2_entries: int | None = None
        self.responding: dict[str, asyncio.Task] = {}  # level -> the task finishing its response

    # ---- background loop ---------------------------------------------------------
    def start(self) -> None:
        self._wake = asyncio.Event()
        self._wake.set()  # a first check (and L2 count) right away
        self.task = asyncio.get_running_loop().create_task(self._loop(), name="cache:maintenance")

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _interval(self, cfg: dict, now: float) -> float:
        interval = cfg["size_check_interval"]
        if cfg["auto_cleanup"]:
            interval = min(interval, max(0.0, self.last_cleanup + cfg["cleanup_interval_minutes"] * 60 - now))
        return interval

    async def _loop(self) -> None:
        while True:
            cfg = self.cache.store.get("cache")
            try:  # (asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation)
                async with asyncio.timeout(self._interval(cfg, time.time())):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cache maintenance failed")

    async def tick(self) -> None:
        cache = self.cache
        cfg = cache.store.get("cache")
        now = time.time()
        self.checks += 1
        self.last_check = now
        self.enforce("capacity", now)
        self.check_pressure(cfg, now)
        if cfg["auto_cleanup"] and now - self.last_cleanup >= cfg["cleanup_interval_minutes"] * 60:
            await self.cleanup(cfg, now)
        await self.count_l2(L2_COUNT_INTERVAL)
        cache._gauges()

    async def count_l2(self, max_age: float) -> int | None:
        """Cache keys in Redis, counted (SCAN) at most once per max_age seconds."""
        now = time.time()
        if self.cache.l2.usable and now - self._l2_counted >= max_age:
            self._l2_counted = now
            n = await self.cache.l2.count()
            if n is not None:
                self.l2_entries = n
                CACHE_ENTRIES.labels("redis").set(n)
        return self.l2_entries

    # ---- pressure ------------------------------------------------------------------
    @staticmethod
    def preinit(cfg: dict) -> None:
        """The series of each level's configured response at 0 (again after a change: the new response's)."""
        for level in LEVELS:
            CACHE_PRESSURE.labels(level, cfg[f"{level}_response"])

    def check_pressure(self, cfg: dict, now: float) -> dict | None:
        max_bytes = cfg["max_memory_mb"] * MB
        frac = self.cache.l1.bytes / max_bytes
        if frac >= cfg["emergency_threshold"]:
            return self.respond("emergency", cfg["emergency_response"], cfg, now, frac)
        if frac >= cfg["pressure_threshold"]:
            return self.respond("pressure", cfg["pressure_response"], cfg, now, frac)
        return None

    def respond(self, level: str, response: str, cfg: dict, now: float, frac: float) -> dict | None:
        """Start `response`: its first step (at most memory.CHUNK entries) runs now, in the caller; the rest,
        if any, in a task that yields to the event loop between steps, so the cost of one call is bounded
        whatever the tier's size.  While a level's response is still at work, that level starts no other."""
        running = self.responding.get(level)
        if running is not None and not running.done():
            return None
        if response in ("none", "clear_expired"):
            if now - self._last_scan.get(level, 0.0) < SCAN_MIN_INTERVAL:
                return None
            self._last_scan[level] = now
        CACHE_PRESSURE.labels(level, response).inc()
        rec = self.cache.stats.pressure.setdefault(level, {"events": 0, "entries_freed": 0, "bytes_freed": 0})
        rec["events"] += 1
        last = rec["last"] = {"time": now, "response": response, "utilization": round(frac, 4), "entries_freed": 0,
                              "bytes_freed": 0, "done": False}
        self._run(level, self._steps(level, response, cfg, now),
                  lambda step: self._step(rec, step or (last["entries_freed"], last["bytes_freed"], False)),
                  f"cache:{level}-response")
        return last

    def _run(self, key: str, steps, on_step, name: str, on_done=None) -> None:
        """Run `steps` (memory.py's removing/evicting: (entries, bytes) so far, and whether more follow): the first
        now, in the caller; the rest in a task yielding to the event loop between two (responding[key]), or here
        when there is no loop.  on_step(step, or None once the steps ended) returns whether to go on; on_done
        runs when the task has finished them."""
        if not on_step(next(steps, None)):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): finish here
            while on_step(next(steps, None)):
                pass
            return
        self.responding[key] = loop.create_task(self._rest(steps, on_step, on_done), name=name)

    async def _rest(self, steps, on_step, on_done) -> None:
        more = True
        while more:
            await asyncio.sleep(0)
            more = on_step(next(steps, None))
        self.cache._gauges()
        if on_done is not None:
            on_done()

    def _steps(self, level: str, response: str, cfg: dict, now: float):
        """The steps of a response: (entries, bytes) freed so far, and whether it goes on."""
        l1 = self.cache.l1
        if response == "clear_expired":
            return l1.removing(lambda e: e.expires_at <= now, "expired")
        if response in ("evict_old", "evict_lfu", "evict_policy"):
            policy = {"evict_old": "lru", "evict_lfu": "lfu"}.get(response, cfg["eviction_policy"])
            target = cfg["pressure_threshold"] * HYSTERESIS * cfg["max_memory_mb"] * MB
            return l1.evicting(lambda: l1.bytes > target, policy, now, level)
        if response == "clear_all":
            return l1.removing(lambda e: True, level)
        return iter(())

    @staticmethod
    def _step(rec: dict, step: tuple[int, int, bool]) -> bool:
        """Account one step's progress; True while the response goes on."""
        n, freed, more = step
        last = rec["last"]
        rec["entries_freed"] += n - last["entries_freed"]
        rec["bytes_freed"] += freed - last["bytes_freed"]
        last["entries_freed"], last["bytes_freed"], last["done"] = n, freed, not more
        return more

    def enforce(self, reason: str, now: float) -> tuple[int, int]:
        """Evict down to max_entries and max_memory_mb, as the cache section reads when each step runs: the
        first memory.CHUNK evictions now, in the caller, the rest in a task yielding to the event loop between
        steps.  So a config change that shrinks a tier of millions costs one call no more than CHUNK
        evictions, and so does each insert meanwhile.  Returns (entries, bytes) evicted by the caller's step."""
        l1, store = self.cache.l1, self.cache.store

        def over() -> bool:
            cfg = store.get("cache")
            return len(l1.data) > cfg["max_entries"] or l1.bytes > cfg["max_memory_mb"] * MB

        if not over():
            return 0, 0
        running = self.responding.get(ENFORCING)
        if running is not None and not running.done():
            return 0, 0  # the running one reads the same limits
        done = [0, 0]  # (entries, bytes) evicted so far

        def on_step(step) -> bool:
            if step is not None:
                done[:] = step[:2]
            return step is not None and step[2]

        self._run(ENFORCING, l1.evicting(over, store.get("cache")["eviction_policy"], now, reason), on_step,
                  f"cache:{reason}-evictions",
                  lambda: log.info("cache evictions done", extra={"reason": reason, "evicted": done[0],
                                                                  "bytes_freed": done[1]}))
        return done[0], done[1]  # (the caller's step, or all of it without a loop)

    async def settled(self) -> None:
        """Wait for the pressure responses at work (tests, and whoever needs their result)."""
        await asyncio.gather(*(t for t in self.responding.values() if not t.done()), return_exceptions=True)

    # ---- cleanup ----------------------------------------------------------------------
    async def cleanup(self, cfg: dict, now: float) -> dict:
        n, freed = await self.cache.l1.drop_expired(now, grace=cfg["stale_ttl_seconds"])
        self.last_cleanup = now
        c = self.cache.stats.cleanups
        c["runs"] += 1
        c["last_run"] = now
        c["last_removed"] = n
        c["removed_total"] += n
        self.cache._gauges()
        return {"entries_removed": n, "bytes_freed": freed}

    async def emergency_cleanup(self) -> dict:
        cache = self.cache
        cfg = cache.store.get("cache")
        now = time.time()
        l1 = cache.l1
        before = {"entries": len(l1), "memory_bytes": l1.bytes}
        n1, b1 = await l1.drop_expired(now)
        target = cfg["emergency_cleanup_target"] * cfg["max_memory_mb"] * MB
        n2, b2 = await l1.evict_down(lambda: l1.bytes > target, cfg["eviction_policy"], now, "emergency")
        cache._gauges()
        return {"before": before, "after": {"entries": len(l1), "memory_bytes": l1.bytes},
                "expired_removed": n1, "evicted": n2, "bytes_freed": b1 + b2,
                "target_bytes": int(target)}

    def status(self) -> dict:
        cfg = self.cache.store.get("cache")
        return {"auto_cleanup": {"enabled": cfg["auto_cleanup"], "running": self.task is not None and not self.task.done(),
                                 "interval_minutes": cfg["cleanup_interval_minutes"], **self.cache.stats.cleanups},
                "size_checks": {"interval_seconds": cfg["size_check_interval"], "runs": self.checks,
                                "last_run": self.last_check}}

    async def close(self) -> None:
        await cancel_and_wait([self.task, *self.responding.values()])
