"""API versioning: the detection matrix, strategies, fallback, deprecation, re-routing, the cache."""
import pytest

from service.middleware.versioning import accept_version, normalize, order_for

TEXT = "Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally."


@pytest.mark.parametrize("raw, expected", [
    ("v1", ("v1", None)), ("1", ("v1", None)), ("V2", ("v2", None)), ("2.0", ("v2", None)),
    ("v1.3", ("v1.3", "v1")), (" v10 ", ("v10", None)), ("banana", None), ("v", None), ("1.2.3", None)])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_strategy_orders():
    assert order_for("header_first") == ("header", "path", "query", "accept")
    assert order_for("query_first") == ("query", "header", "path", "accept")
    assert order_for("accept") == ("accept",)


@pytest.mark.parametrize("accept, expected", [
    ("application/vnd.llmapi.v2+json", "v2"), ("application/json; version=2", "2"),
    ("application/json;api-version=\"1.1\"", "1.1"), ("application/json", None), ("*/*", None)])
def test_accept_parsing(accept, expected):
    assert accept_version(accept) == expected


V12 = {"API_SUPPORTED_VERSIONS": "v1,v2"}


# (strategy, path, headers, query, expected version, expected source)
MATRIX = [
    ("header_first", "/v1/text/summarize", {}, "", "v1", "path"),
    ("header_first", "/v1/text/summarize", {"X-API-Version": "v2"}, "", "v2", "header"),
    ("header_first", "/v1/text/summarize", {}, "?version=2", "v1", "path"),
    ("query_first", "/v1/text/summarize", {"X-API-Version": "v1"}, "?version=2", "v2", "query"),
    ("query_first", "/v1/text/summarize", {"X-API-Version": "2"}, "", "v2", "header"),
    ("path_first", "/v1/text/summarize", {"X-API-Version": "v2"}, "?version=2", "v1", "path"),
    ("path_first", "/v2/text/summarize", {}, "", "v2", "path"),
    ("accept_first", "/v1/text/summarize", {"Accept": "application/vnd.llmapi.v2+json"}, "", "v2", "accept"),
    ("accept_first", "/v1/text/summarize", {"Accept": "application/json; version=2", "X-API-Version": "v1"}, "",
     "v2", "accept"),
    ("header", "/v2/text/summarize", {}, "?version=2", "v1", "default"),
    ("header", "/v1/text/summarize", {"X-API-Version": "v2"}, "", "v2", "header"),
    ("query", "/v1/text/summarize", {"X-API-Version": "v2"}, "?version=v2", "v2", "query"),
    ("accept", "/v1/text/summarize", {"X-API-Version": "v2"}, "", "v1", "default"),
]


@pytest.mark.parametrize("strategy, path, headers, query, version, source", MATRIX)
async def test_detection_matrix(make_client, strategy, path, headers, query, version, source):
    client = await make_client(API_VERSION_DEFAULT_STRATEGY=strategy, **V12)
    r = await client.post(path + query, json={"text": TEXT}, headers=headers)
    assert r.status == 200, await r.text()
    assert r.headers["X-API-Version"] == version
    stats = await (await client.get("/internal/middleware/versioning/stats")).json()
    assert stats["by_source"] == {source: 1}, stats


async def test_unsupported_versions_get_400_listing_the_supported(make_client):
    for strategy, kw in (("header_first", {"headers": {"X-API-Version": "v3"}}), ("query_first", {"params": {"version": "7"}}),
                         ("accept_first", {"headers": {"Accept": "application/vnd.llmapi.v9+json"}})):
        client = await make_client(API_VERSION_DEFAULT_STRATEGY=strategy, **V12)
        r = await client.post("/v1/text/summarize", json={"text": TEXT}, **kw)
        assert r.status == 400, kw
        err = await r.json()
        assert err["error_code"] == "UNSUPPORTED_API_VERSION"
        assert err["details"]["supported_versions"] == ["v1", "v2"]
        assert "v1, v2" in err["message"]
    r = await client.post("/v3/text/summarize", json={"text": TEXT})
    assert r.status == 400 and (await r.json())["details"]["source"] == "path"
    r = await client.post("/v1/text/summarize", json={"text": TEXT}, headers={"X-API-Version": "banana"})
    assert r.status == 400 and (await r.json())["error_code"] == "INVALID_API_VERSION"


