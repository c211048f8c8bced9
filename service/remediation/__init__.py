"""The closed loop: Alertmanager notifications run the playbook's remedies, within the operator's limits.

`Remediation` owns the loop's state (service/remediation/state.py: Redis when
REDIS_URL is set, else this process), reads the `remediation` config section
(kill switch `enabled`, global hourly cap, one mode per playbook entry) and
records `llmapi_remediation_actions_total` and `llmapi_remediation_active`.

A firing alert that matches an entry, in order:
  kill switch off -> `disabled`; mode off -> `off`;
  seen before (fingerprint + startsAt + mode claimed, SET NX) -> `duplicate`;
  emergency mode switched on by a person -> `emergency_by_person`;
  dry_run -> `dry_run` (the answer says what would change; nothing does);
  enforce -> cooldown, entry cap, global cap (`cooldown`, `entry_cap`,
  `global_cap`) -> the remedy runs as actor `alertmanager:<alertname>` ->
  `applied` (or `failed`), and an active record holds what to revert.
Its resolve reverts (`reverted`, or `revert_skipped` when someone changed
those fields since) and counts the action `effective`.  A background check
every `check_interval_seconds` verifies actions `verify_after_seconds` old
(KPI still bad -> `ineffective`, and with `escalate` the entry's next action
runs, `escalated`) and reverts actions older than `max_applied_seconds`
(`expired`).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

from exporter.metrics import REMEDIATION_ACTIONS, REMEDIATION_ACTIVE
from exporter.playbook import BY_NAME, CAP_OUTCOMES, PLAYBOOK, Entry
from redis.exceptions import RedisError

from service.background import cancel_and_wait
from service.remediation import remedies
from service.remediation.remedies import RemedyError
from service.remediation.state import MemoryState, RedisState

log = logging.getLogger("service.remediation")

SECTION = "remediation"
SKIPS = ("cooldown", "entry_cap", "global_cap", "emergency_by_person")


def actor(alertname: str) -> str:
    return f"{remedies.ACTOR_PREFIX}{alertname}"


def match(labels: dict) -> Entry | None:
    return next((e for e in PLAYBOOK if e.matches(labels)), None)


class Remediation:
    def __init__(self, ctx):
        self.ctx = ctx
        self.store = ctx.store
        self.state = RedisState(ctx.redis) if ctx.redis is not None else MemoryState()
        self.kpi_check = self._kpi_recovered  # (kpi key) -> (recovered, detail); tests replace it
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        for e in PLAYBOOK:
            REMEDIATION_ACTIVE.labels(entry=e.name).set(0)
            for a in e.actions:  # the series alerts/remediation.py watches exist from 0: the first increase counts
                for outcome in ("ineffective", *CAP_OUTCOMES):
                    REMEDIATION_ACTIONS.labels(entry=e.name, action=a.remedy, mode="enforce", outcome=outcome)

    @property
    def cfg(self) -> dict:
        return self.store.get(SECTION)

    def mode(self, entry: Entry) -> str:
        return self.cfg[entry.mode_field]

    # ---- the webhook ---------------------------------------------------------------------------
    async def handle(self, payload: dict, request_id: str | None = None, remote: str | None = None) -> list[dict]:
        """Act on a parsed webhook payload (service/remediation/payload.py); one result per alert.

        request_id and remote (the webhook request's) go into the config audit with the actor."""
        audit = {"request_id": request_id, "remote": remote}
        out = []
        for alert in payload["alerts"]:
            entry = match(alert["labels"])
            base = {"alertname": alert["labels"]["alertname"], "fingerprint": alert["fingerprint"],
                    "status": alert["status"]}
            if entry is None:
                out.append({**base, "entry": None, "outcome": "ignored",
                            "message": "no playbook entry for this alert: acknowledged, nothing done"})
                continue
            async with self._lock:
                if alert["status"] == "firing":
                    res = await self.fire(entry, alert, audit)
                else:
                    res = await self.resolve(entry, alert, audit)
            out.append({**base, "entry": entry.name, **res})
        return out

    async def fire(self, entry: Entry, alert: dict, audit: dict | None = None) -> dict:
        cfg, mode = self.cfg, self.mode(entry)
        action = entry.actions[0]
        who = actor(alert["labels"]["alertname"])
        base = {"mode": mode, "action": action.describe(), "actor": who}
        if not cfg["enabled"]:
            return await self._outcome(entry, action.remedy, mode, "disabled", base,
                                       "remediation.enabled is false (kill switch): nothing done", alert)
        if mode == "off":
            return await self._outcome(entry, action.remedy, mode, "off", base,
                                       f"remediation.{entry.mode_field} is off: nothing done", alert, record=False)
        claim = f"fp:{alert['fingerprint']}:{alert['startsAt']}:{mode}"
        if not await self.state.claim(claim, cfg["dedupe_ttl_seconds"]):
            return await self._outcome(entry, action.remedy, mode, "duplicate", base,
                                       "this firing alert was handled already", alert, record=False)
        now = time.time()
        if remedies.emergency_set_by_person(self.store):
            await self.state.release(claim)
            return await self._outcome(entry, action.remedy, mode, "emergency_by_person", base,
                                       "emergency mode was switched on by a person: no automatic action", alert)
        try:
            planned = remedies.plan(self.ctx, action.remedy, action.body)
        except RemedyError as e:
            return await self._outcome(entry, action.remedy, mode, "failed", base, str(e), alert)
        if mode == "dry_run":
            skip = await self.state.admit(entry.name, now, entry.cooldown_seconds, entry.max_runs_per_hour,
                                          cfg["max_actions_per_hour"], consume=False)
            await self.state.put(self._key(entry, alert), self._record(entry, alert, who, now, [], dry_run=True))
            msg = (f"dry run: would run {action.describe()}" +
                   (f", but it would be skipped now ({skip})" if skip else ""))
            return await self._outcome(entry, action.remedy, mode, "dry_run", {**base, "would_change": planned,
                                                                               "would_be_skipped": skip or None},
                                       msg, alert)
        skip = await self.state.admit(entry.name, now, entry.cooldown_seconds, entry.max_runs_per_hour,
                                      cfg["max_actions_per_hour"], consume=True)
        if skip:
            await self.state.release(claim)  # a later repeat of the alert may act once the limit allows
            return await self._outcome(entry, action.remedy, mode, skip, base, _SKIP_MESSAGES[skip], alert)
        try:
            step = await remedies.apply(self.ctx, action.remedy, action.body, who, **(audit or {}))
        except (RedisError, OSError):
            raise  # the shared state is away: the webhook answers 503 and Alertmanager retries
        except Exception as e:  # noqa: BLE001 - the answer reports it (a bad body, config not persisted, ...)
            log.warning("remediation: %s failed: %s", action.describe(), e)
            await self.state.release(claim)  # a repeat of the alert may try again
            return await self._outcome(entry, action.remedy, mode, "failed", base, f"failed: {e}", alert)
        await self.state.put(self._key(entry, alert), self._record(entry, alert, who, now, [step]))
        await self._refresh_active()
        return await self._outcome(entry, action.remedy, mode, "applied",
                                   {**base, "changes": step["changes"], "previous": step["previous"],
                                    "result": step["result"], "config_version": self.store.version},
                                   f"applied {action.describe()}", alert)

    async def resolve(self, entry: Entry, alert: dict, audit: dict | None = None) -> dict:
        who = actor(alert["labels"]["alertname"])
        mode = self.mode(entry)
        base = {"mode": mode, "action": entry.actions[0].describe(), "actor": who}
        if not await self.state.claim(f"rs:{alert['fingerprint']}:{alert['startsAt']}", self.cfg["dedupe_ttl_seconds"]):
            return {**base, "outcome": "duplicate", "message": "this resolve was handled already"}
        rec = await self.state.pop(self._key(entry, alert))
        if rec is None:
            return {**base, "outcome": "nothing_to_revert", "message": "no action of this alert is active"}
        if rec.get("dry_run"):
            return await self._outcome(entry, entry.actions[0].remedy, "dry_run", "dry_run",
                                       {**base, "mode": "dry_run"}, "dry run: would revert (nothing was applied)",
                                       alert)
        if not rec["verified"]:
            await self._count(entry, rec["steps"][-1]["remedy"], rec["mode"], "effective")
        if not entry.revert_on_resolve:
            await self._refresh_active()
            return {**base, "outcome": "kept", "message": "resolved; this entry does not revert on resolve"}
        return await self._revert(entry, rec, "resolved", alert, audit)

    async def _revert(self, entry: Entry, rec: dict, why: str, alert: dict | None = None,
                      audit: dict | None = None) -> dict:
        results = []
        outcome = "reverted"
        for step in reversed(rec["steps"]):
            try:
                r = await remedies.revert(self.ctx, step, rec["actor"], **(audit or {}))
            except Exception as e:  # noqa: BLE001
                log.warning("remediation: revert of %s failed: %s", step["remedy"], e)
                r = {"outcome": "revert_failed", "message": f"revert failed: {e}", "restored": {}}
            results.append({"remedy": step["remedy"], **r})
            if r["outcome"] != "reverted":
                outcome = r["outcome"]
        await self._refresh_active()
        remedy = rec["steps"][-1]["remedy"] if rec["steps"] else entry.actions[0].remedy
        msg = "; ".join(f"{r['remedy']}: {r['message']}" for r in results)
        return await self._outcome(entry, remedy, rec["mode"], outcome,
                                   {"mode": rec["mode"], "actor": rec["actor"], "why": why, "reverts": results,
                                    "applied_at": rec["applied_at"], "config_version": self.store.version},
                                   f"{why}: {msg}", alert or {"fingerprint": rec["fingerprint"],
                                                              "labels": {"alertname": rec["alertname"]}})

    # ---- operator ------------------------------------------------------------------------------
    async def dry_run_now(self, entry: Entry) -> dict:
        action = entry.actions[0]
        try:
            planned = remedies.plan(self.ctx, action.remedy, action.body)
        except RemedyError as e:
            return {"entry": entry.name, "action": action.describe(), "outcome": "failed", "message": str(e)}
        skip = await self.state.admit(entry.name, time.time(), entry.cooldown_seconds, entry.max_runs_per_hour,
                                      self.cfg["max_actions_per_hour"], consume=False)
        blocked = ("disabled" if not self.cfg["enabled"] else
                   "emergency_by_person" if remedies.emergency_set_by_person(self.store) else skip or None)
        return {"entry": entry.name, "mode": self.mode(entry), "action": action.describe(), "outcome": "dry_run",
                "would_change": planned, "would_be_skipped": blocked,
                "message": f"dry run: would run {action.describe()}" + (f" (now skipped: {blocked})" if blocked else "")}

    async def status(self) -> dict:
        now = time.time()
        counts = await self.state.counts(now)
        active = await self.state.all_active()
        cfg = self.cfg
        entries = []
        for e in PLAYBOOK:
            last = counts["last_run"].get(e.name)
            entries.append({
                "name": e.name, "mode": cfg[e.mode_field], "summary": e.summary,
                "trigger": e.label_matchers(), "actions": [a.describe() for a in e.actions], "kpi": e.kpi,
                "cooldown_seconds": e.cooldown_seconds, "max_runs_per_hour": e.max_runs_per_hour,
                "revert_on_resolve": e.revert_on_resolve, "max_applied_seconds": e.max_applied_seconds,
                "verify_after_seconds": e.verify_after_seconds, "escalate": e.escalate,
                "runs_last_hour": counts["per_entry"].get(e.name, 0), "last_run": last,
                "cooldown_remaining_seconds": max(0.0, round(last + e.cooldown_seconds - now, 1)) if last else 0.0,
                "active": sum(1 for r in active.values() if r["entry"] == e.name and not r.get("dry_run")),
            })
        return {"enabled": cfg["enabled"], "max_actions_per_hour": cfg["max_actions_per_hour"],
                "actions_last_hour": counts["total"], "state": "redis" if self.state.shared else "process",
                "emergency_mode_by_person": remedies.emergency_set_by_person(self.store),
                "entries": entries,
                "pending_reverts": sorted(active.values(), key=lambda r: r["applied_at"]),
                "last_runs": await self.state.history(20)}

    async def history(self, limit: int) -> list[dict]:
        return await self.state.history(limit)

    # ---- verification and expiry ------------------------------------------------------------------
    async def check(self, now: float | None = None) -> None:
        """Verify actions whose window has passed; revert those applied for too long."""
        now = time.time() if now is None else now
        for key, rec in (await self.state.all_active()).items():
            entry = BY_NAME.get(rec["entry"])
            if entry is None:
                await self.state.pop(key)
                continue
            if now >= rec["expires_at"]:
                if await self.state.pop(key) is not None:
                    async with self._lock:
                        if rec.get("dry_run"):
                            continue
                        await self._count(entry, rec["steps"][-1]["remedy"], rec["mode"], "expired")
                        await self._revert(entry, rec, f"applied longer than {entry.max_applied_seconds:g}s")
                continue
            if rec.get("dry_run") or rec["verified"] or now < rec["verify_at"]:
                continue
            if not await self.state.claim(f"verify:{rec['id']}:{len(rec['steps'])}", entry.verify_after_seconds):
                continue
            async with self._lock:
                await self._verify(key, entry, rec, now)
        await self._refresh_active()

    async def _verify(self, key: str, entry: Entry, rec: dict, now: float) -> None:
        step = rec["steps"][-1]
        recovered, detail = self.kpi_check(entry.kpi)
        if recovered:
            rec["verified"] = True
            await self.state.update(key, rec)
            await self._count(entry, step["remedy"], rec["mode"], "effective")
            await self._record_history(entry, step["remedy"], rec["mode"], "effective", detail, rec)
            return
        await self._count(entry, step["remedy"], rec["mode"], "ineffective")
        await self._record_history(entry, step["remedy"], rec["mode"], "ineffective", detail, rec)
        nxt = len(rec["steps"])
        if not entry.escalate or nxt >= len(entry.actions):
            rec["verified"] = True  # nothing more to try; stays until resolve or expiry
            await self.state.update(key, rec)
            return
        action = entry.actions[nxt]
        skip = await self.state.admit(entry.name, now, 0.0, entry.max_runs_per_hour,
                                      self.cfg["max_actions_per_hour"], consume=True)
        if skip or not self.cfg["enabled"] or self.cfg[entry.mode_field] != "enforce":
            why = skip or "not enforced any more"
            rec["verified"] = True
            await self.state.update(key, rec)
            await self._count(entry, action.remedy, rec["mode"], skip or "off")
            await self._record_history(entry, action.remedy, rec["mode"], skip or "off",
                                       f"escalation to {action.describe()} not run: {why}", rec)
            return
        try:
            new = await remedies.apply(self.ctx, action.remedy, action.body, rec["actor"])
        except Exception as e:  # noqa: BLE001
            await self._count(entry, action.remedy, rec["mode"], "failed")
            await self._record_history(entry, action.remedy, rec["mode"], "failed", f"escalation failed: {e}", rec)
            rec["verified"] = True
            await self.state.update(key, rec)
            return
        rec["steps"].append(new)
        rec["verify_at"] = now + entry.verify_after_seconds
        await self.state.update(key, rec)
        await self._count(entry, action.remedy, rec["mode"], "escalated")
        await self._record_history(entry, action.remedy, rec["mode"], "escalated",
                                   f"escalated to {action.describe()}", rec, changes=new["changes"])

    def _kpi_recovered(self, kpi: str | None) -> tuple[bool, str]:
        if kpi is None:
            return True, "no KPI to check: the resolve decides"
        from service.monitoring import kpi_status
        e = kpi_status.get(self.ctx).evaluate()["kpis"][kpi]
        if e["status"] in ("warning", "critical"):
            return False, f"{e['title']} still {e['display']} ({e['status']})"
        return True, f"{e['title']} {e['display'] or 'no data'} ({e['status'] or 'unknown'})"

    # ---- bookkeeping -----------------------------------------------------------------------------
    @staticmethod
    def _key(entry: Entry, alert: dict) -> str:
        return f"{entry.name}:{alert['fingerprint']}"

    def _record(self, entry: Entry, alert: dict, who: str, now: float, steps: list, dry_run: bool = False) -> dict:
        return {"id": uuid.uuid4().hex[:12], "entry": entry.name, "alertname": alert["labels"]["alertname"],
                "fingerprint": alert["fingerprint"], "starts_at": alert["startsAt"], "actor": who,
                "mode": "dry_run" if dry_run else "enforce", "dry_run": dry_run, "applied_at": now,
                "verify_at": now + entry.verify_after_seconds, "expires_at": now + entry.max_applied_seconds,
                "verified": False, "steps": steps}

    async def _count(self, entry: Entry, remedy: str, mode: str, outcome: str) -> None:
        REMEDIATION_ACTIONS.labels(entry=entry.name, action=remedy, mode=mode, outcome=outcome).inc()

    async def _record_history(self, entry: Entry, remedy: str, mode: str, outcome: str, message: str,
                              rec: dict | None = None, **extra) -> None:
        item = {"time": time.time(), "entry": entry.name, "action": remedy, "mode": mode, "outcome": outcome,
                "message": message, **extra}
        if rec is not None:
            item.update(alertname=rec["alertname"], fingerprint=rec["fingerprint"], actor=rec["actor"])
        await self.state.add_history(item)
        log.info("remediation %s", outcome, extra={k: v for k, v in item.items() if k != "message"})

    async def _outcome(self, entry: Entry, remedy: str, mode: str, outcome: str, base: dict, message: str,
                       alert: dict, record: bool = True) -> dict:
        await self._count(entry, remedy, mode, outcome)
        res = {**base, "outcome": outcome, "message": message}
        if record:
            item = {"time": time.time(), "entry": entry.name, "alertname": alert["labels"]["alertname"],
                    "fingerprint": alert["fingerprint"], "action": remedy,
                    **{k: v for k, v in res.items() if k not in ("action",)}}
            await self.state.add_history(item)
            log.info("remediation %s", outcome, extra={"entry": entry.name, "outcome": outcome, "mode": mode,
                                                       "remediation_action": remedy, "actor": base.get("actor")})
        return res

    async def _refresh_active(self) -> None:
        active = await self.state.all_active()
        for e in PLAYBOOK:
            REMEDIATION_ACTIVE.labels(entry=e.name).set(
                sum(1 for r in active.values() if r["entry"] == e.name and not r.get("dry_run")))

    # ---- lifecycle -------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg["check_interval_seconds"])
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - Redis away: try again next round
                log.warning("remediation check failed: %s", e)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="remediation:check")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None


_SKIP_MESSAGES = {
    "cooldown": "skipped: the entry ran within its cooldown",
    "entry_cap": "skipped: the entry reached its runs-per-hour cap",
    "global_cap": "skipped: remediation.max_actions_per_hour reached",
}
