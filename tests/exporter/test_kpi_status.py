"""KPI values computed in-process: PromQL-equivalent quantiles, windows, trends, statuses."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from exporter.metrics import HTTP_BUCKETS
from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.monitoring import kpi_status as ks
from service.monitoring.kpi_status import Counters, bucket_quantile

LE = tuple(HTTP_BUCKETS) + (float("inf"),)


def cumulative(observations: list[float], les=LE) -> list[float]:
    return [float(sum(1 for o in observations if o <= le)) for le in les]


def test_bucket_quantile_matches_promql_interpolation():
    # 100 observations: 90 at 0.5 s, 10 in (1, 2]: P95 = 1 + (95 - 90) / 10 * 1 = 1.5
    c = cumulative([0.5] * 90 + [1.5] * 10)
    assert bucket_quantile(0.95, LE, c) == 1.5
    assert bucket_quantile(0.5, LE, c) == pytest.approx(0.25 + 0.25 * (50 / 90))
    assert bucket_quantile(0.95, LE, [0.0] * len(LE)) is None
    # everything above the last finite bucket: the highest finite bound, as PromQL
    assert bucket_quantile(0.95, LE, cumulative([100.0] * 10)) == HTTP_BUCKETS[-1]


class Clock:
    """Synthetic counters: the test moves time and counts by hand."""

    def __init__(self):
        self.c = Counters(t=1000.0, wall=1_700_000_000.0, cpu_limit=2.0, memory_limit=1000.0, rss=400.0)

    def __call__(self) -> Counters:
        c = self.c
        return Counters(t=c.t, wall=c.wall, http_buckets=list(c.http_buckets), http_count=c.http_count,
                        http_sum=c.http_sum, http_5xx=c.http_5xx, http_4xx=c.http_4xx,
                        ai_buckets=list(c.ai_buckets), ai_count=c.ai_count, ai_sum=c.ai_sum,
                        cache_hits=c.cache_hits, cache_misses=c.cache_misses, cpu_seconds=c.cpu_seconds,
                        rss=c.rss, cpu_limit=c.cpu_limit, memory_limit=c.memory_limit)

    def advance(self, seconds: float, latencies=(), errors=0, hits=0, misses=0, cpu=0.0):
        c = self.c
        c.t += seconds
        c.wall += seconds
        for v in latencies:
            for i, le in enumerate(LE):
                if v <= le:
                    c.http_buckets[i] += 1
            c.http_count += 1
            c.http_sum += v
        c.http_5xx += errors
        c.cache_hits += hits
        c.cache_misses += misses
        c.cpu_seconds += cpu


@pytest.fixture
def status():
    store = ConfigStore(SECTIONS, env={})
    clock = Clock()
    s = ks.KpiStatus(SimpleNamespace(store=store, extras={}), reader=clock)
    return s, clock, store


def test_values_over_the_window(status):
    s, clock, _ = status
    clock.advance(10, latencies=[0.5] * 90 + [1.5] * 10, errors=1, hits=3, misses=1, cpu=10.0)
    perf = s.performance()
    assert perf["p95_response_time_ms"] == 1500.0
    assert perf["avg_response_time_ms"] == pytest.approx((0.5 * 90 + 1.5 * 10) / 100 * 1000)
    assert perf["error_rate"] == 0.01
    assert perf["cache_hit_ratio"] == 0.75
    assert perf["memory_usage_percent"] == 40.0
    assert perf["cpu_usage_percent"] == 50.0           # 10 cpu-s in 10 s on 2 cores
    k = perf["kpis"]
    assert k["api_response_time_p95"]["status"] == "target"
    assert k["error_rate"]["status"] == "target"       # exactly 1 %: target met
    assert k["cache_hit_ratio"]["status"] == "target"
    assert k["memory_usage"]["status"] == "good" and perf["summary"]["healthy"] is True


def test_window_forgets_old_traffic(status):
    s, clock, _ = status
    clock.advance(5, latencies=[2.5] * 100, errors=50)
    s.tick()
    for _ in range(int(ks.WINDOW / ks.SAMPLE_INTERVAL) + 2):   # more than 5 minutes of quiet samples
        clock.advance(ks.SAMPLE_INTERVAL)
        s.tick()
    clock.advance(1, latencies=[0.1] * 10)
    perf = s.performance()
    assert perf["requests"] == 10 and perf["error_rate"] == 0.0
    assert perf["kpis"]["api_response_time_p95"]["status"] == "good"


def test_alerts_follow_thresholds_and_track_since(status):
    s, clock, store = status
    clock.advance(10, latencies=[2.5] * 100, errors=3)
    alerts = {a["kpi"]: a for a in s.alerts()}
    assert alerts["api_response_time_p95"]["severity"] == "warning"
    assert alerts["api_response_time_p95"]["threshold"] == 2.0
    assert alerts["error_rate"]["severity"] == "critical" and alerts["error_rate"]["threshold"] == 0.02
    assert "performance" in alerts["error_rate"]["message"]
    since = alerts["error_rate"]["since"]
    clock.advance(1)
    assert {a["kpi"]: a for a in s.alerts()}["error_rate"]["since"] == since   # unchanged state keeps its start
    # P95 of 2.5 s observations in the (2, 3] bucket interpolates to 2.95 s
    assert alerts["api_response_time_p95"]["value"] == pytest.approx(2.95)
    store.values["alerts"] = {**store.get("alerts"), "response_time_threshold_ms": 2990.0,
                              "error_rate_threshold": 0.05, "error_rate_critical": 0.06}
    kinds = {a["kpi"] for a in s.alerts()}
    assert "api_response_time_p95" not in kinds and "error_rate" not in kinds


def test_trends_and_time_windows(status):
    s, clock, _ = status
    for minute in range(3):
        clock.advance(60, latencies=[0.2] * (10 * (minute + 1)), errors=minute)
        s.tick()
    clock.advance(30, latencies=[0.2] * 5)
    body = s.request_metrics(hours=1)
    rm = body["request_metrics"]
    assert rm["total_requests"] == 10 + 20 + 30 + 5
    assert rm["error_count"] == 3
    assert rm["p95_response_time_ms"] == pytest.approx(100 + 150 * 0.95)   # all in (0.1, 0.25]
    trends = body["performance_trends"]
    assert [p["requests"] for p in trends] == [10, 20, 30, 5]
    assert trends[2]["error_rate"] == pytest.approx(2 / 30, abs=1e-6)
    # a window shorter than the history keeps only the recent minutes
    assert s.request_metrics(hours=1 / 60)["request_metrics"]["total_requests"] == 30 + 5


def test_cpu_needs_a_real_interval(status):
    s, clock, _ = status
    clock.advance(0.01, cpu=0.01)
    assert s.performance()["kpis"]["cpu_usage"]["value"] is None
