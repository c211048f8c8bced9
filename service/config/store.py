"""The runtime config store: the one home of every tunable.

Seeding order: section defaults, then the YAML file (CONFIG_FILE), then env
vars, then the overrides persisted by earlier runtime changes (Redis when
REDIS_URL is set, else a local JSON file).

An update validates the whole change first (nothing changes on error), then
applies atomically, bumps the version, records history, persists and
notifies subscribers.  With Redis, other processes hear about it through
pub/sub and reload the section.
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

from service.config.schema import ConfigValidationError, Section, coerce, parse_env

log = logging.getLogger("service.config")

KEY_PREFIX = "{llmapi}:config"  # hash tag keeps every config key in one cluster slot
HISTORY_LIMIT = 200

Subscriber = Callable[[str, dict, dict], None]


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
        self._subs: list[Subscriber] = []
        self._redis = None
        self._pubsub_task: asyncio.Task | None = None
        self._origin = uuid.uuid4().hex
        self._lock = asyncio.Lock()

    # ---- seeding -------------------------------------------------------
    def _seed(self) -> dict[str, dict]:
        values = {name: s.defaults() for name, s in self.sections.items()}
        if self.yaml_path:
            try:
                with open(self.yaml_path) as fh:
                    doc = yaml.safe_load(fh) or {}
            except OSError as e:
                raise SystemExit(f"CONFIG_FILE {self.yaml_path!r} cannot be read: {e}")
            if not isinstance(doc, dict):
                raise SystemExit(f"CONFIG_FILE {self.yaml_path!r} must hold a mapping of sections")
            for name, changes in doc.items():
                if name not in self.sections:
                    raise SystemExit(f"CONFIG_FILE: unknown section {name!r}")
                try:
                    values[name] = self.sections[name].validate(values[name], changes or {})
                except ConfigValidationError as e:
                    raise SystemExit(f"CONFIG_FILE: {e}")
        for name, s in self.sections.items():
            for fname, f in s.fields.items():
                if f.env and f.env in self.env:
                    try:
                        values[name][fname] = coerce(name, fname, f, parse_env(f, self.env[f.env]))
                    except ConfigValidationError as e:
                        raise SystemExit(f"env {f.env}: {e.message}")
        return values

    # ---- reading -------------------------------------------------------
    def get(self, section: str) -> dict:
        """The live values of a section.  Treat as read-only."""
        return self.values[section]

    @property
    def shared(self) -> bool:
        """Do changes go through Redis (to every worker and replica) rather than stay in this process?"""
        return self._redis is not None

    def snapshot(self) -> dict[str, dict]:
        return {k: dict(v) for k, v in self.values.items()}

    def subscribe(self, fn: Subscriber) -> None:
        self._subs.append(fn)

    # ---- changing ------------------------------------------------------
    def validate(self, section: str, changes: dict) -> dict:
        if section not in self.sections:
            raise ConfigValidationError(section, "section", "unknown section")
        return self.sections[section].validate(self.values[section], changes)

    async def update(self, section: str, changes: dict, source: str = "api") -> dict:
        entries = await self.update_many({section: changes}, source)
        return entries[0] if entries else {"version": self.version, "section": section,
                                           "changes": {}, "previous": {}, "source": source}

    async def update_many(self, changes_by_section: dict[str, dict], source: str = "api") -> list[dict]:
        """Validate every section first; apply all or nothing."""
        async with self._lock:
            validated = {name: self.validate(name, ch) for name, ch in changes_by_section.items()}
            entries = []
            for name, new in validated.items():
                old = self.values[name]
                diff = {k: v for k, v in new.items() if old.get(k) != v}
                if not diff:
                    continue
                entries.append(await self._apply(name, new, diff, {k: old.get(k) for k in diff}, source))
            return entries

    async def rollback(self, version: int, source: str = "rollback") -> list[dict]:
        """Restore every section to what it was right after `version`."""
        if not isinstance(version, int) or isinstance(version, bool) or version < 0 or version > self.version:
            raise ConfigValidationError("config", "version", f"must be an integer between 0 and {self.version}")
        known = [e["version"] for e in self.history]
        if version > 0 and (not known or version < min(known)):
            raise ConfigValidationError("config", "version", "no longer in history")
        target: dict[str, dict] = {}
        for name in self.sections:
            snap = None
            for e in self.history:  # oldest first
                if e["section"] == name and e["version"] <= version:
                    snap = e["snapshot"]
            target[name] = dict(snap) if snap is not None else dict(self.seed[name])
        changes = {name: {k: v for k, v in vals.items() if self.values[name].get(k) != v}
                   for name, vals in target.items()}
        return await self.update_many({k: v for k, v in changes.items() if v}, source)

    async def _apply(self, name: str, new: dict, diff: dict, previous: dict, source: str) -> dict:
        old = self.values[name]
        if self._redis is not None:
            try:
                version = int(await self._redis.incr(f"{KEY_PREFIX}:version"))
            except Exception:  # Redis down: keep working locally
                log.warning("config: redis unavailable, change kept locally")
                version = self.version + 1
        else:
            version = self.version + 1
        self.values[name] = new
        self.version = max(self.version, version)
        entry = {"version": version, "section": name, "changes": diff, "previous": previous,
                 "source": source, "time": time.time(), "snapshot": dict(new)}
        self.history.append(entry)
        await self._persist(name, entry)
        self._notify(name, new, old)
        log.info("config changed", extra={"section": name, "version": version, "source": source,
                                          "changes": diff})
        return entry

    def _notify(self, name: str, new: dict, old: dict) -> None:
        for fn in list(self._subs):
            try:
                fn(name, new, old)
            except Exception:
                log.exception("config subscriber failed for section %s", name)

    def overrides(self) -> dict[str, dict]:
        return {name: {k: v for k, v in vals.items() if self.seed[name].get(k) != v}
                for name, vals in self.values.items()}

    # ---- persistence ---------------------------------------------------
    async def _persist(self, name: str, entry: dict) -> None:
        if self._redis is not None:
            try:
                ov = json.dumps(self.overrides()[name])
                pipe = self._redis.pipeline(transaction=True)
                pipe.hset(f"{KEY_PREFIX}:overrides", name, ov)
                pipe.lpush(f"{KEY_PREFIX}:history", json.dumps(entry))
                pipe.ltrim(f"{KEY_PREFIX}:history", 0, HISTORY_LIMIT - 1)
                await pipe.execute()
                await self._redis.publish(f"{KEY_PREFIX}:changed",
                                          json.dumps({"origin": self._origin, "section": name,
                                                      "version": entry["version"]}))
                return
            except Exception:
                log.warning("config: could not persist to redis")
        if self.state_path:
            state = {"version": self.version, "overrides": self.overrides(), "history": list(self.history)}
            tmp = f"{self.state_path}.{os.getpid()}.tmp"
            os.makedirs(os.path.dirname(os.path.abspath(self.state_path)), exist_ok=True)
            with open(tmp, "w") as fh:
                json.dump(state, fh)
            os.replace(tmp, self.state_path)

    def _apply_overrides(self, overrides: dict) -> None:
        for name, ov in overrides.items():
            if name not in self.sections or not isinstance(ov, dict):
                continue
            try:
                base = dict(self.seed[name])
                # drop fields that no longer exist rather than refusing to start
                ov = {k: v for k, v in ov.items() if k in self.sections[name].fields}
                new = self.sections[name].validate(base, ov)
            except ConfigValidationError as e:
                log.warning("config: ignoring persisted override: %s", e)
                continue
            old = self.values[name]
            if new != old:
                self.values[name] = new
                self._notify(name, new, old)

    async def start(self, redis=None) -> None:
        """Load persisted overrides; with Redis, follow other processes' changes."""
        self._redis = redis
        if redis is not None:
            try:
                raw = await redis.hgetall(f"{KEY_PREFIX}:overrides")
                self._apply_overrides({_s(k): json.loads(v) for k, v in raw.items()})
                self.version = int(await redis.get(f"{KEY_PREFIX}:version") or 0)
                hist = await redis.lrange(f"{KEY_PREFIX}:history", 0, HISTORY_LIMIT - 1)
                self.history.extend(json.loads(h) for h in reversed(hist))
                self._pubsub_task = asyncio.create_task(self._follow())
                return
            except Exception:
                log.warning("config: redis unavailable at start, using local state")
                self._redis = None
        if self.state_path and os.path.exists(self.state_path):
            try:
                with open(self.state_path) as fh:
                    state = json.load(fh)
                self._apply_overrides(state.get("overrides", {}))
                self.version = int(state.get("version", 0))
                self.history.extend(state.get("history", []))
            except (OSError, ValueError) as e:
                log.warning("config: state file unreadable (%s), starting from seed", e)

    async def _follow(self) -> None:
        delay = 0.5
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(f"{KEY_PREFIX}:changed")
                delay = 0.5
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    data = json.loads(msg["data"])
                    if data.get("origin") == self._origin:
                        continue
                    await self._reload_section(data["section"], int(data["version"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _reload_section(self, name: str, version: int) -> None:
        raw = await self._redis.hget(f"{KEY_PREFIX}:overrides", name)
        ov = json.loads(raw) if raw else {}
        self._apply_overrides({name: ov}) if ov else self._reset_section(name)
        hist = await self._redis.lrange(f"{KEY_PREFIX}:history", 0, 0)
        if hist:
            e = json.loads(hist[0])
            if not any(h["version"] == e["version"] for h in self.history):
                self.history.append(e)
        self.version = max(self.version, version)

    def _reset_section(self, name: str) -> None:
        old = self.values[name]
        new = dict(self.seed[name])
        if new != old:
            self.values[name] = new
            self._notify(name, new, old)

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
