"""Security headers on every response (errors too) and configurable CORS."""
from tests.helpers import API_KEY

SEC = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


def _has_security_headers(r) -> bool:
    return all(r.headers.get(k) == v for k, v in SEC.items())


async def test_security_headers_on_success_and_errors(make_client):
    client = await make_client()
    assert _has_security_headers(await client.get("/v1/health"))
    assert _has_security_headers(await client.get("/nowhere"))                            # 404
    assert _has_security_headers(await client.get("/v1/text/operations", headers={"X-API-Key": "x"}))  # 401
    assert _has_security_headers(await client.post("/v1/text/summarize", data=b"{", headers={
        "Content-Type": "application/json"}))                                               # 400


async def test_security_headers_are_configurable(make_client):
    client = await make_client()
    r = await client.post("/internal/config/security_headers",
                          json={"frame_options": "SAMEORIGIN", "referrer_policy": "same-origin",
                                "content_security_policy": "default-src 'none'", "hsts_max_age": 600})
    assert r.status == 200
    r = await client.get("/v1/health")
    assert r.headers["X-Frame-Options"] == "SAMEORIGIN" and r.headers["Referrer-Policy"] == "same-origin"
    assert r.headers["Content-Security-Policy"] == "default-src 'none'"
    assert r.headers["Strict-Transport-Security"].startswith("max-age=600")
    await client.post("/internal/config/security_headers", json={"enabled": False})
    r = await client.get("/v1/health")
    assert "X-Frame-Options" not in r.headers


async def test_cors_off_by_default(make_client):
    client = await make_client()
    r = await client.get("/v1/health", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_cors_preflight_and_actual_requests(make_client):
    client = await make_client(CORS_ENABLED="true", CORS_ALLOW_ORIGINS="https://app.example")
    client.session.headers.pop("X-API-Key")
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "content-type, x-api-key"}
    r = await client.options("/v1/text/summarize", headers=pre)                 # no key needed for a preflight
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "X-API-Key" in r.headers["Access-Control-Allow-Headers"]
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in r.headers["Vary"]
    r = await client.options("/v1/text/summarize", headers=dict(pre, Origin="https://evil.example"))
    assert r.status == 403 and (await r.json())["error_code"] == "CORS_REJECTED"
    r = await client.options("/v1/text/summarize", headers=dict(pre, **{"Access-Control-Request-Method": "DELETE"}))
    assert r.status == 403
    r = await client.get("/v1/text/operations", headers={"Origin": "https://app.example", "X-API-Key": API_KEY})
    assert r.status == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-Request-ID" in r.headers["Access-Control-Expose-Headers"]
    r = await client.get("/v1/text/operations", headers={"Origin": "https://evil.example", "X-API-Key": API_KEY})
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_cors_wildcard(make_client):
    client = await make_client(CORS_ENABLED="true", CORS_ALLOW_ORIGINS="*")
    r = await client.get("/v1/health", headers={"Origin": "https://any.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
