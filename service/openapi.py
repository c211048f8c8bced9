"""GET /openapi.json: an OpenAPI 3 document built from the live route table."""
from __future__ import annotations

import re

from aiohttp import web

from service import __version__
from service.config.sections import SECTIONS as CONFIG_SECTIONS
from service.http import json_response
from service.middleware.around import inner
from service.providers.base import OPERATIONS
from service.text.schemas import OPTION_LIMITS

ERROR = {"type": "object", "required": ["error", "error_code", "message"],
         "properties": {"error": {"type": "string"}, "error_code": {"type": "string"}, "message": {"type": "string"},
                        "details": {"type": "object"}, "request_id": {"type": "string", "nullable": True}}}

TEXT_REQUEST = {
    "type": "object", "required": ["text"], "additionalProperties": False,
    "properties": {
        "text": {"type": "string", "minLength": 10, "maxLength": 10000},
        "operation": {"type": "string", "enum": list(OPERATIONS)},
        "question": {"type": "string", "description": "required for qa"},
        "options": {"type": "object", "additionalProperties": False,
                    "properties": {k: {"type": "integer", "minimum": lo, "maximum": hi,
                                       "description": f"{op} only"}
                                   for k, (op, lo, hi) in OPTION_LIMITS.items()}},
    },
}

TEXT_RESPONSE = {
    "type": "object", "required": ["operation", "success", "metadata", "processing_time_ms", "cache_hit",
                                   "request_id", "timestamp"],
    "properties": {
        "operation": {"type": "string", "enum": list(OPERATIONS)}, "success": {"type": "boolean"},
        "result": {"type": "string"},
        "sentiment": {"type": "object", "properties": {"label": {"type": "string"}, "confidence": {"type": "number"},
                                                       "explanation": {"type": "string"}}},
        "key_points": {"type": "array", "items": {"type": "string"}},
        "questions": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object", "properties": {
            "word_count": {"type": "integer"}, "provider": {"type": "string"}, "model": {"type": "string"},
            "tokens": {"type": "object", "additionalProperties": {"type": "integer"}}}},
        "processing_time_ms": {"type": "number"}, "cache_hit": {"type": "boolean"},
        "fallback": {"type": "boolean"}, "request_id": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
    },
}

BATCH_REQUEST = {"type": "object", "required": ["requests"], "properties": {
    "requests": {"type": "array", "minItems": 1, "maxItems": 50, "items": {"$ref": "#/components/schemas/TextRequest"}}}}

BATCH_RESPONSE = {"type": "object", "properties": {
    "batch_id": {"type": "string"}, "total_requests": {"type": "integer"}, "completed": {"type": "integer"},
    "failed": {"type": "integer"},
    "results": {"type": "array", "items": {"type": "object", "properties": {
        "index": {"type": "integer"}, "status": {"type": "string", "enum": ["completed", "failed"]},
        "response": {"$ref": "#/components/schemas/TextResponse"}, "error": {"$ref": "#/components/schemas/Error"}}}}}}

