"""Background warming: recompute popular keys before they expire.

Every warming_interval_seconds the warmer looks at the popular ("hot") keys
only.  A hot key still in use since its last store, with at most
warming_threshold of its TTL left, is recomputed through the cache's
single-flight (a user miss on it joins the refresh).  At most
max_warming_operations refreshes run at once, and none start while as many
user misses are in flight: user traffic always goes first.
"""
from __future__ import annotations

import asyncio
import logging
import time

from exporter.metrics import CACHE_WARMING
from service.background import cancel_and_wait

log = logging.getLogger("service.cache")


class Warmer:
    def __init__(self, cache):
        self.cache = cache
        self.task: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()
        self.last_scan: float | None = None

    @property
    def enabled(self) -> bool:
        return self.cache.store.get("cache")["enable_background_warming"]

    def ensure(self) -> None:
        """Start or stop the loop to match the config (call on config change)."""
        if self.enabled and (self.task is None or self.task.done()):
            try:
                self.task = asyncio.get_running_loop().create_task(self._loop(), name="cache:warming")
            except RuntimeError:
                self.task = None

    async def _loop(self) -> None:
        while True:
            cfg = self.cache.store.get("cache")
            if not cfg["enable_background_warming"]:
                return
            await asyncio.sleep(cfg["warming_interval_seconds"])
            try:
                self.scan()
            except Exception:
                log.exception("cache warming scan failed")

    def due(self, now: float, threshold: float) -> list:
        out = []
        for e in self.cache.hot.values():
            if e.warming or e.req is None or e.recent == 0:
                continue
            left = e.expires_at - now
            if 0 < left <= threshold * e.ttl:
                out.append(e)
        out.sort(key=lambda e: e.expires_at)
        return out

    def scan(self) -> int:
        cfg = self.cache.store.get("cache")
        stats = self.cache.stats.warming
        stats["scans"] += 1
        self.last_scan = time.time()
        limit = cfg["max_warming_operations"]
        due = self.due(self.last_scan, cfg["warming_threshold"])
        if not due:
            return 0
        if self.cache.user_inflight() >= limit:
            stats["deferred"] += len(due)
            CACHE_WARMING.labels("deferred").inc(len(due))
            return 0
        started = 0
        for e in due:
            if len(self.running) >= limit:
                break
            t = self.cache.refresh(e)
            if t is None:
                continue
            self.running.add(t)
            t.add_done_callback(self._done)
            started += 1
        return started

    def _done(self, t: asyncio.Task) -> None:
        self.running.discard(t)
        stats = self.cache.stats.warming
        if t.cancelled():
            return
        if t.exception() is not None:
            stats["failed"] += 1
            CACHE_WARMING.labels("failed").inc()
        else:
            stats["refreshed"] += 1
            CACHE_WARMING.labels("refreshed").inc()

    def status(self) -> dict:
        cfg = self.cache.store.get("cache")
        return {"enabled": cfg["enable_background_warming"], "running": self.task is not None and not self.task.done(),
                "warming_threshold": cfg["warming_threshold"], "max_warming_operations": cfg["max_warming_operations"],
                "hot_keys": len(self.cache.hot), "in_flight": len(self.running), "last_scan": self.last_scan,
                **self.cache.stats.warming}

    async def close(self) -> None:
        await cancel_and_wait([self.task, *self.running])
