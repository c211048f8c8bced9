"""Bench scenario `scrape_cost`: GET /metrics after the operations guide's seed replay (every curl command
of ../shared/seed/PERFORMANCE_OPTIMIZATION.md, through ../shared/tools/seed_replay.py, when present),
with the default config, one worker and WORKERS=2.

Reports the scrape's p50 and max (OpenMetrics, as Prometheus asks), its series count, and how long the
event loop was held, two ways (targets: p50 <= 5 ms with one worker, <= 10 ms with two; no scrape holds
the loop for more than 5 ms):

- inside the service (`scrape_max_held_ms`, the target's figure): the service runs with
  LOOP_HOLD_TIMING=true (service/monitoring/loopholds.py: every task step timed, 5-12 us a step), and
  every worker's GET /internal/monitoring/loop-holds is read after the scrapes.  A step's held time is
  its wall time less the time the loop's thread was runnable but waiting for a core (the kernel's
  schedstat); the scrape's steps are those of its request's task.  The same view names what else held
  the loop longest in that time (`loop_max_held_ms`, `loop_holds_over_limit`: every kind of task step
  held longer than 5 ms);
- the same view over the whole seed replay (`during_replay_loop_*`): its heavy endpoints, and its load
  tests' first seconds;
- outside: a probe sends GET /v1/text/operations every 2 ms during the scrapes, and the worst probe
  latency above the probe's own p50 without scrapes is the longest stall it saw (`longest_stall_ms`):
  whatever held the loop, plus any wait for a core, plus the probe's own noise.

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
        return Proc([PYTHON, "-m", "service"], service_env(port, state, LOG_LEVEL="INFO", WORKERS=str(workers),
                                                          LOOP_HOLD_TIMING="true"), port, "/v1/health")
    return start


def _replay(url: str) -> str:
    if not os.path.exists(REPLAY):
        return "seed replay not found (../shared is not beside the repo): scraped without it"
    r = subprocess.run([sys.executable, REPLAY, SPEC, url, API_KEY], capture_output=True, text=True, timeout=600)
    lines = r.stdout.strip().splitlines() or ["(no output)"]
    for line in lines[:-1]:   # the commands that failed, and why (the replay prints only those)
        print(f"  seed replay: {line}")
    return lines[-1]


def _series(body: bytes) -> set[str]:
    """The series of an exposition: each sample's name and labels, without its value."""
    out = set()
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            out.add(line[:line.index("}") + 1] if "{" in line else line.split(" ", 1)[0])
    return out


def growth(before: set[str], after: set[str]) -> dict:
    """The series in `after` and not in `before`: how many per metric name (a histogram's _bucket, _count
    and _sum apart), and up to ten of them but for buckets, labels and all (the _count of a new label set
    names it)."""
    new = sorted(after - before)
    per: dict[str, int] = {}
    for series in new:
        name = series.split("{", 1)[0]
        per[name] = per.get(name, 0) + 1
    return {"per_name": per, "some": [x for x in new if "_bucket{" not in x][:10]} if new else {}


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
        series, names = 0, set()

        async def scrape_all():
            nonlocal series, names
            for _ in range(SCRAPES):
                t = time.perf_counter()
                async with s.get(f"{url}/metrics", headers={"Accept": ACCEPT}) as r:
                    body = await r.read()
                scrapes.append((time.perf_counter() - t) * 1000)
                series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
                await asyncio.sleep(0.02)
            names = _series(body)
        probe_task = asyncio.create_task(probe(SCRAPES * 0.05))
        await scrape_all()
        busy = await probe_task
    base = _pct(quiet, 0.5)
    return {"scrape_p50_ms": round(_pct(scrapes, 0.5), 2), "scrape_max_ms": round(max(scrapes), 2),
            "series": series, "series_names": names, "probe_p50_quiet_ms": round(base, 2), "probe_max_during_scrapes_ms": round(max(busy), 2),
            "longest_stall_ms": round(max(busy) - base, 2)}


HOLDS = "/internal/monitoring/loop-holds"


async def _each_worker(url: str, method: str, path: str, workers: int) -> list[dict]:
    """One answer from every worker (a new connection per call, so SO_REUSEPORT spreads them; a worker
    still starting gets up to 60 s)."""
    seen: dict[int, dict] = {}
    h = {"X-API-Key": API_KEY, "Connection": "close"}
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            async with s.request(method, f"{url}{path}", headers=h) as r:
                d = await r.json()
            seen.setdefault(d["pid"], d)
            if len(seen) >= workers:
                break
            await asyncio.sleep(0.02)
    if len(seen) < workers:
        raise RuntimeError(f"{path}: {len(seen)} of {workers} workers answered")
    return list(seen.values())


