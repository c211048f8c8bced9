"""JSON request bodies decoded under one policy, for every route.

Refused, each with a 4xx in the error shape naming the field:
- bytes that are not valid UTF-8 (or the UTF-16/32 a BOM announces): 400 INVALID_JSON;
  so a lone surrogate cannot arrive as raw bytes;
- nesting deeper than `text.max_json_depth` (objects and arrays): 400 JSON_TOO_DEEP;
- a string (value or member name) holding a lone UTF-16 surrogate (`"\\ud800"`) or NUL
  (`"\\u0000"`): 422 INVALID_STRING;
- NaN, Infinity, -Infinity, a number that overflows a double (1e400) or an integer of more
  than 4,300 digits: 422 INVALID_NUMBER.

The common body pays for none of it: the decoder is built once; the depth is measured
only when the body holds more brackets than the limit (the depth can never exceed their
number), level by level and without paths; the strings are walked only when a regex
finds a `\\u0000` or an unpaired surrogate escape in the text (the only ways NUL or a lone
surrogate gets past a strict UTF-8 decode and the JSON grammar; a surrogate pair, as
ensure_ascii encoders write every emoji, does not match), and the refused numbers are found
by a hook that runs only for float and constant literals.  Locating the field of a refused
number re-decodes the body once, on the error path only.
"""
from __future__ import annotations

import json
import re

from service.errors import ApiError, safe_field

_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
# the escapes that can decode to NUL or a surrogate, scanned left to right: an escaped backslash (2
# characters) and a surrogate pair (12) match as themselves, so only a 6-character match is \u0000 or
# a lone surrogate
_ESCAPES = re.compile(r"\\\\|\\u(?:[dD][89abAB][0-9a-fA-F]{2}(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?"
                      r"|[dD][c-fC-F][0-9a-fA-F]{2}|0000)")
_INF = float("inf")


class _Refused(ValueError):
    pass


def _refuse_constant(name: str):
    raise _Refused(name)


def _finite_float(s: str) -> float:
    v = float(s)
    if v == _INF or v == -_INF:
        raise _Refused(s)
    return v


class _Marker:
    """A refused number, left in place by the locating decoder so its path can be found."""
    __slots__ = ("literal",)

    def __init__(self, literal: str):
        self.literal = literal


def _mark_float(s: str):
    v = float(s)
    return _Marker(s) if v == _INF or v == -_INF else v


def _mark_int(s: str):
    return _Marker(s) if len(s.lstrip("-")) > 4300 else int(s)


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_LOCATOR = json.JSONDecoder(parse_constant=_Marker, parse_float=_mark_float, parse_int=_mark_int)


def _key(path: str, k) -> str:
    return f"{path}.{k}" if path else str(k)


def _walk(value, path: str = ""):
    """(path, node, key?) of every node, iteratively (the body may be deep)."""
    stack = [(value, path, 0)]
    while stack:
        node, p, depth = stack.pop()
        yield p, node, depth
        if type(node) is dict:
            for k, v in node.items():
                yield _key(p, k), k, -1  # the member name itself
                stack.append((v, _key(p, k), depth + 1))
        elif type(node) is list:
            for i, v in enumerate(node):
                stack.append((v, f"{p}[{i}]", depth + 1))


def _depth(value, limit: int) -> int:
    """How deep value nests, counted level by level without paths, up to limit + 1."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level and depth <= limit:
        depth += 1
        level = [c for node in level for c in (node.values() if type(node) is dict else node)
                 if type(c) is dict or type(c) is list]
    return depth


def _too_deep(value, limit: int) -> str | None:
    """The path of the first container nested deeper than limit, or None."""
    if _depth(value, limit) <= limit:
        return None
    stack = [(value, "", 1)]
    while stack:
        node, p, depth = stack.pop()
        if type(node) is dict:
            if depth > limit:
                return p
            stack.extend((v, _key(p, k), depth + 1) for k, v in node.items())
        elif type(node) is list:
            if depth > limit:
                return p
            stack.extend((v, f"{p}[{i}]", depth + 1) for i, v in enumerate(node))
    return None


def _bad_string(value) -> tuple[str, str] | None:
    for path, node, depth in _walk(value):
        if type(node) is str:
            m = _BAD_CHAR.search(node)
            if m is not None:
                what = "NUL" if m.group() == "\x00" else "a lone UTF-16 surrogate"
                return path, f"{'member name' if depth < 0 else 'string'} holds {what} at character {m.start()}"
    return None


def _field(path: str) -> str:
    return safe_field(path or "body")


def _depth_error(path: str, limit: int) -> ApiError:
    return ApiError(400, "JSON_TOO_DEEP", f"JSON body nests deeper than {limit} levels",
                    {"field": _field(path.split(".", 1)[0].split("[", 1)[0] if path else ""), "max_depth": limit})


def _number_error(text: str) -> ApiError:
    try:
        located = _LOCATOR.decode(text)
    except (ValueError, RecursionError):
        located = None
    for path, node, _ in _walk(located) if located is not None else ():
        if type(node) is _Marker:
            lit = node.literal
            shown = lit if len(lit) <= 40 else f"{lit[:20]}…({len(lit)} characters)"
            return ApiError(422, "INVALID_NUMBER", f"{_field(path)}: {shown} is not a finite number in range",
                            {"field": _field(path), "errors": [{"field": _field(path), "message": "not a finite number"}]})
    return ApiError(422, "INVALID_NUMBER", "the body holds a number out of range", field="body")


def decode(raw: bytes, max_depth: int):
    """The decoded body, or an ApiError under the policy above."""
    try:
        text = raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError as e:
        raise ApiError(400, "INVALID_JSON", f"request body is not valid {e.encoding} at byte {e.start}", field="body")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise ApiError(400, "INVALID_JSON", f"request body is not valid JSON: {e.msg}",
                       {"field": "body", "line": e.lineno, "column": e.colno})
    except RecursionError:
        raise _depth_error("", max_depth)
    except ValueError:  # _Refused, or an integer past Python's 4,300-digit conversion limit
        raise _number_error(text)
    if text.count("[") + text.count("{") > max_depth:
        path = _too_deep(value, max_depth)
        if path is not None:
            raise _depth_error(path, max_depth)
    if "\\u" in text and any(m.end() - m.start() == 6 for m in _ESCAPES.finditer(text)):
        bad = _bad_string(value)
        if bad is not None:
            path, message = bad
            raise ApiError(422, "INVALID_STRING", f"{_field(path)}: {message}",
                           {"field": _field(path), "errors": [{"field": _field(path), "message": message}]})
    return value
