"""Background collectors of one service process.

`await start(ctx)` sets the static gauges (build info, CPU and memory limits,
KPI thresholds) and returns the asyncio tasks that keep the others current:

* event-loop lag: the process's one probe (LagProbe, ctx.extras["lag"]), a
  sleeper that measures how late it wakes up; the gauge and /internal/monitoring
  (the monitor's snapshots, system-load) read it;
* process CPU seconds and RSS (llmapi_process_*), summed over workers;
* CPU and memory limits: cgroup v2, else cgroup v1, else the host;
* Redis up and ping latency, when REDIS_URL is set;
* llmapi_kpi_threshold from the catalog and the "alerts" config section,
  updated the moment the section changes (store subscription);
* whatever the service registers (`register`): the exporter never imports
  service/, so the service hands it its version and the samplers it wants run
  (the in-process KPI status sampler of service/monitoring/kpi_status.py).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import platform
import threading
import time

import psutil

from exporter import kpis
from exporter.metrics import (BUILD_INFO, CPU_LIMIT, EVENT_LOOP_LAG, KPI_THRESHOLD, MEMORY_LIMIT, PROCESS_CPU,
                              PROCESS_RSS, PROCESS_WORKERS, REDIS_CONFIGURED, REDIS_LATENCY, REDIS_UP)

log = logging.getLogger("exporter.collectors")

LAG_INTERVAL = 0.25       # seconds between event-loop lag probes
LAG_WINDOW = 20           # probes the lag gauge reports the worst of (5 s)
PROCESS_INTERVAL = 1.0    # seconds between CPU/RSS samples (a scrape also samples)
LIMITS_INTERVAL = 30.0    # seconds between cgroup limit reads
REDIS_INTERVAL = 5.0      # seconds between Redis pings

CGROUP_ROOT = "/sys/fs/cgroup"
_UNLIMITED_V1 = 1 << 60   # cgroup v1 reports "no limit" as a huge page-aligned number


# ---- CPU and memory limits ------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _own_cgroup(proc_cgroup: str, controller: str | None) -> str:
    """The process's cgroup path for a controller (None: the v2 unified one)."""
    text = _read(proc_cgroup) or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if controller is None and hid == "0" and ctrls == "":
            return path
        if controller is not None and controller in ctrls.split(","):
            return path
    return "/"


def _ancestors(mount: str, path: str) -> list[str]:
    """Directories from the process's cgroup up to the mount root (that exist)."""
    out = []
    path = "/" + path.strip("/")
    while True:
        d = os.path.join(mount, path.lstrip("/")) if path != "/" else mount
        if os.path.isdir(d):
            out.append(d)
        if path == "/":
            break
        path = os.path.dirname(path)
    if not out:
        out.append(mount)
    return out


def _tightest(dirs: list[str], parse) -> float | None:
    """The smallest limit `parse(dir)` finds along the cgroup path (None: no limit anywhere)."""
    found = [v for v in (parse(d) for d in dirs) if v is not None]
    return min(found) if found else None


def _v2_cpu(d: str) -> float | None:
    quota, _, period = (_read(os.path.join(d, "cpu.max")) or "max").partition(" ")
    try:
        return None if quota == "max" else int(quota) / int(period or "100000")
    except (ValueError, ZeroDivisionError):
        return None


def _v1_cpu(d: str) -> float | None:
    try:
        quota = int(_read(os.path.join(d, "cpu.cfs_quota_us")) or -1)
        period = int(_read(os.path.join(d, "cpu.cfs_period_us")) or 100000)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v2_memory(d: str) -> float | None:
    raw = _read(os.path.join(d, "memory.max")) or "max"
    try:
        return None if raw == "max" else float(int(raw))
    except ValueError:
        return None


def _v1_memory(d: str) -> float | None:
    try:
        v = int(_read(os.path.join(d, "memory.limit_in_bytes")) or 0)
    except ValueError:
        return None
    return float(v) if 0 < v < _UNLIMITED_V1 else None


def _cgroup_dirs(root: str, proc_cgroup: str, v1_mounts: tuple[str, ...], controller: str) -> tuple[list[str], bool]:
    """(directories from the process's cgroup up to the root, is_v2)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return _ancestors(root, _own_cgroup(proc_cgroup, None)), True
    for m in v1_mounts:
        mount = os.path.join(root, m)
        if os.path.isdir(mount):
            return _ancestors(mount, _own_cgroup(proc_cgroup, controller)), False
    return [], False


def cgroup_cpu_limit(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """Cores allowed by the cgroup CPU quota, the tightest along the path; None when unlimited."""
    dirs, v2 = _cgroup_dirs(root, proc_cgroup, ("cpu,cpuacct", "cpu"), "cpu")
    return _tightest(dirs, _v2_cpu if v2 else _v1_cpu)


def cgroup_memory_limit(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """Bytes allowed by the cgroup memory limit, the tightest along the path; None when unlimited."""
    dirs, v2 = _cgroup_dirs(root, proc_cgroup, ("memory",), "memory")
    return _tightest(dirs, _v2_memory if v2 else _v1_memory)


def host_cpus() -> float:
    try:
        return float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return float(psutil.cpu_count() or 1)


def cpu_limit(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> tuple[float, str]:
    """(cores, source): the cgroup quota when it is tighter than the host's CPUs."""
    host = host_cpus()
    cg = cgroup_cpu_limit(root, proc_cgroup)
    if cg is not None and cg < host:
        return cg, "cgroup"
    return host, "host"


