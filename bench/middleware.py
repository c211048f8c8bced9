"""Bench scenarios for the middleware stack: the cached summarize path with the stack on and off.

One service process; the driver alternates short wrk runs with the stack as
configured (`on`) and with every optional middleware switched off live
through its config section's `enabled` flag (POST /internal/config/<section>:
security headers, request size, compression, versioning, rate limiting;
errors, metrics, auth and admission always run).  The same process, core and
warm cache serve both, so machine noise hits both alike.  It reports the `on`
numbers as the scenario's req/s plus `stack_off_rps` and `stack_cost_percent`
(the median over rounds of 1 - on/off).  Switched off, a middleware still
passes requests through (about 0.3 us each), so the cost is measured against
that, not against an app without the layers.

middleware_stack_default   the embedded defaults (rate limiting is off by default)
middleware_stack_full      plus rate limiting (local GCRA, a limit never reached)
middleware_stack_redis     plus rate limiting through Redis token leases
middleware_stack_whole     the whole default stack against the same service with only
                           the errors middleware (bench/stackless.py), two processes
                           driven in alternating rounds: what all nine layers cost,
                           the always-on ones and the pass-through frames included
"""
from __future__ import annotations

import json
import os
import time
import urllib.request

import psutil

from bench.load import drive
from tests.helpers import API_KEY, PYTHON, Proc, free_port, service_env


OPTIONAL = ("security_headers", "request_size", "compression", "versioning", "rate_limit", "cors")
RATE_LIMITED = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000000",
                "RATE_LIMIT_BURST_SIZE": "1000"}
ROUNDS = 6
MIN_ROUND = 2.0  # seconds: with 1 s rounds one burst of load from elsewhere on the box moved a round by 10 %
TEXT = ("Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally and runs rules "
        "over this data to aggregate and record new time series or generate alerts. Grafana can be used to "
        "visualize the collected data. Operators love clear dashboards and reliable alerts.")
BODY = json.dumps({"text": TEXT, "options": {"max_length": 20}}).encode()


def starter(full: bool = False, redis: bool = False):
    def start(state: str, redis_server) -> Proc:
        env = dict(RATE_LIMITED) if full else {}
        if redis:
            env["REDIS_URL"] = redis_server.url
        port = free_port()
        return Proc([PYTHON, "-m", "service"], service_env(port, state, LOG_LEVEL="WARNING", **env), port,
                     "/v1/health")
    return start


