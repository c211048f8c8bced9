"""/internal/resilience and /internal/ai endpoints over real HTTP (in-process app, local provider)."""
import asyncio

import pytest

TEXT = ("Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally and runs rules "
        "over this data to aggregate and record new time series or generate alerts.")


async def _summarize(client, i):
    r = await client.post("/v1/text/summarize", json={"text": f"{TEXT} Request number {i}."})
    assert r.status == 200, await r.text()
    return await r.json()


async def test_apply_preset_changes_effective_config(make_client):
    c = await make_client()
    cur = await (await c.get("/internal/resilience/config/current")).json()
    assert cur["preset"] == "simple"
    assert {o["strategy"] for o in cur["operations"].values()} == {"balanced"}
    r = await c.post("/internal/resilience/config/apply-preset", json={"preset": "production"})
    assert r.status == 200
    body = await r.json()
    assert body["previous_preset"] == "simple" and body["changes"] == {"preset": "production"}
    cur = await (await c.get("/internal/resilience/config/current")).json()
    assert cur["operations"]["qa"]["strategy"] == "critical"
    assert cur["operations"]["sentiment"]["strategy"] == "aggressive"
    cfg = await (await c.get("/internal/config")).json()
    assert cfg["sections"]["resilience"]["values"]["preset"] == "production"


@pytest.mark.parametrize("path,body,field", [
    ("/internal/resilience/config/apply-preset", {"preset": "turbo"}, "preset"),
    ("/internal/resilience/config/apply-preset", {}, "preset"),
    ("/internal/resilience/config/apply-preset", {"preset": "simple", "x": 1}, "x"),
    ("/internal/resilience/config/optimize-performance", {"prioritize_speed": "yes"}, "prioritize_speed"),
    ("/internal/resilience/config/optimize-performance",
     {"prioritize_speed": True, "max_timeout_seconds": -1}, "max_timeout_seconds"),
    ("/internal/resilience/config/optimize-performance",
     {"max_timeout_seconds": 45, "circuit_breaker_threshold": 0}, "circuit_breaker_threshold"),
    ("/internal/resilience/circuit-breakers/configure", {"failure_threshold": 5, "recovery_timeout": "soon"},
     "recovery_timeout"),
    ("/internal/resilience/circuit-breakers/configure", {"half_open_max_calls": 0}, "half_open_max_calls"),
    ("/internal/resilience/circuit-breakers/configure", {"performance_mode": 1}, "performance_mode"),
    ("/internal/ai/optimize-performance", {"timeout_seconds": 30, "max_retries": 99}, "max_retries"),
    ("/internal/ai/optimize-performance", {"provider": "openai"}, "provider"),
    ("/internal/ai/configure-batching", {"enable_batching": "yes", "batch_size": 5}, "enable_batching"),
    ("/internal/ai/configure-batching", {"enable_batching": True, "batch_size": 0}, "batch_size"),
    ("/internal/ai/configure-batching", {"enable_batching": True, "batch_timeout_ms": -5}, "batch_timeout_ms"),
    ("/internal/resilience/benchmark", {"test_duration_seconds": 100000}, "test_duration_seconds"),
    ("/internal/resilience/benchmark", {"concurrent_requests": 0}, "concurrent_requests"),
    ("/internal/resilience/benchmark", {"test_endpoints": ["translate"]}, "test_endpoints"),
    ("/internal/resilience/apply-performance-optimizations", {"dry_run": "no"}, "dry_run"),
])
async def test_bad_bodies_are_422_naming_the_field_and_change_nothing(make_client, path, body, field):
    c = await make_client()
    before = await (await c.get("/internal/config")).json()
    r = await c.post(path, json=body)
    assert r.status == 422, await r.text()
    err = await r.json()
    assert err["error_code"] == "VALIDATION_ERROR"
    assert err["details"]["field"] == field, err
    assert field in err["message"]
    after = await (await c.get("/internal/config")).json()
    assert after["version"] == before["version"]
    assert after["sections"] == before["sections"]


