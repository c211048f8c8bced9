"""Bench scenario `scrape_cost`: GET /metrics after the operations guide's seed replay (every curl command
of ../shared/seed/PERFORMANCE_OPTIMIZATION.md, through ../shared/tools/seed_replay.py, when present),
with the default config, one worker and WORKERS=2.

Reports the scrape's p50 and max (OpenMetrics, as Prometheus asks), its series count, and how long the
event loop was held: a probe sends GET /v1/text/operations every 2 ms during the scrapes, and the
worst probe latency above the probe's own p50 without scrapes is the longest stall a scrape caused
(targets: p50 <= 5 ms with one worker, <= 10 ms with two; no stall above 5 ms).
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aiohttp

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


def run(proc: Proc, duration: float, connections: int) -> dict:
    replay = _replay(proc.url)
    res = asyncio.run(_measure(proc.url))
    print(f"  {replay}; /metrics: {res['series']} series, p50 {res['scrape_p50_ms']} ms, "
          f"max {res['scrape_max_ms']} ms; longest stall of a probe during scrapes {res['longest_stall_ms']} ms")
    return {"rps": 0.0, "p50_ms": res["scrape_p50_ms"], "p99_ms": res["scrape_max_ms"], "requests": SCRAPES,
            "errors": 0, "seed_replay": replay, **res}