async def test_minor_fallback(make_client):
    client = await make_client()
    r = await client.post("/v1/text/summarize", json={"text": TEXT}, headers={"X-API-Version": "v1.4"})
    assert r.status == 200
    assert r.headers["X-API-Version"] == "v1" and r.headers["X-API-Version-Requested"] == "v1.4"
    await client.post("/internal/middleware/versioning/optimize", json={"fallback_enabled": False})
    r = await client.post("/v1/text/summarize", json={"text": TEXT}, headers={"X-API-Version": "v1.4"})
    assert r.status == 400


async def test_default_when_nothing_is_named(make_client):
    client = await make_client(API_VERSION_DEFAULT_STRATEGY="header", **V12, API_DEFAULT_VERSION="v2")
    r = await client.post("/v1/text/summarize", json={"text": TEXT})
    assert r.headers["X-API-Version"] == "v2"


async def test_deprecation_and_sunset_headers(make_client):
    client = await make_client(**V12)
    r = await client.post("/internal/middleware/versioning/optimize",
                          json={"deprecated_versions": {"v1": "2027-06-30"}})
    assert r.status == 200, await r.text()
    r = await client.post("/v1/text/summarize", json={"text": TEXT})
    assert r.headers["Deprecation"] == "true"
    assert r.headers["Sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
    r = await client.post("/v1/text/summarize", json={"text": TEXT}, headers={"X-API-Version": "v2"})
    assert "Deprecation" not in r.headers


async def test_v2_paths_are_served_by_the_v1_routes_and_stay_protected(make_client):
    client = await make_client(**V12)
    r = await client.post("/v2/text/summarize?x=1", json={"text": TEXT})
    assert r.status == 200, await r.text()
    assert r.headers["X-API-Version"] == "v2"
    assert (await r.json())["operation"] == "summarize"
    # auth sees the re-routed path: no key, no answer
    r = await client.post("/v2/text/summarize", json={"text": TEXT}, headers={"X-API-Key": "wrong"})
    assert r.status == 401
    # the metrics middleware records the real route, not 'unmatched'
    metrics = await (await client.get("/metrics")).text()
    assert 'route="/v1/text/summarize"' in metrics
    # an unsupported path version is 400, an unknown route under a supported one is 404
    assert (await client.get("/v2/nowhere")).status == 404
    stats = await (await client.get("/internal/middleware/versioning/stats")).json()
    assert stats["rerouted"] >= 1


async def _v2_header_count(client) -> float:
    import re
    text = await (await client.get("/metrics")).text()
    m = re.search(r'^llmapi_api_version_requests_total\{source="header",version="v2"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_detection_cache_and_metrics(make_client):
    client = await make_client(**V12)
    before = await _v2_header_count(client)  # (the registry is shared by every app in this process)
    for _ in range(5):
        await client.post("/v1/text/summarize", json={"text": TEXT}, headers={"X-API-Version": "v2"})
    stats = await (await client.get("/internal/middleware/versioning/stats")).json()
    assert stats["cache"]["misses"] == 1 and stats["cache"]["hits"] == 4
    for _ in range(3):
        await client.post("/v1/text/summarize", json={"text": TEXT})
    stats = await (await client.get("/internal/middleware/versioning/stats")).json()
    assert stats["fast_path"] == 3
    assert stats["by_version"] == {"v1": 3, "v2": 5}
    await client.post("/internal/middleware/versioning/optimize", json={"cache_size": 1})
    await client.post("/v1/text/summarize", json={"text": TEXT}, headers={"X-API-Version": "v1"})
    await client.post("/v1/text/summarize", json={"text": TEXT}, headers={"X-API-Version": "v2"})
    stats = await (await client.get("/internal/middleware/versioning/stats")).json()
    assert stats["cache"]["evictions"] >= 1 and stats["cache"]["size"] == 1
    # a scrape flushes the batched counts first
    assert await _v2_header_count(client) - before == 6


async def test_unversioned_paths_are_left_alone(make_client):
    client = await make_client()
    r = await client.get("/internal/config", headers={"X-API-Version": "v9"})
    assert r.status == 200 and "X-API-Version" not in r.headers


async def test_versioning_can_be_switched_off(make_client):
    client = await make_client(API_VERSIONING_ENABLED="false")
    r = await client.post("/v1/text/summarize", json={"text": TEXT}, headers={"X-API-Version": "v9"})
    assert r.status == 200 and "X-API-Version" not in r.headers
