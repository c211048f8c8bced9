"""Emergency mode: one atomic config change that trades quality for survival.

On: AI timeouts and retries are capped, the resilience preset becomes the
aggressive one, admission control sheds beyond a small queue, and cache TTLs
shrink.  Only fields that exist in the config store at that moment are
touched (other subsystems' sections are discovered at run time), every value
is clamped to its field's range, and the values replaced are saved in
monitoring.emergency_saved in the same update_many call.

Off: the saved values are written back in one update_many, so the config is
exactly what it was before (fields an operator changed meanwhile included).
Both transitions are recorded in the config history and the monitoring events.
"""
from __future__ import annotations

from exporter.metrics import EMERGENCY_MODE

PRESET_FIELDS = ("preset", "active_preset", "default_preset", "strategy_preset")
TIMEOUT_FIELDS = {"ai": ("timeout_seconds",), "resilience": ("timeout_seconds", "max_timeout_seconds",
                                                             "deadline_seconds")}
RETRY_FIELDS = {"ai": ("max_retries",), "resilience": ("max_retries", "max_attempts")}


def _clamp(f, v):
    if f.min is not None and v < f.min:
        v = f.min
    if f.max is not None and v > f.max:
        v = f.max
    return int(v) if f.type is int else float(v)


def plan(store) -> dict[str, dict]:
    """The changes emergency mode makes to the current config, by section."""
    m = store.get("monitoring")
    sections = store.sections
    out: dict[str, dict] = {}

    def put(sec, field, value):
        if store.get(sec).get(field) != value:
            out.setdefault(sec, {})[field] = value

    for sec, fields in TIMEOUT_FIELDS.items():
        for name in fields:
            f = sections.get(sec) and sections[sec].fields.get(name)
            if f and f.type in (int, float):
                cur = store.get(sec)[name]
                if cur is not None:
                    put(sec, name, _clamp(f, min(cur, m["emergency_ai_timeout_seconds"])))
    for sec, fields in RETRY_FIELDS.items():
        for name in fields:
            f = sections.get(sec) and sections[sec].fields.get(name)
            if f and f.type is int:
                cur = store.get(sec)[name]
                if cur is not None:
                    put(sec, name, _clamp(f, min(cur, m["emergency_max_retries"])))
    if "resilience" in sections:
        for name in PRESET_FIELDS:
            f = sections["resilience"].fields.get(name)
            if f and f.type is str and (f.choices is None or m["emergency_resilience_preset"] in f.choices):
                put("resilience", name, m["emergency_resilience_preset"])
                break
    if "cache" in sections:
        factor = m["emergency_cache_ttl_factor"]
        for name, f in sections["cache"].fields.items():
            if "ttl" not in name.lower() or "stale" in name.lower():
                continue
            cur = store.get("cache")[name]
            if f.type in (int, float) and isinstance(cur, (int, float)) and not isinstance(cur, bool) and cur > 0:
                put("cache", name, _clamp(f, cur * factor))
            elif f.type is dict and isinstance(cur, dict) and cur:
                new = {k: (type(v)(max(1, v * factor)) if isinstance(v, (int, float)) and not isinstance(v, bool)
                           and v > 0 else v) for k, v in cur.items()}
                put("cache", name, new)
    cur_limit = m["max_concurrent_requests"]
    if cur_limit <= 0 or cur_limit > m["emergency_max_concurrent_requests"]:
        put("monitoring", "max_concurrent_requests", m["emergency_max_concurrent_requests"])
    if m["queue_size"] > m["emergency_queue_size"]:
        put("monitoring", "queue_size", m["emergency_queue_size"])
    return out


async def enable(store, reason: str | None, source: str = "emergency-mode:on", **audit) -> tuple[bool, dict, list]:
    m = store.get("monitoring")
    if m["emergency_mode"]:
        return False, m["emergency_saved"], []
    changes = plan(store)
    saved = {sec: {k: store.get(sec)[k] for k in fields} for sec, fields in changes.items()}
    mon = dict(changes.get("monitoring", {}))
    mon.update(emergency_mode=True, emergency_saved=saved)
    changes["monitoring"] = mon
    entries = await store.update_many(changes, source=source + (f" ({reason})" if reason else ""), **audit)
    EMERGENCY_MODE.set(1)
    return True, saved, entries


async def disable(store, source: str = "emergency-mode:off", **audit) -> tuple[bool, dict, list]:
    m = store.get("monitoring")
    if not m["emergency_mode"]:
        return False, {}, []
    saved = m["emergency_saved"] or {}
    restore: dict[str, dict] = {}
    for sec, fields in saved.items():
        if sec not in store.sections or not isinstance(fields, dict):
            continue
        known = {k: v for k, v in fields.items() if k in store.sections[sec].fields}
        if known:
            restore[sec] = known
    mon = dict(restore.get("monitoring", {}))
    mon.update(emergency_mode=False, emergency_saved={})
    restore["monitoring"] = mon
    entries = await store.update_many(restore, source=source, **audit)
    EMERGENCY_MODE.set(0)
    return True, saved, entries


def status(store) -> dict:
    m = store.get("monitoring")
    since = None
    for e in reversed(store.history):
        if e["section"] == "monitoring" and "emergency_mode" in e["changes"]:
            since = e["time"] if m["emergency_mode"] else None
            break
    return {"emergency_mode": m["emergency_mode"], "since": since, "saved": m["emergency_saved"],
            "would_change": plan(store) if not m["emergency_mode"] else None,
            "settings": {k: m[k] for k in m if k.startswith("emergency_") and k not in ("emergency_mode", "emergency_saved")}}
