"""The upstream connection pool made visible (an aiohttp TraceConfig on the provider's session).

Per provider (label `provider`):

* llmapi_ai_pool_connections_in_use: connections serving a request (or being opened), read from the
  connector at every acquisition and release;
* llmapi_ai_pool_waiting_requests: requests queued for a free slot (on_connection_queued_start/_end;
  a request that gives up while queued, a pool timeout, leaves through on_request_exception);
* llmapi_ai_pool_wait_seconds: per acquisition, the time queued for a slot (0 when a slot was free:
  a reused connection or a new one, on_connection_reuseconn / on_connection_create_start; the TCP
  connect that may follow is not pool wait).  A request that timed out in the queue is observed too;
* llmapi_ai_pool_max_connections: the pool size (ai.max_connections).

Each wait is also the span "ai.pool_wait" (inside "ai.call"), which is how
/internal/monitoring/bottlenecks sees the pool; `stats()` feeds /internal/monitoring/ai-performance.
"""
from __future__ import annotations

import time
from collections import deque
from time import perf_counter

import aiohttp

from exporter.metrics import AI_POOL_IN_USE, AI_POOL_LIMIT, AI_POOL_WAIT, AI_POOL_WAITING
from service import spans

RECENT_SECONDS = 300.0
RECENT_KEEP = 20_000


class PoolMeter:
    def __init__(self, provider: str):
        self.provider = provider
        self.in_use_g = AI_POOL_IN_USE.labels(provider)
        self.waiting_g = AI_POOL_WAITING.labels(provider)
        self.limit_g = AI_POOL_LIMIT.labels(provider)
        self.wait_h = AI_POOL_WAIT.labels(provider)
        self.connector = None
        self.waiting = 0
        self.max_waiting = 0
        self.acquired = 0       # acquisitions
        self.queued = 0         # of which waited for a slot
        self.timeouts = 0       # gave up while queued
        self.wait_total = 0.0
        self.wait_max = 0.0
        self.recent: deque = deque(maxlen=RECENT_KEEP)  # (epoch, seconds waited) of recent acquisitions
        self.waiting_g.set(0)
        self.in_use_g.set(0)

    # ---- wiring -------------------------------------------------------------------
    def attach(self, connector, limit: int) -> aiohttp.TraceConfig:
        """The TraceConfig for a new session on `connector` (a rebuilt pool attaches again)."""
        self.connector = connector
        self.limit_g.set(limit)
        tc = aiohttp.TraceConfig()
        tc.on_request_start.append(self._start)
        tc.on_connection_queued_start.append(self._queued)
        tc.on_connection_queued_end.append(self._dequeued)
        tc.on_connection_create_start.append(self._got)
        tc.on_connection_reuseconn.append(self._got)
        tc.on_request_exception.append(self._failed)
        return tc

    def in_use(self) -> int:
        c = self.connector
        try:
            return len(c._acquired) if c is not None else 0  # aiohttp's set of connections handed out
        except AttributeError:
            return 0

    def sample(self) -> None:
        self.in_use_g.set(self.in_use())

    # ---- trace callbacks (ctx: aiohttp's per-request SimpleNamespace) -------------------
    async def _start(self, session, ctx, params) -> None:
        ctx.queued_at = None
        ctx.wait = 0.0

    async def _queued(self, session, ctx, params) -> None:
        ctx.queued_at = perf_counter()
        self.waiting += 1
        if self.waiting > self.max_waiting:
            self.max_waiting = self.waiting
        self.waiting_g.set(self.waiting)

    def _leave_queue(self, ctx) -> None:
        t = getattr(ctx, "queued_at", None)
        if t is None:
            return
        ctx.queued_at = None
        ctx.wait = getattr(ctx, "wait", 0.0) + perf_counter() - t
        self.waiting -= 1
        self.waiting_g.set(self.waiting)

    async def _dequeued(self, session, ctx, params) -> None:
        self._leave_queue(ctx)

    async def _got(self, session, ctx, params) -> None:
        self._observe(getattr(ctx, "wait", 0.0))
        ctx.wait = 0.0
        self.sample()

    async def _failed(self, session, ctx, params) -> None:
        if getattr(ctx, "queued_at", None) is not None:  # gave up in the queue (pool_timeout, cancelled)
            self._leave_queue(ctx)
            self.timeouts += 1
            self._observe(ctx.wait)
        self.sample()

    def _observe(self, wait: float) -> None:
        self.acquired += 1
        if wait > 0:
            self.queued += 1
            self.wait_total += wait
            if wait > self.wait_max:
                self.wait_max = wait
        self.wait_h.observe(wait)
        spans.record("ai.pool_wait", wait)
        self.recent.append((time.time(), wait))

    # ---- views ---------------------------------------------------------------------------
    def stats(self, limit: int) -> dict:
        since = time.time() - RECENT_SECONDS
        recent = [w for t, w in self.recent if t >= since]
        waited = [w for w in recent if w > 0]
        return {"max_connections": limit, "in_use": self.in_use(), "waiting": self.waiting,
                "max_waiting": self.max_waiting, "acquisitions": self.acquired, "queued": self.queued,
                "queue_timeouts": self.timeouts,
                "wait_avg_ms": round(self.wait_total / self.acquired * 1000, 3) if self.acquired else 0.0,
                "wait_max_ms": round(self.wait_max * 1000, 3),
                "recent": {"window_seconds": RECENT_SECONDS, "acquisitions": len(recent), "queued": len(waited),
                           "wait_total_s": round(sum(recent), 6),
                           "wait_avg_ms": round(sum(recent) / len(recent) * 1000, 3) if recent else 0.0}}
