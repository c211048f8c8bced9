"""Each analysis endpoint's values against traffic the test generated."""
from __future__ import annotations

import asyncio
import json

from tests.monitoring.conftest import ctx_of

M = "/internal/monitoring"
TEXT = "The service answers quickly. Operators like fast answers and clear dashboards."


async def get(client, path):
    r = await client.get(path)
    assert r.status == 200, await r.text()
    return await r.json()


async def test_slow_route_tops_slow_endpoints(mon_client):
    c = await mon_client()
    # live threshold from the alerts section: 100 ms
    r = await c.post("/internal/config/alerts", json={"response_time_threshold_ms": 100})
    assert r.status == 200, await r.text()
    await asyncio.gather(*(c.get("/v1/text/test/slow?s=0.25") for _ in range(6)))
    for _ in range(30):
        assert (await c.get("/v1/text/test/fast")).status == 200
    d = await get(c, f"{M}/slow-endpoints?hours=1")
    top = d["endpoints"][0]
    assert top["endpoint"] == "GET /v1/text/test/slow" and top["rank"] == 1
    assert top["requests"] == 6
    assert 250 <= top["p95_ms"] <= 400 and top["p99_ms"] >= top["p95_ms"] - 1e-9
    assert top["slow"] is True and d["threshold_ms"] == 100
    assert d["slowest"] == "GET /v1/text/test/slow"
    fast = next(e for e in d["endpoints"] if e["endpoint"] == "GET /v1/text/test/fast")
    assert fast["requests"] == 30 and fast["slow"] is False and fast["p95_ms"] < 100
    assert [e["endpoint"] for e in d["slow_endpoints"]] == ["GET /v1/text/test/slow"]
    # after a snapshot the same answer comes from history
    await c.post(f"{M}/snapshot")
    d2 = await get(c, f"{M}/slow-endpoints?hours=1&scope=api")
    assert d2["endpoints"][0]["endpoint"] == "GET /v1/text/test/slow" and d2["endpoints"][0]["requests"] == 6
    assert all(not e["route"].startswith("/internal") for e in d2["endpoints"])
    r = await c.get(f"{M}/slow-endpoints?hours=-1")
    assert r.status == 422 and (await r.json())["details"]["field"] == "hours"


async def test_request_patterns_counts_sizes_and_status_mix(mon_client):
    c = await mon_client()
    bodies = [json.dumps({"text": f"{TEXT} number {i}."}) for i in range(6)]
    for b in bodies:
        r = await c.post("/v1/text/summarize", data=b, headers={"Content-Type": "application/json"})
        assert r.status == 200
    for _ in range(2):
        assert (await c.post("/v1/text/sentiment", json={"text": TEXT})).status == 200
    for _ in range(3):
        assert (await c.post("/v1/text/summarize", json={"text": "short"})).status == 422
    for _ in range(4):
        assert (await c.get("/v1/text/operations")).status == 200
    await c.post(f"{M}/snapshot")
    d = await get(c, f"{M}/request-patterns?hours=1")
    routes = {r["endpoint"]: r for r in d["routes"]}
    assert routes["POST /v1/text/summarize"]["requests"] == 9
    assert routes["POST /v1/text/sentiment"]["requests"] == 2
    assert routes["GET /v1/text/operations"]["requests"] == 4
    ops = {o["operation"]: o["requests"] for o in d["operations"]}
    assert ops["summarize"] == 9 and ops["sentiment"] == 2
    codes = d["status_mix"]["by_code"]
    assert codes["422"] == 3 and codes["200"] >= 12
    assert d["status_mix"]["classes"]["4xx"]["requests"] == 3
    sent = [len(b.encode()) for b in bodies] + [len(json.dumps({"text": TEXT}).encode())] * 2 \
        + [len(json.dumps({"text": "short"}).encode())] * 3
    sent.append(0)  # the POST /snapshot itself (Content-Length: 0)
    assert d["payload_sizes"]["request"]["count"] == len(sent)
    assert d["payload_sizes"]["request"]["total_bytes"] == sum(sent)
    assert sum(d["payload_sizes"]["request"]["distribution"].values()) == len(sent)
    assert d["peak_hours"] and d["peak_hours"][0]["requests"] >= 15
    assert sum(h["requests"] for h in d["hourly"]) == d["total_requests"]


