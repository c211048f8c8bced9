"""Auth: every protected route in the live route table rejects a missing and a wrong key; keys have names and scopes."""
import hashlib
import hmac
import json
import re

import pytest

from service.context import CTX
from service.keys import ALL_SCOPES, KeyRing, env_keys
from service.middleware.auth import required_scope
from tests.helpers import API_KEY


def _concrete(path: str) -> str:
    return re.sub(r"{[^}]+}", "x", path)


def _routes(app):
    return [(r.method, r.resource.canonical) for r in app.router.routes()
            if r.method not in ("HEAD", "*") and r.resource is not None]


async def test_every_protected_route_rejects_missing_and_wrong_keys(make_client):
    client = await make_client(AUTH_PROTECT_HEALTH="true", AUTH_PROTECT_METRICS="true",
                               API_SUPPORTED_VERSIONS="v1,v2")
    client.session.headers.pop("X-API-Key")
    protected = [(m, p) for m, p in _routes(client.server.app)
                 if p.startswith(("/v1/text", "/internal")) or p in ("/metrics", "/v1/health")]
    assert len(protected) >= 60
    for method, path in protected:
        for headers in ({}, {"X-API-Key": "wrong-key"}, {"Authorization": "Bearer wrong-key"},
                        {"Authorization": "Bearer "}):
            r = await client.request(method, _concrete(path), headers=headers)
            assert r.status == 401, (method, path, headers, r.status)
            body = await r.json()
            assert body["error_code"] in ("MISSING_API_KEY", "INVALID_API_KEY")
            assert body["details"]["field"] == "X-API-Key"
            assert r.headers["WWW-Authenticate"] == "Bearer"
    # a versioned path needs the same key as its /v1 route
    assert (await client.get("/v2/text/operations")).status == 401


async def test_bearer_and_additional_keys_work_for_text_only(make_client):
    client = await make_client(ADDITIONAL_API_KEYS="second-key, third-key")
    client.session.headers.pop("X-API-Key")
    for headers in ({"Authorization": "Bearer second-key"}, {"X-API-Key": "third-key"}):
        r = await client.get("/v1/text/operations", headers=headers)
        assert r.status == 200
        r = await client.get("/internal/config", headers=headers)
        assert r.status == 403
        body = await r.json()
        assert body["error_code"] == "FORBIDDEN"
        assert body["details"]["required_scope"] == "admin" and body["details"]["field"] == "X-API-Key"
        assert body["details"]["key_name"] in ("client-1", "client-2")
        assert "admin" in body["message"] and "second-key" not in await r.text()
    assert (await client.get("/internal/config", headers={"X-API-Key": API_KEY})).status == 200


async def test_health_and_metrics_public_unless_configured(make_client):
    client = await make_client(ADDITIONAL_API_KEYS="client-key", ADMIN_API_KEYS="admin-key")
    client.session.headers.pop("X-API-Key")
    assert (await client.get("/v1/health")).status == 200
    assert (await client.get("/metrics")).status == 200
    client2 = await make_client(AUTH_PROTECT_HEALTH="true", AUTH_PROTECT_METRICS="true",
                                ADDITIONAL_API_KEYS="client-key", ADMIN_API_KEYS="admin-key")
    client2.session.headers.pop("X-API-Key")
    for path, scope in (("/v1/health", "health"), ("/metrics", "metrics")):
        assert (await client2.get(path)).status == 401
        assert (await client2.get(path, headers={"X-API-Key": API_KEY})).status == 200
        assert (await client2.get(path, headers={"X-API-Key": "admin-key"})).status == 200
        r = await client2.get(path, headers={"X-API-Key": "client-key"})
        assert r.status == 403 and (await r.json())["details"]["required_scope"] == scope


def test_key_ring_finds_the_entry_by_digest():
    ring = KeyRing(env_keys({"API_KEY": "alpha", "ADDITIONAL_API_KEYS": "beta,gamma", "ADMIN_API_KEYS": "delta"}))
    assert ring.authenticate("beta").name == "client-1"
    assert ring.authenticate("gamma").name == "client-2"
    assert ring.authenticate("alpha").name == "operator"
    assert ring.authenticate("alpha").scopes == ALL_SCOPES       # admin implies metrics and health
    assert ring.authenticate("delta").scopes == {"admin", "metrics", "health"}
    assert ring.authenticate("beta").scopes == {"text"}
    assert ring.authenticate("bet") is None and ring.authenticate("") is None
    assert ring.authenticate("\udcff\ud800") is None              # odd header bytes: no exception
    assert "beta" not in repr(ring.entries) and "beta" not in json.dumps(ring.describe())
    cfg = {"protect_health": False, "protect_metrics": True}
    assert required_scope("/internal/config", cfg) == "admin" and required_scope("/v1/text/qa", cfg) == "text"
    assert required_scope("/v2/text/qa", cfg) == "text" and required_scope("/metrics", cfg) == "metrics"
    assert required_scope("/v1/health", cfg) is None and required_scope("/openapi.json", cfg) is None