def _holds(views: list[dict], scrapes: bool = True) -> dict:
    """The loop holds of every worker: the scrapes' worst, and the worst of anything else."""
    scrape = [v["labels"].get("scrape") for v in views]
    scrape = [x for x in scrape if x]
    if not scrape and scrapes:
        raise RuntimeError("loop-holds recorded no scrape: is monitoring.loop_hold_timing on?")
    scrape = scrape or [{"max_held_ms": 0.0, "max_cpu_ms": 0.0, "max_wall_ms": 0.0, "over_5_ms": 0, "steps": 0,
                         "cpu_ms_per_run": 0.0}]
    over: dict[str, float] = {}
    for v in views:
        for kind, k in v["kinds"].items():
            if k["over_5_ms"]:
                over[kind] = max(over.get(kind, 0.0), k["max_held_ms"])
    longest = sorted((h for v in views for h in v["longest"]), key=lambda h: -h["held_ms"])[:5]
    return {"scrape_max_held_ms": max(x["max_held_ms"] for x in scrape),
            "scrape_max_cpu_ms": max(x["max_cpu_ms"] for x in scrape),
            "scrape_max_wall_ms": max(x["max_wall_ms"] for x in scrape),
            "scrape_steps_over_5ms": sum(x["over_5_ms"] for x in scrape),
            "scrape_steps": sum(x["steps"] for x in scrape),
            "scrape_loop_cpu_ms": max((x.get("cpu_ms_per_run") or 0.0) for x in scrape),
            # the share of the time a worker's loop ran task steps (wall): near 1, a probe waits behind a queue
            # of them whatever each one's length
            "loop_busy_share": max(round(v["busy_wall_seconds"] / max(1e-9, time.time() - v["since"]), 3)
                                   for v in views),
            "loop_max_held_ms": longest[0]["held_ms"] if longest else 0.0,
            "loop_longest_holds": longest,
            "gc": {str(v["pid"]): v["gc"] for v in views},
            "loop_holds_over_limit": dict(sorted(over.items(), key=lambda kv: -kv[1]))}


async def _measured(url: str, workers: int) -> dict:
    """_measure, with every worker's loop holds of that time."""
    await _each_worker(url, "POST", HOLDS + "/reset", workers)
    res = await _measure(url)
    res.update(_holds(await _each_worker(url, "GET", HOLDS, workers)))
    return res


def _replay_with_holds(url: str, workers: int) -> tuple[str, dict, float]:
    """The seed replay, with every worker's loop holds while it ran (its load tests start in it)."""
    asyncio.run(_each_worker(url, "POST", HOLDS + "/reset", workers))
    t = time.monotonic()
    replay = _replay(url)
    took = time.monotonic() - t
    return replay, _holds(asyncio.run(_each_worker(url, "GET", HOLDS, workers)), scrapes=False), took


def _holds_line(r: dict) -> str:
    over = ", ".join(f"{k} {v} ms" for k, v in list(r["loop_holds_over_limit"].items())[:4]) or "none"
    return (f"a scrape held the loop {r['scrape_max_held_ms']} ms at most (CPU {r['scrape_max_cpu_ms']} ms, wall "
            f"{r['scrape_max_wall_ms']} ms; {r['scrape_steps_over_5ms']} of {r['scrape_steps']} steps over 5 ms; "
            f"{r['scrape_loop_cpu_ms']} ms of the loop's CPU per scrape); "
            f"anything: {r['loop_max_held_ms']} ms; held over 5 ms: {over}; the busiest loop ran task steps "
            f"{r['loop_busy_share']:.0%} of the time" +
            "".join(f"\n      {h['held_ms']} ms held (CPU {h['cpu_ms']}, gc {h['gc_ms']}, wall {h['wall_ms']}) "
                    f"{h['label'] or h['kind']}: {h['from']} -> {h['to']}" for h in r["loop_longest_holds"][:3]) +
            "".join(f"\n      gc pid {pid}: " + ", ".join(f"{g} {x['collections']}x <= {x['longest_ms']} ms"
                                                      for g, x in v.items() if g.startswith("gen")) +
                    f"; young count {v['pending'][0]:,} of {v['thresholds'][0]:,}" for pid, v in r["gc"].items()))


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
    workers = int(proc.env.get("WORKERS", "1"))
    replay, in_replay, took = _replay_with_holds(proc.url, workers)
    print(f"  while the seed replay ran ({took:.0f} s, its load tests started): {_holds_line(in_replay)}")
    during = asyncio.run(_measured(proc.url, workers))
    print(f"  {replay}; during the guide's load tests: /metrics: {during['series']} series, "
          f"p50 {during['scrape_p50_ms']} ms, max {during['scrape_max_ms']} ms; "
          f"longest stall of a probe during scrapes {during['longest_stall_ms']} ms;\n    {_holds_line(during)}")
    # until the service is idle: without Redis each worker keeps its own jobs, so a cancel can miss the one
    # that runs it; the system benchmark's load generator ends within its 60 s anyway
    cancels, idle, deadline = 0, 0.0, time.monotonic() + 90
    while time.monotonic() < deadline:
        cancels += asyncio.run(_stop_load_tests(proc.url))
        idle = _idle_share(proc.proc.pid)
        if idle < 0.05:
            break
    res = asyncio.run(_measured(proc.url, workers))
    res["cpu_ms_per_scrape"] = asyncio.run(_cpu_per_scrape(proc.url, proc.proc.pid))
    res["series_growth"] = growth(during.pop("series_names"), res.pop("series_names"))  # what appeared after the load
    res["idle_cpu_share"] = round(idle, 3)
    print(f"  after them ({cancels} cancels, then {idle:.0%} of a core idle): /metrics: {res['series']} series, "
          f"p50 {res['scrape_p50_ms']} ms, max {res['scrape_max_ms']} ms; longest stall of a probe during scrapes "
          f"{res['longest_stall_ms']} ms; service CPU {res['cpu_ms_per_scrape']} ms per scrape;\n    {_holds_line(res)}")
    if res["series_growth"]:
        print(f"    series that appeared after the load tests: {res['series_growth']}")
    return {"rps": 0.0, "p50_ms": res["scrape_p50_ms"], "p99_ms": res["scrape_max_ms"], "requests": SCRAPES,
            "errors": 0, "seed_replay": replay, **res, **{f"during_load_{k}": v for k, v in during.items()},
            **{f"during_replay_{k}": v for k, v in in_replay.items() if k.startswith(("loop_", "gc"))}}
