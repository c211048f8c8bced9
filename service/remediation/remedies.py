"""The playbook's remedies, run through the same domain code their /internal handlers use.

Each remedy turns an action body into config changes (validated by the store,
so a bad playbook body fails before anything changes), applies them with the
acting `actor` (the config audit and history show `alertmanager:<alertname>`),
and reverts them: the applied step records exactly the fields it changed,
their values before (`previous`) and after (`changes`), and the config version.

A revert restores `previous` only while every one of those fields still holds
the value the action set and no one else has changed it since the step's
version; otherwise it is skipped (a later manual change is never undone).
"""
from __future__ import annotations

import time

from service.config.schema import ConfigValidationError
from service.internal.cache import COMMANDS as CACHE_COMMANDS
from service.monitoring import emergency

ACTOR_PREFIX = "alertmanager:"


class RemedyError(Exception):
    """The action cannot run as written (bad body): reported as outcome `failed`, nothing changed."""


def actor_of(entry: dict) -> str:
    """Who made a config history entry."""
    return str(entry.get("actor") or "")


def _only(body: dict, allowed: tuple[str, ...], remedy: str) -> None:
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise RemedyError(f"{remedy}: unknown field {extra[0]!r}; accepted: {list(allowed)}")


def _validated(store, changes: dict[str, dict]) -> dict[str, dict]:
    try:
        for section, ch in changes.items():
            store.validate(section, ch)
    except ConfigValidationError as e:
        raise RemedyError(str(e))
    return changes


def _diff(store, changes: dict[str, dict]) -> dict[str, dict]:
    """The part of `changes` that differs from the live config (what would really change)."""
    out = {}
    for section, ch in changes.items():
        cur = store.get(section)
        d = {k: v for k, v in ch.items() if cur.get(k) != v}
        if d:
            out[section] = d
    return out


# ---- the config changes each remedy makes -------------------------------------------------------
def _apply_preset(ctx, body: dict) -> dict[str, dict]:
    _only(body, ("preset",), "apply-preset")
    if "preset" not in body:
        raise RemedyError("apply-preset: preset is required")
    return {"resilience": {"preset": body["preset"]}}


def _optimize_memory(ctx, body: dict) -> dict[str, dict]:
    spec = CACHE_COMMANDS["optimize-memory"]
    _only(body, spec["fields"], "optimize-memory")
    if not body:
        raise RemedyError(f"optimize-memory: send one or more of {list(spec['fields'])}")
    return {"cache": dict(body)}  # validated (fields and cross-field rules) by the store, as the handler's


def _throttling(ctx, body: dict) -> dict[str, dict]:
    _only(body, ("max_requests_per_minute",), "enable-throttling")
    if "max_requests_per_minute" not in body:
        raise RemedyError("enable-throttling: max_requests_per_minute is required")
    return {"rate_limit": {"global_limit_per_minute": body["max_requests_per_minute"]}}


def _emergency_plan(ctx, body: dict) -> dict[str, dict]:
    _only(body, (), "emergency-mode")
    if ctx.store.get("monitoring")["emergency_mode"]:
        return {}
    plan = emergency.plan(ctx.store)
    plan.setdefault("monitoring", {})["emergency_mode"] = True
    return plan


PLANS = {
    "resilience/config/apply-preset": _apply_preset,
    "cache/optimize-memory": _optimize_memory,
    "monitoring/enable-throttling": _throttling,
    "monitoring/emergency-mode": _emergency_plan,
}


def plan(ctx, remedy: str, body: dict) -> dict:
    """What the action would do now, without doing it: {changes, previous} or {effect} for a non-config one."""
    if remedy == "cache/emergency-cleanup":
        _only(body, (), "emergency-cleanup")
        cfg = ctx.store.get("cache")
        return {"effect": "evict expired entries, then down to "
                          f"{cfg['emergency_cleanup_target'] * cfg['max_memory_mb']:g} MB",
                "cache": {"entries": len(ctx.cache.l1), "memory_bytes": ctx.cache.l1.bytes},
                "changes": {}, "previous": {}}
    changes = _diff(ctx.store, _validated(ctx.store, PLANS[remedy](ctx, body)))
    previous = {s: {k: ctx.store.get(s).get(k) for k in ch} for s, ch in changes.items()}
    return {"changes": changes, "previous": previous}


def _step(remedy: str, entries: list[dict], store, result: dict | None = None) -> dict:
    return {"remedy": remedy, "time": time.time(),
            "changes": {e["section"]: e["changes"] for e in entries},
            "previous": {e["section"]: e["previous"] for e in entries},
            "version": max([e["version"] for e in entries], default=store.version),
            "result": result or {}}


async def apply(ctx, remedy: str, body: dict, actor: str, request_id: str | None = None,
                remote: str | None = None) -> dict:
    """Run the action as `actor`; the step it returns is what a revert needs."""
    store = ctx.store
    audit = {"actor": actor, "request_id": request_id, "remote": remote, "source": f"remediation:{remedy}"}
    if remedy == "cache/emergency-cleanup":
        plan(ctx, remedy, body)
        return _step(remedy, [], store, await ctx.cache.emergency_cleanup())
    if remedy == "monitoring/emergency-mode":
        _emergency_plan(ctx, body)
        _, _, entries = await emergency.enable(store, None, **audit)
        return _step(remedy, entries, store)
    changes = _validated(store, PLANS[remedy](ctx, body))
    return _step(remedy, await store.update_many(changes, **audit), store)


def later_changes(store, step: dict, actor: str) -> list[str]:
    """Fields of the step someone else changed since (value moved, or another actor's history entry)."""
    out = []
    for section, fields in step["changes"].items():
        if section not in store.sections:
            continue
        cur = store.get(section)
        out += [f"{section}.{k}" for k, v in fields.items() if cur.get(k) != v]
    for e in store.history:
        if e["version"] <= step["version"] or actor_of(e) == actor or e["section"] not in step["changes"]:
            continue
        out += [f"{e['section']}.{k}" for k in e["changes"] if k in step["changes"][e["section"]]]
    return sorted(set(out))


async def revert(ctx, step: dict, actor: str, request_id: str | None = None, remote: str | None = None) -> dict:
    """Restore what the step replaced, unless someone changed those fields since."""
    if not step["changes"]:
        return {"outcome": "reverted", "message": "nothing to revert", "restored": {}}
    store = ctx.store
    conflicts = later_changes(store, step, actor)
    if conflicts:
        return {"outcome": "revert_skipped", "restored": {}, "changed_since": conflicts,
                "message": f"kept: changed since the action by someone else ({', '.join(conflicts)})"}
    audit = {"actor": actor, "request_id": request_id, "remote": remote,
             "source": f"remediation:revert {step['remedy']}"}
    if step["remedy"] == "monitoring/emergency-mode":
        _, _, entries = await emergency.disable(store, **audit)
    else:
        entries = await store.update_many(step["previous"], **audit)
    return {"outcome": "reverted", "restored": {e["section"]: e["changes"] for e in entries},
            "message": "restored the config the action replaced"}


def emergency_set_by_person(store) -> bool:
    """Emergency mode is on and the change that switched it on was not the remediation loop's."""
    if not store.get("monitoring")["emergency_mode"]:
        return False
    for e in reversed(store.history):
        if e["section"] == "monitoring" and e["changes"].get("emergency_mode") is True:
            return not actor_of(e).startswith(ACTOR_PREFIX)
    return True  # on since start-up or beyond the history: assume a person
