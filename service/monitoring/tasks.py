"""Background task pool: BACKGROUND_WORKERS workers, a TASK_QUEUE_SIZE queue, WORKER_TIMEOUT per task.

All three live in the "monitoring" config section and apply at once when
changed: the pool grows or shrinks its workers, the queue bound is checked on
each submit and the timeout read when a task starts.  With
`async_processing` off, `submit` runs the task inline and returns its result.
Other subsystems reach the pool as ctx.extras["tasks"].
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from exporter.metrics import BACKGROUND_QUEUE_DEPTH, BACKGROUND_TASKS
from service.background import cancel_and_wait
from service.errors import ApiError

log = logging.getLogger("service.monitoring.tasks")

# llmapi_background_tasks{kind, result}: the kinds submitted (service/monitoring/benchmark.py) and every result
BENCHMARK = "benchmark"
KINDS = (BENCHMARK,)
REJECTED = "rejected"  # (the other results are the states a run ends in, see _run)
RESULTS = ("completed", "failed", "timeout", "cancelled", REJECTED)


class TaskRecord:
    __slots__ = ("id", "kind", "state", "submitted", "started", "finished", "error", "future")

    def __init__(self, tid: int, kind: str):
        self.id = tid
        self.kind = kind
        self.state = "queued"
        self.submitted = time.time()
        self.started = self.finished = None
        self.error = None
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state, "submitted": self.submitted,
                "started": self.started, "finished": self.finished, "error": self.error}


class TaskPool:
    def __init__(self, store):
        self.store = store
        self.queue: deque = deque()
        self.workers: list[asyncio.Task] = []
        self.running: dict[int, TaskRecord] = {}
        self.recent: deque = deque(maxlen=50)
        self._wake: asyncio.Event | None = None
        self._next = 0
        self.stats = {"completed": 0, "failed": 0, "timeout": 0, "rejected": 0, "inline": 0}

    @property
    def cfg(self) -> dict:
        return self.store.get("monitoring")

    def start(self) -> None:
        for kind in KINDS:  # every series at 0: rate() reads 0 before the first task
            for result in RESULTS:
                BACKGROUND_TASKS.labels(kind, result)
        self._wake = asyncio.Event()
        self.resize()
        self.store.subscribe(self._on_config)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section == "monitoring" and new["background_workers"] != old.get("background_workers") \
                and self._wake is not None:
            self.resize()

    def resize(self) -> None:
        want = self.cfg["background_workers"]
        self.workers = [w for w in self.workers if not w.done()]
        while len(self.workers) < want:
            self.workers.append(asyncio.create_task(self._worker(len(self.workers))))
        # surplus workers exit after their current task
        for w in self.workers[:want]:
            w.cancel_when_idle = False  # type: ignore[attr-defined]
        for w in self.workers[want:]:
            w.cancel_when_idle = True  # type: ignore[attr-defined]
        self._wake.set()

    async def submit(self, kind: str, fn, *args):
        """Queue fn(*args) (a coroutine function); returns the TaskRecord (awaitable via .future).
        `kind` is a label value of llmapi_background_tasks: one of KINDS."""
        self._next += 1
        rec = TaskRecord(self._next, kind)
        if not self.cfg["async_processing"] or self._wake is None:
            self.stats["inline"] += 1
            await self._run(rec, fn, args)
            return rec
        if len(self.queue) >= self.cfg["task_queue_size"]:
            self.stats["rejected"] += 1
            BACKGROUND_TASKS.labels(kind, REJECTED).inc()
            raise ApiError(503, "TASK_QUEUE_FULL",
                           f"the background task queue is full ({self.cfg['task_queue_size']} tasks)",
                           {"task_queue_size": self.cfg["task_queue_size"]}, headers={"Retry-After": "5"})
        self.queue.append((rec, fn, args))
        BACKGROUND_QUEUE_DEPTH.inc()
        self._wake.set()
        return rec

    async def _worker(self, i: int) -> None:
        me = asyncio.current_task()
        while True:
            if getattr(me, "cancel_when_idle", False):
                return
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            rec, fn, args = self.queue.popleft()
            BACKGROUND_QUEUE_DEPTH.dec()
            await self._run(rec, fn, args)

    async def _run(self, rec: TaskRecord, fn, args) -> None:
        rec.state, rec.started = "running", time.time()
        self.running[rec.id] = rec
        timeout = self.cfg["worker_timeout"]
        try:
            result = await asyncio.wait_for(fn(*args), timeout)
            rec.state = "completed"
            if not rec.future.done():
                rec.future.set_result(result)
        except asyncio.TimeoutError:
            rec.state, rec.error = "timeout", f"exceeded worker_timeout {timeout}s"
            if not rec.future.done():
                rec.future.set_exception(asyncio.TimeoutError(rec.error))
        except asyncio.CancelledError:
            rec.state = "cancelled"
            if not rec.future.done():
                rec.future.cancel()
            raise
        except Exception as e:
            rec.state, rec.error = "failed", f"{type(e).__name__}: {e}"
            log.exception("background task %s failed", rec.kind)
            if not rec.future.done():
                rec.future.set_exception(e)
        finally:
            rec.finished = time.time()
            self.running.pop(rec.id, None)
            self.recent.append(rec)
            key = rec.state if rec.state in self.stats else "failed"
            self.stats[key] = self.stats.get(key, 0) + 1
            BACKGROUND_TASKS.labels(rec.kind, rec.state).inc()
            if rec.future.done() and not rec.future.cancelled():
                rec.future.exception()  # mark retrieved: nobody may await it

    def status(self) -> dict:
        cfg = self.cfg
        return {"workers": len([w for w in self.workers if not w.done()]), "background_workers": cfg["background_workers"],
                "queued": len(self.queue), "task_queue_size": cfg["task_queue_size"],
                "worker_timeout": cfg["worker_timeout"], "async_processing": cfg["async_processing"],
                "running": [r.to_dict() for r in self.running.values()], "stats": dict(self.stats)}

    async def close(self) -> None:
        await cancel_and_wait(self.workers)
        self.workers = []
        while self.queue:
            rec, _, _ = self.queue.popleft()
            BACKGROUND_QUEUE_DEPTH.dec()
            if not rec.future.done():
                rec.future.cancel()