def memory_limit(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> tuple[float, str]:
    """(bytes, source): the cgroup limit when it is tighter than the host's memory."""
    host = float(psutil.virtual_memory().total)
    cg = cgroup_memory_limit(root, proc_cgroup)
    if cg is not None and cg < host:
        return float(cg), "cgroup"
    return host, "host"


def update_limits() -> dict:
    cores, csrc = cpu_limit()
    mem, msrc = memory_limit()
    CPU_LIMIT.set(cores)
    MEMORY_LIMIT.set(mem)
    return {"cpu_cores": cores, "cpu_source": csrc, "memory_bytes": mem, "memory_source": msrc}


# ---- process CPU and RSS ----------------------------------------------------
_proc_lock = threading.Lock()
_proc_state = {"pid": None, "proc": None, "cpu": 0.0}


def sample_process() -> tuple[float, float]:
    """Bring llmapi_process_cpu_seconds_total and _resident_memory_bytes up to date.

    Safe from any thread (a scrape calls it off the event loop).  Returns
    (cpu seconds so far, rss bytes) of this process.
    """
    with _proc_lock:
        pid = os.getpid()
        if _proc_state["pid"] != pid:  # first call, or a forked child
            _proc_state.update(pid=pid, proc=psutil.Process(pid), cpu=0.0)
        p = _proc_state["proc"]
        with p.oneshot():
            t = p.cpu_times()
            rss = float(p.memory_info().rss)
        cpu = t.user + t.system
        delta = cpu - _proc_state["cpu"]
        if delta > 0:
            PROCESS_CPU.inc(delta)
            _proc_state["cpu"] = cpu
        PROCESS_RSS.set(rss)
        return cpu, rss


# ---- KPI thresholds ----------------------------------------------------------
def apply_thresholds(values: dict) -> dict[str, dict[str, float]]:
    """Export llmapi_kpi_threshold from the "alerts" section values."""
    th = kpis.thresholds_from_config(values)
    for key, levels in th.items():
        for level, v in levels.items():
            KPI_THRESHOLD.labels(key, level).set(v)
    return th


def watch_thresholds(store) -> None:
    apply_thresholds(store.get("alerts") if "alerts" in store.sections else {})

    def on_change(name: str, new: dict, old: dict) -> None:
        if name == "alerts":
            apply_thresholds(new)

    store.subscribe(on_change)


# ---- loops ---------------------------------------------------------------------
class LagProbe:
    """How late a LAG_INTERVAL sleep wakes up: `last`, the worst since `take_peak()` (`peak`),
    and llmapi_event_loop_lag_seconds (the worst of the last LAG_WINDOW probes)."""

    def __init__(self):
        self.last = 0.0
        self.peak = 0.0
        self.recent: collections.deque[float] = collections.deque(maxlen=LAG_WINDOW)

    def take_peak(self) -> float:
        """The worst lag since the previous call; the next period starts from the latest probe."""
        peak, self.peak = self.peak, self.last
        return peak

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            lag = max(0.0, loop.time() - t0 - LAG_INTERVAL)
            self.last = lag
            self.peak = max(self.peak, lag)
            self.recent.append(lag)
            EVENT_LOOP_LAG.set(max(self.recent))


def lag_probe(ctx) -> LagProbe:
    """The context's probe (created on first use; started by start())."""
    return ctx.extras.setdefault("lag", LagProbe())


async def _every(interval: float, fn, name: str) -> None:
    while True:
        try:
            fn()
        except Exception:  # a sampler must never die
            log.exception("collector %s failed", name)
        await asyncio.sleep(interval)


async def _redis_loop(redis, store) -> None:
    """A ping slower than redis.command_timeout_seconds counts as down."""
    ping_latency = REDIS_LATENCY.labels("ping")
    while True:
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(redis.ping(), store.get("redis")["command_timeout_seconds"])
            ping_latency.observe(time.perf_counter() - t0)
            REDIS_UP.set(1)
        except asyncio.CancelledError:
            raise
        except Exception:
            REDIS_UP.set(0)
        await asyncio.sleep(REDIS_INTERVAL)


# ---- what the service registers ----------------------------------------------------
_registered: dict = {"version": "unknown", "starters": []}


def register(version: str | None = None, starter=None) -> None:
    """The service's part: its version (llmapi_build_info) and `starter(ctx) -> asyncio.Task`
    callables that `start` runs with the other collectors."""
    if version is not None:
        _registered["version"] = version
    if starter is not None and starter not in _registered["starters"]:
        _registered["starters"].append(starter)


def set_build_info() -> None:
    BUILD_INFO.labels(_registered["version"], platform.python_version()).set(1)


async def start(ctx) -> list[asyncio.Task]:
    """Set the static gauges and start the sampling tasks; the caller cancels them."""
    set_build_info()
    PROCESS_WORKERS.set(1)
    limits = update_limits()
    sample_process()
    watch_thresholds(ctx.store)
    tasks = [
        asyncio.create_task(lag_probe(ctx).run(), name="collector:event-loop-lag"),
        asyncio.create_task(_every(PROCESS_INTERVAL, sample_process, "process"), name="collector:process"),
        asyncio.create_task(_every(LIMITS_INTERVAL, update_limits, "limits"), name="collector:limits"),
    ]
    if getattr(ctx, "redis", None) is not None:
        REDIS_CONFIGURED.set(1)
        tasks.append(asyncio.create_task(_redis_loop(ctx.redis, ctx.store), name="collector:redis"))
    else:
        REDIS_CONFIGURED.set(0)
        REDIS_UP.set(0)
    tasks.extend(starter(ctx) for starter in _registered["starters"])
    log.debug("collectors started", extra={"limits": limits})
    return tasks
