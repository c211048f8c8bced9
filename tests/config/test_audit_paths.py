"""Every /internal route that changes config says who did it: the key's name, the request id, the address.

The route table is walked: a POST route is either a config change tried here,
or named below as one that changes no config (or only after measuring).
"""
import pytest

from service.config.sections import SECTIONS
from service.context import CTX

_crit = SECTIONS["alerts"].defaults()["error_rate_critical"]
CHANGES = {
    "/internal/config/{section}": ("/internal/config/text", {"max_text_length": 4000}),
    "/internal/cache/optimize-keys": (None, {"normalize_case": True}),
    "/internal/cache/configure-ttl": (None, {"base_ttl_seconds": 600}),
    "/internal/cache/enable-warming": (None, {}),
    "/internal/cache/configure-size": (None, {"max_entries": 500}),
    "/internal/cache/configure-pressure": (None, {"pressure_threshold": 0.7}),
    "/internal/cache/optimize-memory": (None, {"compression_level": 5}),
    "/internal/cache/enable-auto-cleanup": (None, None),
    "/internal/resilience/config/apply-preset": (None, {"preset": "production"}),
    "/internal/resilience/config/optimize-performance": (None, {"prioritize_speed": True}),
    "/internal/resilience/circuit-breakers/configure": (None, {"failure_threshold": 7}),
    "/internal/ai/optimize-performance": (None, {"max_retries": 2}),
    "/internal/ai/configure-batching": (None, {"enable_batching": True}),
    "/internal/monitoring/configure-alerts": (None, {"error_rate_threshold": _crit}),
    "/internal/monitoring/configure": (None, {"queue_size": 50}),
    "/internal/monitoring/optimize": (None, {"validation_mode": "strict"}),
    "/internal/monitoring/memory-hotspots": (None, {"enabled": False, "frames": 2}),
    "/internal/monitoring/emergency-mode": (None, {"enabled": True}),
    "/internal/monitoring/enable-throttling": (None, {"max_requests_per_minute": 1000}),
    "/internal/middleware/compression/optimize": (None, {"level": 5}),
    "/internal/middleware/rate-limiting/optimize": (None, {"burst_size": 20}),
    "/internal/middleware/request-size/optimize": (None, {"chunk_size": 32768}),
    "/internal/middleware/versioning/optimize": (None, {"cache_size": 500}),
    "/internal/remediation/{entry}": ("/internal/remediation/error_rate", {"mode": "enforce"}),
}
# change nothing, or change config only from what they measured (the same store.update path, audited likewise)
NOT_CONFIG = {
    "/internal/config/rollback",  # tested in test_audit.py
    "/internal/cache/weekly-optimization", "/internal/cache/emergency-cleanup", "/internal/cache/invalidate",
    "/internal/resilience/circuit-breakers/{name}/reset", "/internal/resilience/apply-performance-optimizations",
    "/internal/resilience/benchmark", "/internal/resilience/benchmark/{id}/cancel",
    "/internal/monitoring/gc", "/internal/monitoring/benchmark", "/internal/monitoring/benchmark/cancel",
    "/internal/monitoring/benchmark/baseline", "/internal/monitoring/snapshot", "/internal/monitoring/loop-holds/reset",
    "/internal/middleware/stack/reset-stats", "/internal/middleware/compression/auto-optimize",
    "/internal/middleware/rate-limiting/auto-optimize", "/internal/middleware/request-size/auto-optimize",
    "/internal/middleware/versioning/auto-optimize",
    "/internal/alerts/webhook",  # its changes are audited as alertmanager:<alertname> (tests/remediation)
}


async def test_every_internal_post_route_is_classified(make_client):
    client = await make_client()
    posts = {r.resource.canonical for r in client.app.router.routes()
             if r.method == "POST" and r.resource.canonical.startswith("/internal")}
    unknown = posts - set(CHANGES) - NOT_CONFIG
    assert not unknown, f"new /internal POST routes: add them to CHANGES (with a body) or NOT_CONFIG: {unknown}"


@pytest.mark.parametrize("route", sorted(CHANGES))
async def test_each_config_change_is_audited(make_client, route):
    client = await make_client()
    store = client.app[CTX].store
    path, body = CHANGES[route]
    rid = "audit-" + route.strip("/").replace("/", "-")[:40]
    kwargs = {} if body is None else {"json": body}
    r = await client.post(path or route, headers={"X-Request-ID": rid}, **kwargs)
    assert r.status == 200, await r.text()
    mine = [e for e in store.history if e.get("request_id") == rid]
    assert mine, f"{route} changed nothing or did not pass the request id"
    for e in mine:
        assert e["actor"] == "operator" and e["remote"] == "127.0.0.1"
        assert e["changes"] and set(e["previous"]) == set(e["changes"])
