"""POST /internal/resilience/benchmark: a bounded background load through the
resilience layer (breakers, retries, batching and the provider, no cache).

One job runs at a time; it has an id, progress and, when done, results per
operation (latency quantiles, throughput, outcomes) and what the resilience
layer did meanwhile (retries, breaker rejections and transitions).  With the
in-process local provider, whose work is CPU on the event loop, workers pause
whenever the process has used more than half a core since the job started, so
real traffic keeps the rest of the loop (and a busy service pauses the job).  Benchmark calls count in the resilience
metrics like any other call.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque

from service.background import cancel_and_wait
from service.errors import ApiError
from service.providers.base import OPERATIONS, ProviderError, TextRequest
from service.resilience.analysis import latency_summary

log = logging.getLogger("service.resilience.benchmark")

MAX_DURATION_SECONDS = 600
MAX_CONCURRENCY = 100
LOCAL_CPU_SHARE = 0.5   # with the local provider, the process's CPU stays under this share of one core
KEEP_JOBS = 20

SAMPLES = (
    "Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally and runs rules "
    "over this data to aggregate and record new time series or generate alerts. Grafana can be used to "
    "visualize the collected data.",
    "The new release improves startup time and reduces memory use. Users report that the dashboard feels "
    "faster, although a few complained about the changed navigation. Overall the feedback is positive.",
    "Circuit breakers stop calls to a failing service so that callers fail fast instead of waiting. After a "
    "recovery timeout a few probe calls test whether the service has recovered before traffic resumes.",
)
QUESTION = "What does the text describe?"


class BenchmarkJobs:
    def __init__(self, res):
        self.res = res
        self.jobs: dict[str, dict] = {}
        self.order: deque[str] = deque()
        self._task: asyncio.Task | None = None
        self._current: str | None = None

    def running(self) -> dict | None:
        return self.jobs.get(self._current) if self._current else None

    def start(self, duration: float, concurrency: int, ops: list[str]) -> dict:
        if self.running() is not None:
            cur = self.running()
            raise ApiError(409, "BENCHMARK_RUNNING", f"benchmark {cur['id']} is still running; wait for it or "
                           f"cancel it (POST /internal/resilience/benchmark/{cur['id']}/cancel)",
                           {"benchmark_id": cur["id"]})
        job_id = uuid.uuid4().hex[:12]
        job = {"id": job_id, "status": "running", "progress": 0.0, "created": time.time(), "started": time.time(),
               "finished": None, "request": {"test_duration_seconds": duration, "concurrent_requests": concurrency,
                                             "test_endpoints": ops},
               "provider": self.res.ctx.providers.current.name, "results": None, "error": None}
        self.jobs[job_id] = job
        self.order.append(job_id)
        while len(self.order) > KEEP_JOBS:
            self.jobs.pop(self.order.popleft(), None)
        self._current = job_id
        self._task = asyncio.get_running_loop().create_task(self._run(job, duration, concurrency, ops))
        return job

    def get(self, job_id: str) -> dict | None:
        job = self.jobs.get(job_id)
        if job is not None and job["status"] == "running":
            job["progress"] = round(min(0.99, (time.time() - job["started"]) /
                                        job["request"]["test_duration_seconds"]), 4)
        return job

    def latest(self) -> dict | None:
        return self.get(self.order[-1]) if self.order else None

    def cancel(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "BENCHMARK_NOT_FOUND", f"no benchmark {job_id!r}", field="benchmark_id")
        if job["status"] == "running" and self._task is not None and self._current == job_id:
            self._task.cancel()
        return job

    async def _run(self, job: dict, duration: float, concurrency: int, ops: list[str]) -> None:
        res = self.res
        lat: dict[str, list[float]] = {op: [] for op in ops}
        outcomes: dict[str, dict[str, int]] = {op: {} for op in ops}
        before = {n: dict(b.counts) for n, b in res.breakers.items()}
        retries_before = sum(s.retries for s in res.stats.ops.values())
        counter = itertools.count()
        started = time.perf_counter()
        stop_at = started + duration
        rest = res.ctx.providers.current.name == "local"
        cpu0 = time.process_time()

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                n = next(counter)
                op = ops[n % len(ops)]
                text = f"{SAMPLES[n % len(SAMPLES)]} Benchmark sample {n}."
                req = TextRequest(op, text, {}, QUESTION if op == "qa" else None)
                t0 = time.perf_counter()
                try:
                    await res.call(req)
                    outcome = "success"
                except ProviderError as e:
                    outcome = f"provider_error:{e.kind}"
                except Exception as e:  # AIUnavailable and the like
                    outcome = getattr(e, "error_code", type(e).__name__)
                dt = time.perf_counter() - t0
                lat[op].append(dt)
                outcomes[op][outcome] = outcomes[op].get(outcome, 0) + 1
                job["progress"] = round(min(0.99, (time.perf_counter() - started) / duration), 4)
                if rest:  # keep the process's CPU under LOCAL_CPU_SHARE of the elapsed time
                    over = (time.process_time() - cpu0) - LOCAL_CPU_SHARE * (time.perf_counter() - started)
                    await asyncio.sleep(over / LOCAL_CPU_SHARE if over > 0 else 0)
                else:
                    await asyncio.sleep(0)

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            job["status"] = "completed"
        except asyncio.CancelledError:
            job["status"] = "cancelled"
        except Exception as e:
            log.exception("resilience benchmark failed")
            job["status"] = "failed"
            job["error"] = f"{type(e).__name__}: {e}"
        finally:
            elapsed = time.perf_counter() - started
            total = sum(len(v) for v in lat.values())
            ok = sum(o.get("success", 0) for o in outcomes.values())
            job["results"] = {
                "elapsed_seconds": round(elapsed, 3), "requests": total,
                "throughput_rps": round(total / elapsed, 3) if elapsed > 0 else None,
                "success_rate": round(ok / total, 6) if total else None,
                "latency": latency_summary([x for v in lat.values() for x in v]),
                "operations": {op: {"requests": len(lat[op]), "outcomes": outcomes[op],
                                    "latency": latency_summary(lat[op])} for op in ops},
                "resilience": {
                    "retries": sum(s.retries for s in res.stats.ops.values()) - retries_before,
                    "breakers": {n: {k: v - before.get(n, {}).get(k, 0) for k, v in b.counts.items()
                                     if v - before.get(n, {}).get(k, 0)} | {"state": b.state}
                                 for n, b in res.breakers.items()
                                 if any(v != before.get(n, {}).get(k, 0) for k, v in b.counts.items())},
                },
                "paced": rest,
            }
            job["finished"] = time.time()
            if job["status"] == "completed":
                job["progress"] = 1.0
            if self._current == job["id"]:
                self._current = None
            log.info("resilience benchmark finished", extra={"benchmark_id": job["id"], "status": job["status"],
                                                            "requests": total})

    async def close(self) -> None:
        await cancel_and_wait([self._task])


def validate_request(body: dict) -> tuple[float, int, list[str]]:
    known = {"test_duration_seconds", "concurrent_requests", "test_endpoints"}
    extra = sorted(set(body) - known)
    if extra:
        raise ApiError(422, "VALIDATION_ERROR", f"{extra[0]}: unknown field", field=extra[0])
    d = body.get("test_duration_seconds", 10)
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 1 <= d <= MAX_DURATION_SECONDS:
        raise ApiError(422, "VALIDATION_ERROR",
                       f"test_duration_seconds: must be a number from 1 to {MAX_DURATION_SECONDS}",
                       field="test_duration_seconds")
    c = body.get("concurrent_requests", 5)
    if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CONCURRENCY:
        raise ApiError(422, "VALIDATION_ERROR",
                       f"concurrent_requests: must be an integer from 1 to {MAX_CONCURRENCY}",
                       field="concurrent_requests")
    ops = body.get("test_endpoints", ["summarize", "sentiment", "key_points"])
    if not isinstance(ops, list) or not ops or not all(isinstance(o, str) for o in ops):
        raise ApiError(422, "VALIDATION_ERROR", "test_endpoints: must be a non-empty list of operation names",
                       field="test_endpoints")
    bad = [o for o in ops if o not in OPERATIONS]
    if bad:
        raise ApiError(422, "VALIDATION_ERROR", f"test_endpoints: unknown operation {bad[0]!r}; one of "
                       f"{', '.join(OPERATIONS)}", field="test_endpoints")
    return float(d), c, list(dict.fromkeys(ops))
