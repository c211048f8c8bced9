"""The upstream connection pool made visible, measured by the provider's connector itself.

Per provider (label `provider`):

* llmapi_ai_pool_connections_in_use: connections serving a request (or being opened), read from the
  connector when one is handed out and when one comes back;
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
from exporter.tally import HistogramTally
from service import spans

RECENT_SECONDS = 300.0


class PoolMeter:
    def __init__(self, provider: str):
        self.provider = provider
        self.in_use_g = AI_POOL_IN_USE.labels(provider)
        self._in_use_value = self.in_use_g._value
        self.waiting_g = AI_POOL_WAITING.labels(provider)
        self.limit_g = AI_POOL_LIMIT.labels(provider)
        AI_POOL_WAIT.labels(provider)  # the series at 0 before the first acquisition
        self.wait_h = HistogramTally(AI_POOL_WAIT)
        self._key = (provider,)
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
        self.limit_g.set(limit)

    def in_use(self) -> int:
        return self.pool.used if self.pool is not None else 0

    def sample(self) -> None:
        """The in-use gauge from the pool: its value written directly (Gauge.set is three calls more
        per sample, two samples per request; exporter/direct.py reads the same `_value`)."""
        p = self.pool
        self._in_use_value.set(p.used if p is not None else 0)

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
