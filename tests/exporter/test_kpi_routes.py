"""/internal/monitoring: performance, metrics, alerts, configure-alerts over real HTTP."""
from __future__ import annotations

import pytest

from exporter import kpis
from service.context import CTX

SPEC_BODY = {"response_time_threshold_ms": 2000, "cache_hit_ratio_threshold": 0.7, "memory_usage_threshold": 0.8,
             "cpu_usage_threshold": 0.8, "error_rate_threshold": 0.01}
TEXT = {"text": "Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally."}


async def test_performance_has_the_spec_fields_and_every_kpi(kpi_client):
    for _ in range(3):
        assert (await kpi_client.post("/v1/text/summarize", json=TEXT)).status == 200
    r = await kpi_client.get("/internal/monitoring/performance")
    assert r.status == 200
    body = await r.json()
    for f in ("avg_response_time_ms", "cache_hit_ratio", "memory_usage_percent", "cpu_usage_percent",
              "error_rate", "p95_response_time_ms"):
        assert isinstance(body[f], (int, float)), f
    assert body["avg_response_time_ms"] > 0
    assert 0 < body["memory_usage_percent"] < 100
    assert set(body["kpis"]) == {k.key for k in kpis.KPIS}
    for k in kpis.KPIS:
        e = body["kpis"][k.key]
        assert e["thresholds"] == {"good": k.good, "target": k.target, "critical": k.critical}
        assert e["status"] in (None, "good", "target", "warning", "critical")
    assert body["kpis"]["memory_usage"]["status"] == "good"
    assert body["summary"]["message"].startswith("performance")
    assert body["summary"]["status"] in ("good", "target", "warning", "critical")


async def test_configure_alerts_moves_store_gauge_and_alerts(kpi_client):
    r = await kpi_client.post("/internal/monitoring/configure-alerts", json=SPEC_BODY)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["changes"] == {"memory_usage_threshold": 0.8}
    assert body["thresholds"]["memory_usage"]["target"] == 0.8
    assert kpi_client.server.app[CTX].store.get("alerts")["memory_usage_threshold"] == 0.8
    metrics = await (await kpi_client.get("/metrics")).text()
    assert 'llmapi_kpi_threshold{kpi="memory_usage",level="target"} 0.8' in metrics
    # a threshold below the live memory share raises an alert at once
    r = await kpi_client.post("/internal/monitoring/configure-alerts",
                              json={"memory_usage_threshold": 0.00001, "memory_usage_critical": 0.00002})
    assert r.status == 200
    alerts = (await (await kpi_client.get("/internal/monitoring/alerts")).json())["alerts"]
    mem = next(a for a in alerts if a["kpi"] == "memory_usage")
    assert mem["severity"] == "critical" and mem["threshold"] == 0.00002
    assert mem["name"] == "LlmapiMemoryUsageNeedsAttention"
    assert "performance" in mem["message"] and mem["value"] > 0.00002 and mem["since"] > 0
    metrics = await (await kpi_client.get("/metrics")).text()
    assert 'llmapi_kpi_threshold{kpi="memory_usage",level="critical"} 2e-05' in metrics
    # history records where the change came from
    hist = (await (await kpi_client.get("/internal/config/history")).json())["history"]
    assert hist[0]["section"] == "alerts" and hist[0]["source"].endswith("configure-alerts")


@pytest.mark.parametrize("body,status,field", [
    ({"bogus": 1}, 422, "bogus"),
    ({"cache_hit_ratio_threshold": 1.5}, 422, "cache_hit_ratio_threshold"),
    ({"response_time_threshold_ms": "fast"}, 422, "response_time_threshold_ms"),
    ({"response_time_threshold_ms": 0}, 422, "response_time_threshold_ms"),
    ({"response_time_threshold_ms": 5000}, 422, "response_time_threshold_ms"),   # beyond critical (3000)
    ({"cache_hit_ratio_threshold": 0.4}, 422, "cache_hit_ratio_threshold"),      # below critical (0.5)
    ([1, 2], 422, "body"),
])
async def test_configure_alerts_rejects_bad_input_and_changes_nothing(kpi_client, body, status, field):
    store = kpi_client.server.app[CTX].store
    before, version = dict(store.get("alerts")), store.version
    r = await kpi_client.post("/internal/monitoring/configure-alerts", json=body)
    assert r.status == status
    err = await r.json()
    assert err["details"]["field"] == field and err["request_id"]
    assert store.get("alerts") == before and store.version == version


async def test_configure_alerts_needs_a_body(kpi_client):
    r = await kpi_client.post("/internal/monitoring/configure-alerts", data=b"")
    assert r.status == 400


async def test_metrics_window(kpi_client):
    for _ in range(2):
        await kpi_client.post("/v1/text/summarize", json=TEXT)
    r = await kpi_client.get("/internal/monitoring/metrics?time_window_hours=24")
    assert r.status == 200
    body = await r.json()
    rm = body["request_metrics"]
    assert rm["window_hours"] == 24 and rm["total_requests"] >= 2
    assert isinstance(body["performance_trends"], list)
    assert any(x["route"] == "/v1/text/summarize" for x in rm["by_route_status_since_start"])
    for bad in ("0", "abc", "10000"):
        r = await kpi_client.get(f"/internal/monitoring/metrics?time_window_hours={bad}")
        assert r.status == 422 and (await r.json())["details"]["field"] == "time_window_hours"


@pytest.mark.parametrize("method,path", [("GET", "/internal/monitoring/performance"),
                                         ("GET", "/internal/monitoring/metrics"),
                                         ("GET", "/internal/monitoring/alerts"),
                                         ("POST", "/internal/monitoring/configure-alerts")])
async def test_routes_need_a_key(kpi_client, method, path):
    r = await kpi_client.request(method, path, headers={"X-API-Key": "wrong"}, json=SPEC_BODY)
    assert r.status == 401


def test_service_app_registers_the_kpi_routes(tmp_path):
    """service/app.py must list service.internal.kpi in ROUTE_MODULES (the tests above add it if missing)."""
    from service.app import create_app
    from service.settings import Settings
    from tests.exporter.conftest import has_route
    env = {"API_KEY": "k", "STATE_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    app = create_app(Settings.from_env(env), env=env)
    for path in ("/internal/monitoring/performance", "/internal/monitoring/metrics", "/internal/monitoring/alerts",
                 "/internal/monitoring/configure-alerts"):
        assert has_route(app, path), f"{path}: add 'service.internal.kpi' to ROUTE_MODULES in service/app.py"
