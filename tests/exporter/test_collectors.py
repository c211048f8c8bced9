"""Collectors: cgroup limits (fake v1/v2 trees), process sampling, thresholds, loops, Redis up."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from exporter import collectors
from exporter.metrics import (EVENT_LOOP_LAG, KPI_THRESHOLD, PROCESS_CPU, PROCESS_RSS, REDIS_CONFIGURED,
                              REDIS_LATENCY, REDIS_UP)
from service.config.sections import SECTIONS
from service.config.store import ConfigStore


def value(metric, **labels) -> float:
    child = metric.labels(**labels) if labels else metric
    return child._value.get()


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_tightest_limit_along_the_path(tmp_path):
    root = tmp_path / "cg"
    write(root / "cgroup.controllers", "cpu memory")
    write(root / "kubepods" / "cpu.max", "max 100000")
    write(root / "kubepods" / "memory.max", "1073741824")
    write(root / "kubepods" / "pod1" / "cpu.max", "50000 100000")
    write(root / "kubepods" / "pod1" / "memory.max", "max")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/kubepods/pod1\n")
    assert collectors.cgroup_cpu_limit(str(root), str(proc)) == 0.5
    assert collectors.cgroup_memory_limit(str(root), str(proc)) == 1073741824
    assert collectors.cpu_limit(str(root), str(proc)) == (0.5, "cgroup")
    assert collectors.memory_limit(str(root), str(proc)) == (1073741824.0, "cgroup")


def test_cgroup_v2_unlimited_falls_back_to_the_host(tmp_path):
    root = tmp_path / "cg"
    write(root / "cgroup.controllers", "cpu memory")
    write(root / "cpu.max", "max 100000")
    write(root / "memory.max", "max")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/\n")
    assert collectors.cgroup_cpu_limit(str(root), str(proc)) is None
    cores, src = collectors.cpu_limit(str(root), str(proc))
    assert src == "host" and cores == collectors.host_cpus()
    mem, src = collectors.memory_limit(str(root), str(proc))
    assert src == "host" and mem > 0


def test_cgroup_v1(tmp_path):
    root = tmp_path / "cg"
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "150000")
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1")
    write(root / "memory" / "docker" / "abc" / "memory.limit_in_bytes", "9223372036854771712")  # unlimited
    write(root / "memory" / "docker" / "memory.limit_in_bytes", "2147483648")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n")
    assert collectors.cgroup_cpu_limit(str(root), str(proc)) == 1.5
    assert collectors.cgroup_memory_limit(str(root), str(proc)) == 2147483648
    # a quota above the host's CPUs is no limit
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", str(int(1000 * 100000)))
    assert collectors.cpu_limit(str(root), str(proc))[1] == "host"


def test_no_cgroup_at_all(tmp_path):
    proc = tmp_path / "none"
    assert collectors.cgroup_cpu_limit(str(tmp_path / "missing"), str(proc)) is None
    assert collectors.cgroup_memory_limit(str(tmp_path / "missing"), str(proc)) is None


def test_update_limits_sets_the_gauges():
    limits = collectors.update_limits()
    assert limits["cpu_cores"] > 0 and limits["memory_bytes"] > 0
    assert limits["cpu_source"] in ("cgroup", "host")


def test_sample_process_counts_cpu_and_rss():
    before = value(PROCESS_CPU)
    sum(i * i for i in range(300_000))  # burn some CPU
    cpu, rss = collectors.sample_process()
    assert rss > 10_000_000 and value(PROCESS_RSS) == rss
    assert value(PROCESS_CPU) == pytest.approx(cpu) and cpu > before  # the process's CPU seconds


async def test_thresholds_follow_the_alerts_section_live():
    store = ConfigStore(SECTIONS, env={})
    collectors.watch_thresholds(store)
    assert value(KPI_THRESHOLD, kpi="api_response_time_p95", level="target") == 2.0
    assert value(KPI_THRESHOLD, kpi="cache_hit_ratio", level="critical") == 0.5
    assert value(KPI_THRESHOLD, kpi="error_rate", level="good") == 0.001
    await store.update("alerts", {"response_time_threshold_ms": 1500, "error_rate_critical": 0.05})
    assert value(KPI_THRESHOLD, kpi="api_response_time_p95", level="target") == 1.5
    assert value(KPI_THRESHOLD, kpi="error_rate", level="critical") == 0.05


async def test_start_runs_the_loops_and_cancels_cleanly(monkeypatch):
    monkeypatch.setattr(collectors, "LAG_INTERVAL", 0.05)
    store = ConfigStore(SECTIONS, env={})
    ctx = SimpleNamespace(store=store, redis=None, extras={})
    from service.app import start_collectors
    tasks = await start_collectors(ctx)
    try:
        assert value(REDIS_CONFIGURED) == 0 and value(REDIS_UP) == 0
        assert "kpi_status" in ctx.extras
        EVENT_LOOP_LAG.set(-1)
        await asyncio.sleep(0.3)
        assert value(EVENT_LOOP_LAG) >= 0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert all(t.done() for t in tasks)


async def test_redis_up_follows_a_real_server(fresh_redis, monkeypatch):
    from service.redis_client import make_redis
    monkeypatch.setattr(collectors, "REDIS_INTERVAL", 0.1)
    store = ConfigStore(SECTIONS, env={})
    await store.update("redis", {"command_timeout_seconds": 0.5})
    redis = make_redis(fresh_redis.url, {"REDIS_SOCKET_TIMEOUT": "0.5"})
    pings_before = REDIS_LATENCY.labels("ping")._sum.get()
    task = asyncio.create_task(collectors._redis_loop(redis, store))
    try:
        for _ in range(50):
            await asyncio.sleep(0.1)
            if value(REDIS_UP) == 1:
                break
        assert value(REDIS_UP) == 1
        assert REDIS_LATENCY.labels("ping")._sum.get() > pings_before
        fresh_redis.stop()
        for _ in range(50):
            await asyncio.sleep(0.1)
            if value(REDIS_UP) == 0:
                break
        assert value(REDIS_UP) == 0
        fresh_redis.start()
        for _ in range(80):
            await asyncio.sleep(0.1)
            if value(REDIS_UP) == 1:
                break
        assert value(REDIS_UP) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()


@pytest.mark.parametrize("header,ok", [("gzip", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.5", True),
                                       ("gzip;q=0", False), ("identity", False), ("", False), ("*", True)])
def test_accepts_gzip(header, ok):
    from exporter.handler import accepts_gzip
    assert accepts_gzip(header) is ok
