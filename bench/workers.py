"""Bench scenario `workers_scaling`: cached summarize with the default config, WORKERS=2 against
WORKERS=1, two services driven in alternating rounds (bench/middleware.py's _alternate).  The load
generator shares the box: wrk runs with one thread (-t1, bench/load.py), so it takes at most one
core's share at any moment and the same share in both runs; the ratio is of the same-run medians.
Target: >= 1.7x."""
from __future__ import annotations

from bench.middleware import _alternate, _warm
from tests.helpers import PYTHON, Proc, free_port, service_env


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
        res = _alternate(urls, lambda name: None, duration, connections)
    finally:
        one.stop()
    single, single_errors, cost = res.pop("off_rps"), res.pop("off_errors"), res.pop("cost_percent")
    rounds = res.pop("cost_percent_rounds")
    scaling = round(res["rps"] / single, 3) if single else None
    print(f"  WORKERS=2 {res['rps']:.0f} req/s, WORKERS=1 {single:.0f} req/s: {scaling}x")
    return {**res, "one_worker_rps": round(single, 1), "one_worker_errors": single_errors, "scaling": scaling,
            "scaling_rounds": [round(1 / (1 - c / 100), 3) for c in rounds if c < 100]}
