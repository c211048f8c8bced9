"""/internal/cache over HTTP: every view, every command, and every bad body (422, nothing changes)."""
import asyncio
import time

import pytest
import redis

from tests.cache.conftest import TEXT

VIEWS = {
    "stats": ("hit_ratio", "hits", "misses", "entries", "memory_bytes", "evictions", "redis", "warming"),
    "performance-analysis": ("hit_ratio", "kpi", "latency_ms", "memory", "miss_causes", "by_operation"),
    "usage-patterns": ("per_minute", "operation_mix", "popularity", "top_keys"),
    "hit-miss-analysis": ("by_operation", "by_text_size", "by_tier", "miss_causes"),
    "key-analysis": ("key_size_bytes", "duplication", "strategy"),
    "optimization-recommendations": ("recommendations",),
    "optimization-results": ("runs", "current"),
}

SPEC_COMMANDS = [  # the bodies of the spec, verbatim
    ("optimize-keys", {"enable_normalization": True, "use_content_hash": True, "include_metadata": False}),
    ("configure-ttl", {"base_ttl_seconds": 3600, "adaptive_ttl": True, "max_ttl_seconds": 7200,
                       "popularity_factor": 1.5}),
    ("enable-warming", {"enable_background_warming": True, "warming_threshold": 0.1, "max_warming_operations": 5}),
    ("configure-size", {"max_entries": 10000, "max_memory_mb": 500, "eviction_policy": "lru",
                        "size_check_interval": 300}),
    ("configure-pressure", {"pressure_threshold": 0.8, "pressure_response": "evict_old", "emergency_threshold": 0.95,
                            "emergency_response": "clear_expired"}),
    ("optimize-memory", {"max_memory_mb": 200, "compression_threshold_mb": 10, "cleanup_interval_minutes": 30}),
    ("enable-auto-cleanup", None),
]

BAD = [
    ("configure-size", {"max_entries": "many"}, "max_entries"),
    ("configure-size", {"max_entries": 0}, "max_entries"),
    ("configure-size", {"max_memory_mb": -5}, "max_memory_mb"),
    ("configure-size", {"eviction_policy": "random"}, "eviction_policy"),
    ("configure-size", {"size_check_interval": "often"}, "size_check_interval"),
    ("configure-size", {"max_entries": 5, "color": "red"}, "color"),
    ("configure-size", {}, "body"),
    ("configure-size", [1, 2], "body"),
    ("configure-ttl", {"base_ttl_seconds": -1}, "base_ttl_seconds"),
    ("configure-ttl", {"adaptive_ttl": "yes"}, "adaptive_ttl"),
    ("configure-ttl", {"base_ttl_seconds": 9000, "max_ttl_seconds": 100}, "max_ttl_seconds"),
    ("configure-ttl", {"popularity_factor": 0.5}, "popularity_factor"),
    ("configure-ttl", {"ttl_by_operation": {"translate": 60}}, "ttl_by_operation.translate"),
    ("configure-ttl", {"ttl_by_operation": {"qa": "long"}}, "ttl_by_operation.qa"),
    ("enable-warming", {"warming_threshold": 2}, "warming_threshold"),
    ("enable-warming", {"max_warming_operations": 0}, "max_warming_operations"),
    ("enable-warming", {"enable_background_warming": 1}, "enable_background_warming"),
    ("configure-pressure", {"pressure_threshold": 1.5}, "pressure_threshold"),
    ("configure-pressure", {"pressure_response": "panic"}, "pressure_response"),
    ("configure-pressure", {"emergency_response": None}, "emergency_response"),
    ("configure-pressure", {"pressure_threshold": 0.9, "emergency_threshold": 0.5}, "emergency_threshold"),
    ("optimize-memory", {"max_memory_mb": 0}, "max_memory_mb"),
    ("optimize-memory", {"compression_threshold_mb": -1}, "compression_threshold_mb"),
    ("optimize-memory", {"cleanup_interval_minutes": "soon"}, "cleanup_interval_minutes"),
    ("optimize-keys", {"enable_normalization": "yes"}, "enable_normalization"),
    ("optimize-keys", {"use_content_hash": True, "hash": "md5"}, "hash"),
    ("enable-auto-cleanup", {"auto_cleanup": "on"}, "auto_cleanup"),
    ("enable-auto-cleanup", {"cleanup_interval_minutes": 0}, "cleanup_interval_minutes"),
    ("weekly-optimization", {"aggressive": True}, "aggressive"),
    ("emergency-cleanup", {"now": True}, "now"),
    ("invalidate", {}, "body"),
    ("invalidate", {"operation": "translate"}, "operation"),
    ("invalidate", {"pattern": ""}, "pattern"),
    ("invalidate", {"pattern": 5}, "pattern"),
    ("invalidate", {"all": "yes"}, "all"),
    ("invalidate", {"operation": "qa", "pattern": "qa:*"}, "body"),
    ("invalidate", {"everything": True}, "everything"),
]


