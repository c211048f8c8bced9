"""Inside security: request id, error rendering, access log (service/accesslog.py).

Every failure leaves as the one JSON error shape.  An unexpected exception is
logged with its traceback and answered 500 with only the request id.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from time import perf_counter_ns

from aiohttp import web
from multidict import istr

from service.accesslog import AccessLog
from service.config.schema import ConfigValidationError
from service.context import KEY_NAME, REQUEST_ID
from service.errors import ApiError, error_response, safe_field
from service.log import request_id_var
from service.middleware.stack import Layer

log = logging.getLogger("service.request")

_HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
               405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
               422: "VALIDATION_ERROR", 429: "RATE_LIMITED", 503: "SERVICE_UNAVAILABLE"}
# what the field of an aiohttp routing error is
_HTTP_DETAILS = {404: lambda r: {"field": "path"},
                 405: lambda r: {"field": "method", "method": r.method}}


# 32 hex digits like uuid4().hex, unique without the 2 us uuid4 costs: a random per-process prefix and a
# 64-bit counter.  Its 13 high hex digits are rendered once every 4,096 ids, its 3 low ones come from a table.
_RID_PREFIX = os.urandom(8).hex()
_LOW = tuple(f"{i:03x}" for i in range(4096))
_rid_blocks = itertools.count(int.from_bytes(os.urandom(2), "big"))  # the high digits: a block of 4,096 ids
_rid = ["", iter(())]  # the current block's prefix and high digits, and the iterator over its low digits


def _next_block() -> None:
    _rid[0] = _RID_PREFIX + next(_rid_blocks).to_bytes(7, "big").hex()[1:]
    _rid[1] = iter(_LOW)


def new_request_id() -> str:
    try:
        return _rid[0] + next(_rid[1])
    except StopIteration:
        _next_block()
        return _rid[0] + next(_rid[1])


REQUEST_ID_HEADER = istr("X-Request-ID")


def _request_id(request: web.Request) -> str:
    rid = request._headers.get(REQUEST_ID_HEADER)  # (aiohttp's attributes: see service/middleware/stack.py)
    if rid and len(rid) <= 128 and rid.isascii() and rid.isprintable() and '"' not in rid and "\\" not in rid:
        return rid  # (echoed in a header and in every log line, the access log's as it is: nothing to escape)
    return new_request_id()


class ErrorsLayer(Layer):
    """The request id (a context variable for every log line), every failure as the one JSON error
    shape, X-Request-ID and the access log line on every answer."""
    name = "errors"

    def __init__(self, access_log: AccessLog, store):
        self.access_log = access_log
        self.store = store
        self.log_access = False  # access log on and INFO enabled: re-read when the logging section changes
        self._on_config("logging", store.get("logging"), {})
        store.subscribe(self._on_config)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section == "logging":
            self.log_access = new["access_log"] and logging.getLevelName(new["level"]) <= logging.INFO
            if new["access_log_shapes"] != self.access_log.max_shapes:
                self.access_log.bound(new["access_log_shapes"])

    def enter(self, request):
        """The request id, also in the request_id context variable for the log lines.  It is not reset on the
        way out here: the request's task (aiohttp's on Python 3.12 and later) or the end of the inline request
        (service/protocol.py, 3.11) leaves it unset for the next request (tests/service/test_protocol.py)."""
        rid = _request_id(request)
        request._state[REQUEST_ID] = rid  # (the request's dict: see service/context.py)
        request_id_var.set(rid)
        return rid, perf_counter_ns()

    def leave(self, request, resp, state):
        rid, start = state
        resp._headers[REQUEST_ID_HEADER] = rid
        if self.log_access:
            self.access_log.add(request._method, request._message.path, resp._status, rid,
                                request._state.get(KEY_NAME), start)

    def fail(self, request, exc, state):
        if not isinstance(exc, Exception):  # CancelledError and the like: nobody to answer
            return None
        try:
            resp = render(request, exc)
        except web.HTTPException:  # (< 400: a redirect, passed on as it is)
            return None
        self.leave(request, resp, state)
        return resp


def render(request: web.Request, exc: Exception) -> web.Response:
    """The JSON error answer of an exception; an HTTPException below 400 is raised again."""
    try:
        raise exc
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
    return resp


def make(ctx):
    if ctx.access_log is None:
        ctx.access_log = AccessLog(max_shapes=ctx.store.get("logging")["access_log_shapes"])
    return ErrorsLayer(ctx.access_log, ctx.store)
