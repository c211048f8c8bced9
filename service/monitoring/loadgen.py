"""Load generator behind POST /internal/monitoring/benchmark.

Runs in its own process (`python -m service.monitoring.loadgen`) so the load
it makes does not share the event loop it measures.  It reads the plan as
JSON on stdin and the benchmark token from the LOADGEN_BENCHMARK_TOKEN env var
(never argv, which `ps` shows): sent as X-Benchmark, it authenticates the load
as the key `benchmark` (scope text) and exempts it from rate limits; it is
derived from the deployment secret (service/secret.py), so no client can forge it, prints one JSON progress line per second and one final
line {"done": true, "scenarios": [...]}.

A scenario is {name, method, path, body | bodies: "unique" , duration, concurrency};
"unique" makes each request's text distinct so it misses the cache.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import aiohttp

TEXT = ("Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally and runs "
        "rules over this data to aggregate and record new time series or generate alerts. Grafana can be "
        "used to visualize the collected data. Operators watch latency, errors and saturation.")


def _quantile(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def summarise(name: str, sc: dict, lat: list[float], status: dict, errors: int, elapsed: float) -> dict:
    lat.sort()
    n = len(lat)

    def ms(v):
        return None if v is None else round(v * 1000, 3)

    return {"name": name, "method": sc["method"], "path": sc["path"], "concurrency": sc["concurrency"],
            "duration_seconds": round(elapsed, 3), "requests": n, "errors": errors,
            "error_rate": round(errors / n, 6) if n else 0.0,
            "requests_per_second": round(n / elapsed, 3) if elapsed > 0 else 0.0,
            "status": {str(k): v for k, v in sorted(status.items())},
            "avg_ms": ms(sum(lat) / n) if n else None, "p50_ms": ms(_quantile(lat, 0.50)),
            "p95_ms": ms(_quantile(lat, 0.95)), "p99_ms": ms(_quantile(lat, 0.99)),
            "max_ms": ms(lat[-1]) if n else None}


async def run_scenario(session: aiohttp.ClientSession, base: str, sc: dict, progress) -> dict:
    lat: list[float] = []
    status: dict[int, int] = {}
    errors = 0
    counter = 0
    unique = sc.get("bodies") == "unique"
    body = json.dumps(sc["body"]).encode() if sc.get("body") is not None else None
    url = base + sc["path"]
    start = time.perf_counter()
    stop_at = start + sc["duration"]

    async def worker(w: int):
        nonlocal errors, counter
        while time.perf_counter() < stop_at:
            counter += 1
            data = body
            if unique:
                b = dict(sc["body"])
                b["text"] = f"{b['text']} Run marker {os.getpid()}-{w}-{counter}-{time.time_ns()}."
                data = json.dumps(b).encode()
            t = time.perf_counter()
            try:
                async with session.request(sc["method"], url, data=data) as r:
                    await r.read()
                    code = r.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                code = 0
            lat.append(time.perf_counter() - t)
            status[code] = status.get(code, 0) + 1
            if code == 0 or code >= 400:
                errors += 1

    async def ticker():
        while True:
            await asyncio.sleep(1.0)
            progress(sc["name"], min(1.0, (time.perf_counter() - start) / sc["duration"]), len(lat))

    tick = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(worker(i) for i in range(sc["concurrency"])))
    finally:
        tick.cancel()
    return summarise(sc["name"], sc, lat, status, errors, time.perf_counter() - start)


async def run(plan: dict, token: str | None, progress=lambda *a: None) -> list[dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Benchmark"] = token
    conc = max(sc["concurrency"] for sc in plan["scenarios"])
    timeout = aiohttp.ClientTimeout(total=plan.get("request_timeout", 30))
    out = []
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=conc),
                                     timeout=timeout) as s:
        for sc in plan["scenarios"]:
            if sc.get("warmup"):
                try:
                    async with s.request(sc["method"], plan["base_url"] + sc["path"],
                                         data=json.dumps(sc["body"]).encode()) as r:
                        await r.read()
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
            out.append(await run_scenario(s, plan["base_url"], sc, progress))
    return out


def main() -> None:
    plan = json.loads(sys.stdin.read())

    def progress(name, frac, n):
        print(json.dumps({"scenario": name, "progress": round(frac, 4), "requests": n}), flush=True)

    scenarios = asyncio.run(run(plan, os.environ.get("LOADGEN_BENCHMARK_TOKEN"), progress))
    print(json.dumps({"done": True, "scenarios": scenarios}), flush=True)


if __name__ == "__main__":
    main()
