"""The upstream connection pool made visible, measured by the provider's connector itself.

Per provider (label `provider`):

* llmapi_ai_pool_connections_in_use: connections serving a request (or being opened), read from the
  pool when the gauge is flushed: by every scrape of the process, and once a second with the wait
  histogram (so a worker that is not scraped itself is at most a second behind, WORKERS > 1);
* llmapi_ai_pool_waiting_requests: requests queued for a free slot;
* llmapi_ai_pool_wait_seconds: per acquisition, the time queued for a slot (0 when a slot was free:
  a reused connection or a new one; the TCP connect that may follow is not pool wait).  A request
  that gave up in the queue (a pool timeout, a cancellation) is observed too;
* llmapi_ai_pool_max_connections: the pool size (ai.max_connections).

The provider's pool (wire.py's WirePool) reports each acquisition, and only a call that must queue
pays for timing; nearly every call finds a free slot.  The observations go through a HistogramTally
(a scrape flushes it, so /metrics is exact).  Each wait is also the span "ai.pool_wait" (inside "ai.call"), which is
how /internal/monitoring/bottlenecks sees the pool; `stats()` feeds /internal/monitoring/ai-performance.
"""
from __future__ import annotations

import time
from collections import deque

from exporter.metrics import AI_POOL_IN_USE, AI_POOL_LIMIT, AI_POOL_WAIT, AI_POOL_WAITING
from exporter.tally import HistogramTally, LiveGauge
from service import spans

RECENT_SECONDS = 300.0


_attached: dict = {}  # provider label -> the PoolMeter whose pool was attached last: the one its gauge shows


class _InUse(LiveGauge):
    """The in-use gauge, read from the pool when flushed (no write per acquisition and release); of the
    meters of one provider label (a provider made again), only the last attached writes it."""

    def __init__(self, gauge, meter: "PoolMeter"):
        super().__init__(gauge)
        self.meter = meter

    def flush(self) -> None:
        m = self.meter
        if _attached.get(m.provider) is m:
            self.gauge.set(m.in_use())


class PoolMeter:
    def __init__(self, provider: str):
        self.provider = provider
        self.in_use_g = AI_POOL_IN_USE.labels(provider)
        self.waiting_g = AI_POOL_WAITING.labels(provider)
        self.limit_g = AI_POOL_LIMIT.labels(provider)
        AI_POOL_WAIT.labels(provider)  # the series at 0 before the first acquisition
        self.in_use_live = _InUse(self.in_use_g, self)
        self.wait_h = HistogramTally(AI_POOL_WAIT, companions=(self.in_use_live,))
        self._key = (provider,)
        # the usual acquisition (a free slot: 0 s, the first bucket) adds to these in place (free_slot); a held
        # cell makes the histogram flush once a second while the loop runs, and the in-use gauge with it.  Both
        # are taken at the first such acquisition, on the loop (the meter is made before it runs: a cell
        # taken then would arm no timer, and a worker nobody scrapes would never flush)
        self._free_cell: list | None = None
        self._free_span: list | None = None
        self.pool = None
        self.waiting = 0
        self.max_waiting = 0
        self.acquired = 0       # acquisitions
        self.queued = 0         # of which waited for a slot
        self.timeouts = 0       # gave up while queued
        self.wait_total = 0.0
        self.wait_max = 0.0
        # per epoch second of recent acquisitions: [second, acquisitions, queued, seconds waited]
        self.recent: deque[list] = deque(maxlen=int(RECENT_SECONDS) + 1)
        self.waiting_g.set(0)
        self.in_use_g.set(0)

    # ---- wiring -------------------------------------------------------------------
    def attach(self, pool, limit: int) -> None:
        """Measure `pool` (its `used`: connections handed out or being opened; a rebuilt pool attaches again)."""
        self.pool = pool
        _attached[self.provider] = self
        self.limit_g.set(limit)

    def in_use(self) -> int:
        return self.pool.used if self.pool is not None else 0


    # ---- events (from the pool) ---------------------------------------------------------
    def enter_queue(self) -> None:
        self.waiting += 1
        if self.waiting > self.max_waiting:
            self.max_waiting = self.waiting
        self.waiting_g.set(self.waiting)

    def leave_queue(self, seconds: float, gave_up: bool) -> None:
        self.waiting -= 1
        self.waiting_g.set(self.waiting)
        if gave_up:
            self.timeouts += 1
            self.observe(seconds)

    def free_slot(self) -> None:
        """observe(0.0) for an acquisition that found a slot free, without its calls: the counts, the
        second's tally, the histogram's first bucket (+0 to its sum) and the span's count (+0 s)."""
        self.acquired += 1
        now = int(time.time())
        recent = self.recent
        r = recent[-1] if recent else None
        if r is None or r[0] != now:
            r = [now, 0, 0, 0.0]
            recent.append(r)
        r[1] += 1
        cell, span = self._free_cell, self._free_span
        if cell is None:
            cell = self._free_cell = self.wait_h.cell(self._key)
            span = self._free_span = spans.cell("ai.pool_wait")
        cell[0] += 1
        span[0] += 1

    def observe(self, wait: float) -> None:
        """One acquisition that waited `wait` seconds for a slot (0: a slot was free)."""
        self.acquired += 1
        now = int(time.time())
        r = self.recent[-1] if self.recent else None
        if r is None or r[0] != now:
            r = [now, 0, 0, 0.0]
            self.recent.append(r)
        r[1] += 1
        if wait > 0:
            self.queued += 1
            self.wait_total += wait
            if wait > self.wait_max:
                self.wait_max = wait
            r[2] += 1
            r[3] += wait
        self.wait_h.observe(self._key, wait)
        spans.record("ai.pool_wait", wait)

    # ---- views ---------------------------------------------------------------------------
    def stats(self, limit: int) -> dict:
        since = time.time() - RECENT_SECONDS
        recent = [r for r in self.recent if r[0] >= since]
        n = sum(r[1] for r in recent)
        waited = sum(r[3] for r in recent)
        return {"max_connections": limit, "in_use": self.in_use(), "waiting": self.waiting,
                "max_waiting": self.max_waiting, "acquisitions": self.acquired, "queued": self.queued,
                "queue_timeouts": self.timeouts,
                "wait_avg_ms": round(self.wait_total / self.acquired * 1000, 3) if self.acquired else 0.0,
                "wait_max_ms": round(self.wait_max * 1000, 3),
                "recent": {"window_seconds": RECENT_SECONDS, "acquisitions": n, "queued": sum(r[2] for r in recent),
                           "wait_total_s": round(waited, 6),
                           "wait_avg_ms": round(waited / n * 1000, 3) if n else 0.0}}
