"""Measured time spans by name, for /internal/monitoring/bottlenecks.

Subsystems call `record("cache.lookup", seconds)` around the work they do; the
monitoring side reads `snapshot()`.  Recording is a dict lookup and three
additions, cheap enough for the hot path.
"""
from __future__ import annotations

_spans: dict[str, list] = {}  # name -> [count, total_seconds, max_seconds]


def record(name: str, seconds: float) -> None:
    s = _spans.get(name)
    if s is None:
        _spans[name] = [1, seconds, seconds]
        return
    s[0] += 1
    s[1] += seconds
    if seconds > s[2]:
        s[2] = seconds


def cell(name: str) -> list:
    """`name`'s [count, total_seconds, max_seconds], for a hot path to add to in place (reset() keeps it)."""
    s = _spans.get(name)
    if s is None:
        s = _spans[name] = [0, 0.0, 0.0]
    return s


def snapshot() -> dict[str, dict]:
    return {name: {"count": c, "total_seconds": round(t, 6), "avg_ms": round(t / c * 1000, 4) if c else 0.0,
                   "max_ms": round(m * 1000, 4)}
            for name, (c, t, m) in _spans.items()}


def reset() -> None:
    for s in _spans.values():  # (zeroed in place: cells handed out stay the spans' own)
        s[0], s[1], s[2] = 0, 0.0, 0.0
