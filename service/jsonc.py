"""JSON on the uncached path through the standard library's C scanner and encoder, each made once.

`json.loads(s)` runs three Python functions around the C scanner (loads, decode, raw_decode) and
`JSONEncoder.encode` two around a C encoder it builds on every call; an uncached request decodes twice
(the upstream's body, then the model's JSON answer in it) and encodes twice (the prompt, the answer).
These do the same with one Python call each: `loads` accepts and refuses exactly what `json.loads`
does for a str (whitespace around the value; ValueError, as json.JSONDecodeError is one, otherwise),
`dumps_compact` gives what `json.dumps(doc, separators=(",", ":"))` gives (ASCII only, NaN allowed, no
circular check: for documents the service builds itself), and `quote` what `json.dumps(a_str)` gives.
"""
from __future__ import annotations

import json
from json.decoder import JSONDecoder
from json.encoder import c_make_encoder, encode_basestring_ascii

quote = encode_basestring_ascii  # json.dumps(s) for a str s

_scan = JSONDecoder().scan_once
_SPACE = " \t\n\r"


def loads(s: str):
    """json.loads(s) for a str."""
    if not s or s[0] in _SPACE or s[-1] in _SPACE:  # (the scanner itself starts at a value)
        return json.loads(s)
    try:
        obj, end = _scan(s, 0)
    except StopIteration as e:
        raise json.JSONDecodeError("Expecting value", s, e.value) from None
    if end != len(s):
        raise json.JSONDecodeError("Extra data", s, end)
    return obj


def _default(o):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


_chunks = c_make_encoder(None, _default, encode_basestring_ascii, None, ":", ",", False, False, True) \
    if c_make_encoder is not None else None
_compact = json.JSONEncoder(separators=(",", ":")).encode


def dumps_compact(doc) -> str:
    """json.dumps(doc, separators=(",", ":")) for a dict or list the service built (no cycles)."""
    if _chunks is None:  # (a Python without the C accelerator)
        return _compact(doc)
    return "".join(_chunks(doc, 0))
