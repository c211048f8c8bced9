"""The answer to a request aiohttp's HTTP parser rejects, in the service's JSON error shape.

A bad header byte, an over-long line or a broken chunk is refused by aiohttp
itself, before any middleware runs, with a text/plain 400 that quotes the
offending line (an API key with a stray control character included).
`install()` wraps `RequestHandler.handle_error` (aiohttp is pinned in
pyproject.toml; tests/service/test_log.py checks the answer) so that such a
4xx is the usual {error, error_code, message, details} naming only the
reason (a Content-Encoding the parser knows but cannot decode, zstd without
its package, is a 415 UNSUPPORTED_CONTENT_ENCODING).  Everything else, and non-HTTP bytes on the port (BadHttpMethod,
logged at debug by aiohttp), keeps aiohttp's own handling.
"""
from __future__ import annotations

from aiohttp import web_protocol
from aiohttp.http_exceptions import BadHttpMethod, ContentEncodingError, HttpProcessingError

from service.errors import error_response, parse_reason
from service.middleware.compression import REQUEST_ENCODINGS
from service.middleware.errors import new_request_id

_aiohttp_handle_error = web_protocol.RequestHandler.handle_error


def _handle_error(self, request, status: int = 500, exc: BaseException | None = None, message: str | None = None):
    if not isinstance(exc, HttpProcessingError) or isinstance(exc, BadHttpMethod) or not 400 <= status < 500:
        return _aiohttp_handle_error(self, request, status, exc, message)
    self.log_exception("Error handling request from %s", request.remote, exc_info=exc)  # service/log.py shortens it
    if request.writer.output_size > 0:
        raise ConnectionError("Response is sent already, cannot send another response with the error message")
    rid = new_request_id()  # (the request's own X-Request-ID, if any, is in the part the parser refused)
    if isinstance(exc, ContentEncodingError):  # a coding aiohttp knows but cannot decode here (zstd)
        resp = error_response(None, 415, "UNSUPPORTED_CONTENT_ENCODING", "request Content-Encoding is not accepted",
                              {"field": "Content-Encoding", "supported": sorted(REQUEST_ENCODINGS)}, request_id=rid)
    else:
        resp = error_response(None, status, "MALFORMED_REQUEST", f"malformed HTTP request: {parse_reason(exc)}",
                              {"field": "request"}, request_id=rid)
    resp.headers["X-Request-ID"] = rid
    resp.force_close()
    return resp


def install() -> None:
    web_protocol.RequestHandler.handle_error = _handle_error
