"""Bench scenario `scrape_cost`: GET /metrics after the operations guide's seed replay (every curl command
of ../shared/seed/PERFORMANCE_OPTIMIZATION.md, through ../shared/tools/seed_replay.py, when present),
with the default config, one worker and WORKERS=2.

Reports the scrape's p50 and max (OpenMetrics, as Prometheus asks), its series count, and how long the
event loop was held: a probe sends GET /v1/text/operations every 2 ms during the scrapes, and the
worst probe latency above the probe's own p50 without scrapes is the longest stall a scrape caused
(targets: p50 <= 5 ms with one worker, <= 10 ms with two; no stall above 5 ms).

The guide's replay leaves its load tests running: a 300 s resilience benchmark (10 concurrent calls of
the local provider, whose work is CPU on the event loop of the worker that took it) and a 60 s system
benchmark (a load-generator process sending requests).  Scrapes are measured twice: while they run
(`during_load_*`: what a scrape costs on a loop that load shares, and the stalls the load itself makes),
then after they are cancelled (the headline figures: the scrape's own cost), with the service's CPU time
per scrape (`cpu_ms_per_scrape`, every process of the service, scrapes alone), the figure least moved by
a busy box.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aiohttp
import psutil

from tests.helpers import API_KEY, PYTHON, ROOT, Proc, free_port, service_env

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
REPLAY = os.path.join(SHARED, "tools", "seed_replay.py")
SPEC = os.path.join(SHARED, "seed", "PERFORMANCE_OPTIMIZATION.md")
SCRAPES = 60
ACCEPT = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def starter(workers: int = 1):
    def start(state: str, _redis) -> Proc:
        port = free_port()
        return Proc([PYTHON, "-m", "service"], service_env(port, state, LOG_LEVEL="INFO", WORKERS=str(workers)),
                    port, "/v1/health")
    return start


def _replay(url: str) -> str:
    if not os.path.exists(REPLAY):
        return "seed replay not found (../shared is not beside the repo): scraped without it"
    r = subprocess.run([sys.executable, REPLAY, SPEC, url, API_KEY], capture_output=True, text=True, timeout=600)
    return (r.stdout.strip().splitlines() or ["(no output)"])[-1]


def _pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else 0.0


async def _measure(url: str) -> dict:
    probe_url = f"{url}/v1/text/operations"
    h = {"X-API-Key": API_KEY}
    async with aiohttp.ClientSession() as s:
        async def probe(seconds: float) -> list[float]:
            out, end = [], time.perf_counter() + seconds
            while time.perf_counter() < end:
                t = time.perf_counter()
                async with s.get(probe_url, headers=h) as r:
                    await r.read()
                out.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.002)
            return out

        quiet = await probe(2.0)
        scrapes: list[float] = []
        series = 0

        async def scrape_all():
            nonlocal series
            for _ in range(SCRAPES):
                t = time.perf_counter()
                async with s.get(f"{url}/metrics", headers={"Accept": ACCEPT}) as r:
                    body = await r.read()
                scrapes.append((time.perf_counter() - t) * 1000)
                series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
                await asyncio.sleep(0.02)
        probe_task = asyncio.create_task(probe(SCRAPES * 0.05))
        await scrape_all()
        busy = await probe_task
    base = _pct(quiet, 0.5)
    return {"scrape_p50_ms": round(_pct(scrapes, 0.5), 2), "scrape_max_ms": round(max(scrapes), 2),
            "series": series, "probe_p50_quiet_ms": round(base, 2), "probe_max_during_scrapes_ms": round(max(busy), 2),
            "longest_stall_ms": round(max(busy) - base, 2)}


async def _stop_load_tests(url: str) -> int:
    """Cancel the replay's load tests on every worker (a request reaches either); returns the cancels sent."""
    h = {"X-API-Key": API_KEY}
    sent, quiet = 0, 0
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            # a new connection each time, so SO_REUSEPORT spreads the calls over the workers
            async with s.get(f"{url}/internal/resilience/benchmarks", headers={**h, "Connection": "close"}) as r:
                running = (await r.json()).get("running")
            if running:
                async with s.post(f"{url}/internal/resilience/benchmark/{running}/cancel",
                                  headers={**h, "Connection": "close"}) as r:
                    sent += r.status == 200
            async with s.post(f"{url}/internal/monitoring/benchmark/cancel", headers={**h, "Connection": "close"}) as r:
                stopped = r.status == 200
                sent += stopped
            quiet = 0 if running or stopped else quiet + 1
            if quiet >= 12:
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    return sent


def _cpu(pid: int) -> dict[int, float]:
    out = {}
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def _idle_share(pid: int, seconds: float = 2.0) -> float:
    """Cores the service uses with no request (every process present before and after)."""
    before = _cpu(pid)
    time.sleep(seconds)
    after = _cpu(pid)
    return sum(after[p] - before[p] for p in before if p in after) / seconds


async def _cpu_per_scrape(url: str, pid: int, n: int = SCRAPES) -> float:
    """The service's CPU milliseconds per scrape, scrapes alone (every process present before and after)."""
    async with aiohttp.ClientSession() as s:
        before = _cpu(pid)
        for _ in range(n):
            async with s.get(f"{url}/metrics", headers={"Accept": ACCEPT}) as r:
                await r.read()
            await asyncio.sleep(0.02)
        after = _cpu(pid)
    return round(sum(after[p] - before[p] for p in before if p in after) * 1000 / n, 2)


def run(proc: Proc, duration: float, connections: int) -> dict:
    replay = _replay(proc.url)
    during = asyncio.run(_measure(proc.url))
    print(f"  {replay}; during the guide's load tests: /metrics: {during['series']} series, "
          f"p50 {during['scrape_p50_ms']} ms, max {during['scrape_max_ms']} ms; "
          f"longest stall of a probe during scrapes {during['longest_stall_ms']} ms")
    # until the service is idle: without Redis each worker keeps its own jobs, so a cancel can miss the one
    # that runs it; the system benchmark's load generator ends within its 60 s anyway
    cancels, idle, deadline = 0, 0.0, time.monotonic() + 90
    while time.monotonic() < deadline:
        cancels += asyncio.run(_stop_load_tests(proc.url))
        idle = _idle_share(proc.proc.pid)
        if idle < 0.05:
            break
    res = asyncio.run(_measure(proc.url))
    res["cpu_ms_per_scrape"] = asyncio.run(_cpu_per_scrape(proc.url, proc.proc.pid))
    res["idle_cpu_share"] = round(idle, 3)
    print(f"  after them ({cancels} cancels, then {idle:.0%} of a core idle): /metrics: {res['series']} series, "
          f"p50 {res['scrape_p50_ms']} ms, max {res['scrape_max_ms']} ms; longest stall of a probe during scrapes "
          f"{res['longest_stall_ms']} ms; service CPU {res['cpu_ms_per_scrape']} ms per scrape")
    return {"rps": 0.0, "p50_ms": res["scrape_p50_ms"], "p99_ms": res["scrape_max_ms"], "requests": SCRAPES,
            "errors": 0, "seed_replay": replay, **res, **{f"during_load_{k}": v for k, v in during.items()}}
