"""Every /internal/middleware endpoint: bad bodies are 422 naming the field and change nothing;
auto-optimize decides from measurements; the stack reports its own overhead."""
import pytest

from service.middleware import ORDER
from service.middleware.stackperf import StackProfiler
from service.config.sections import SECTIONS
from service.config.store import ConfigStore

TEXT = "Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally."
P = "/internal/middleware"

BAD = [
    (f"{P}/compression/optimize", {"level": 12}, "level"),
    (f"{P}/compression/optimize", {"level": "high"}, "level"),
    (f"{P}/compression/optimize", {"algorithm": "zstd"}, "algorithm"),
    (f"{P}/compression/optimize", {"minimum_size": -1}, "minimum_size"),
    (f"{P}/compression/optimize", {"exclude_content_types": ["not a type"]}, "exclude_content_types[0]"),
    (f"{P}/compression/optimize", {"exclude_content_types": "image/*"}, "exclude_content_types"),
    (f"{P}/compression/optimize", {"level": 4, "bogus": 1}, "bogus"),
    (f"{P}/compression/optimize", {}, "body"),
    (f"{P}/rate-limiting/optimize", {"peak_multiplier": "2x"}, "peak_multiplier"),
    (f"{P}/rate-limiting/optimize", {"peak_multiplier": 0}, "peak_multiplier"),
    (f"{P}/rate-limiting/optimize", {"client_tier_limits": {"premium": -5}}, "client_tier_limits.premium"),
    (f"{P}/rate-limiting/optimize", {"client_tier_limits": {"premium": "lots"}}, "client_tier_limits.premium"),
    (f"{P}/rate-limiting/optimize", {"client_tiers": {"someone": "premium"}}, "client_tiers[0]"),
    (f"{P}/rate-limiting/optimize", {"client_tiers": {"0123456789abcdef": "gold"}}, "client_tiers[0]"),
    (f"{P}/rate-limiting/optimize", {"adaptive_limits": "yes"}, "adaptive_limits"),
    (f"{P}/rate-limiting/optimize", {"peak_hours": [25]}, "peak_hours[0]"),
    (f"{P}/rate-limiting/optimize", {"paths": ["v1"]}, "paths[0]"),
    (f"{P}/rate-limiting/optimize", {"requests_per_minute": 0}, "requests_per_minute"),
    (f"{P}/request-size/optimize", {"progressive_limits": {"json": "big"}}, "progressive_limits.json"),
    (f"{P}/request-size/optimize", {"progressive_limits": {"video": 5}}, "progressive_limits.video"),
    (f"{P}/request-size/optimize", {"progressive_limits": [1, 2]}, "progressive_limits"),
    (f"{P}/request-size/optimize", {"chunk_size": 10}, "chunk_size"),
    (f"{P}/request-size/optimize", {"async_validation": "true"}, "async_validation"),
    (f"{P}/request-size/optimize", {"enable_streaming": 1}, "enable_streaming"),
    (f"{P}/versioning/optimize", {"detection_strategy": "guess"}, "detection_strategy"),
    (f"{P}/versioning/optimize", {"fast_path_versions": ["one"]}, "fast_path_versions[0]"),
    (f"{P}/versioning/optimize", {"cache_ttl": 0}, "cache_ttl"),
    (f"{P}/versioning/optimize", {"enable_caching": "no"}, "enable_caching"),
    (f"{P}/versioning/optimize", {"default_version": "v3"}, "default_version"),
    (f"{P}/versioning/optimize", {"supported_versions": []}, "supported_versions"),
    (f"{P}/versioning/optimize", {"deprecated_versions": {"v1": "soon"}}, "deprecated_versions.v1"),
    (f"{P}/compression/auto-optimize", {"dry_run": "yes"}, "dry_run"),
    (f"{P}/compression/auto-optimize", {"force": True}, "force"),
    (f"{P}/rate-limiting/auto-optimize", {"x": 1}, "x"),
    (f"{P}/request-size/auto-optimize", {"x": 1}, "x"),
    (f"{P}/versioning/auto-optimize", {"x": 1}, "x"),
    (f"{P}/stack/reset-stats", {"x": 1}, "x"),
    ("/internal/monitoring/enable-throttling", {"max_requests_per_minute": "lots"}, "max_requests_per_minute"),
    ("/internal/monitoring/enable-throttling", {"max_requests_per_minute": 0}, "max_requests_per_minute"),
    ("/internal/monitoring/enable-throttling", {}, "body"),
    ("/internal/monitoring/enable-throttling", {"enabled": True}, "max_requests_per_minute"),
]


@pytest.mark.parametrize("path, body, field", BAD)
async def test_bad_bodies_are_422_naming_the_field_and_change_nothing(make_client, path, body, field):
    client = await make_client()
    before = await (await client.get("/internal/config")).json()
    r = await client.post(path, json=body)
    assert r.status == 422, (path, body, r.status, await r.text())
    err = await r.json()
    assert err["details"]["field"] == field, err
    assert field.split("[")[0].split(".")[0] in err["message"]
    after = await (await client.get("/internal/config")).json()
    assert after["version"] == before["version"]
    assert after["sections"] == before["sections"]