async def test_spec_commands_change_the_store(make_client):
    c = await make_client()
    r = await c.post("/internal/ai/optimize-performance", json={"timeout_seconds": 30, "max_retries": 2,
                                                               "batch_processing": True, "connection_pooling": True})
    assert r.status == 200
    r = await c.post("/internal/resilience/config/optimize-performance",
                     json={"prioritize_speed": True, "max_timeout_seconds": 45, "circuit_breaker_threshold": 7})
    assert r.status == 200
    r = await c.post("/internal/resilience/circuit-breakers/configure",
                     json={"failure_threshold": 5, "recovery_timeout": 60, "half_open_max_calls": 3,
                           "performance_mode": True})
    assert r.status == 200
    r = await c.post("/internal/ai/configure-batching", json={"enable_batching": True, "batch_size": 5,
                                                              "batch_timeout_ms": 500, "max_concurrent_batches": 3})
    assert (await r.json())["upstream_concurrency_bound"] == 15
    v = (await (await c.get("/internal/config")).json())["sections"]
    assert v["ai"]["values"]["timeout_seconds"] == 45 and v["ai"]["values"]["max_retries"] == 2
    assert v["ai"]["values"]["batch_processing"] is True
    assert v["resilience"]["values"]["failure_threshold"] == 5
    assert v["resilience"]["values"]["half_open_max_calls"] == 3
    assert v["resilience"]["values"]["performance_mode"] is True
    assert v["batching"]["values"] == {"batch_size": 5, "batch_timeout_ms": 500, "max_concurrent_batches": 3}
    cur = await (await c.get("/internal/resilience/config/current")).json()
    assert cur["operations"]["summarize"]["circuit_breaker"]["half_open_max_calls"] == 3
    assert cur["operations"]["summarize"]["timeout_seconds"] == 45


async def test_breakers_listed_and_reset(make_client):
    c = await make_client()
    body = await (await c.get("/internal/resilience/circuit-breakers")).json()
    assert set(body["circuit_breakers"]) == {f"local.{op}" for op in
                                             ("summarize", "sentiment", "key_points", "questions", "qa")}
    assert body["summary"]["closed"] == 5
    r = await c.post("/internal/resilience/circuit-breakers/local.summarize/reset")
    assert r.status == 200 and (await r.json())["reset"][0]["state"] == "closed"
    r = await c.post("/internal/resilience/circuit-breakers/nope/reset")
    assert r.status == 404 and (await r.json())["details"]["field"] == "name"


