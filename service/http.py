"""Small request/response helpers shared by every handler."""
from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from service import jsonbody
from service.answer import Answer
from service.context import CTX
from service.errors import ApiError, parse_reason, safe_field


async def read_request(request: web.Request, chunk_size: int | None = None, counts: dict | None = None) -> bytes:
    """request.read(), with the errors of a body that cannot be read to its end answered
    in the error shape (and the connection closed): a compressed body that does not
    decode (400 INVALID_CONTENT_ENCODING), a broken chunk or a body shorter than its
    Content-Length (400 MALFORMED_REQUEST), a client gone before its body arrived.

    With chunk_size, the body is read that many bytes at a time (counts["reads"] counts
    the reads) and refused (413, as read() does) once it passes the request's read cap.
    A body that has not arrived in full within request_size.body_read_timeout_seconds
    gets 408 REQUEST_TIMEOUT (a client that stalls mid-body holds nothing for long)."""
    timeout = request.app[CTX].store.get("request_size")["body_read_timeout_seconds"]
    try:
        if chunk_size is not None:
            return await asyncio.wait_for(_read_in_chunks(request, chunk_size, counts), timeout)
        return await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        request.content.feed_eof()
        raise ApiError(408, "REQUEST_TIMEOUT", f"the request body did not arrive within {timeout:g} s",
                       {"field": "body"}, close=True) from None
    except (RequestPayloadError, HttpProcessingError) as e:  # the parser's error, as the request payload raises it
        cause = e.__cause__ if isinstance(e, RequestPayloadError) else e
        request.content.feed_eof()  # the rest is not read: aiohttp must not linger reading it (it would raise again)
        if isinstance(cause, ContentEncodingError):
            enc = safe_field(request.headers.get("Content-Encoding", ""), 20)
            raise ApiError(400, "INVALID_CONTENT_ENCODING",
                           f"the request body does not decode as Content-Encoding {enc!r}",
                           {"field": "Content-Encoding"}, close=True)
        reason = parse_reason(cause) if isinstance(cause, HttpProcessingError) else "unreadable body"
        raise ApiError(400, "MALFORMED_REQUEST", f"malformed request body: {reason}", {"field": "body"}, close=True)
    except ConnectionResetError:
        raise ApiError(400, "INCOMPLETE_REQUEST", "the connection closed before the request body arrived",
                       {"field": "body"}, close=True)


async def _read_in_chunks(request: web.Request, chunk_size: int, counts: dict | None) -> bytes:
    if request._read_bytes is not None:
        return request._read_bytes
    body = bytearray()
    limit = request._client_max_size
    while chunk := await request.content.read(chunk_size):
        if counts is not None:
            counts["reads"] = counts.get("reads", 0) + 1
        body += chunk
        if limit and len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    request._read_bytes = bytes(body)  # what read()/json() and the handler see
    return request._read_bytes


def _take(content) -> bytes:
    """content.read_nowait() of a body whose end has arrived in one piece: the piece, without the parser's
    resume that read_nowait() runs after every read (a data_received(b"") and the transport's
    resume_reading, ~3 k instructions), which a body that never paused reading does not need.  Anything
    else (paused, several pieces, chunked, an empty payload) goes through read_nowait()."""
    if type(content) is not StreamReader:
        return content.read_nowait()
    buf = content._buffer
    if len(buf) != 1 or content._buffer_offset or content._http_chunk_splits or content._protocol._reading_paused:
        return content.read_nowait()
    raw = buf.popleft()
    content._size -= len(raw)
    content._cursor += len(raw)
    return raw


async def read_body(request: web.Request) -> bytes:
    """request.read(), without its two awaits when the whole body has already
    arrived (a small JSON body nearly always has: the parser saw its end).

    The read cap the request-size middleware sets (`_client_max_size`) is
    checked the way read() checks it, so a chunked or decompressed body over
    the limit still gets its 413.
    """
    content = request._payload  # (what the `content` property returns)
    if type(content) is StreamReader:  # (is_eof() and exception(), read directly)
        whole = content._eof and content._exception is None
    else:
        whole = content.is_eof() and content.exception() is None
    if request._read_bytes is not None or not whole:
        return await read_request(request)
    raw = _take(content)
    limit = request._client_max_size
    if limit and len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(limit, len(raw))
    request._read_bytes = raw  # later read()/json() calls and the size middleware see it
    return raw


async def read_json(request: web.Request, allow_empty: bool = False):
    """Read and decode the JSON body; 415 for a non-JSON content type, 400 for malformed JSON.

    With allow_empty, an absent body reads as {} (spec commands POST with no body).
    """
    return decode_json(request, await read_body(request), allow_empty)


def decode_json(request: web.Request, raw: bytes, allow_empty: bool = False):
    """Decode a body already read (see read_json), under the policy of service/jsonbody.py."""
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "EMPTY_BODY", "a JSON request body is required", field="body")
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", "text/plain", "") and not ctype.endswith("+json"):
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type must be application/json, got {safe_field(ctype, 64)}",
                       field="Content-Type")
    return jsonbody.decode(raw, request.app[CTX].store.get("text")["max_json_depth"])


def only(body: dict, allowed) -> None:
    """422 naming every field of a request body that is not one of allowed (details.field: the first)."""
    extra = [k for k in body if k not in allowed]
    if extra:
        accepted = f"accepted: {', '.join(allowed)}" if allowed else "this command takes no fields"
        raise ApiError(422, "VALIDATION_ERROR", f"{', '.join(map(str, extra))}: unknown field; {accepted}",
                       {"field": extra[0], "fields": extra,
                        "errors": [{"field": k, "message": f"unknown field; {accepted}"} for k in extra]})


async def read_object(request: web.Request, allow_empty: bool = True) -> dict:
    body = await read_json(request, allow_empty=allow_empty)
    if not isinstance(body, dict):
        raise ApiError(422, "VALIDATION_ERROR", "request body must be a JSON object", field="body")
    return body


def json_response(data, status: int = 200, headers: dict | None = None) -> web.Response:
    return Answer(json.dumps(data, default=str).encode(), status, headers)


def query_number(request: web.Request, name: str, default: float, lo: float, hi: float, integer: bool = False):
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        v = int(raw) if integer else float(raw)
    except ValueError:
        raise ApiError(422, "VALIDATION_ERROR", f"{name} must be a {'whole ' if integer else ''}number",
                       field=name)
    if not lo <= v <= hi:
        raise ApiError(422, "VALIDATION_ERROR", f"{name} must be between {lo} and {hi}", field=name)
    return v