async def test_bottlenecks_from_measured_spans(mon_client):
    c = await mon_client()
    await asyncio.gather(*(c.get("/v1/text/test/spanned") for _ in range(5)))
    d = await get(c, f"{M}/bottlenecks?hours=1")
    assert d["top_bottleneck"] == "ai_service"
    cats = {x["category"]: x for x in d["categories"]}
    assert cats["ai_service"]["calls"] == 5 and abs(cats["ai_service"]["total_ms"] - 250) < 1
    # counted once: lookup (with its L2 part inside), compute through AI + derived serialization, no warming
    assert cats["cache"]["spans"] == ["cache.lookup"] and abs(cats["cache"]["total_ms"] - 5) < 0.01
    assert abs(cats["serialization"]["total_ms"] - 10) < 0.01
    assert set(cats) == {"ai_service", "cache", "serialization"}
    comp = {x["span"]: x for x in d["components"]}
    assert comp["cache.compute"]["contains"] == ["ai.call", "serialization"]
    assert comp["cache.l2_get"]["inside"] == "cache.lookup" and comp["cache.warm"]["background"] is True
    assert d["api_requests"] == 5 and d["api_request_time_ms"] >= 300
    assert abs(d["unattributed_ms"] - (d["api_request_time_ms"] - 265)) < 0.01
    assert 0.5 < cats["ai_service"]["share_of_request_time"] <= 1.0
    assert any(f["kind"] == "time_share" and f["category"] == "ai_service" for f in d["findings"])


async def test_system_load_reflects_admission_and_traffic(mon_client):
    c = await mon_client()
    r = await c.post(f"{M}/configure", json={"max_concurrent_requests": 3, "queue_size": 7})
    assert r.status == 200
    for _ in range(5):
        await c.get("/v1/text/test/fast")
    d = await get(c, f"{M}/system-load")
    assert d["status"] in ("normal", "elevated", "high", "critical")
    assert d["admission"]["max_concurrent_requests"] == 3 and d["admission"]["queue_size"] == 7
    assert d["requests"]["last_minute"] >= 5
    assert d["memory"]["rss_bytes"] > 10 * 2 ** 20 and d["cpu"]["cores_available"] > 0
    assert d["background_tasks"]["workers"] == ctx_of(c).store.get("monitoring")["background_workers"]


async def test_optimize_applies_and_rejects_atomically(mon_client):
    c = await mon_client(VALIDATION_MODE="strict")
    store = ctx_of(c).store
    r = await c.post(f"{M}/optimize", json={"validation_mode": "fast", "enable_caching": False})
    d = await r.json()
    assert r.status == 200 and d["configuration"] == {"validation_mode": "fast", "enable_caching": False}
    assert d["optimization_applied"] == {"monitoring.validation_mode": "fast", "monitoring.enable_caching": False}
    assert store.get("monitoring")["validation_mode"] == "fast"
    version = store.version
    r = await c.post(f"{M}/optimize", json={"enable_caching": True, "validation_mode": "turbo"})
    assert r.status == 422 and (await r.json())["details"]["field"] == "validation_mode"
    assert store.get("monitoring")["enable_caching"] is False and store.version == version
    r = await c.post(f"{M}/optimize", json={"speed": "max"})
    assert r.status == 422 and (await r.json())["details"]["field"] == "speed"
    r = await c.post(f"{M}/optimize", json={"validation_mode": "fast"})
    assert (await r.json())["optimization_applied"] is False


async def test_configure_validates_and_applies(mon_client):
    c = await mon_client()
    store = ctx_of(c).store
    body = {"async_processing": True, "max_concurrent_requests": 20, "queue_size": 100,
            "retention_hours": 2, "max_events": 1000, "enable_compression": True}
    r = await c.post(f"{M}/configure", json=body)
    d = await r.json()
    assert r.status == 200
    for k, v in body.items():
        assert store.get("monitoring")[k] == v and d["configuration"][k] == v
    assert d["history"]["compressed"] is True
    before = dict(store.get("monitoring"))
    for bad, field in (({"max_concurrent_requests": 5, "queue_size": -1}, "queue_size"),
                       ({"retention_hours": "long"}, "retention_hours"),
                       ({"warp_speed": True}, "warp_speed"),
                       ({"emergency_saved": {}}, "emergency_saved")):
        r = await c.post(f"{M}/configure", json=bad)
        e = await r.json()
        assert r.status == 422 and e["details"]["field"] == field, e
        assert store.get("monitoring") == before
    r = await c.post(f"{M}/configure", data=b"", headers={"Content-Type": "application/json"})
    assert r.status == 400