def _config(base: str, section: str, changes: dict) -> dict:
    req = urllib.request.Request(f"{base}/internal/config/{section}", data=json.dumps(changes).encode(),
                                 method="POST", headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _switch(base: str, configured: dict, on: bool) -> None:
    for section in OPTIONAL:
        _config(base, section, {"enabled": configured[section] if on else False})


def _post(url: str) -> bytes:
    req = urllib.request.Request(url, data=BODY, method="POST",
                                 headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def _median(values: list[float]) -> float:
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def _cpu(procs: list) -> float:
    """CPU seconds (user + system) of these processes and their children (a service's workers)."""
    total = 0.0
    for proc in procs:
        try:
            p = psutil.Process(proc.proc.pid)
            for q in [p, *p.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _alternate(urls: dict, before_round, duration: float, connections: int, procs: dict | None = None,
               rounds: int = ROUNDS, per_round: float | None = None, cpus: dict | None = None) -> dict:
    """`rounds` rounds driving urls["on"] and urls["off"] back to back, in alternating order.

    Returns the `on` figures plus off_rps, off_errors and cost_percent, the
    median over rounds of 1 - on/off: each round compares two runs a second
    apart, so a burst of load from elsewhere on the machine spoils one round,
    not the result (cost_percent_rounds lists them all, cost_percent_quartiles
    their spread).  With `procs` (name -> the Procs serving that url)
    each round also reads their CPU time: cpu_us_per_request for on and off, and cpu_cost_percent, the
    share of the on requests' CPU the difference is (the figure the machine's drift moves least), and the
    same per round (cpu_cost_percent_rounds, their median cpu_cost_percent_median).  The load generator's
    own CPU time per request (it is this process's child) is gen_cpu_us_per_request for on and off.
    `cpus` (name -> CPU numbers) pins the load generator of that side (taskset)."""
    headers = {"X-API-Key": API_KEY}
    per_round = per_round or max(MIN_ROUND, duration / rounds)
    acc = {k: {"requests": 0, "seconds": 0.0, "errors": 0, "p50": [], "p99": [], "rps": [], "cpu": 0.0,
               "cpu_rounds": [], "gen": 0.0, "foreign": []} for k in ("on", "off")}
    tool = None
    for i in range(rounds):
        for name in (("on", "off") if i % 2 == 0 else ("off", "on")):
            before_round(name)
            mine0 = _cpu([p for ps in procs.values() for p in ps]) if procs else 0.0
            cpu0 = _cpu(procs[name]) if procs else 0.0
            gen0, box0, t0 = _children_cpu() + _own_cpu(), _box_busy(), time.monotonic()
            r = drive(urls[name], BODY, headers, per_round, connections, cpus=(cpus or {}).get(name))
            a = acc[name]
            gen = _children_cpu() + _own_cpu() - gen0
            a["gen"] += gen
            mine = (_cpu([p for ps in procs.values() for p in ps]) - mine0) if procs else 0.0
            a["foreign"].append(round(max(0.0, _box_busy() - box0 - gen - mine) / (time.monotonic() - t0), 2))
            if procs:
                used = _cpu(procs[name]) - cpu0
                a["cpu"] += used
                a["cpu_rounds"].append(used / r["requests"] * 1e6 if r["requests"] else 0.0)
            a["requests"] += r["requests"]
            a["seconds"] += r["requests"] / r["rps"] if r["rps"] else per_round
            a["errors"] += r["errors"]
            a["p50"].append(r["p50_ms"])
            a["p99"].append(r["p99_ms"])
            a["rps"].append(r["rps"])
            tool = r.get("tool")
    rps = {k: a["requests"] / a["seconds"] if a["seconds"] else 0.0 for k, a in acc.items()}
    on = acc["on"]
    costs = [round(100 * (1 - a / b), 2) for a, b in zip(on["rps"], acc["off"]["rps"]) if b]
    return {"rps": rps["on"], "p50_ms": _median(on["p50"]), "p99_ms": _median(on["p99"]),
            "requests": on["requests"], "errors": on["errors"],
            "tool": tool, "off_rps": rps["off"], "off_errors": acc["off"]["errors"],
            "cost_percent": round(_median(costs), 2) if costs else None, "cost_percent_rounds": costs,
            "cost_percent_quartiles": _quartiles(costs), "rounds": rounds, "round_seconds": per_round,
            "rps_rounds": [round(x) for x in on["rps"]], "off_rps_rounds": [round(x) for x in acc["off"]["rps"]],
            **_foreign_figures(acc, costs), **_gen_figures(acc), **_cpu_figures(acc, procs)}


def _side_by_side(urls: dict, procs: dict, rounds: int, per_round: float, connections: int) -> dict:
    """`rounds` rounds driving urls["on"] and urls["off"] at the same time, one wrk (-t1) each: whatever
    slows the whole machine in a round (the host's other guests, which no counter in this VM shows) slows
    both sides alike, and each service gets the same share of the cores, so the ratio of their req/s is
    the ratio of their costs per request.  Returns the median over rounds of 1 - on/off (cost_percent),
    the rounds, and each side's req/s and CPU time per request."""
    import threading
    headers = {"X-API-Key": API_KEY}
    out = {k: {"rps": [], "cpu": [], "errors": 0} for k in ("on", "off")}
    for _ in range(rounds):
        res: dict = {}
        cpu0 = {k: _cpu(procs[k]) for k in urls}

        def one(name):
            res[name] = drive(urls[name], BODY, headers, per_round, connections)
        threads = [threading.Thread(target=one, args=(k,)) for k in urls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in urls:
            r = res[k]
            out[k]["rps"].append(r["rps"])
            out[k]["errors"] += r["errors"]
            out[k]["cpu"].append((_cpu(procs[k]) - cpu0[k]) / r["requests"] * 1e6 if r["requests"] else 0.0)
    costs = [round(100 * (1 - a / b), 2) for a, b in zip(out["on"]["rps"], out["off"]["rps"]) if b]
    return {"cost_percent": round(_median(costs), 2) if costs else None, "cost_percent_rounds": costs,
            "cost_percent_quartiles": _quartiles(costs), "rounds": rounds, "round_seconds": per_round,
            "rps": round(_median(out["on"]["rps"]), 1), "off_rps": round(_median(out["off"]["rps"]), 1),
            "errors": out["on"]["errors"], "off_errors": out["off"]["errors"],
            "cpu_us_per_request": round(_median(out["on"]["cpu"]), 1),
            "off_cpu_us_per_request": round(_median(out["off"]["cpu"]), 1)}


FOREIGN_LIMIT = 0.25  # cores: a round whose runs saw more of the box busy with other work is not "clean"
# (idle services, kernel threads of this shared box: 0.13-0.2 with nothing heavy running)


def _foreign_figures(acc: dict, costs: list[float]) -> dict:
    """What else ran on the box in each round (cores busy beyond the services, the load generator and the
    bench, from /proc/stat; with `procs` only, else everything but the generator counts) and the median
    cost over the rounds where neither run saw over FOREIGN_LIMIT of it: the box's other load is the main
    source of the rounds' spread, so this says how much of it there was and what the rounds without it
    gave.  The target's figure stays the median over all rounds."""
    foreign = [max(a, b) for a, b in zip(acc["on"]["foreign"], acc["off"]["foreign"])]
    clean = [c for c, f in zip(costs, foreign) if f <= FOREIGN_LIMIT]
    return {"foreign_cores_rounds": foreign, "clean_rounds": len(clean),
            "cost_percent_clean": round(_median(clean), 2) if len(clean) >= 3 else None}


def _box_busy() -> float:
    """CPU seconds the whole box's processes have run (all CPUs, /proc/stat: user, nice, system, and steal,
    the time the hypervisor gave to someone else).  Interrupt and softirq time are left out: with a
    loopback load most of it is the rounds' own network traffic (about 0.2 of a core at 10,000 req/s
    here), charged to no process."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    return (v[0] + v[1] + v[2] + v[7]) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the load generator runs as one)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _quartiles(values: list[float]) -> list[float] | None:
    """The first quartile, the median and the third quartile (nearest rank), None without values."""
    if not values:
        return None
    v = sorted(values)
    return [v[(len(v) - 1) // 4], round(_median(v), 2), v[(3 * (len(v) - 1) + 3) // 4]]


def _gen_figures(acc: dict) -> dict:
    if not acc["on"]["requests"] or not acc["off"]["requests"]:
        return {}
    return {"gen_cpu_us_per_request": round(acc["on"]["gen"] / acc["on"]["requests"] * 1e6, 1),
            "off_gen_cpu_us_per_request": round(acc["off"]["gen"] / acc["off"]["requests"] * 1e6, 1)}


def _cpu_figures(acc: dict, procs: dict | None) -> dict:
    if not procs or not acc["on"]["requests"] or not acc["off"]["requests"]:
        return {}
    on, off = (acc[k]["cpu"] / acc[k]["requests"] * 1e6 for k in ("on", "off"))
    rounds = [round(100 * (1 - b / a), 2) for a, b in zip(acc["on"]["cpu_rounds"], acc["off"]["cpu_rounds"]) if a]
    return {"cpu_us_per_request": round(on, 1), "off_cpu_us_per_request": round(off, 1),
            "cpu_cost_percent": round(100 * (1 - off / on), 2) if on else None,
            "cpu_cost_percent_rounds": rounds,
            "cpu_cost_percent_median": round(_median(rounds), 2) if rounds else None,
            "cpu_us_rounds": [round(x, 1) for x in acc["on"]["cpu_rounds"]],
            "off_cpu_us_rounds": [round(x, 1) for x in acc["off"]["cpu_rounds"]]}


def _warm(url: str, connections: int) -> None:
    _post(url)                                                   # fills the cache
    drive(url, BODY, {"X-API-Key": API_KEY}, 1.0, connections)   # warm up


def run(proc: Proc, duration: float, connections: int) -> dict:
    url = f"{proc.url}/v1/text/summarize"
    req = urllib.request.Request(f"{proc.url}/internal/config", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        sections = json.loads(r.read())["sections"]
    configured = {s: sections[s]["values"]["enabled"] for s in OPTIONAL}
    _warm(url, connections)
    try:
        res = _alternate({"on": url, "off": url}, lambda name: _switch(proc.url, configured, name == "on"),
                         duration, connections)
    finally:
        _switch(proc.url, configured, True)
    off, off_errors, cost = res.pop("off_rps"), res.pop("off_errors"), res.pop("cost_percent")
    print(f"  stack on {res['rps']:.0f} req/s, off {off:.0f} req/s: the stack costs {cost}% of req/s")
    return {**res, "stack_off_rps": round(off, 1), "stack_off_errors": off_errors,
            "stack_cost_percent": cost, "stack": {s: configured[s] for s in OPTIONAL}}


def _beside(url: str, other: Proc, duration: float, connections: int, procs: dict | None = None) -> dict:
    """`url` ("on") against the same route of `other` ("off"), alternating rounds; `other` is stopped after."""
    urls = {"on": url, "off": f"{other.url}/v1/text/summarize"}
    try:
        for u in urls.values():
            _warm(u, connections)
        return _alternate(urls, lambda name: None, duration, connections, procs)
    finally:
        other.stop()


def run_whole(proc: Proc, duration: float, connections: int) -> dict:
    """The full default service (`proc`) against bench/stackless.py, alternating rounds."""
    port = free_port()
    bare = Proc([PYTHON, "-m", "bench.stackless"], dict(proc.env, PORT=str(port)), port, "/v1/health")
    res = _beside(f"{proc.url}/v1/text/summarize", bare, duration, connections)
    off, off_errors, cost = res.pop("off_rps"), res.pop("off_errors"), res.pop("cost_percent")
    print(f"  whole stack {res['rps']:.0f} req/s, errors middleware only {off:.0f} req/s: "
          f"the whole stack costs {cost}% of req/s")
    return {**res, "errors_only_rps": round(off, 1), "errors_only_errors": off_errors,
            "stack_cost_percent": cost}
