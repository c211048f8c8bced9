"""Auth: every protected route in the live route table rejects a missing and a wrong key."""
import re

import pytest

from service.context import CTX
from service.middleware.auth import is_protected, key_matches
from tests.helpers import API_KEY


def _concrete(path: str) -> str:
    return re.sub(r"{[^}]+}", "x", path)


async def test_every_protected_route_rejects_missing_and_wrong_keys(make_client):
    client = await make_client()
    client.session.headers.pop("X-API-Key")
    app = client.server.app
    routes = [(r.method, r.resource.canonical) for r in app.router.routes()
              if r.method not in ("HEAD", "*") and r.resource is not None]
    protected = [(m, p) for m, p in routes if p.startswith(("/v1/text", "/internal"))]
    assert len(protected) >= 8
    for method, path in protected:
        for headers in ({}, {"X-API-Key": "wrong-key"}, {"Authorization": "Bearer wrong-key"}):
            r = await client.request(method, _concrete(path), headers=headers)
            assert r.status == 401, (method, path, headers, r.status)
            body = await r.json()
            assert body["error_code"] in ("MISSING_API_KEY", "INVALID_API_KEY")


async def test_bearer_and_additional_keys_work(make_client):
    client = await make_client(ADDITIONAL_API_KEYS="second-key, third-key")
    for headers in ({"Authorization": "Bearer second-key"}, {"X-API-Key": "third-key"}):
        r = await client.get("/v1/text/operations", headers=headers)
        assert r.status == 200


async def test_health_and_metrics_public_unless_configured(make_client):
    client = await make_client()
    client.session.headers.pop("X-API-Key")
    assert (await client.get("/v1/health")).status == 200
    client2 = await make_client(AUTH_PROTECT_HEALTH="true")
    client2.session.headers.pop("X-API-Key")
    assert (await client2.get("/v1/health")).status == 401
    assert (await client2.get("/v1/health", headers={"X-API-Key": API_KEY})).status == 200


def test_key_comparison():
    keys = (b"alpha", b"beta")
    assert key_matches("beta", keys)
    assert not key_matches("bet", keys)
    assert not key_matches("", keys)
    cfg = {"protect_health": False, "protect_metrics": False}
    assert is_protected("/internal/config", cfg) and is_protected("/v1/text/qa", cfg)
    assert not is_protected("/metrics", cfg)


def test_no_keys_refuses_non_loopback_bind():
    from service.app import check_bind_safety
    from service.settings import Settings
    with pytest.raises(SystemExit, match="no API_KEY"):
        check_bind_safety(Settings(host="0.0.0.0"))
    check_bind_safety(Settings(host="127.0.0.1"))  # allowed: loopback only


def test_keys_never_logged(service_factory):
    svc = service_factory(LOG_LEVEL="INFO")
    import urllib.request
    req = urllib.request.Request(f"{svc.url}/v1/text/operations", headers={"X-API-Key": "wrong-secret-value-42"})
    try:
        urllib.request.urlopen(req, timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 401
    from tests.helpers import API_KEY
    req = urllib.request.Request(f"{svc.url}/v1/text/operations", headers={"X-API-Key": API_KEY})
    assert urllib.request.urlopen(req, timeout=5).status == 200
    svc.stop()
    out = svc.output()
    assert "/v1/text/operations" in out  # the access log did run
    assert "wrong-secret-value-42" not in out and API_KEY not in out


async def test_benchmark_token_exempts_only_the_real_token_from_the_throttle(make_client):
    from service.middleware.auth import benchmark_token
    client = await make_client()
    r = await client.post("/internal/monitoring/enable-throttling", json={"max_requests_per_minute": 1})
    assert r.status == 200
    burst = client.server.app[CTX].store.get("rate_limit")["burst_size"]
    statuses = [(await client.get("/v1/text/operations")).status for _ in range(burst + 5)]
    assert 429 in statuses
    fake = {"X-Benchmark": "1"}
    assert (await client.get("/v1/text/operations", headers=fake)).status == 429
    real = {"X-Benchmark": benchmark_token(API_KEY)}
    assert all([(await client.get("/v1/text/operations", headers=real)).status == 200 for _ in range(5)])
