"""Benchmarks of the service against itself, baselines and regression checks.

POST /internal/monitoring/benchmark starts one bounded job on the background
task pool.  The job runs service/monitoring/loadgen.py in a child process
against this process's own listening socket (so the load does not share the
event loop it measures), follows its progress, and adds what the service saw
meanwhile (cache hits, AI calls, retries, fallbacks, shed requests).

Scenarios:
    http_baseline  GET /v1/text/operations: auth + routing + JSON, no AI (always)
    cache_hit      POST /v1/text/summarize with one text, warmed first (include_cache)
    ai_service     POST /v1/text/summarize with unique texts: every call reaches the provider (include_ai_service)
    resilience     POST /v1/text/process at twice the concurrency, unique texts (include_resilience)

Jobs and the baseline persist to Redis when configured (any worker answers),
else the baseline is kept in STATE_DIR.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from collections import OrderedDict

from service.errors import ApiError, validation_error
from service.monitoring import snapshot as S
from service.monitoring.loadgen import TEXT
from service.monitoring.tasks import BENCHMARK
from service.secret import ENV as SECRET_ENV

log = logging.getLogger("service.monitoring.benchmark")

PREFIX = "{llmapi}:monitoring"
KEEP = 20
BODY_FIELDS = {"include_cache": bool, "include_ai_service": bool, "include_resilience": bool,
               "duration_seconds": (int, float), "concurrency": int, "save_as_baseline": bool}
COMPARED = ("p50_ms", "p95_ms", "p99_ms", "requests_per_second", "error_rate")


def parse_body(body: dict, max_duration: float) -> dict:
    for k, v in body.items():
        t = BODY_FIELDS.get(k)
        if t is None:
            raise validation_error(k, f"unknown field; known: {sorted(BODY_FIELDS)}")
        if isinstance(v, bool) and t is not bool or not isinstance(v, t):
            raise validation_error(k, "must be a boolean" if t is bool else "must be a number")
    d = float(body.get("duration_seconds", 30))
    if not 1 <= d <= max_duration:
        raise validation_error("duration_seconds", f"must be between 1 and {max_duration:g} "
                                                   "(monitoring.benchmark_max_duration_seconds)")
    c = body.get("concurrency", 8)
    if not 1 <= c <= 256:
        raise validation_error("concurrency", "must be between 1 and 256")
    return {"include_cache": body.get("include_cache", True), "include_ai_service": body.get("include_ai_service", True),
            "include_resilience": body.get("include_resilience", False), "duration_seconds": d, "concurrency": c,
            "save_as_baseline": body.get("save_as_baseline", False)}


def plan_for(cfg: dict, base_url: str) -> dict:
    text_body = {"text": TEXT}
    scen = [{"name": "http_baseline", "method": "GET", "path": "/v1/text/operations", "body": None}]
    if cfg["include_cache"]:
        scen.append({"name": "cache_hit", "method": "POST", "path": "/v1/text/summarize", "body": text_body,
                     "warmup": True})
    if cfg["include_ai_service"]:
        scen.append({"name": "ai_service", "method": "POST", "path": "/v1/text/summarize", "body": text_body,
                     "bodies": "unique"})
    if cfg["include_resilience"]:
        scen.append({"name": "resilience", "method": "POST", "path": "/v1/text/process",
                     "body": {"text": TEXT, "operation": "sentiment"}, "bodies": "unique", "concurrency_factor": 2})
    each = cfg["duration_seconds"] / len(scen)
    for s in scen:
        s["duration"] = each
        s["concurrency"] = cfg["concurrency"] * s.pop("concurrency_factor", 1)
    return {"base_url": base_url, "scenarios": scen, "request_timeout": 30}


def compare(baseline: dict, current: dict, threshold_pct: float) -> dict:
    """Per-scenario deltas of current vs baseline, with regression flags."""
    base = {s["name"]: s for s in baseline.get("scenarios", [])}
    out, regressions = [], []
    for s in current.get("scenarios", []):
        b = base.get(s["name"])
        if b is None:
            continue
        deltas = {}
        for m in COMPARED:
            bv, cv = b.get(m), s.get(m)
            if bv is None or cv is None:
                deltas[m] = {"baseline": bv, "current": cv, "change": None, "change_percent": None}
                continue
            ch = cv - bv
            deltas[m] = {"baseline": bv, "current": cv, "change": round(ch, 6),
                         "change_percent": round(ch / bv * 100, 2) if bv else None}
        flags = []
        p95 = deltas["p95_ms"]
        # latency: a relative rise beyond the threshold, and at least 1 ms (sub-ms noise is not a regression)
        if p95["change"] is not None and p95["change"] > 1.0 and p95["change_percent"] is not None \
                and p95["change_percent"] > threshold_pct:
            flags.append(f"p95 latency up {p95['change_percent']}% ({p95['baseline']} -> {p95['current']} ms)")
        rps = deltas["requests_per_second"]
        if rps["change_percent"] is not None and rps["change_percent"] < -threshold_pct:
            flags.append(f"throughput down {-rps['change_percent']}% ({rps['baseline']} -> {rps['current']} req/s)")
        er = deltas["error_rate"]
        if er["change"] is not None and er["change"] > 0.01:
            flags.append(f"error rate up {round(er['change'] * 100, 2)} points")
        out.append({"scenario": s["name"], "deltas": deltas, "regression": bool(flags), "flags": flags})
        regressions += [f"{s['name']}: {f}" for f in flags]
    return {"threshold_percent": threshold_pct, "scenarios": out, "regression": bool(regressions),
            "regressions": regressions,
            "missing_scenarios": sorted(set(base) - {s["name"] for s in current.get("scenarios", [])})}


class Benchmarks:
    def __init__(self, monitor):
        self.monitor = monitor
        self.ctx = monitor.ctx
        self.jobs: OrderedDict[str, dict] = OrderedDict()
        self.baseline: dict | None = None
        self.running: str | None = None
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self.baseline_path = os.path.join(self.ctx.settings.state_dir,
                                          f"monitoring-baseline-{self.ctx.settings.port}.json")

    @property
    def redis(self):
        return self.ctx.redis

    # ---- persistence -------------------------------------------------------
    async def _save_job(self, job: dict) -> None:
        self.jobs[job["id"]] = job
        self.jobs.move_to_end(job["id"])
        while len(self.jobs) > KEEP:
            self.jobs.popitem(last=False)
        if self.redis is not None:
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.hset(f"{PREFIX}:benchmarks", job["id"], json.dumps(job))
                pipe.set(f"{PREFIX}:benchmarks:latest", job["id"])
                await pipe.execute()
            except Exception:
                log.warning("benchmark: could not persist job to redis")

    async def _load_job(self, job_id: str | None) -> dict | None:
        if self.redis is not None:
            try:
                if job_id is None:
                    job_id = await self.redis.get(f"{PREFIX}:benchmarks:latest")
                    job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
                if job_id:
                    raw = await self.redis.hget(f"{PREFIX}:benchmarks", job_id)
                    if raw:
                        return json.loads(raw)
            except Exception:
                log.warning("benchmark: could not read jobs from redis")
        if job_id is None:
            return next(reversed(self.jobs.values()), None) if self.jobs else None
        return self.jobs.get(job_id)

    async def _latest_completed(self) -> dict | None:
        cands = [j for j in self.jobs.values() if j["status"] == "completed"]
        if self.redis is not None:
            try:
                raw = await self.redis.hgetall(f"{PREFIX}:benchmarks")
                cands = [j for j in (json.loads(v) for v in raw.values()) if j["status"] == "completed"] or cands
            except Exception:
                pass
        return max(cands, key=lambda j: j.get("finished_at") or 0, default=None)

    async def load_baseline(self) -> dict | None:
        if self.redis is not None:
            try:
                raw = await self.redis.get(f"{PREFIX}:baseline")
                if raw:
                    self.baseline = json.loads(raw)
                    return self.baseline
            except Exception:
                log.warning("benchmark: could not read the baseline from redis")
        if self.baseline is None and os.path.exists(self.baseline_path):
            try:
                with open(self.baseline_path) as fh:
                    self.baseline = json.load(fh)
            except (OSError, ValueError):
                pass
        return self.baseline

    async def _store_baseline(self, baseline: dict) -> None:
        self.baseline = baseline
        if self.redis is not None:
            try:
                await self.redis.set(f"{PREFIX}:baseline", json.dumps(baseline))
                return
            except Exception:
                log.warning("benchmark: could not store the baseline in redis; using a file")
        os.makedirs(os.path.dirname(os.path.abspath(self.baseline_path)), exist_ok=True)
        tmp = self.baseline_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(baseline, fh)
        os.replace(tmp, self.baseline_path)

    # ---- running -----------------------------------------------------------
    async def start(self, body: dict, base_url: str) -> dict:
        mcfg = self.monitor.cfg
        cfg = parse_body(body, mcfg["benchmark_max_duration_seconds"])
        if mcfg["async_processing"] and cfg["duration_seconds"] + 30 > mcfg["worker_timeout"]:
            raise validation_error("duration_seconds", f"must leave 30 s within monitoring.worker_timeout "
                                                       f"({mcfg['worker_timeout']:g} s)")
        if self.running is not None:
            job = self.jobs.get(self.running)
            raise ApiError(409, "BENCHMARK_RUNNING", "a benchmark is already running; wait for it or cancel it",
                           {"job_id": self.running, "progress": job and job["progress"]})
        job = {"id": uuid.uuid4().hex[:12], "status": "queued", "progress": 0.0, "config": cfg,
               "created_at": time.time(), "started_at": None, "finished_at": None, "current_scenario": None,
               "results": None, "error": None}
        self.running = job["id"]
        await self._save_job(job)
        try:
            await self.monitor.tasks.submit(BENCHMARK, self._run, job, base_url)
        except ApiError:
            self.running = None
            job["status"] = "rejected"
            raise
        return job

    async def _run(self, job: dict, base_url: str) -> None:
        cfg = job["config"]
        plan = plan_for(cfg, base_url)
        job.update(status="running", started_at=time.time())
        await self._save_job(job)
        before = S.counters()
        total = cfg["duration_seconds"]
        done_before = 0.0
        env = dict(os.environ)
        env.pop(SECRET_ENV, None)  # the child gets the benchmark token, not the secret it is derived from
        env["LOADGEN_BENCHMARK_TOKEN"] = self.ctx.secret.benchmark_token
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service.monitoring.loadgen", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
                cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
            self._procs[job["id"]] = proc
            proc.stdin.write(json.dumps(plan).encode())
            proc.stdin.close()
            final = None
            durations = {s["name"]: s["duration"] for s in plan["scenarios"]}
            finished_names: list[str] = []
            while True:
                line = await proc.stdout.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("done"):
                    final = msg
                    continue
                name = msg.get("scenario")
                if name != job["current_scenario"]:
                    if job["current_scenario"] is not None:
                        finished_names.append(job["current_scenario"])
                    job["current_scenario"] = name
                done_before = sum(durations[n] for n in finished_names)
                job["progress"] = round(min(0.99, (done_before + msg["progress"] * durations.get(name, 0)) / total), 4)
                await self._save_job(job)
            err = (await proc.stderr.read()).decode(errors="replace")
            rc = await proc.wait()
            if final is None:
                raise RuntimeError(f"load generator exited with {rc}: {err[-500:]}")
            after = S.counters()
            job["results"] = {"scenarios": final["scenarios"], "service_side": self._service_side(before, after),
                              "base_url": base_url}
            job.update(status="completed", progress=1.0, finished_at=time.time(), current_scenario=None)
            if cfg["save_as_baseline"]:
                await self._store_baseline(self._as_baseline(job))
            await self.monitor.history.add_event("benchmark", {"job_id": job["id"], "status": "completed"})
        except asyncio.CancelledError:
            job.update(status="cancelled", finished_at=time.time())
            raise
        except Exception as e:
            if job["status"] != "cancelled":
                job.update(status="failed", error=f"{type(e).__name__}: {e}", finished_at=time.time())
                log.warning("benchmark %s failed: %s", job["id"], e)
        finally:
            proc = self._procs.pop(job["id"], None)
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
            if self.running == job["id"]:
                self.running = None
            await asyncio.shield(self._save_job(job))

    @staticmethod
    def _service_side(before: dict, after: dict) -> dict:
        ai_n = after["ai"]["count"] - before["ai"]["count"]
        ai_sum = after["ai"]["sum"] - before["ai"]["sum"]
        hits = after["cache_hits"] - before["cache_hits"]
        misses = after["cache_misses"] - before["cache_misses"]
        return {"cache_hits": hits, "cache_misses": misses,
                "cache_hit_ratio": round(hits / (hits + misses), 6) if hits + misses else None,
                "ai_calls": ai_n, "ai_avg_ms": round(ai_sum / ai_n * 1000, 3) if ai_n else None,
                "ai_errors": after["ai_errors"] - before["ai_errors"],
                "retries": after["retries"] - before["retries"], "fallbacks": after["fallbacks"] - before["fallbacks"],
                "shed": after["shed"] - before["shed"]}

    async def cancel(self) -> dict:
        if self.running is None:
            raise ApiError(409, "NO_BENCHMARK_RUNNING", "no benchmark is running")
        job_id = self.running
        proc = self._procs.get(job_id)
        if proc is not None and proc.returncode is None:
            proc.kill()
        job = self.jobs[job_id]
        job.update(status="cancelled", finished_at=time.time())
        return job

    async def results(self, job_id: str | None) -> dict:
        job = self.jobs.get(self.running) if job_id is None and self.running else await self._load_job(job_id)
        if job is None:
            if job_id is not None:
                raise ApiError(404, "BENCHMARK_NOT_FOUND", f"no benchmark job {job_id!r}", field="id")
            return {"status": "none", "message": "no benchmark has run yet; POST /internal/monitoring/benchmark",
                    "job": None, "results": None, "recent": []}
        recent = [{k: j[k] for k in ("id", "status", "progress", "created_at", "finished_at")}
                  for j in reversed(self.jobs.values())]
        return {"status": job["status"], "job_id": job["id"], "progress": job["progress"], "job": job,
                "results": job["results"], "recent": recent}

    @staticmethod
    def _as_baseline(job: dict) -> dict:
        return {"job_id": job["id"], "saved_at": time.time(), "config": job["config"],
                "scenarios": job["results"]["scenarios"], "finished_at": job["finished_at"]}

    async def save_baseline(self, job_id: str | None) -> dict:
        job = await self._load_job(job_id) if job_id else await self._latest_completed()
        if job is None:
            raise ApiError(404 if job_id else 409, "NO_BENCHMARK_RESULTS",
                           f"no benchmark job {job_id!r}" if job_id else
                           "no completed benchmark to save; run POST /internal/monitoring/benchmark first",
                           field="job_id" if job_id else None)
        if job["status"] != "completed":
            raise ApiError(409, "BENCHMARK_NOT_COMPLETED", f"benchmark {job['id']} is {job['status']}",
                           field="job_id")
        baseline = self._as_baseline(job)
        await self._store_baseline(baseline)
        await self.monitor.history.add_event("baseline_saved", {"job_id": job["id"]})
        return baseline

    async def compare(self, job_id: str | None, threshold: float | None = None) -> dict:
        baseline = await self.load_baseline()
        current = await self._load_job(job_id) if job_id else await self._latest_completed()
        if threshold is None:
            threshold = self.monitor.cfg["regression_threshold_percent"]
        base = {"baseline": baseline and {k: baseline[k] for k in ("job_id", "saved_at", "config")},
                "current": current and {k: current[k] for k in ("id", "status", "finished_at", "config")},
                "running": self.running, "threshold_percent": threshold}
        if baseline is None:
            return {**base, "status": "no_baseline", "regression": False, "regressions": [], "scenarios": [],
                    "message": "no baseline saved; POST /internal/monitoring/benchmark/baseline after a benchmark"}
        if current is None or current["status"] != "completed":
            return {**base, "status": "no_results", "regression": False, "regressions": [], "scenarios": [],
                    "message": "no completed benchmark to compare; POST /internal/monitoring/benchmark"}
        cmp = compare(baseline, current["results"], threshold)
        return {**base, **cmp, "status": "regression" if cmp["regression"] else "ok"}