def test_same_key_twice_refuses_to_start():
    from service.settings import Settings
    with pytest.raises(SystemExit, match="'operator' .* and 'client-1' .* are the same key"):
        Settings.from_env({"API_KEY": "same-key", "ADDITIONAL_API_KEYS": "same-key"})


def test_no_keys_refuses_non_loopback_bind():
    from service.app import check_bind_safety
    from service.settings import Settings
    with pytest.raises(SystemExit, match="no API_KEY"):
        check_bind_safety(Settings(host="0.0.0.0"))
    check_bind_safety(Settings(host="127.0.0.1"))  # allowed: loopback only
    check_bind_safety(Settings(host="0.0.0.0", api_keys_file="/etc/llmapi/keys.yaml"))


def test_keys_never_logged_and_names_are(service_factory):
    svc = service_factory(LOG_LEVEL="INFO", ADDITIONAL_API_KEYS="client-secret-value-77",
                          ADMIN_API_KEYS="admin-secret-value-88")
    import urllib.request
    for key, want in (("wrong-secret-value-42", 401), (API_KEY, 200), ("client-secret-value-77", 200)):
        req = urllib.request.Request(f"{svc.url}/v1/text/operations", headers={"X-API-Key": key})
        try:
            assert urllib.request.urlopen(req, timeout=5).status == want
        except urllib.error.HTTPError as e:
            assert e.code == want
    svc.stop()
    out = svc.output()
    assert "/v1/text/operations" in out  # the access log did run
    for secret in ("wrong-secret-value-42", API_KEY, "client-secret-value-77", "admin-secret-value-88",
                   hashlib.sha256(API_KEY.encode()).hexdigest()[:16]):
        assert secret not in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    startup = next(d for d in lines if d["message"] == "api keys")
    assert [(k["name"], k["scopes"]) for k in startup["api_keys"]] == [
        ("operator", ["admin", "health", "metrics", "text"]), ("client-1", ["text"]),
        ("admin-1", ["admin", "health", "metrics"])]
    access = [d for d in lines if d.get("path") == "/v1/text/operations"]
    assert [d["key_name"] for d in access] == [None, "operator", "client-1"]


def _old_token(key: str) -> str:
    """What a client could compute before: an HMAC of its own key."""
    return hmac.new(key.encode(), b"llmapi-benchmark", hashlib.sha256).hexdigest()[:32]


async def test_only_the_service_secret_exempts_from_the_throttle(make_client):
    client = await make_client(ADDITIONAL_API_KEYS="client-key")
    ctx = client.server.app[CTX]
    r = await client.post("/internal/monitoring/enable-throttling", json={"max_requests_per_minute": 1})
    assert r.status == 200
    burst = ctx.store.get("rate_limit")["burst_size"]
    statuses = [(await client.get("/v1/text/operations")).status for _ in range(burst + 5)]
    assert 429 in statuses
    client_key = {"X-API-Key": "client-key"}
    for forged in ("1", _old_token("client-key"), _old_token(API_KEY), hmac.new(
            b"client-key", b"llmapi-benchmark", hashlib.sha256).hexdigest()):
        r = await client.get("/v1/text/operations", headers={**client_key, "X-Benchmark": forged})
        assert r.status == 429, forged                        # limited like any client
    real = {"X-Benchmark": ctx.secret.benchmark_token}
    assert all([(await client.get("/v1/text/operations", headers={**client_key, **real})).status == 200
                for _ in range(5)])
    # without a key the token authenticates as `benchmark`, text only
    client.session.headers.pop("X-API-Key")
    assert (await client.get("/v1/text/operations", headers=real)).status == 200
    r = await client.get("/internal/config", headers=real)
    assert r.status == 403 and (await r.json())["details"]["key_name"] == "benchmark"
    assert (await client.get("/v1/text/operations", headers={"X-Benchmark": _old_token(API_KEY)})).status == 401


async def test_rejections_are_counted_by_reason_and_scope(make_client):
    from exporter.metrics import REGISTRY

    def value(reason, scope):
        return REGISTRY.get_sample_value("llmapi_auth_rejections_total", {"reason": reason, "scope": scope}) or 0.0

    client = await make_client(ADDITIONAL_API_KEYS="client-key")
    client.session.headers.pop("X-API-Key")
    before = {k: value(*k) for k in (("missing", "text"), ("invalid", "admin"), ("forbidden", "admin"))}
    assert (await client.get("/v1/text/operations")).status == 401
    assert (await client.get("/internal/config", headers={"X-API-Key": "guess"})).status == 401
    assert (await client.get("/internal/config", headers={"X-API-Key": "client-key"})).status == 403
    assert (await client.get("/v1/text/operations", headers={"X-API-Key": "client-key"})).status == 200
    assert {k: value(*k) - v for k, v in before.items()} == {("missing", "text"): 1, ("invalid", "admin"): 1,
                                                            ("forbidden", "admin"): 1}
    text = await (await client.get("/metrics")).text()
    assert 'llmapi_auth_rejections_total{reason="forbidden",scope="admin"}' in text and "client-key" not in text
