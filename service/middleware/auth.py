"""API-key auth and scopes: X-API-Key or Authorization: Bearer, looked up in the key ring (service/keys.py).

The scope a route needs:
    /v1/text/*     text
    /internal/*    admin (reads included)
    /metrics       metrics, when auth.protect_metrics
    /v1/health     health, when auth.protect_health
A missing or unknown key gets 401; a valid key without the scope gets 403
FORBIDDEN naming the scope.  Every request leaves here with
request[KEY_NAME] (a configured name; `anonymous` when no key was needed or
none is configured) and request[SCOPES] (a frozenset), RequestKeys of service/context.py.  With no keys
configured the service runs open, on loopback only (checked at start-up in
service/app.py): every request is `anonymous` with every scope.

X-Benchmark: the service's own load generator sends a token derived from the
deployment secret (service/secret.py), which no client can compute.  It
exempts the request from rate limits and, without a key, authenticates it as
`benchmark` with scope text.  Anything else in that header is ignored.
"""
from __future__ import annotations

from aiohttp import web
from aiohttp.hdrs import AUTHORIZATION
from multidict import istr

from exporter.metrics import AUTH_REJECTIONS
from service.context import BENCHMARK_MARK, KEY_NAME, KEY_TIER, ROUTE, SCOPES
from service.errors import ApiError
from service.keys import ALL_SCOPES, ANONYMOUS, BENCHMARK, Key
from service.middleware.stack import Layer
from service.remediation.credential import load_webhook_token, webhook_identity

BENCHMARK_HEADER = istr("X-Benchmark")
API_KEY_HEADER = istr("X-API-Key")
BENCHMARK_KEY = Key(BENCHMARK, b"", frozenset({"text"}), None, "deployment secret")
NO_SCOPES: frozenset = frozenset()
_UNKNOWN = object()  # a route whose scope is not worked out yet
MISSING, INVALID, FORBIDDEN = REJECTIONS = ("missing", "invalid", "forbidden")  # llmapi_auth_rejections{reason}


def required_scope(path: str, auth_cfg: dict) -> str | None:
    """The scope `path` needs, or None.  /vN/... (served by the /v1 routes, middleware/versioning.py) needs
    what its /v1 route needs, so the key is known to the outer middlewares (access log) too."""
    if path.startswith("/v1/text"):
        return "text"
    if path.startswith("/internal"):
        return "admin"
    if path[:2] == "/v" and path[2:3].isdigit() and not path.startswith("/v1/"):
        i = path.find("/", 2)
        if i < 0:
            return None
        path = "/v1" + path[i:]
        if path.startswith("/v1/text"):
            return "text"
    if path == "/v1/health":
        return "health" if auth_cfg["protect_health"] else None
    if path == "/metrics":
        return "metrics" if auth_cfg["protect_metrics"] else None
    return None


def guarded_scopes(auth_cfg: dict) -> tuple:
    """Every scope required_scope can ask for under auth_cfg: what a rejection may name."""
    return ("text", "admin") + (("metrics",) if auth_cfg["protect_metrics"] else ()) \
        + (("health",) if auth_cfg["protect_health"] else ())


def preinit(auth_cfg: dict) -> None:
    """The rejection series of the guarded scopes at 0, so rate() reads 0 before the first rejection."""
    for reason in REJECTIONS:
        for scope in guarded_scopes(auth_cfg):
            AUTH_REJECTIONS.labels(reason, scope)


def presented_key(request: web.Request) -> str | None:
    headers = request._headers  # (aiohttp's attribute behind `headers`: see service/middleware/stack.py)
    key = headers.get(API_KEY_HEADER)
    if key:
        return key
    auth = headers.get(AUTHORIZATION, "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, {"field": "X-API-Key"}, headers={"WWW-Authenticate": "Bearer"})


def forbidden(key: Key, scope: str) -> ApiError:
    return ApiError(403, "FORBIDDEN", f"the key {key.name!r} lacks the scope {scope!r} this route needs",
                    {"field": "X-API-Key", "required_scope": scope, "key_name": key.name,
                     "key_scopes": sorted(key.scopes)})


class AuthLayer(Layer):
    name = "auth"

    def __init__(self, ctx):
        self.ring = ctx.keys
        self.secret = ctx.secret
        self.get = ctx.store.get
        self.webhook_token = load_webhook_token(ctx.settings)  # Alertmanager's credential, its webhook route only
        self.configured = self.ring.configured  # (its key sources are fixed at start; a reload changes the keys)
        self.scopes: dict = {}  # fixed route (service/middleware/stack.py) -> the scope it needs
        if self.configured:  # (open, nothing is ever rejected)
            preinit(self.get("auth"))
            ctx.store.subscribe(self._on_config)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section == "auth":
            self.scopes = {}
            preinit(new)

    def enter(self, request):
        shared = request._state  # (the request's dict: see service/context.py)
        headers = request._headers  # (aiohttp's attribute behind `headers`: see service/middleware/stack.py)
        mark = headers.get(BENCHMARK_HEADER)
        bench = mark is not None and self.secret.is_benchmark_token(mark)
        if bench:
            shared[BENCHMARK_MARK] = True
        if not self.configured:
            shared[KEY_NAME] = ANONYMOUS
            shared[SCOPES] = ALL_SCOPES
            return None
        route = shared.get(ROUTE)
        scope = self.scopes.get(route, _UNKNOWN) if route is not None else _UNKNOWN
        if scope is _UNKNOWN:  # a fixed route's scope is worked out once (until the auth section changes)
            scope = required_scope(request.path, self.get("auth"))
            if route is not None:
                self.scopes[route] = scope
        if scope is None:
            shared[KEY_NAME] = ANONYMOUS
            shared[SCOPES] = NO_SCOPES
            return None
        raw = headers.get(API_KEY_HEADER) or presented_key(request)
        if raw is not None and self.webhook_token is not None and webhook_identity(request, raw, self.webhook_token):
            return None  # key name alertmanager, scope alerts (service/remediation/credential.py)
        if raw is not None:
            key = self.ring.authenticate(raw)
            if key is None:
                AUTH_REJECTIONS.labels(INVALID, scope).inc()
                raise _unauthorized("INVALID_API_KEY", "the API key is not valid")
        elif bench:
            key = BENCHMARK_KEY
        else:
            AUTH_REJECTIONS.labels(MISSING, scope).inc()
            raise _unauthorized("MISSING_API_KEY", "an API key is required (X-API-Key or Authorization: Bearer)")
        shared[KEY_NAME] = key.name
        shared[SCOPES] = key.scopes
        shared[KEY_TIER] = key.tier
        if scope not in key.scopes:
            AUTH_REJECTIONS.labels(FORBIDDEN, scope).inc()
            raise forbidden(key, scope)
        return None


def make(ctx):
    return AuthLayer(ctx)
