"""Bench scenario `workers_scaling`: cached summarize with the default config, WORKERS=2 against
WORKERS=1, two services driven in many short alternating rounds (bench/middleware.py's _alternate).

The load generator shares the box: wrk runs with one thread (-t1, bench/load.py), so it takes at most
one core's share at any moment, the same share in both runs, and it is not pinned (pinned to one core,
it would take that core from one of the two workers while one worker still had a core of its own).
The scenario measures what it takes: wrk's CPU time per request (it is the bench's child) beside each
service's (the supervisor and its workers).  With one worker the service is limited by its one core and
wrk runs on the other; with two, the workers and wrk share both cores, so the most this box can show is
ceiling = 2 x (one worker's CPU per request) / (two workers' CPU per request + wrk's), printed beside the
ratio.  The target (issue 16: >= 1.7x) is judged on scaling, the median over rounds of the req/s ratio;
the CPU figures say whether a second worker costs more per request (shared state, the summed metrics)."""
from __future__ import annotations

from bench.middleware import _alternate, _quartiles, _warm
from tests.helpers import PYTHON, Proc, free_port, service_env

ROUND_SECONDS = 1.0


def rounds_for(duration: float) -> int:
    """Rounds (pairs of runs) for `--duration`: 16 at the default 5 s, at least 2, an even number."""
    return max(2, min(24, 2 * round(1.6 * duration)))


def starter():
    def start(state: str, _redis) -> Proc:
        port = free_port()
        return Proc([PYTHON, "-m", "service"], service_env(port, state, LOG_LEVEL="INFO", WORKERS="2"), port,
                    "/v1/health")
    return start


def run(two: Proc, duration: float, connections: int) -> dict:
    port = free_port()
    one = Proc([PYTHON, "-m", "service"], dict(two.env, PORT=str(port), WORKERS="1"), port, "/v1/health")
    urls = {"on": f"{two.url}/v1/text/summarize", "off": f"{one.url}/v1/text/summarize"}
    try:
        for url in urls.values():
            for _ in range(4):  # every worker of the pair fills its own memory tier
                _warm(url, connections)
        res = _alternate(urls, lambda name: None, duration, connections, procs={"on": [two], "off": [one]},
                         rounds=rounds_for(duration), per_round=ROUND_SECONDS)
    finally:
        one.stop()
    single, single_errors, cost = res.pop("off_rps"), res.pop("off_errors"), res.pop("cost_percent")
    rounds = [round(1 - c / 100, 3) for c in res.pop("cost_percent_rounds")]  # two workers' req/s over one's
    scaling = round(1 - cost / 100, 3) if cost is not None else None
    cpu2, cpu1, gen2 = (res.get(k) for k in ("cpu_us_per_request", "off_cpu_us_per_request",
                                             "gen_cpu_us_per_request"))
    clean = round(1 - res["cost_percent_clean"] / 100, 3) if res.get("cost_percent_clean") is not None else None
    ceiling = round(2 * cpu1 / (cpu2 + gen2), 3) if cpu1 and cpu2 and gen2 else None
    print(f"  WORKERS=2 {res['rps']:.0f} req/s, WORKERS=1 {single:.0f} req/s: {scaling}x (median of "
          f"{res['rounds']} rounds of {res['round_seconds']:.0f} s, the target's figure; quartiles "
          f"{_quartiles(rounds)}); CPU per request: two workers {cpu2} µs, one {cpu1} µs, wrk -t1 (unpinned) "
          f"{gen2} µs: on two cores shared with wrk the most this box can show is {ceiling}x; the box's other "
          f"load {res['foreign_cores_rounds']} cores in the rounds, the {res['clean_rounds']} rounds without it: "
          f"{clean}x")
    return {**res, "one_worker_rps": round(single, 1), "one_worker_errors": single_errors, "scaling": scaling,
            "scaling_rounds": rounds, "scaling_clean": clean, "ceiling": ceiling, "judged_on": "scaling"}

