"""Micro-batching of concurrent AI calls.

While ai.batch_processing is on, each attempt is queued here instead of
calling the provider itself.  A batch is sent when it holds
batching.batch_size requests or when its first request has waited
batching.batch_timeout_ms, whichever comes first; at most
batching.max_concurrent_batches batches are in flight, later ones wait.

A batch is one `ProviderManager.process_batch` call: the local provider
handles the whole list in one call; the OpenAI-compatible provider runs the
items with bounded concurrency (batch_size per batch), so the upstream sees at
most batch_size x max_concurrent_batches calls at once.  Identical requests in
one batch are sent once and share the answer.  A waiter that is cancelled
(deadline, client gone) is dropped from its batch if the batch has not left yet.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from exporter.metrics import AI_BATCH_SIZE, AI_BATCHES
from service.background import cancel_and_wait
from service.providers.base import ProviderError, ProviderResult, TextRequest

log = logging.getLogger("service.resilience.batching")


def _key(r: TextRequest):
    try:
        return (r.operation, r.text, r.question, tuple(sorted((r.options or {}).items())))
    except TypeError:  # unhashable option values: never merged
        return id(r)


class Batcher:
    def __init__(self, ctx):
        self.ctx = ctx
        self._pending: list[tuple[TextRequest, asyncio.Future, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._ready: deque[list] = deque()
        self._inflight: set[asyncio.Task] = set()
        self._closed = False
        self.batches = 0
        self.items = 0
        self.merged = 0
        self.dropped = 0
        self.provider_calls = 0
        self.wait_seconds = 0.0
        self.max_inflight_batches = 0

    # ---- submit --------------------------------------------------------------
    async def submit(self, req: TextRequest) -> ProviderResult:
        if self._closed:
            raise ProviderError("connection", "the service is shutting down")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((req, fut, time.perf_counter()))
        cfg = self.ctx.store.get("batching")
        if len(self._pending) >= cfg["batch_size"]:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(cfg["batch_timeout_ms"] / 1000.0, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = [p for p in self._pending if not p[1].done()]
        self.dropped += len(self._pending) - len(batch)
        self._pending = []
        if batch:
            self._ready.append(batch)
        self._pump()

    def _pump(self) -> None:
        limit = self.ctx.store.get("batching")["max_concurrent_batches"]
        while self._ready and len(self._inflight) < limit:
            batch = self._ready.popleft()
            t = asyncio.get_running_loop().create_task(self._run(batch))
            self._inflight.add(t)
            t.add_done_callback(self._done)
            self.max_inflight_batches = max(self.max_inflight_batches, len(self._inflight))

    def _done(self, t: asyncio.Task) -> None:
        self._inflight.discard(t)
        if not self._closed:
            self._pump()

    async def _run(self, batch: list) -> None:
        now = time.perf_counter()
        live = [p for p in batch if not p[1].done()]
        self.dropped += len(batch) - len(live)
        if not live:
            return
        groups: dict = {}
        for req, fut, queued in live:
            self.wait_seconds += now - queued
            groups.setdefault(_key(req), (req, []))[1].append(fut)
        uniq = list(groups.values())
        reqs = [g[0] for g in uniq]
        self.batches += 1
        self.items += len(live)
        self.merged += len(live) - len(uniq)
        self.provider_calls += 1
        AI_BATCHES.inc()
        AI_BATCH_SIZE.observe(len(live))
        try:
            results = await self.ctx.providers.process_batch(reqs, concurrency=len(reqs))
            if len(results) != len(reqs):
                raise ProviderError("server", f"provider returned {len(results)} results for {len(reqs)} requests")
        except asyncio.CancelledError:
            for _, futs in uniq:
                for f in futs:
                    if not f.done():
                        f.set_exception(ProviderError("connection", "batch cancelled: the service is stopping"))
            raise
        except Exception as e:  # the whole batch failed
            err = e if isinstance(e, ProviderError) else ProviderError("server", f"batch failed: {type(e).__name__}")
            if not isinstance(e, ProviderError):
                log.exception("provider batch failed")
            results = [err] * len(reqs)
        for (req, futs), res in zip(uniq, results):
            for f in futs:
                if f.done():
                    continue
                if isinstance(res, BaseException):
                    f.set_exception(res)
                else:
                    f.set_result(res)

    # ---- views / lifecycle ------------------------------------------------------
    def stats(self) -> dict:
        cfg = self.ctx.store.get("batching")
        return {"enabled": bool(self.ctx.store.get("ai")["batch_processing"]), **cfg,
                "batches": self.batches, "items": self.items, "merged_duplicates": self.merged,
                "dropped_cancelled": self.dropped, "provider_batch_calls": self.provider_calls,
                "avg_batch_size": round(self.items / self.batches, 3) if self.batches else None,
                "avg_wait_ms": round(self.wait_seconds / self.items * 1000, 3) if self.items else None,
                "pending": len(self._pending), "queued_batches": len(self._ready),
                "in_flight_batches": len(self._inflight), "max_in_flight_batches": self.max_inflight_batches}

    def reset_stats(self) -> None:
        self.batches = self.items = self.merged = self.dropped = self.provider_calls = 0
        self.wait_seconds = 0.0
        self.max_inflight_batches = len(self._inflight)

    def on_disable(self) -> None:
        """Batching switched off: send what is waiting now."""
        if self._pending:
            self._flush()

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        err = ProviderError("connection", "the service is shutting down")
        for _, fut, _ in self._pending:
            if not fut.done():
                fut.set_exception(err)
        for batch in self._ready:
            for _, fut, _ in batch:
                if not fut.done():
                    fut.set_exception(err)
        self._pending, self._ready = [], deque()
        await cancel_and_wait(list(self._inflight))
