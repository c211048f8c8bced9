"""Small request/response helpers shared by every handler."""
from __future__ import annotations

import json

from aiohttp import web

from service.errors import ApiError


async def read_body(request: web.Request) -> bytes:
    """request.read(), without its two awaits when the whole body has already
    arrived (a small JSON body nearly always has: the parser saw its end).

    The read cap the request-size middleware sets (`_client_max_size`) is
    checked the way read() checks it, so a chunked or decompressed body over
    the limit still gets its 413.
    """
    content = request.content
    if request._read_bytes is not None or not content.is_eof() or content.exception() is not None:
        return await request.read()
    raw = content.read_nowait()
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
    """Decode a body already read (see read_json)."""
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "EMPTY_BODY", "a JSON request body is required", field="body")
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", "text/plain", "") and not ctype.endswith("+json"):
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type must be application/json, got {ctype}",
                       field="Content-Type")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "INVALID_JSON", f"request body is not valid JSON: {e}", field="body")


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
    return web.Response(body=json.dumps(data, default=str).encode(), status=status,
                        content_type="application/json", headers=headers)


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
