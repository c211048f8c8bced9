"""Bench scenario `access_log_cost`: cached summarize with the default config (LOG_LEVEL=INFO, the access
log on, one JSON line per request to the service's stderr, here a file) against the same process with
`logging.access_log` switched off live (POST /internal/config/logging), in alternating rounds
(bench/middleware.py's _alternate): the share of req/s the access log costs."""
from __future__ import annotations

from bench.middleware import _alternate, _config, _warm
from tests.helpers import PYTHON, Proc, free_port, service_env


def starter():
    def start(state: str, _redis) -> Proc:
        port = free_port()
        return Proc([PYTHON, "-m", "service"], service_env(port, state, LOG_LEVEL="INFO"), port, "/v1/health")
    return start


def run(proc: Proc, duration: float, connections: int) -> dict:
    url = f"{proc.url}/v1/text/summarize"
    _warm(url, connections)
    try:
        res = _alternate({"on": url, "off": url},
                         lambda name: _config(proc.url, "logging", {"access_log": name == "on"}),
                         duration, connections, procs={"on": [proc], "off": [proc]})
    finally:
        _config(proc.url, "logging", {"access_log": True})
    lines = sum(1 for line in proc.output().splitlines() if '"service.access"' in line)
    off, off_errors, cost = res.pop("off_rps"), res.pop("off_errors"), res.pop("cost_percent")
    print(f"  access log on {res['rps']:.0f} req/s, off {off:.0f} req/s: the access log costs {cost}% of req/s "
          f"({lines} lines written); CPU per request {res.get('cpu_us_per_request')} µs on, "
          f"{res.get('off_cpu_us_per_request')} µs off: {res.get('cpu_cost_percent')}% of it")
    return {**res, "access_log_off_rps": round(off, 1), "access_log_off_errors": off_errors,
            "access_log_cost_percent": cost, "access_log_lines": lines}