async def test_malformed_json_and_non_objects(make_client):
    client = await make_client()
    r = await client.post(f"{P}/compression/optimize", data=b"{", headers={"Content-Type": "application/json"})
    assert r.status == 400
    r = await client.post(f"{P}/compression/optimize", json=[1])
    assert r.status == 422 and (await r.json())["details"]["field"] == "body"


async def test_spec_bodies_apply_through_the_store(make_client):
    client = await make_client()
    bodies = [
        (f"{P}/compression/optimize", {"algorithm": "gzip", "level": 4, "minimum_size": 2048,
                                       "exclude_content_types": ["image/*", "video/*", "application/zip"]},
         "compression", {"level": 4, "minimum_size": 2048}),
        (f"{P}/rate-limiting/optimize", {"adaptive_limits": True, "peak_multiplier": 2.0, "off_peak_multiplier": 0.5,
                                         "client_tier_limits": {"premium": 200, "standard": 100, "basic": 50}},
         "rate_limit", {"adaptive_limits": True, "peak_multiplier": 2.0}),
        (f"{P}/request-size/optimize", {"enable_streaming": True, "chunk_size": 65536, "async_validation": True,
                                        "progressive_limits": {"json": 2097152, "form": 10485760, "file": 52428800}},
         "request_size", {"max_json_size": 2097152, "max_form_size": 10485760, "max_request_size": 52428800}),
        (f"{P}/versioning/optimize", {"detection_strategy": "header_first", "enable_caching": True, "cache_ttl": 3600,
                                      "fast_path_versions": ["v1", "v2"]},
         "versioning", {"fast_path_versions": ["v1", "v2"], "cache_ttl": 3600}),
    ]
    for path, body, section, expect in bodies:
        r = await client.post(path, json=body)
        assert r.status == 200, await r.text()
        out = await r.json()
        for k, v in expect.items():
            assert out["config"][k] == v
    hist = await (await client.get("/internal/config/history")).json()
    sources = {h["source"] for h in hist["history"]}
    assert {"api:compression/optimize", "api:rate-limiting/optimize", "api:request-size/optimize",
            "api:versioning/optimize"} <= sources


async def test_views_have_the_spec_fields(make_client):
    client = await make_client(MIDDLEWARE_SAMPLE_EVERY="1")
    for _ in range(5):
        assert (await client.post("/v1/text/summarize", json={"text": TEXT})).status == 200
    s = await (await client.get(f"{P}/stack/performance")).json()
    mo = s["middleware_overhead"]
    assert mo["samples"] >= 5 and mo["total"] > 0
    assert set(mo["breakdown"]) == {"security", "errors", "metrics", "request_size", "compression", "versioning",
                                    "auth", "rate_limit", "admission", "stack"}
    assert abs(sum(v["avg_ms"] for v in mo["breakdown"].values()) - mo["total"]) < 0.01
    assert mo["handler_avg_ms"] > 0 and mo["order"][-1] == "admission"
    assert isinstance(s["recommendations"], list)
    m = await (await client.get("/internal/monitoring/middleware-performance")).json()
    assert m["performance_status"] in ("optimal", "acceptable", "degraded")
    assert m["total_overhead_ms"] == mo["total"] or m["total_overhead_ms"] > 0
    assert isinstance(m["active_recommendations"], list)
    c = await (await client.get(f"{P}/compression/stats")).json()
    assert {"average_compression_ratio", "cpu_overhead_percentage", "bandwidth_savings_bytes"} <= set(c)
    c = await (await client.get("/internal/monitoring/compression-metrics")).json()
    assert c["average_compression_ratio"] is not None
    rl = await (await client.get(f"{P}/rate-limiting/performance")).json()
    assert rl["redis_average_latency"] is not None and rl["local_cache_stats"]["hit_ratio"] is not None
    assert rl["average_processing_time"] is not None
    rl = await (await client.get("/internal/monitoring/rate-limiting-performance")).json()
    assert "denial_ratio" in rl
    ov = await (await client.get(P)).json()
    assert [x["name"] for x in ov["order"]][:3] == ["security", "errors", "metrics"]


async def test_recommendation_when_a_middleware_is_slow(make_client):
    client = await make_client(MIDDLEWARE_SAMPLE_EVERY="1")
    await client.post("/internal/config/middleware", json={"middleware_warning_ms": 0.001, "overhead_target_ms": 0.001,
                                                           "overhead_warning_ms": 0.002})
    for _ in range(25):
        await client.post("/v1/text/summarize", json={"text": TEXT})
    m = await (await client.get("/internal/monitoring/middleware-performance")).json()
    assert m["performance_status"] == "degraded"
    assert any(r["severity"] == "warning" for r in m["active_recommendations"])


async def test_auto_optimize_without_data_changes_nothing(make_client):
    client = await make_client()
    for name in ("compression", "rate-limiting", "request-size", "versioning"):
        r = await client.post(f"{P}/{name}/auto-optimize")
        assert r.status == 200
        out = await r.json()
        assert out["optimization_applied"] is False
        assert "not enough data" in out["reason"]
    assert (await (await client.get("/internal/config")).json())["version"] == 0


