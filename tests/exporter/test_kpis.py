"""The KPI catalog is the spec's table, and its semantics are the ones everything else uses."""
from __future__ import annotations

import pytest

from exporter import kpis
from exporter.metrics import AI_BUCKETS, HTTP_BUCKETS
from service.config.sections import SECTIONS

# The spec's KPI table, retyped here on purpose: the catalog must match it.
SPEC = {
    "api_response_time_p95": ("lower", 2.0, 1.0, 3.0),
    "cache_hit_ratio": ("higher", 0.70, 0.85, 0.50),
    "memory_usage": ("lower", 0.70, 0.50, 0.85),
    "cpu_usage": ("lower", 0.80, 0.60, 0.90),
    "error_rate": ("lower", 0.01, 0.001, 0.02),
    "ai_response_time_p95": ("lower", 30.0, 15.0, 45.0),
}


def test_catalog_is_the_spec_table():
    assert {k.key: (k.direction, k.target, k.good, k.critical) for k in kpis.KPIS} == SPEC


def test_latency_thresholds_are_exact_bucket_edges():
    k = kpis.BY_KEY["api_response_time_p95"]
    assert {k.good, k.target, k.critical} <= set(HTTP_BUCKETS)
    a = kpis.BY_KEY["ai_response_time_p95"]
    assert {a.good, a.target, a.critical} <= set(AI_BUCKETS)


@pytest.mark.parametrize("key,value,status", [
    ("api_response_time_p95", 0.5, "good"),
    ("api_response_time_p95", 1.0, "target"),     # not < 1000 ms: only target
    ("api_response_time_p95", 2.0, "target"),     # exactly at the target: met
    ("api_response_time_p95", 2.1, "warning"),
    ("api_response_time_p95", 3.0, "warning"),    # exactly at needs-attention: not yet
    ("api_response_time_p95", 3.01, "critical"),
    ("cache_hit_ratio", 0.9, "good"),
    ("cache_hit_ratio", 0.85, "target"),
    ("cache_hit_ratio", 0.70, "target"),
    ("cache_hit_ratio", 0.69, "warning"),
    ("cache_hit_ratio", 0.50, "warning"),
    ("cache_hit_ratio", 0.49, "critical"),
    ("error_rate", 0.0, "good"),
    ("error_rate", 0.011, "warning"),
    ("error_rate", 0.021, "critical"),
    ("memory_usage", None, None),
    ("cpu_usage", float("nan"), None),
])
def test_status_semantics(key, value, status):
    assert kpis.BY_KEY[key].status(value) == status


def test_status_with_moved_thresholds():
    k = kpis.BY_KEY["memory_usage"]
    assert k.status(0.75) == "warning"
    assert k.status(0.75, target=0.8, critical=0.9) == "target"


def test_alerts_config_section_is_derived_from_the_catalog():
    d = SECTIONS["alerts"].defaults()
    assert d["response_time_threshold_ms"] == 2000.0 and d["response_time_critical_ms"] == 3000.0
    assert d["cache_hit_ratio_threshold"] == 0.7 and d["cache_hit_ratio_critical"] == 0.5
    assert d["memory_usage_threshold"] == 0.7 and d["cpu_usage_threshold"] == 0.8
    assert d["error_rate_threshold"] == 0.01 and d["ai_response_time_threshold_ms"] == 30000.0
    th = kpis.thresholds_from_config(d)
    assert th == {k.key: {"good": k.good, "target": k.target, "critical": k.critical} for k in kpis.KPIS}


def test_config_conversion_and_order_check():
    d = SECTIONS["alerts"].defaults()
    th = kpis.thresholds_from_config({**d, "response_time_threshold_ms": 2500, "memory_usage_threshold": 0.8})
    assert th["api_response_time_p95"]["target"] == 2.5
    assert th["memory_usage"]["target"] == 0.8
    assert kpis.check_order(d) is None
    assert kpis.check_order({**d, "response_time_threshold_ms": 3500})[0] == "response_time_threshold_ms"
    assert kpis.check_order({**d, "cache_hit_ratio_threshold": 0.4})[0] == "cache_hit_ratio_threshold"


def test_expressions_take_window_matchers_and_grouping():
    e = kpis.BY_KEY["error_rate"].expr("1m", 'job="x"', "job, route")
    assert "[1m]" in e and 'job="x"' in e and "sum by (job, route)" in e
    assert 'route=~"/v1/text/.+"' in e and kpis.traffic_kind("/v1/health/ready") == "self"
    assert kpis.sel() == "" and kpis.sel("", 'a="b"') == '{a="b"}'


# ---- one definition of API traffic ----------------------------------------------------
@pytest.mark.parametrize("route,kind", [
    ("/v1/text/summarize", "api"), ("/v1/text/batch", "api"), ("/v1/text/operations", "api"),
    ("/internal/monitoring/benchmark", "admin"), ("/metrics", "self"), ("/v1/health", "self"),
    ("/openapi.json", "self"), ("unmatched", "unmatched"),
])
def test_api_traffic_is_the_text_api(route, kind):
    assert kpis.traffic_kind(route) == kind
    assert kpis.is_api_route(route) == (kind == "api")


def test_the_service_reads_the_one_definition():
    """Reports, slow-endpoints and admission decide API traffic with the catalog's function."""
    from service.middleware import admission
    from service.monitoring import report
    assert report.is_api("/v1/text/qa") and not report.is_api("/internal/config") and not report.is_api("unmatched")
    assert set(admission.EXEMPT) == {kpis.ADMIN_ROUTE_PREFIX, *kpis.SELF_ROUTES}


# ---- bounds that keep every alert able to fire (issue 12) ------------------------------
def test_threshold_bounds_keep_every_alert_able_to_fire():
    top = {"api_response_time_p95": HTTP_BUCKETS[-1], "ai_response_time_p95": AI_BUCKETS[-1]}
    for k in kpis.KPIS:
        lo, hi = (kpis.from_config(k, b) for b in k.config_bounds)
        assert k.bounds_reason, k.key   # (a low threshold of a lower-is-better KPI fires more, never less)
        if k.unit == "ratio" and k.direction == kpis.LOWER:
            assert hi < 1.0, k.key       # a share cannot pass 100 %: a threshold there never fires
        if k.unit == "ratio" and k.direction == kpis.HIGHER:
            assert lo > 0.0 and hi < 1.0, k.key
        if k.unit == "seconds":
            assert hi < top[k.key], k.key  # P95 cannot pass the top finite bucket
        assert lo <= min(k.target, k.critical) and max(k.target, k.critical) <= hi, k.key  # defaults inside
        f = SECTIONS["alerts"].fields[k.config_field]
        assert (f.min, f.max) == k.config_bounds


@pytest.mark.parametrize("changes", [{"error_rate_threshold": 1.0, "error_rate_critical": 1.0},
                                     {"cache_hit_ratio_critical": 0.0},
                                     {"response_time_critical_ms": 3_600_000}])
async def test_a_threshold_that_blinds_its_alert_is_refused(changes):
    from service.config.store import ConfigStore
    store = ConfigStore(SECTIONS, env={})
    before = store.get("alerts")
    with pytest.raises(Exception) as e:
        await store.update("alerts", changes)
    assert next(iter(changes)) in str(e.value) or any(f in str(e.value) for f in changes)
    assert store.get("alerts") == before
