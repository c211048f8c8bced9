"""Stored value format.

A value is the ready-to-send JSON body prefix, zlib-compressed when it is at
least the compression threshold and compression actually shrinks it.  In
Redis a value travels with a one-line JSON header:

    {"op":"summarize","st":1732630000.1,"ttl":3600,"exp":1732633600.1,"z":0,"u":[op,model,tokens,usd]}\\n<value>

so another process can tell fresh from stale and whether to inflate it, and what the original call
spent ("u", the Usage a hit saves; absent when unknown).
"""
from __future__ import annotations

import json
import zlib


def pack(value: bytes, threshold: int, level: int) -> tuple[bytes, bool]:
    if len(value) >= threshold and len(value) > 64:
        z = zlib.compress(value, level)
        if len(z) < len(value):
            return z, True
    return value, False


def unpack(stored: bytes, compressed: bool) -> bytes:
    return zlib.decompress(stored) if compressed else stored


class Answer(bytes):
    """A computed body prefix with the Usage its AI call spent (kept with the cache entry)."""
    usage = None


def answer(prefix: bytes, usage) -> Answer:
    a = Answer(prefix)
    a.usage = usage
    return a


def to_blob(op: str, stored_at: float, ttl: float, expires_at: float, stored: bytes, compressed: bool,
            usage=None) -> bytes:
    meta = {"op": op, "st": round(stored_at, 3), "ttl": round(ttl, 3), "exp": round(expires_at, 3),
            "z": 1 if compressed else 0}
    if usage is not None:
        meta["u"] = list(usage)
    return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + stored


def usage_of(meta: dict):
    """The Usage tuple of a blob header, or None."""
    u = meta.get("u")
    if isinstance(u, list) and len(u) == 4 and all(isinstance(x, str) for x in u[:2]) \
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in u[2:]):
        return (u[0], u[1], u[2], float(u[3]))
    return None


def from_blob(blob: bytes) -> tuple[dict, bytes]:
    """-> (header, stored); ValueError for anything that is not a cache value."""
    i = blob.find(b"\n")
    if i <= 0:
        raise ValueError("no header")
    meta = json.loads(blob[:i])
    if not isinstance(meta, dict) or not isinstance(meta.get("exp"), (int, float)):
        raise ValueError("bad header")
    meta["z"] = bool(meta.get("z"))
    return meta, blob[i + 1:]
