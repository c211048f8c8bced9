"""The runtime config store: the one home of every tunable.

Seeding order: section defaults, then the YAML file (CONFIG_FILE), then env
vars, then the overrides persisted by earlier runtime changes (Redis when
REDIS_URL is set, else a local JSON file).  Seeded values that break a
section's rules stop the start with a message naming the fields.

A change (update, update_many, rollback) is, in this order:
1. validated whole: every field and every rule of each section it touches
   (service/config/schema.py); a bad one raises ConfigValidationError naming
   every offending field, and nothing changes;
2. persisted: one Redis transaction (version, overrides, history), else the
   state file; when that fails nothing changes and ConfigNotPersisted (503)
   names the backend;
3. swapped in and announced to the subscribers.  When a subscriber cannot
   apply it, every section of the change is put back, every subscriber hears
   the old values again, the revert is persisted (actor "rollback") and
   ConfigNotApplied (422) is raised: the process is never half old, half new.

Every change records who made it (actor: a key name, startup, rollback, peer,
alertmanager:<alert>), the request id, the remote address and the fields
before and after: in the history, in one log line ("config changed") and in
llmapi_config_changes_total{section,actor}.  With Redis, other processes hear
of it through pub/sub and load it, validated the same way: a change breaking
a rule is refused there (logged) and the current values kept.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections import deque
from typing import Any, Callable

import yaml

from exporter.metrics import CONFIG_CHANGES, CONFIG_VERSION
from service.config.schema import ConfigValidationError, Section, coerce, parse_env
from service.errors import ApiError
from service.redis_client import follow, publish

log = logging.getLogger("service.config")

KEY_PREFIX = "{llmapi}:config"  # hash tag keeps every config key in one cluster slot
HISTORY_LIMIT = 200
FIXED_ACTORS = frozenset({"api", "startup", "rollback", "peer", "anonymous", "operator"})

Subscriber = Callable[[str, dict, dict], None]


class ConfigNotPersisted(ApiError):
    def __init__(self, backend: str, reason: str):
        super().__init__(503, "CONFIG_NOT_PERSISTED",
                         f"the change was not saved to {backend} ({reason}); nothing changed, try again",
                         {"backend": backend}, headers={"Retry-After": "1"})
        self.backend = backend


class ConfigNotApplied(ApiError):
    def __init__(self, sections: list[str], fields: list[str], reason: str):
        super().__init__(422, "CONFIG_NOT_APPLIED",
                         f"the service could not apply the change ({reason}); every value was put back",
                         {"sections": sections, "fields": fields, "field": fields[0] if fields else None})


def _write_durably(tmp: str, text: str, path: str) -> None:
    """`text` to `path` all or nothing: written to `tmp`, flushed to the disk, renamed over `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ConfigStore:
    def __init__(self, sections: dict[str, Section], yaml_path: str | None = None,
                 env: dict | None = None, state_path: str | None = None):
        self.sections = sections
        self.env = os.environ if env is None else env
        self.yaml_path = yaml_path
        self.state_path = state_path
        self.seed: dict[str, dict] = self._seed()
        self.values: dict[str, dict] = {k: dict(v) for k, v in self.seed.items()}
        self.version = 0
        self.history: deque[dict] = deque(maxlen=HISTORY_LIMIT)
        self.known_actors: set[str] = set(FIXED_ACTORS)  # metric label values; others count as "other"
        self.key_names: Callable[[], Any] = tuple  # the configured key names (app.py wires the key ring's)
        self._subs: list[Subscriber] = []
        self._redis = None
        self._pubsub_task: asyncio.Task | None = None
        self._origin = uuid.uuid4().hex
        self._lock = asyncio.Lock()
        CONFIG_VERSION.set(0)

    # ---- seeding -------------------------------------------------------
    def _seed(self) -> dict[str, dict]:
        values = {name: s.defaults() for name, s in self.sections.items()}
        origin: dict[tuple[str, str], str] = {}  # (section, field) -> where its value came from
        if self.yaml_path:
            try:
                with open(self.yaml_path) as fh:
                    doc = yaml.safe_load(fh) or {}
            except (OSError, yaml.YAMLError) as e:
                raise SystemExit(f"CONFIG_FILE {self.yaml_path!r} cannot be read: {e}")
            if not isinstance(doc, dict):
                raise SystemExit(f"CONFIG_FILE {self.yaml_path!r} must hold a mapping of sections")
            for name, changes in doc.items():
                if name not in self.sections:
                    raise SystemExit(f"CONFIG_FILE: unknown section {name!r}")
                try:
                    values[name] = self.sections[name].validate(values[name], changes or {})
                except ConfigValidationError as e:
                    raise SystemExit(f"refusing to start: CONFIG_FILE {self.yaml_path}: {e}")
                origin.update({(name, k): f"CONFIG_FILE {self.yaml_path}" for k in (changes or {})})
        for name, s in self.sections.items():
            for fname, f in s.fields.items():
                if f.env and f.env in self.env:
                    try:
                        values[name][fname] = coerce(name, fname, f, parse_env(f, self.env[f.env]))
                    except ConfigValidationError as e:
                        raise SystemExit(f"env {f.env}: {e.message}")
                    origin[(name, fname)] = f"env {f.env}"
        for name, s in self.sections.items():
            try:
                s.check_rules(values[name])
            except ConfigValidationError as e:
                where = sorted({origin.get((name, f.split(".", 1)[0]), "default") for f in e.fields})
                raise SystemExit(f"refusing to start: config breaks a rule ({', '.join(where)}): {e}")
        self._seed_origin = origin
        return values

    # ---- reading -------------------------------------------------------
    def get(self, section: str) -> dict:
        """The live values of a section.  Treat as read-only."""
        return self.values[section]

    @property
    def shared(self) -> bool:
        """Do changes go through Redis (to every worker and replica) rather than stay in this process?"""
        return self._redis is not None

    @property
    def backend(self) -> str:
        return "redis" if self._redis is not None else "file" if self.state_path else "memory"

    def snapshot(self) -> dict[str, dict]:
        return {k: dict(v) for k, v in self.values.items()}

    def subscribe(self, fn: Subscriber) -> None:
        self._subs.append(fn)

    def overrides(self, values: dict[str, dict] | None = None) -> dict[str, dict]:
        values = self.values if values is None else values
        return {name: {k: v for k, v in vals.items() if self.seed[name].get(k) != v}
                for name, vals in values.items()}

    # ---- changing ------------------------------------------------------
    def validate(self, section: str, changes: dict) -> dict:
        if section not in self.sections:
            raise ConfigValidationError(section, "section", "unknown section")
        return self.sections[section].validate(self.values[section], changes)

    def refuse_internal(self, section: str, changes: dict) -> None:
        """422 naming every field of changes that only the service itself sets (emergency_mode...)."""
        if section in self.sections:
            self.sections[section].refuse_internal(changes)

    async def update(self, section: str, changes: dict, *, actor: str | None = None,
                     request_id: str | None = None, remote: str | None = None,
                     source: str | None = None) -> dict:
        """Change one section; returns its history entry (changes {} when nothing differed)."""
        entries = await self.update_many({section: changes}, actor=actor, request_id=request_id,
                                         remote=remote, source=source)
        return entries[0] if entries else {"version": self.version, "section": section, "changes": {},
                                           "previous": {}, "actor": actor or source or "api"}

    async def update_many(self, changes_by_section: dict[str, dict], *, actor: str | None = None,
                          request_id: str | None = None, remote: str | None = None,
                          source: str | None = None) -> list[dict]:
        """Validate every section first; persist, then apply all or nothing.

        actor: who (a key name, startup, rollback, peer, alertmanager:<alert>);
        source: what (the endpoint or job); alone, it stands for the actor too.
        """
        audit = {"actor": actor or source or "api", "request_id": request_id, "remote": remote,
                 "source": source or actor or "api"}
        async with self._lock:
            validated = {name: self.validate(name, ch) for name, ch in changes_by_section.items()}
            return await self._commit(validated, audit)

    async def rollback(self, version: int, *, actor: str = "rollback", request_id: str | None = None,
                       remote: str | None = None, source: str | None = None) -> list[dict]:
        """Restore every section to what it was right after `version` (validated like any change)."""
        if not isinstance(version, int) or isinstance(version, bool) or version < 0 or version > self.version:
            raise ConfigValidationError("config", "version", f"must be an integer between 0 and {self.version}")
        known = [e["version"] for e in self.history]
        if version > 0 and (not known or version < min(known)):
            raise ConfigValidationError("config", "version", "no longer in history")
        target: dict[str, dict] = {}
        for name in self.sections:
            snap = None
            for e in self.history:  # oldest first
                if e["section"] == name and e["version"] <= version and "snapshot" in e:
                    snap = e["snapshot"]
            target[name] = dict(snap) if snap is not None else dict(self.seed[name])
        changes = {name: {k: v for k, v in vals.items() if self.values[name].get(k) != v}
                   for name, vals in target.items()}
        return await self.update_many({k: v for k, v in changes.items() if v}, actor=actor,
                                      request_id=request_id, remote=remote,
                                      source=source or f"rollback:{version}")

    async def _commit(self, validated: dict[str, dict], audit: dict) -> list[dict]:
        now = time.time()
        entries = []
        for name, new in validated.items():
            old = self.values[name]
            diff = {k: v for k, v in new.items() if old.get(k) != v}
            if diff:
                entries.append({"section": name, "changes": diff, "previous": {k: old.get(k) for k in diff},
                                **audit, "time": now, "snapshot": dict(new)})
        if not entries:
            return []
        values = {**self.values, **{e["section"]: validated[e["section"]] for e in entries}}
        await self._persist(entries, values)  # sets each entry's version; raises ConfigNotPersisted
        olds = {e["section"]: self.values[e["section"]] for e in entries}
        self.values = values
        self.version = max(self.version, entries[-1]["version"])
        self.history.extend(entries)
        CONFIG_VERSION.set(self.version)
        failed = self._notify_all([(e["section"], validated[e["section"]], olds[e["section"]]) for e in entries])
        if failed:
            await self._revert(entries, olds, failed)
        for e in entries:
            CONFIG_CHANGES.labels(e["section"], self._actor_label(e["actor"])).inc()
            log.info("config changed", extra={"section": e["section"], "version": e["version"],
                                              "actor": e["actor"], "source": e["source"],
                                              "client_request_id": e["request_id"], "remote": e["remote"],
                                              "before": e["previous"], "after": e["changes"]})
        await self._publish(entries)
        return entries

    async def _revert(self, entries: list[dict], olds: dict[str, dict], failed: list[str]) -> None:
        """A subscriber could not apply the change: put every section back, tell everyone, persist that."""
        log.error("config: a subscriber could not apply version %s (%s); reverting", entries[-1]["version"],
                  "; ".join(failed))
        news = {name: self.values[name] for name in olds}
        self.values = {**self.values, **olds}
        self._notify_all([(name, olds[name], news[name]) for name in olds])
        now = time.time()
        back = [{"section": e["section"], "changes": dict(e["previous"]), "previous": dict(e["changes"]),
                 "actor": "rollback", "request_id": e["request_id"], "remote": e["remote"],
                 "source": f"revert:{e['version']}", "time": now, "snapshot": dict(olds[e["section"]])}
                for e in entries]
        try:
            await self._persist(back, self.values)
            self.version = max(self.version, back[-1]["version"])
            self.history.extend(back)
            CONFIG_VERSION.set(self.version)
        except ConfigNotPersisted as e:  # memory is back to the old values; the store still holds the new
            log.error("config: the revert of version %s was not persisted (%s)", entries[-1]["version"], e.message)
        fields = [f"{e['section']}.{k}" for e in entries for k in e["changes"]]
        raise ConfigNotApplied([e["section"] for e in entries], fields, "; ".join(failed))

    def _notify_all(self, changed: list[tuple[str, dict, dict]]) -> list[str]:
        """Tell every subscriber of every changed section; returns what failed."""
        failed = []
        for name, new, old in changed:
            for fn in list(self._subs):
                try:
                    fn(name, new, old)
                except Exception as e:
                    log.exception("config subscriber %s failed for section %s",
                                  getattr(fn, "__qualname__", fn), name)
                    failed.append(f"{name}: {type(e).__name__}: {e}")
        return failed

    def _actor_label(self, actor: str) -> str:
        """Bounded metric label: configured key names and the fixed actors; anything else is "other"."""
        if actor in self.known_actors or actor in self.key_names():
            return actor
        if actor.startswith("alertmanager:"):
            return "alertmanager"
        return "other"

    # ---- persistence ---------------------------------------------------
    async def _persist(self, entries: list[dict], values: dict[str, dict]) -> None:
        """Save the change durably (all or nothing) and number its entries; raise ConfigNotPersisted."""
        if self._redis is not None:
            try:
                await self._persist_redis(entries, values)
                return
            except Exception as e:
                log.warning("config: could not persist to redis: %s", type(e).__name__)
                raise ConfigNotPersisted("redis", type(e).__name__) from None
        for i, e in enumerate(entries, 1):
            e["version"] = self.version + i
        if self.state_path:
            history = list(self.history) + entries
            state = {"version": entries[-1]["version"], "overrides": self.overrides(values),
                     "history": history[-HISTORY_LIMIT:]}
            text = json.dumps(state)
            tmp = f"{self.state_path}.{os.getpid()}.tmp"
            try:
                # in a thread: the fsync waits for the disk (1-9 ms here, 20-30 ms when it is busy), and on the
                # loop it held every request that long; the store's lock keeps the writes in order
                await asyncio.to_thread(_write_durably, tmp, text, self.state_path)
            except OSError as e:
                log.warning("config: could not persist to %s: %s", self.state_path, e.strerror or e)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise ConfigNotPersisted("file", e.strerror or type(e).__name__) from None

    async def _persist_redis(self, entries: list[dict], values: dict[str, dict]) -> None:
        """One MULTI/EXEC: version, overrides and history; WATCH on the version orders concurrent writers."""
        from redis.exceptions import WatchError
        vkey = f"{KEY_PREFIX}:version"
        ov = self.overrides(values)
        for attempt in range(20):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(vkey)
                    base = int(await pipe.get(vkey) or 0)
                    for i, e in enumerate(entries, 1):
                        e["version"] = base + i
                    pipe.multi()
                    pipe.set(vkey, entries[-1]["version"])
                    for e in entries:
                        pipe.hset(f"{KEY_PREFIX}:overrides", e["section"], json.dumps(ov[e["section"]]))
                        pipe.lpush(f"{KEY_PREFIX}:history", json.dumps(e))
                    pipe.ltrim(f"{KEY_PREFIX}:history", 0, HISTORY_LIMIT - 1)
                    await pipe.execute()
                    return
                except WatchError:
                    await asyncio.sleep(0.001 * attempt)
        raise WatchError("config version kept moving")

    async def _publish(self, entries: list[dict]) -> None:
        if self._redis is None:
            return
        try:
            await publish(self._redis, f"{KEY_PREFIX}:changed", json.dumps(
                {"origin": self._origin, "sections": [e["section"] for e in entries],
                 "version": entries[-1]["version"]}))
        except Exception as e:  # persisted: peers load it at their next start or change
            log.warning("config: change %s saved but not announced to peers: %s", entries[-1]["version"],
                        type(e).__name__)

    def _load(self, overrides: dict, who: str) -> list[str]:
        """Apply persisted overrides (start, or a peer's change), validated like any change.

        A section whose overrides break a field or a rule is refused and keeps
        its current values (logged); returns the refused sections.
        """
        changed, refused = [], []
        for name, ov in overrides.items():
            if name not in self.sections or not isinstance(ov, dict):
                continue
            # drop fields that no longer exist rather than refusing to start
            ov = {k: v for k, v in ov.items() if k in self.sections[name].fields}
            try:
                new = self.sections[name].validate(dict(self.seed[name]), ov)
            except ConfigValidationError as e:
                log.warning("config: refused %s values of section %s, keeping the current ones: %s",
                            who, name, e, extra={"section": name, "fields": e.fields, "actor": who})
                refused.append(name)
                continue
            if new != self.values[name]:
                changed.append((name, new, self.values[name]))
        if changed:
            self.values = {**self.values, **{name: new for name, new, _ in changed}}
            failed = self._notify_all(changed)
            if failed:
                self.values = {**self.values, **{name: old for name, _, old in changed}}
                self._notify_all([(name, old, new) for name, new, old in changed])
                refused.extend(name for name, _, _ in changed)
        return refused

    async def start(self, redis=None) -> None:
        """Load persisted overrides; with Redis, follow other processes' changes."""
        self._redis = redis
        if redis is not None:
            try:
                raw = await redis.hgetall(f"{KEY_PREFIX}:overrides")
                self._load({_s(k): json.loads(v) for k, v in raw.items()}, "persisted")
                self.version = int(await redis.get(f"{KEY_PREFIX}:version") or 0)
                hist = await redis.lrange(f"{KEY_PREFIX}:history", 0, HISTORY_LIMIT - 1)
                self.history.extend(json.loads(h) for h in reversed(hist))
                self._pubsub_task = asyncio.create_task(follow(redis, f"{KEY_PREFIX}:changed", self._on_message, log,
                                                               subscribed=self._catch_up))
                CONFIG_VERSION.set(self.version)
                self._record_startup()
                return
            except Exception:
                log.warning("config: redis unavailable at start, using local state")
                self._redis = None
        if self.state_path and os.path.exists(self.state_path):
            try:
                with open(self.state_path) as fh:
                    state = json.load(fh)
                self._load(state.get("overrides", {}), "persisted")
                self.version = int(state.get("version", 0))
                self.history.extend(state.get("history", []))
            except (OSError, ValueError) as e:
                log.warning("config: state file unreadable (%s), starting from seed", e)
        CONFIG_VERSION.set(self.version)
        self._record_startup()

    def _record_startup(self) -> None:
        """What this process was seeded with (CONFIG_FILE, env vars) where it differs from the defaults:
        a history entry per section with actor `startup` and where each value came from, one log line
        and a count.  It is this process's record (not a change of the shared version, nothing to roll back)."""
        now = time.time()
        origin = getattr(self, "_seed_origin", {})
        for name, sec in self.sections.items():
            defaults = sec.defaults()
            diff = {k: v for k, v in self.seed[name].items() if defaults.get(k) != v}
            if not diff:
                continue
            source = ", ".join(sorted({origin.get((name, k), "default") for k in diff}))
            e = {"version": self.version, "section": name, "changes": diff,
                 "previous": {k: defaults.get(k) for k in diff}, "actor": "startup", "source": source,
                 "request_id": None, "remote": None, "time": now}
            self.history.append(e)
            CONFIG_CHANGES.labels(name, "startup").inc()
            log.info("config seeded", extra={"section": name, "version": self.version, "actor": "startup",
                                             "source": source, "before": e["previous"], "after": diff})

    async def _on_message(self, raw) -> None:
        try:
            data = json.loads(raw)
            if data.get("origin") == self._origin:
                return
            names = data.get("sections") or [data.get("section")]
            version = int(data["version"])
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("config: ignoring a malformed change announcement")
            return
        names = [n for n in names if isinstance(n, str) and n in self.sections] if isinstance(names, list) else []
        if names:
            await self._reload(names, version)

    async def _catch_up(self) -> None:
        """On (re)subscribing: load what peers changed while this process was not listening."""
        version = int(await self._redis.get(f"{KEY_PREFIX}:version") or 0)
        if version > self.version:
            await self._reload(list(self.sections), version)

    async def _reload(self, names: list[str], version: int) -> None:
        """A peer's change: load its sections (validated: a bad one is refused and logged)."""
        async with self._lock:
            raw = await self._redis.hmget(f"{KEY_PREFIX}:overrides", names)
            refused = self._load({name: json.loads(r) if r else {} for name, r in zip(names, raw)}, "peer")
            if set(names) <= set(refused):
                return  # nothing of it taken: neither its history nor its version
            hist = await self._redis.lrange(f"{KEY_PREFIX}:history", 0, max(0, len(names) - 1))
            seen = {h.get("version") for h in self.history}
            for h in reversed(hist):
                e = json.loads(h)
                if e.get("version") not in seen:
                    self.history.append(e)
                    log.info("config changed by a peer", extra={
                        "section": e.get("section"), "version": e.get("version"), "actor": e.get("actor"),
                        "source": e.get("source"), "applied_from": "peer"})
            self.version = max(self.version, version)
            CONFIG_VERSION.set(self.version)

    async def stop(self) -> None:
        if self._pubsub_task:
            self._pubsub_task.cancel()
            try:
                await self._pubsub_task
            except (asyncio.CancelledError, Exception):
                pass

    # ---- views ---------------------------------------------------------
    def public_history(self, limit: int = 50) -> list[dict]:
        items = list(self.history)[-limit:]
        return [{k: v for k, v in e.items() if k != "snapshot"} for e in reversed(items)]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else v