async def fill(client, n: int, op: str = "summarize", tag: str = "") -> None:
    for i in range(n):
        r = await client.post(f"/v1/text/{op}", json={"text": f"{TEXT} {tag}{i}"})
        assert r.status == 200, await r.text()


async def cache_config(client) -> tuple[int, dict]:
    doc = await (await client.get("/internal/config")).json()
    return doc["version"], doc["sections"]["cache"]["values"]


async def stats(client) -> dict:
    return await (await client.get("/internal/cache/stats")).json()


async def test_every_view_answers_from_measurements(make_client):
    client = await make_client()
    await fill(client, 3)
    await fill(client, 3)
    for name, fields in VIEWS.items():
        r = await client.get(f"/internal/cache/{name}")
        assert r.status == 200, name
        body = await r.json()
        for f in fields:
            assert body.get(f) is not None, (name, f)
    s = await stats(client)
    assert s["hit_ratio"] == 0.5 and s["hits"] == 3 and s["entries"] == 3
    hm = await (await client.get("/internal/cache/hit-miss-analysis")).json()
    assert hm["by_operation"]["summarize"]["hits"] == 3 and hm["by_text_size"]["small"]["misses"] == 3


@pytest.mark.parametrize("name,body", SPEC_COMMANDS)
async def test_spec_commands_change_the_config_live(make_client, name, body):
    client = await make_client()
    r = await (client.post(f"/internal/cache/{name}", json=body) if body is not None
               else client.post(f"/internal/cache/{name}"))
    assert r.status == 200, await r.text()
    doc = await r.json()
    _, values = await cache_config(client)
    for k, v in (body or {"auto_cleanup": True}).items():
        assert values[k] == v
        assert doc["values"][k] == v
    if name == "enable-warming":
        assert (await stats(client))["warming"]["running"] is True
    if name == "enable-auto-cleanup":
        assert (await stats(client))["auto_cleanup"]["running"] is True


@pytest.mark.parametrize("name,body,field", BAD)
async def test_bad_bodies_are_422_naming_the_field_and_change_nothing(make_client, name, body, field):
    client = await make_client()
    await fill(client, 2)
    version, before = await cache_config(client)
    entries = (await stats(client))["entries"]
    r = await client.post(f"/internal/cache/{name}", json=body)
    assert r.status == 422, await r.text()
    err = await r.json()
    assert err["error_code"] == "VALIDATION_ERROR"
    assert field in err["details"].get("fields", [err["details"]["field"]])  # a rule names every field it spans
    assert err["request_id"]
    assert await cache_config(client) == (version, before)
    assert (await stats(client))["entries"] == entries


async def test_configure_size_evicts_over_http(make_client):
    client = await make_client()
    await fill(client, 12)
    assert (await stats(client))["entries"] == 12
    r = await client.post("/internal/cache/configure-size", json={"max_entries": 5})
    doc = await r.json()
    assert doc["cache"]["before"]["entries"] == 12 and doc["cache"]["after"]["entries"] == 5
    s = await stats(client)
    assert s["entries"] == 5 and s["evictions"]["resize"] == 7


