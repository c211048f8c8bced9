"""Bench scenario `summarize_cached_vs_floor`: cached summarize with the default config (the access log
on) against bench/floor.py, both running, in alternating rounds (bench/middleware.py's _alternate).

The table's `summarize_cached_memory` and `fused_floor` rows are runs one after the other, some
seconds apart: on this shared VM the machine's speed moves between them (in one run of 2026-12-02
the floor ran at half its usual rate), so this scenario's figure is the one issue 16 reads, the
median over rounds of the service's req/s over the floor's a second apart."""
from __future__ import annotations

import os

from bench import accesslog
from bench.middleware import _beside, _post
from tests.helpers import API_KEY, PYTHON, Proc, free_port


starter = accesslog.starter  # the default config, LOG_LEVEL=INFO: the access log on


def run(proc: Proc, duration: float, connections: int) -> dict:
    url = f"{proc.url}/v1/text/summarize"
    size = len(_post(url))  # the floor answers as many bytes
    port = free_port()
    floor = Proc([PYTHON, "-m", "bench.floor", "--port", str(port), "--size", str(size), "--api-key", API_KEY],
                 dict(os.environ), port, "/v1/health")
    res = _beside(url, floor, duration, connections, procs={"on": [proc], "off": [floor]})
    off, off_errors, cost = res.pop("off_rps"), res.pop("off_errors"), res.pop("cost_percent")
    rounds = [round(1 - c / 100, 3) for c in res.pop("cost_percent_rounds")]
    ratio = round(1 - cost / 100, 3) if cost is not None else None
    cpu, floor_cpu = res.get("cpu_us_per_request"), res.get("off_cpu_us_per_request")
    per_core = round(floor_cpu / cpu, 3) if cpu and floor_cpu else None
    print(f"  cached summarize {res['rps']:.0f} req/s, fused_floor {off:.0f} req/s: {ratio}x the floor "
          f"(median of rounds {rounds}); CPU per request {cpu} µs against the floor's {floor_cpu} µs: "
          f"{per_core}x the floor's req/s per core")
    return {**res, "floor_rps": round(off, 1), "floor_errors": off_errors, "ratio_to_floor": ratio,
            "ratio_to_floor_rounds": rounds, "ratio_to_floor_per_core": per_core}
