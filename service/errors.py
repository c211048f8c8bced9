"""One JSON error shape for every failure: {error, error_code, message, details, request_id}."""
from __future__ import annotations

import json

from aiohttp import web
from service.answer import Answer
from service.context import REQUEST_ID

REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable", 504: "Gateway Timeout"}


MAX_FIELD = 120  # longest field name (or echoed value) an error answer quotes


def safe_field(name: str, limit: int = MAX_FIELD) -> str:
    """A field name (or a client's value) fit to quote in an answer and a log line: printable
    ASCII (anything else backslash-escaped, so a lone surrogate or NUL cannot break an
    encoder) and at most `limit` characters; an empty name is shown as `""`."""
    if not name:
        return '""'
    if not (name.isascii() and name.isprintable()):
        name = name.encode("ascii", "backslashreplace").decode("ascii")
        if not name.isprintable():
            name = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in name)
    return name if len(name) <= limit else f"{name[:limit]}…"


def drop_tracebacks(exc: BaseException | None) -> None:
    """Cut the tracebacks of a handled exception and of the ones it chains (__context__, __cause__).
    A traceback holds the frames the exception passed through, and a frame that holds the exception
    (a handler that re-raises it, a local kept for later) closes a reference cycle: everything those
    frames reach (a request, its response, a client connection) then waits for the garbage collector.
    Cut, it is freed as soon as the last reference goes."""
    while exc is not None:
        exc.__traceback__ = None
        exc = exc.__context__ if exc.__context__ is not None else exc.__cause__


class ApiError(Exception):
    """Raise anywhere in request handling; the error middleware renders it.

    `close`: the connection is closed after the answer (a body that could not be read to its end).
    """

    def __init__(self, status: int, error_code: str, message: str, details: dict | None = None,
                 field: str | None = None, headers: dict | None = None, close: bool = False):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = dict(details or {})
        if field is not None:
            self.details.setdefault("field", field)
        f = self.details.get("field")
        if isinstance(f, str):
            self.details["field"] = safe_field(f)  # unchanged when already printable ASCII and short
        if f is not None:  # every offending field; "field" is the first
            self.details["fields"] = [safe_field(x) if isinstance(x, str) else x
                                      for x in self.details.get("fields") or [f]]
        self.headers = headers or {}
        self.close = close


def error_response(request: web.Request | None, status: int, error_code: str, message: str,
                   details: dict | None = None, headers: dict | None = None,
                   request_id: str | None = None) -> web.Response:
    rid = request.get(REQUEST_ID) if request is not None else request_id
    body = {"error": REASONS.get(status, "Error"), "error_code": error_code, "message": message,
            "details": details or {}, "request_id": rid}
    return Answer(json.dumps(body).encode(), status, headers)


def validation_error(field: str, message: str, code: str = "VALIDATION_ERROR") -> ApiError:
    field = safe_field(field)
    return ApiError(422, code, f"{field}: {message}", {"field": field, "errors": [{"field": field, "message": message}]})


def parse_reason(exc) -> str:
    """The reason of an aiohttp HTTP parser error, without the bytes it quotes
    (its message goes on with the offending line, which may hold a key)."""
    line = (exc.message or "").split("\n", 1)[0]
    for quote in (": b'", ': b"'):  # "Got more than 8190 bytes when reading: b'X-API-Key: ...'"
        line = line.split(quote, 1)[0]
    return line.rstrip(":. ").strip() or type(exc).__name__
