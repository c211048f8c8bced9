"""`make bench`: scenarios measured as ratios against a bare aiohttp app in the same run.

Each scenario starts its own server process on a free port, warms it, and is
driven by wrk (or the bundled client).  Results go to bench/results/latest.json.
Later issues register scenarios in SCENARIOS.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

from bench import accesslog, batching, scrape, soak, upstream, vsfloor, workers
from bench import lag as lag_bench
from bench import middleware as middleware_bench
from bench.load import drive
from tests.helpers import API_KEY, PYTHON, Proc, RedisServer, free_port, service_env

TEXT = ("Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally and runs rules "
        "over this data to aggregate and record new time series or generate alerts. Grafana can be used to "
        "visualize the collected data. Operators love clear dashboards and reliable alerts.")
BODY = json.dumps({"text": TEXT, "options": {"max_length": 20}}).encode()


def _post(url: str, body: bytes) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def bare(state: str, _redis) -> Proc:
    port = free_port()
    size = int(os.environ.get("BENCH_BODY_SIZE", "0")) or 600
    return Proc([PYTHON, "-m", "bench.bare", "--port", str(port), "--size", str(size)], dict(os.environ), port,
                "/v1/health")


def floor(state: str, _redis) -> Proc:
    port = free_port()
    size = int(os.environ.get("BENCH_BODY_SIZE", "0")) or 600
    return Proc([PYTHON, "-m", "bench.floor", "--port", str(port), "--size", str(size), "--api-key", API_KEY],
                dict(os.environ), port, "/v1/health")


def service(**env):
    def start(state: str, redis) -> Proc:
        port = free_port()
        extra = dict(env)
        if extra.pop("redis", False):
            extra["REDIS_URL"] = redis.url
        # the default config a user gets: LOG_LEVEL=INFO, so the access log writes a line per request
        return Proc([PYTHON, "-m", "service"], service_env(port, state, LOG_LEVEL="INFO", **extra), port,
                    "/v1/health")
    return start


# name -> (starter, needs_redis); the first is the baseline
SCENARIOS = {
    "bare_aiohttp": (bare, False),
    "summarize_cached_memory": (service(), False),
    "summarize_cached_redis": (service(redis=True), True),
    # the least any aiohttp service can do for a cache hit (bench/floor.py): the ceiling for the two above
    "fused_floor": (floor, False),
    # the two above in alternating rounds, both running: the ratio the machine's drift moves least (bench/vsfloor.py)
    "summarize_cached_vs_floor": (vsfloor.starter(), False, vsfloor.run),
    # (starter, needs_redis, driver): a scenario with its own driver (bench/batching.py)
    "uncached_upstream_batching_off": (batching.starter(False), False, batching.drive),
    "uncached_upstream_batching_on": (batching.starter(True), False, batching.drive),
    "uncached_local_batching_off": (batching.starter(False, upstream=False), False, batching.drive),
    "uncached_local_batching_on": (batching.starter(True, upstream=False), False, batching.drive),
    # the middleware stack on and off in one process and run, alternating (bench/middleware.py)
    "middleware_stack_default": (middleware_bench.starter(), False, middleware_bench.run),
    "middleware_stack_full": (middleware_bench.starter(full=True), False, middleware_bench.run),
    "middleware_stack_redis": (middleware_bench.starter(full=True, redis=True), True, middleware_bench.run),
    # the whole default stack against the same service with only the errors middleware (bench/stackless.py)
    "middleware_stack_whole": (middleware_bench.starter(), False, middleware_bench.run_whole),
    # the access log on (the default) against off, one process, alternating rounds (bench/accesslog.py)
    "access_log_cost": (accesslog.starter(), False, accesslog.run),
    # the uncached path over the upstream called directly, and beside bench/proxy_floor.py (bench/upstream.py)
    "uncached_overhead": (upstream.starter(), False, upstream.overhead),
    "proxy_capacity": (upstream.starter(), False, upstream.capacity),
    # GET /metrics after the seed replay, one worker and two, and the loop stall it causes (bench/scrape.py)
    "scrape_cost": (scrape.starter(), False, scrape.run),
    "scrape_cost_workers2": (scrape.starter(workers=2), False, scrape.run),
    # WORKERS=2 against WORKERS=1 on cache hits, alternating rounds (bench/workers.py)
    "workers_scaling": (workers.starter(), False, workers.run),
    # cache misses with varied texts; RSS once the cache is full (bench/soak.py; BENCH_SOAK_SECONDS)
    "soak": (soak.starter(), False, soak.run),
    # the event-loop lag while each analysis endpoint answers, 1 M entries cached (bench/lag.py)
    "analysis_lag_1m": (lag_bench.starter(), False, lag_bench.run),
}


def run(names: list[str], duration: float, connections: int) -> dict:
    state = tempfile.mkdtemp(prefix="bench-")
    redis = RedisServer().start() if shutil.which("redis-server") and any(SCENARIOS[n][1] for n in names) else None
    results = {}
    try:
        for name in names:
            starter, needs_redis = SCENARIOS[name][:2]
            if needs_redis and redis is None:
                print(f"skip {name}: redis-server not installed")
                continue
            if redis is not None:
                redis.flush()
            proc = starter(state, redis)
            try:
                if len(SCENARIOS[name]) > 2:
                    results[name] = SCENARIOS[name][2](proc, duration, connections)
                    continue
                url = f"{proc.url}/v1/text/summarize"
                sample = _post(url, BODY)  # warm: fills the cache
                if name == "summarize_cached_memory":
                    os.environ.setdefault("BENCH_BODY_SIZE", str(len(sample)))
                drive(url, BODY, {"X-API-Key": API_KEY}, 1.0, connections)  # warm up
                res = drive(url, BODY, {"X-API-Key": API_KEY}, duration, connections)
                res["response_bytes"] = len(sample)
                results[name] = res
            finally:
                proc.stop()
    finally:
        if redis is not None:
            redis.close()
        shutil.rmtree(state, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", "5")))
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--only", nargs="*", help="scenario names (the baseline always runs)")
    ap.add_argument("--out", default="bench/results/latest.json")
    a = ap.parse_args()
    names = list(SCENARIOS)
    if a.only:
        names = [names[0]] + [n for n in a.only if n in SCENARIOS and n != names[0]]
    # measure the service first so the bare app answers with a body of the same size
    ordered = names[1:2] + names[:1] + names[2:]
    results = run(ordered, a.duration, a.connections)
    base = results.get(names[0], {}).get("rps") or 0
    floor_rps = results.get("fused_floor", {}).get("rps") or 0  # the most any aiohttp service reaches on a hit
    print(f"{'scenario':32} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7} {'×floor':>7} {'errors':>7}")
    for n in names:
        r = results.get(n)
        if not r:
            continue
        r["ratio_vs_bare"] = round(r["rps"] / base, 3) if base else None
        r["ratio_vs_floor"] = round(r["rps"] / floor_rps, 3) if floor_rps else None
        print(f"{n:32} {r['rps']:10.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['ratio_vs_bare'] or 0:7.2f} "
              f"{r['ratio_vs_floor'] or 0:7.2f} {r['errors']:7d}")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump({"time": time.time(), "duration_s": a.duration, "connections": a.connections,
                   "results": results}, fh, indent=2)
    print(f"results written to {a.out}")


if __name__ == "__main__":
    sys.exit(main())