async def test_configure_ttl_over_http_expires_entries(make_client):
    client = await make_client()
    r = await client.post("/internal/cache/configure-ttl",
                          json={"base_ttl_seconds": 1, "max_ttl_seconds": 1, "ttl_by_operation": {}})
    assert r.status == 200
    body = {"text": TEXT}
    assert (await (await client.post("/v1/text/summarize", json=body)).json())["cache_hit"] is False
    assert (await (await client.post("/v1/text/summarize", json=body)).json())["cache_hit"] is True
    await asyncio.sleep(1.1)
    assert (await (await client.post("/v1/text/summarize", json=body)).json())["cache_hit"] is False


async def test_weekly_optimization_applies_recommendations_and_records_results(make_client):
    client = await make_client()
    await client.post("/internal/cache/configure-size", json={"max_entries": 2})
    for _ in range(6):                  # five texts cycling through a two-entry cache: misses on evicted keys
        await fill(client, 5)
    recs = (await (await client.get("/internal/cache/optimization-recommendations")).json())["recommendations"]
    ids = {r["id"]: r for r in recs}
    assert "increase_size" in ids
    assert ids["increase_size"]["action"]["body"]["max_entries"] > 2
    assert ids["increase_size"]["evidence"]["capacity_misses"] > 0
    r = await client.post("/internal/cache/weekly-optimization")
    assert r.status == 200
    run = await r.json()
    assert "increase_size" in [a["id"] for a in run["applied"]]
    assert run["before"]["config"]["max_entries"] == 2 and run["after"]["config"]["max_entries"] > 2
    _, values = await cache_config(client)
    assert values["max_entries"] == run["after"]["config"]["max_entries"]
    await fill(client, 3)
    res = await (await client.get("/internal/cache/optimization-results")).json()
    assert res["count"] == 1 and res["runs"][0]["since"]["lookups"] == 3
    hist = await (await client.get("/internal/config/history")).json()
    assert any(e["source"].endswith("weekly-optimization") for e in hist["history"])


async def test_emergency_cleanup_and_invalidate_over_http(make_client):
    client = await make_client()
    await fill(client, 4)
    await fill(client, 3, op="sentiment")
    r = await client.post("/internal/cache/invalidate", json={"operation": "sentiment"})
    assert (await r.json())["memory_removed"] == 3
    r = await client.post("/internal/cache/invalidate", json={"pattern": "summ*"})
    assert (await r.json())["memory_removed"] == 4
    await fill(client, 4)
    r = await client.post("/internal/cache/emergency-cleanup")
    doc = await r.json()
    assert r.status == 200 and doc["before"]["entries"] == 4 and doc["after"]["entries"] <= 4


async def test_redis_killed_mid_test_requests_still_answer(make_client, fresh_redis):
    client = await make_client(REDIS_URL=fresh_redis.url, REDIS_SOCKET_TIMEOUT="1")
    body = {"text": TEXT}
    first = await (await client.post("/v1/text/summarize", json=body)).json()
    fresh_redis.stop()
    for _ in range(3):
        r = await client.post("/v1/text/summarize", json=body)
        assert r.status == 200 and (await r.json())["cache_hit"] is True
    r = await client.post("/v1/text/summarize", json={"text": TEXT + " new during the outage"})
    assert r.status == 200 and (await r.json())["cache_hit"] is False
    s = await stats(client)
    assert s["redis"]["state"] == "down" and s["redis"]["outages"] == 1
    metrics = await (await client.get("/metrics")).text()
    assert "llmapi_redis_up 0.0" in metrics and "llmapi_cache_l2_up 0.0" in metrics
    health = await (await client.get("/v1/health")).json()
    assert health["checks"]["cache"]["status"] == "degraded"

    fresh_redis.start()
    deadline = time.monotonic() + 30
    while (await stats(client))["redis"]["state"] != "up" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    s = await stats(client)
    assert s["redis"]["state"] == "up" and s["redis"]["recoveries"] == 1
    metrics = await (await client.get("/metrics")).text()
    assert "llmapi_redis_up 1.0" in metrics and 'llmapi_cache_l2_transitions_total{state="up"}' in metrics
    r = await client.post("/v1/text/summarize", json={"text": TEXT + " after recovery"})
    assert r.status == 200
    rc = redis.Redis(port=fresh_redis.port)
    assert any(k.startswith(b"{llmapi}:cache:summarize:") for k in rc.scan_iter(match="{llmapi}:cache:*"))
    rc.close()
    assert first["cache_hit"] is False
