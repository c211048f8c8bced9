"""Emergency mode: one atomic config change that trades quality for survival.

On: AI timeouts and retries are capped, the resilience preset becomes the
emergency one, admission control sheds beyond a small queue.  The fields it
changes are named below (CHANGES), each with the monitoring.emergency_*
setting that gives its emergency value; every value is clamped to its
field's range, and the values replaced are saved in monitoring.emergency_saved
in the same update_many call.

Cache TTLs are not rewritten: while monitoring.emergency_mode is on,
service/cache/ttl.py multiplies every TTL by monitoring.emergency_cache_ttl_factor
(once: 3600 s x 0.25 = 900 s).

Off: the saved values are written back in one update_many, so the config is
exactly what it was before (fields an operator changed meanwhile included).
Both transitions are recorded in the config history and the monitoring events.
"""
from __future__ import annotations

from exporter.metrics import EMERGENCY_MODE

CAP, SET, LIMIT = "cap", "set", "limit"
# (section, field, how, monitoring setting): cap = at most the setting; set = the setting;
# limit = the setting when the field is 0 (unlimited) or above it
CHANGES = (
    ("ai", "timeout_seconds", CAP, "emergency_ai_timeout_seconds"),
    ("ai", "max_retries", CAP, "emergency_max_retries"),
    ("resilience", "preset", SET, "emergency_resilience_preset"),
    ("monitoring", "max_concurrent_requests", LIMIT, "emergency_max_concurrent_requests"),
    ("monitoring", "queue_size", CAP, "emergency_queue_size"),
)


def _clamp(f, v):
    if f.min is not None and v < f.min:
        v = f.min
    if f.max is not None and v > f.max:
        v = f.max
    return int(v) if f.type is int else float(v)


def plan(store) -> dict[str, dict]:
    """The changes emergency mode makes to the current config, by section."""
    m = store.get("monitoring")
    out: dict[str, dict] = {}
    for sec, name, how, setting in CHANGES:
        cur, want = store.get(sec)[name], m[setting]
        if how == CAP:
            value = _clamp(store.sections[sec].fields[name], min(cur, want))
        elif how == LIMIT:
            value = want if cur <= 0 or cur > want else cur
        else:
            value = want
        if value != cur:
            out.setdefault(sec, {})[name] = value
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
