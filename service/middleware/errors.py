"""Outermost middleware: request id, error rendering, access log (service/accesslog.py).

Every failure leaves as the one JSON error shape.  An unexpected exception is
logged with its traceback and answered 500 with only the request id.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import time

from aiohttp import web

from service.accesslog import AccessLog
from service.config.schema import ConfigValidationError
from service.errors import ApiError, error_response, safe_field
from service.log import request_id_var

log = logging.getLogger("service.request")

_HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
               405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
               422: "VALIDATION_ERROR", 429: "RATE_LIMITED", 503: "SERVICE_UNAVAILABLE"}
# what the field of an aiohttp routing error is
_HTTP_DETAILS = {404: lambda r: {"field": "path"},
                 405: lambda r: {"field": "method", "method": r.method}}


# 32 hex digits like uuid4().hex, unique without the 2 us uuid4 costs: a random
# per-process prefix and a counter
_RID_PREFIX = os.urandom(8).hex()
_rid_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))


def new_request_id() -> str:
    return f"{_RID_PREFIX}{next(_rid_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def _request_id(request: web.Request) -> str:
    rid = request.headers.get("X-Request-ID")
    if rid and len(rid) <= 128 and rid.isascii() and rid.isprintable():  # (echoed in a header and every log line)
        return rid
    return new_request_id()


def make(ctx):
    store = ctx.store
    if ctx.access_log is None:
        ctx.access_log = AccessLog(max_shapes=store.get("logging")["access_log_shapes"])
    access_log = ctx.access_log
    access_line = access_log.line
    log_access = False  # access log on and INFO enabled: re-read when the logging section changes

    def _on_config(section: str, new: dict, old: dict) -> None:
        nonlocal log_access
        if section == "logging":
            log_access = new["access_log"] and logging.getLevelName(new["level"]) <= logging.INFO
            if new["access_log_shapes"] != access_log.max_shapes:
                access_log.bound(new["access_log_shapes"])

    _on_config("logging", store.get("logging"), {})
    store.subscribe(_on_config)

    @web.middleware
    async def errors_middleware(request: web.Request, handler):
        rid = _request_id(request)
        request["request_id"] = rid
        token = request_id_var.set(rid)
        start = time.perf_counter()
        try:
            try:
                resp = await handler(request)
            except ApiError as e:
                resp = error_response(request, e.status, e.error_code, e.message, e.details, e.headers)
                if e.close:
                    resp.force_close()
            except ConfigValidationError as e:
                errors = [{**x, "field": safe_field(x["field"])} for x in e.errors]
                fields = list(dict.fromkeys(x["field"] for x in errors))
                resp = error_response(request, 422, "VALIDATION_ERROR",
                                      "; ".join(f"{e.section}.{x['field']}: {x['message']}" for x in errors),
                                      {"section": e.section, "field": errors[0]["field"], "fields": fields,
                                       "errors": errors})
            except web.HTTPException as e:
                if e.status < 400:
                    raise
                headers = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")}
                resp = error_response(request, e.status, _HTTP_CODES.get(e.status, "HTTP_ERROR"),
                                      e.reason if e.text is None or e.text.startswith(str(e.status)) else e.text,
                                      _HTTP_DETAILS[e.status](request) if e.status in _HTTP_DETAILS else None, headers)
            except json.JSONDecodeError as e:
                resp = error_response(request, 400, "INVALID_JSON", f"request body is not valid JSON: {e.msg}",
                                      {"field": "body", "line": e.lineno, "column": e.colno})
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.path)
                resp = error_response(request, 500, "INTERNAL_ERROR",
                                      "internal error; quote the request_id when reporting it")
            resp.headers["X-Request-ID"] = rid
            if log_access:
                access_line(request.method, request.path, resp.status, rid, time.perf_counter() - start,
                            request.get("key_name"))
            return resp
        finally:
            request_id_var.reset(token)

    return errors_middleware
