"""Process figures: RSS, CPU use against the cores available, GC.

Limits are exporter/collectors.py's: the cgroup's when one is set, else the host's.
"""
from __future__ import annotations

import gc
import os
import time

import psutil

from exporter import collectors

_proc = psutil.Process()


def cpu_limit() -> float:
    return collectors.cpu_limit()[0]


def memory_limit() -> int:
    return int(collectors.memory_limit()[0])


def rss() -> int:
    return _proc.memory_info().rss


def memory_info() -> dict:
    mi = _proc.memory_info()
    limit = memory_limit()
    # (no USS: psutil reads it from /proc/self/smaps_rollup, whose cost grows with the RSS)
    return {"rss_bytes": mi.rss, "vms_bytes": mi.vms, "limit_bytes": limit,
            "percent_of_limit": round(mi.rss / limit * 100, 3) if limit else None}


class CpuMeter:
    """CPU seconds this process used between two reads, as % of the cores it may use."""

    def __init__(self):
        self._last_cpu = self._cpu()
        self._last_wall = time.monotonic()

    @staticmethod
    def _cpu() -> float:
        t = _proc.cpu_times()
        return t.user + t.system

    def read(self, reset: bool = True) -> dict:
        now_cpu, now_wall = self._cpu(), time.monotonic()
        busy = max(0.0, now_cpu - self._last_cpu)
        wall = max(1e-6, now_wall - self._last_wall)
        if reset:
            self._last_cpu, self._last_wall = now_cpu, now_wall
        cores = cpu_limit()
        return {"busy_seconds": busy, "seconds": wall, "cores": cores,
                "percent": round(busy / wall / cores * 100, 3)}


def load_average() -> list[float] | None:
    try:
        return [round(x, 3) for x in os.getloadavg()]
    except OSError:
        return None


def gc_stats() -> dict:
    return {"enabled": gc.isenabled(), "counts": list(gc.get_count()), "thresholds": list(gc.get_threshold()),
            "generations": [dict(s) for s in gc.get_stats()], "frozen": gc.get_freeze_count()}