async def test_performance_report_from_history(mon_client):
    c = await mon_client()
    await c.post("/internal/config/alerts", json={"response_time_threshold_ms": 100})
    await asyncio.gather(*(c.get("/v1/text/test/slow?s=0.15") for _ in range(4)))
    await asyncio.gather(*(c.get("/v1/text/test/spanned") for _ in range(3)))
    await c.post(f"{M}/snapshot")
    for _ in range(5):
        await c.get("/v1/text/test/fast")
    d = await get(c, f"{M}/performance-report?days=7")
    assert set(("performance_trends", "bottlenecks", "optimization_opportunities")) <= set(d)
    pts = d["performance_trends"]["points"]
    assert d["performance_trends"]["resolution"] == "day" and pts
    assert sum(p["requests"] for p in pts) == d["summary"]["requests"]
    assert d["summary"]["requests"] >= 12
    ids = [o["id"] for o in d["optimization_opportunities"]]
    assert "slow_endpoint:GET /v1/text/test/slow" in ids
    assert d["bottlenecks"]["top_bottleneck"] == "ai_service"
    assert d["kpis"]["api_response_time_p95"]["status"] in ("warning", "critical")
    r = await c.get(f"{M}/performance-report?days=0")
    assert r.status == 422


async def test_history_events_and_snapshot_interval(mon_client):
    c = await mon_client(MONITORING_SNAPSHOT_INTERVAL="0.1")
    for _ in range(3):
        await c.get("/v1/text/test/fast")
    for _ in range(100):  # three intervals of 0.1 s (on a loaded box the loop may take longer to run them)
        await asyncio.sleep(0.1)
        d = await get(c, f"{M}/history?hours=1")
        if d["stats"]["snapshots"] >= 3:
            break
    assert d["stats"]["snapshots"] >= 3
    assert sum(s["requests"] for s in d["snapshots"]) >= 3
    await c.post(f"{M}/configure", json={"max_events": 10})
    await asyncio.sleep(1.5)
    assert (await get(c, f"{M}/history"))["stats"]["snapshots"] <= 11
    ev = await get(c, f"{M}/events?kind=configure")
    assert ev["events"][0]["details"]["changes"] == {"max_events": 10}


async def test_optimize_enable_caching_changes_live_behaviour(mon_client):
    c = await mon_client()
    if "cache" not in ctx_of(c).store.sections:
        import pytest
        pytest.skip("the response cache (service/cache) is not in this tree")
    body = {"text": "Caching can be switched off and on at run time. Repeats then hit or miss."}

    async def hit():
        r = await c.post("/v1/text/summarize", json=body)
        assert r.status == 200
        return (await r.json())["cache_hit"]

    await hit()
    assert await hit() is True
    assert (await c.post(f"{M}/optimize", json={"enable_caching": False})).status == 200
    assert await hit() is False and await hit() is False
    assert (await c.post(f"{M}/optimize", json={"enable_caching": True})).status == 200
    await hit()
    assert await hit() is True


async def test_the_window_views_build_the_live_interval_once_and_use_it_in_their_answer(mon_client, monkeypatch):
    """Building it reads every counter the snapshots diff (2-4 ms after the seed replay): once per answer."""
    c = await mon_client()
    for _ in range(3):
        await c.get("/v1/text/test/fast")
    mon = ctx_of(c).monitoring
    real, built = mon.live, []

    def counting():
        built.append(1)
        return real()
    monkeypatch.setattr(mon, "live", counting)
    for path in ("/performance-report?days=1", "/request-patterns", "/memory-trends",
                 "/performance-report?days=1&instances=this"):
        built.clear()
        d = await get(c, M + path)
        assert len(built) == 1, path
    assert d["summary"]["requests"] >= 3   # the live interval's requests are in the answer