def _ai_count(text: str) -> float:
    """The successful AI attempt count in an exposition (the registry is per process, shared by tests)."""
    for line in text.splitlines():
        if line.startswith('llmapi_ai_request_duration_seconds_count{model="local-extractive-1",outcome="success",'
                           'provider="local"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_come_from_measured_calls(make_client):
    c = await make_client()
    m = await (await c.get("/metrics")).text()
    before, genai_before = _ai_count(m), _genai_calls(m)
    for i in range(5):
        await _summarize(c, i)
    await _summarize(c, 0)  # cache hit: no AI call
    pm = await (await c.get("/internal/resilience/performance-metrics")).json()
    assert pm["operations"]["summarize"]["calls"] == 5
    assert pm["operations"]["summarize"]["success_rate"] == 1.0
    ai = await (await c.get("/internal/monitoring/ai-performance")).json()
    assert ai["summary"]["calls"] == 5 and ai["summary"]["response_time"]["count"] == 5
    assert ai["kpi"]["status"] == "good" and ai["summary"]["tokens"]["total"] > 0
    imp = await (await c.get("/internal/resilience/performance-impact")).json()
    assert imp["summary"]["breaker_decisions"] == 10  # admit + record per call
    assert imp["summary"]["breaker_decision_avg_us"] is not None
    m = await (await c.get("/metrics")).text()
    assert _ai_count(m) - before == 5
    assert _genai_calls(m) - genai_before == 5  # one call each (no retries): the per-call histogram agrees


def _genai_calls(text: str) -> float:
    for line in text.splitlines():
        if line.startswith('gen_ai_client_operation_duration_seconds_count{error_type="",gen_ai_operation_name='
                           '"summarize",gen_ai_provider_name="local",gen_ai_request_model="local-extractive-1"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_apply_performance_optimizations_from_measurements(make_client):
    c = await make_client(AI_TIMEOUT_SECONDS="60")
    r = await c.post("/internal/resilience/apply-performance-optimizations")
    body = await r.json()
    assert r.status == 200 and body["changes"] == {} and "not enough" in body["message"]
    for i in range(25):
        await _summarize(c, i)
    dry = await (await c.post("/internal/resilience/apply-performance-optimizations", json={"dry_run": True})).json()
    assert dry["changes"] == {} and dry["recommendations"][0]["field"] == "timeout_seconds"
    body = await (await c.post("/internal/resilience/apply-performance-optimizations")).json()
    assert body["changes"] == {"ai": {"timeout_seconds": 5.0}}
    assert "p99" in body["applied"][0]["reason"]
    an = await (await c.get("/internal/resilience/config-performance-analysis")).json()
    assert an["last_applied"]["changes"] == {"ai": {"timeout_seconds": 5.0}}
    assert an["recommendations"] == []
    hist = await (await c.get("/internal/config/history")).json()
    assert hist["history"][0]["source"].endswith("apply-performance-optimizations")


async def test_benchmark_job_runs_bounded_in_background(make_client):
    c = await make_client()
    r = await c.post("/internal/resilience/benchmark", json={"test_duration_seconds": 1, "concurrent_requests": 3,
                                                             "test_endpoints": ["summarize", "sentiment"]})
    assert r.status == 202
    job = await r.json()
    assert job["status"] == "running" and job["progress"] < 1
    r2 = await c.post("/internal/resilience/benchmark", json={"test_duration_seconds": 1})
    assert r2.status == 409
    for _ in range(100):
        await asyncio.sleep(0.1)
        st = await (await c.get(f"/internal/resilience/benchmark/{job['id']}")).json()
        if st["status"] != "running":
            break
    assert st["status"] == "completed" and st["progress"] == 1.0
    res = st["results"]
    assert res["requests"] > 0 and res["success_rate"] == 1.0
    assert set(res["operations"]) == {"summarize", "sentiment"}
    assert res["latency"]["p95_ms"] is not None
    assert (await (await c.get("/internal/resilience/benchmark")).json())["id"] == job["id"]
    assert (await c.get("/internal/resilience/benchmark/nope")).status == 404


async def test_benchmark_cancel(make_client):
    c = await make_client()
    job = await (await c.post("/internal/resilience/benchmark", json={"test_duration_seconds": 300})).json()
    r = await c.post(f"/internal/resilience/benchmark/{job['id']}/cancel")
    assert r.status == 200
    await asyncio.sleep(0.2)
    st = await (await c.get(f"/internal/resilience/benchmark/{job['id']}")).json()
    assert st["status"] == "cancelled" and st["results"] is not None


async def test_batching_merges_concurrent_calls_into_fewer_provider_calls(make_client):
    c = await make_client()

    async def burst(base):
        return await asyncio.gather(*(_summarize(c, base + i) for i in range(20)))

    await burst(0)
    off = (await (await c.get("/internal/monitoring/ai-performance")).json())["batching"]
    assert off["provider_batch_calls"] == 20 and off["batches"] == 0
    r = await c.post("/internal/ai/configure-batching", json={"enable_batching": True, "batch_size": 5,
                                                              "batch_timeout_ms": 200, "max_concurrent_batches": 2})
    assert r.status == 200
    out = await burst(100)
    assert all(o["success"] for o in out)
    on = (await (await c.get("/internal/monitoring/ai-performance")).json())["batching"]
    assert on["items"] == 20
    assert on["provider_batch_calls"] - off["provider_batch_calls"] <= 6   # 20 calls became about 4
    assert on["avg_batch_size"] >= 3


async def test_ai_performance_kpi_reads_the_catalog_at_the_live_thresholds(make_client):
    from exporter.kpis import BY_KEY
    k = BY_KEY["ai_response_time_p95"]
    c = await make_client()
    await _summarize(c, 1)
    kpi = (await (await c.get("/internal/monitoring/ai-performance")).json())["kpi"]
    assert kpi["name"] == k.title
    assert kpi["thresholds_ms"] == {"good": k.good * 1000, "target": k.target * 1000, "critical": k.critical * 1000}
    assert kpi["status"] == k.status(kpi["value_ms"] / 1000) == "good"
    r = await c.post("/internal/monitoring/configure-alerts",
                     json={"ai_response_time_threshold_ms": 1, "ai_response_time_critical_ms": 2})
    assert r.status == 200, await r.text()
    kpi = (await (await c.get("/internal/monitoring/ai-performance")).json())["kpi"]
    assert kpi["thresholds_ms"] == {"good": k.good * 1000, "target": 1.0, "critical": 2.0}
    assert kpi["status"] == k.status(kpi["value_ms"] / 1000, 0.001, 0.002)
