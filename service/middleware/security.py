"""Security headers on every response, and CORS.

Outermost in the stack so that every response gets the headers, including
the error responses the errors layer renders.  It answers CORS preflights
itself (before auth: browsers never send credentials on a preflight).

Headers and CORS sets are precomputed when the config changes, so a request
costs one headers.update().
"""
from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from service.errors import error_response
from service.middleware.stack import Answer, Layer

NAME = "security"


def add_vary(resp, token: str) -> None:
    """Add a header name to Vary once."""
    vary = resp.headers.get("Vary")
    if vary is None:
        resp.headers["Vary"] = token
    elif token.lower() not in vary.lower():
        resp.headers["Vary"] = f"{vary}, {token}"


class Security:
    def __init__(self, store):
        self.store = store
        self.headers: CIMultiDict = CIMultiDict()
        self.cors_enabled = False
        self.any_origin = False
        self.origins: frozenset = frozenset()
        self.preflight_headers: dict = {}
        self.cors_common: dict = {}
        self._build()
        store.subscribe(self._on_config)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section in ("security_headers", "cors"):
            self._build()

    def _build(self) -> None:
        sec = self.store.get("security_headers")
        h = CIMultiDict()
        if sec["enabled"]:
            h["X-Content-Type-Options"] = "nosniff"
            h["X-Frame-Options"] = sec["frame_options"]
            h["Referrer-Policy"] = sec["referrer_policy"]
            if sec["content_security_policy"]:
                h["Content-Security-Policy"] = sec["content_security_policy"]
            if sec["hsts_max_age"]:
                h["Strict-Transport-Security"] = f"max-age={sec['hsts_max_age']}; includeSubDomains"
        self.headers = h
        cors = self.store.get("cors")
        self.cors_enabled = cors["enabled"] and bool(cors["allow_origins"])
        self.any_origin = "*" in cors["allow_origins"]
        self.origins = frozenset(o.rstrip("/") for o in cors["allow_origins"] if o != "*")
        self.credentials = cors["allow_credentials"] and not self.any_origin
        common = {}
        if self.credentials:
            common["Access-Control-Allow-Credentials"] = "true"
        if cors["expose_headers"]:
            common["Access-Control-Expose-Headers"] = ", ".join(cors["expose_headers"])
        self.cors_common = common
        self.preflight_headers = {"Access-Control-Allow-Methods": ", ".join(cors["allow_methods"]),
                                  "Access-Control-Allow-Headers": ", ".join(cors["allow_headers"]),
                                  "Access-Control-Max-Age": str(cors["max_age"])}
        if self.credentials:
            self.preflight_headers["Access-Control-Allow-Credentials"] = "true"
        self.allowed_methods = frozenset(m.upper() for m in cors["allow_methods"])

    def origin_allowed(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/") in self.origins

    def allow_origin_value(self, origin: str) -> str:
        return "*" if self.any_origin and not self.credentials else origin

    def preflight(self, request: web.Request, origin: str) -> web.StreamResponse:
        method = request.headers.get("Access-Control-Request-Method", "").upper()
        if not self.origin_allowed(origin) or method not in self.allowed_methods:
            resp = error_response(request, 403, "CORS_REJECTED",
                                  "cross-origin request not allowed for this origin or method",
                                  {"origin": origin, "method": method,
                                   "allowed_methods": sorted(self.allowed_methods)})
        else:
            resp = web.Response(status=204)
            resp.headers.update(self.preflight_headers)
            resp.headers["Access-Control-Allow-Origin"] = self.allow_origin_value(origin)
        resp.headers["Vary"] = "Origin"
        resp.headers.update(self.headers)
        return resp

    def add_cors(self, request: web.Request, resp: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None or not self.origin_allowed(origin):
            return
        resp.headers["Access-Control-Allow-Origin"] = self.allow_origin_value(origin)
        if self.cors_common:
            resp.headers.update(self.cors_common)
        add_vary(resp, "Origin")


class SecurityLayer(Layer):
    """CORS preflights answered here (before auth: browsers never send credentials on one); the
    security headers and CORS headers on every response, errors included."""
    name = NAME

    def __init__(self, sec: Security):
        self.sec = sec

    def passes(self, path: str, method: str) -> bool:
        return not (self.sec.cors_enabled and method in ("OPTIONS", "*"))  # (only a preflight is answered here)

    def enter(self, request):
        sec = self.sec
        if sec.cors_enabled and request._method == "OPTIONS":
            origin = request.headers.get("Origin")
            if origin is not None and "Access-Control-Request-Method" in request.headers:
                raise Answer(sec.preflight(request, origin))

    def leave(self, request, resp, state):
        sec = self.sec
        resp._headers.update(sec.headers)  # (aiohttp's attribute behind `headers`: see service/middleware/stack.py)
        if sec.cors_enabled:
            sec.add_cors(request, resp)

    def fail(self, request, exc, state):
        if isinstance(exc, web.HTTPException):  # only what the errors layer passes on (< 400)
            exc.headers.update(self.sec.headers)


def make(ctx):
    sec = ctx.extras.get("security")
    if sec is None:
        sec = ctx.extras["security"] = Security(ctx.store)
    return SecurityLayer(sec)