async def test_request_size_auto_optimize_tightens_from_measured_sizes(make_client):
    client = await make_client()
    for _ in range(100):
        await client.post("/v1/text/summarize", json={"text": TEXT})
    r = await client.post(f"{P}/request-size/auto-optimize", json={"dry_run": True})
    out = await r.json()
    assert out["dry_run"] and out["optimization_applied"][0]["field"] == "max_json_size"
    assert (await (await client.get("/internal/config")).json())["version"] == 0
    out = await (await client.post(f"{P}/request-size/auto-optimize")).json()
    change = out["optimization_applied"][0]
    assert change["from"] == 2 * 1024 * 1024 and change["to"] == 64 * 1024
    assert out["config"]["max_json_size"] == 64 * 1024
    out = await (await client.post(f"{P}/request-size/auto-optimize")).json()
    assert out["optimization_applied"] is False          # nothing left to do


async def test_versioning_auto_optimize_follows_the_dominant_source(make_client):
    client = await make_client(API_VERSION_DEFAULT_STRATEGY="query_first")
    for _ in range(60):
        await client.post("/v1/text/summarize", json={"text": TEXT}, headers={"X-API-Version": "v1"})
    out = await (await client.post(f"{P}/versioning/auto-optimize")).json()
    assert out["optimization_applied"][0] == {"field": "detection_strategy", "from": "query_first",
                                              "to": "header_first", "why": out["optimization_applied"][0]["why"]}
    assert out["config"]["detection_strategy"] == "header_first"


async def test_compression_auto_optimize_raises_the_minimum_past_bodies_that_do_not_shrink(make_client):
    from service.middleware import advisor

    stats = {"responses_attempted": 50, "skipped": {"too_small": 0, "not_acceptable": 0}, "since": 0,
             "cpu_overhead_percentage": 3.0, "average_compression_ratio": 0.5,
             "by_size": [{"below_bytes": 512, "responses": 0, "ratio": None},
                         {"below_bytes": 1024, "responses": 30, "ratio": 0.95},
                         {"below_bytes": 2048, "responses": 20, "ratio": 0.4}]}
    cfg = {"level": 6, "minimum_size": 0}
    changes, applied, reason = advisor.plan_compression(stats, cfg)
    assert changes == {"minimum_size": 1024}
    changes, applied, reason = advisor.plan_compression(dict(stats, cpu_overhead_percentage=30.0), cfg)
    assert changes["level"] == 3
    # and through the endpoint, from real traffic: many small compressible-but-not-much responses
    client = await make_client(COMPRESSION_MINIMUM_SIZE="0")
    for _ in range(25):
        await client.get("/v1/health", headers={"Accept-Encoding": "gzip"})
    out = await (await client.post(f"{P}/compression/auto-optimize")).json()
    assert out["measured"]["responses_attempted"] >= 25
    assert out["optimization_applied"] is False or out["optimization_applied"][0]["field"] in ("minimum_size", "level")


async def test_rate_limit_auto_optimize(make_client):
    client = await make_client(RATE_LIMIT_ENABLED="true", RATE_LIMIT_REQUESTS_PER_MINUTE="100000",
                               RATE_LIMIT_LOCAL_CACHE_SIZE="16")
    # more clients than the local cache holds: the open-mode client is the address, so vary the key
    from service.middleware import advisor
    stats = {"decisions": {"total": 500}, "mode": "redis", "redis_calls": 400, "redis_p95_latency": 1.0,
             "redis_average_latency": 0.5,
             "local_cache_stats": {"evictions": 3, "hit_ratio": 0.5}}
    changes, applied, reason = advisor.plan_rate_limit(stats, {"local_cache_size": 16, "lease_window_ms": 100.0},
                                                       250.0)
    assert changes == {"local_cache_size": 32, "lease_window_ms": 200.0}
    for _ in range(120):
        await client.post("/v1/text/summarize", json={"text": TEXT})
    out = await (await client.post(f"{P}/rate-limiting/auto-optimize")).json()
    assert out["measured"]["decisions"]["total"] >= 120
    assert out["optimization_applied"] is False           # local mode, nothing evicted: nothing to do


def test_gap_labels_cover_every_middleware():
    store = ConfigStore(SECTIONS, env={})
    prof = StackProfiler(store, ORDER)
    assert prof.labels[0] == "security" and prof.labels[-1] == "security"
    assert prof.labels.count("handler") == 1 and prof.labels.count("errors") == 2  # its enter and its leave
    assert prof.expected == 4 * len(ORDER) + 2 == len(prof.labels) + 1
    assert 0 < prof.probe_cost < 0.0001
    prof.probe_cost = 0.0
    ts = [float(i) for i in range(prof.expected)]
    prof.finish(ts)
    snap = prof.snapshot()
    assert snap["samples"] == 1 and snap["handler_avg_ms"] == 1000.0
    assert snap["total"] == (prof.expected - 1 - 1) * 1000.0
    prof.finish(ts[:-1])
    assert prof.snapshot()["incomplete_samples"] == 1