GENERIC = {"type": "object", "additionalProperties": True}

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def section_schema(section) -> dict:
    """The body POST /internal/config/<section> accepts: any subset of the section's fields."""
    props = {}
    for name, f in section.fields.items():
        p = {"type": _JSON_TYPES[f.type]}
        if f.type in (int, float):
            if f.min is not None:
                p["minimum"] = f.min
            if f.max is not None:
                p["maximum"] = f.max
        if f.choices and f.type is not list:
            p["enum"] = list(f.choices)
        if f.type is list and f.item_type in _JSON_TYPES:
            p["items"] = {"type": _JSON_TYPES[f.item_type], **({"enum": list(f.choices)} if f.choices else {})}
        if f.nullable:
            p["nullable"] = True
        if f.help:
            p["description"] = f.help
        props[name] = p
    return {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": props}


SCHEMAS = {"Error": ERROR, "TextRequest": TEXT_REQUEST, "TextResponse": TEXT_RESPONSE,
           "BatchRequest": BATCH_REQUEST, "BatchResponse": BATCH_RESPONSE, "Object": GENERIC,
           **{f"ConfigSection_{name}": section_schema(sec) for name, sec in CONFIG_SECTIONS.items()}}
CONFIG_BODY = {"oneOf": [{"$ref": f"#/components/schemas/ConfigSection_{n}"} for n in CONFIG_SECTIONS]}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(name: str) -> dict:
    return {"application/json": {"schema": _ref(name)}}


# the scope each route needs (service/middleware/auth.py); /metrics and /v1/health only when protected
SCOPE_PREFIXES = (("/v1/text", "text"), ("/internal", "admin"))
SCOPE_OF = {"/metrics": "metrics", "/v1/health": "health"}
KEYS_DOC = ("API keys (README: Keys and scopes). API_KEY is the operator's key (name `operator`, scopes text and "
            "admin); ADDITIONAL_API_KEYS are client keys (scope text: /v1/text only); ADMIN_API_KEYS are admin keys "
            "(scope admin: every /internal route, and /metrics and /v1/health when protected); API_KEYS_FILE names "
            "keys (or their SHA-256) with their own scopes and rate-limit tier. A missing or unknown key gets 401, "
            "a key without the route's scope (x-required-scope) gets 403 FORBIDDEN.")


def _operation(method: str, path: str, handler) -> dict:
    req, resp = None, "Object"
    if path.startswith("/v1/text/") and method == "POST":
        req, resp = ("BatchRequest", "BatchResponse") if path.endswith("/batch") else ("TextRequest", "TextResponse")
    elif method == "POST":
        req = "Object"
    doc = (getattr(handler, "__doc__", None) or "").strip().split("\n")[0]
    op = {"operationId": f"{method.lower()}_{re.sub(r'[^a-zA-Z0-9]+', '_', path).strip('_')}",
          "summary": doc or f"{method} {path}",
          "tags": [path.split("/")[1] if path.count("/") > 1 else "service"],
          "responses": {"200": {"description": "OK", "content": _content(resp)},
                        "default": {"description": "Error", "content": _content("Error")}}}
    if path == "/metrics":
        op["responses"]["200"] = {"description": "Prometheus exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}
    if req:
        op["requestBody"] = {"required": req != "Object", "content": _content(req)}
    if method == "POST" and path.startswith("/internal"):
        op["responses"]["422"] = {"description": "a bad body, or values breaking a config rule (VALIDATION_ERROR: "
                                                 "details.fields names every offending field, details.field the "
                                                 "first); nothing changed", "content": _content("Error")}
        op["responses"]["503"] = {"description": "a config change that could not be saved (CONFIG_NOT_PERSISTED: "
                                                 "details.backend is redis or file); nothing changed",
                                  "content": _content("Error")}
    if path == "/internal/config/{section}":
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": CONFIG_BODY}}}
    params = re.findall(r"{(\w+)}", path)
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True,
                             "schema": {"type": "string", "enum": list(CONFIG_SECTIONS)} if p == "section"
                             else {"type": "string"}} for p in params]
    scope = SCOPE_OF.get(path) or next((s for prefix, s in SCOPE_PREFIXES if path.startswith(prefix)), None)
    if scope is not None:
        optional = path in SCOPE_OF
        op["security"] = ([{}] if optional else []) + [{"ApiKey": []}, {"Bearer": []}]
        op["x-required-scope"] = scope
        when = f" (only when {'AUTH_PROTECT_METRICS' if scope == 'metrics' else 'AUTH_PROTECT_HEALTH'} is set)" \
            if optional else ""
        op["responses"]["401"] = {"description": f"missing or unknown API key{when} (MISSING_API_KEY, "
                                                 "INVALID_API_KEY)", "content": _content("Error")}
        op["responses"]["403"] = {"description": f"the key lacks the scope {scope!r}{when} (FORBIDDEN; "
                                                 "details.required_scope names it)", "content": _content("Error")}
    return op


def build_document(app: web.Application) -> dict:
    paths: dict = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        path = route.resource.canonical
        paths.setdefault(path, {})[route.method.lower()] = _operation(route.method, path, inner(route.handler))
    return {"openapi": "3.0.3",
            "info": {"title": "LLM text-processing API", "version": __version__},
            "paths": dict(sorted(paths.items())),
            "components": {"schemas": SCHEMAS, "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": KEYS_DOC},
                "Bearer": {"type": "http", "scheme": "bearer", "description": "the same keys as X-API-Key"}}}}


async def openapi(request: web.Request) -> web.Response:
    return json_response(build_document(request.app))


def register(app: web.Application, ctx) -> None:
    app.router.add_get("/openapi.json", openapi)
