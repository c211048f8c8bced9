"""TTL policy: one table per operation, adaptive TTL for popular keys.

* operation TTL = ttl_by_operation[op], else base_ttl_seconds;
* a popular key (hits >= popularity_threshold) with adaptive_ttl on lives
  operation TTL x popularity_factor, capped at max_ttl_seconds (never less
  than its operation TTL);
* in emergency mode (monitoring.emergency_mode) TTLs are multiplied by
  monitoring.emergency_cache_ttl_factor.
"""
from __future__ import annotations


def _emergency_factor(mon: dict | None) -> float:
    if mon and mon.get("emergency_mode"):
        return float(mon.get("emergency_cache_ttl_factor", 1.0))
    return 1.0


def operation_ttl(op: str, cfg: dict, mon: dict | None = None) -> float:
    base = cfg["ttl_by_operation"].get(op, cfg["base_ttl_seconds"])
    return max(1.0, base * _emergency_factor(mon))


def popular_ttl(op: str, cfg: dict, mon: dict | None = None) -> float:
    base = cfg["ttl_by_operation"].get(op, cfg["base_ttl_seconds"])
    if cfg["adaptive_ttl"]:
        base = max(base, min(base * cfg["popularity_factor"], cfg["max_ttl_seconds"]))
    return max(1.0, base * _emergency_factor(mon))


def table(cfg: dict, ops, mon: dict | None = None) -> dict:
    return {op: {"ttl_seconds": operation_ttl(op, cfg, mon), "popular_ttl_seconds": popular_ttl(op, cfg, mon)}
            for op in ops}
