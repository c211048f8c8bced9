"""Admission control (load shedding) for the API routes.

`monitoring.max_concurrent_requests` requests are served at once (0: no
limit); up to `monitoring.queue_size` more wait in FIFO order for a slot, at
most `queue_timeout_seconds`.  A request beyond the queue, or one that waited
too long, is shed at once with 503 + Retry-After and counted in
llmapi_admission_shed_total{reason}.  All three values are read live, so
POST /internal/monitoring/configure (and emergency mode) act on the next
request; a raised limit wakes waiters at once.

Admin and self traffic as the catalog defines them (exporter/kpis.py:
/internal, /metrics, the health probes, /openapi.json) bypass admission, so
the service can still be inspected and tuned while it sheds; API traffic
(and unknown paths) is admitted or shed.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from exporter import kpis
from exporter.metrics import ADMISSION_QUEUE_DEPTH, ADMISSION_SHED, ADMISSION_WAIT
from service import spans
from service.context import ROUTE
from service.errors import ApiError
from service.middleware.stack import Layer, Wait

EXEMPT = (kpis.ADMIN_ROUTE_PREFIX, *kpis.SELF_ROUTES)  # admin and self traffic (prefixes of request paths)



class Admission:
    def __init__(self, store):
        self.store = store
        self.active = 0
        self.waiters: deque[asyncio.Future] = deque()  # may hold abandoned (done) futures
        self.queued = 0  # requests waiting now
        self.max_active = 0      # peaks since the last snapshot (reset by the monitor)
        self.max_queue = 0
        self.admitted = 0
        self.queued_total = 0
        self.shed = {"queue_full": 0, "queue_timeout": 0}
        self.service_ewma = 0.05  # seconds a request holds a slot, smoothed
        self.limit = store.get("monitoring")["max_concurrent_requests"]  # (0: no limit)
        store.subscribe(self._on_config)

    # ---- slots -----------------------------------------------------------
    def _limit(self) -> int:
        return self.store.get("monitoring")["max_concurrent_requests"]

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section == "monitoring":
            self.limit = new["max_concurrent_requests"]
            self._wake()

    def _wake(self) -> None:
        limit = self._limit()
        while self.waiters and (limit <= 0 or self.active < limit):
            fut = self.waiters.popleft()
            if fut.done():
                continue
            self.active += 1
            fut.set_result(None)

    def retry_after(self) -> int:
        limit = max(1, self._limit())
        return max(1, math.ceil(self.service_ewma * (self.queued + 1) / limit))

    def _shed(self, reason: str, cfg: dict) -> ApiError:
        self.shed[reason] += 1
        ADMISSION_SHED.labels(reason).inc()  # (both reasons exist at 0 from the start: see make)
        msg = ("the service is at capacity: every slot is busy and the queue is full" if reason == "queue_full"
               else f"no slot became free within {cfg['queue_timeout_seconds']}s")
        return ApiError(503, "SERVICE_OVERLOADED", msg,
                        {"reason": reason, "max_concurrent_requests": cfg["max_concurrent_requests"],
                         "queue_size": cfg["queue_size"], "active": self.active, "queued": self.queued},
                        headers={"Retry-After": str(self.retry_after())})

    async def acquire(self, cfg: dict) -> None:
        limit = cfg["max_concurrent_requests"]
        if limit <= 0 or (self.active < limit and not self.queued):
            self.active += 1
        else:
            if self.queued >= cfg["queue_size"]:
                raise self._shed("queue_full", cfg)
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            self.queued += 1
            self.queued_total += 1
            ADMISSION_QUEUE_DEPTH.inc()
            if self.queued > self.max_queue:
                self.max_queue = self.queued
            start = time.perf_counter()
            try:
                await asyncio.wait_for(asyncio.shield(fut), cfg["queue_timeout_seconds"])
            except asyncio.TimeoutError:
                if not fut.done():
                    fut.cancel()
                    raise self._shed("queue_timeout", cfg)
                # the slot arrived as the wait ended: keep it
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self.release(None)  # we were handed a slot but the client left
                else:
                    fut.cancel()
                raise
            finally:
                self.queued -= 1
                ADMISSION_QUEUE_DEPTH.dec()
                waited = time.perf_counter() - start
                ADMISSION_WAIT.observe(waited)
                spans.record("admission.wait", waited)
        self.admitted += 1
        if self.active > self.max_active:
            self.max_active = self.active

    def release(self, held: float | None) -> None:
        if held is not None:
            self.service_ewma += 0.1 * (held - self.service_ewma)
        limit = self._limit()
        # hand the slot straight to the next live waiter
        while self.waiters:
            fut = self.waiters.popleft()
            if fut.done():
                continue
            if limit > 0 and self.active > limit:
                self.waiters.appendleft(fut)  # limit lowered: shrink first
                break
            fut.set_result(None)
            return
        self.active -= 1

    def status(self) -> dict:
        cfg = self.store.get("monitoring")
        return {"max_concurrent_requests": cfg["max_concurrent_requests"], "queue_size": cfg["queue_size"],
                "queue_timeout_seconds": cfg["queue_timeout_seconds"], "active": self.active,
                "queued": self.queued, "admitted_total": self.admitted,
                "queued_total": self.queued_total, "shed": dict(self.shed),
                "shed_total": sum(self.shed.values()),
                "estimated_service_seconds": round(self.service_ewma, 6)}

    def take_peaks(self) -> tuple[int, int]:
        peaks = (self.max_active, self.max_queue)
        self.max_active = self.active
        self.max_queue = self.queued
        return peaks


COUNTED = -1.0  # the state of a request admitted without a limit: counted, not timed


class AdmissionLayer(Layer):
    """None (exempt), COUNTED, or the time the request got its slot."""
    name = "admission"

    def __init__(self, adm: Admission, store):
        self.adm = adm
        self.get = store.get
        self.exempt: dict = {}  # fixed route (service/middleware/stack.py) -> exempt?

    def skips(self, path: str, method: str) -> bool:
        return path.startswith(EXEMPT)

    def enter(self, request):
        route = request._state.get(ROUTE)  # (a fixed route's exemption is looked up once)
        exempt = self.exempt.get(route) if route is not None else None
        if exempt is None:
            exempt = request.path.startswith(EXEMPT)
            if route is not None:
                self.exempt[route] = exempt
        if exempt:
            return None
        adm = self.adm
        if adm.limit <= 0 and not adm.queued:  # no limit: count only
            adm.active += 1
            adm.admitted += 1
            if adm.active > adm.max_active:
                adm.max_active = adm.active
            return COUNTED
        return Wait(self.get("monitoring"))

    async def wait(self, request, cfg):
        await self.adm.acquire(cfg)
        return time.perf_counter()

    def leave(self, request, resp, start):
        if start is None:
            return
        adm = self.adm
        if start == COUNTED:
            if adm.waiters:
                adm.release(None)
            else:
                adm.active -= 1
        else:
            adm.release(time.perf_counter() - start)

    def fail(self, request, exc, start):
        self.leave(request, None, start)


def make(ctx):
    adm = ctx.extras.get("admission")
    if adm is None:
        adm = ctx.extras["admission"] = Admission(ctx.store)
    for reason in ("queue_full", "queue_timeout"):
        ADMISSION_SHED.labels(reason)
    return AdmissionLayer(adm, ctx.store)
