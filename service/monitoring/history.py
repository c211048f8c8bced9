"""Bounded history of snapshots, in memory and (when configured) in Redis.

Minute snapshots are kept for `retention_hours` and at most `max_events` of
them; each completed hour is also rolled up into one merged snapshot kept for
`hourly_retention_days`, so long reports (performance-report?days=7) work with
a short minute retention.  With `enable_compression` snapshots are held as
zlib-compressed JSON, in memory and in Redis.

Redis keys (hash-tagged for Redis Cluster):
    {llmapi}:monitoring:<instance>:minutes   list of encoded snapshots, oldest first
    {llmapi}:monitoring:<instance>:hours     hash hour-start -> encoded roll-up
    {llmapi}:monitoring:<instance>:events    list of JSON events, oldest first
    {llmapi}:monitoring:instances            hash instance -> time of its last snapshot
Without Redis the history is written to STATE_DIR on shutdown and read back
at start.
"""
from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections import deque

from service.monitoring import snapshot as S

log = logging.getLogger("service.monitoring")

PREFIX = "{llmapi}:monitoring"
INSTANCES = f"{PREFIX}:instances"  # hash instance -> time of its last snapshot


def encode(snap: dict, compress: bool) -> bytes:
    raw = json.dumps(snap, separators=(",", ":")).encode()
    return b"z" + zlib.compress(raw, 6) if compress else b"j" + raw


def decode(blob) -> dict:
    if isinstance(blob, dict):
        return blob
    if isinstance(blob, str):
        blob = blob.encode()
    if blob[:1] == b"z":
        return json.loads(zlib.decompress(blob[1:]))
    if blob[:1] == b"j":
        return json.loads(blob[1:])
    return json.loads(blob)


class History:
    def __init__(self, store, redis=None, instance: str = "local", state_path: str | None = None):
        self.store = store
        self.redis = redis
        self.instance = instance
        self.state_path = state_path
        self.minutes: deque = deque()      # (ts, dict | bytes)
        self.hours: dict[int, dict] = {}   # hour start -> merged snapshot (completed hours)
        self.open_hour: tuple[int, dict] | None = None  # (hour start, merged so far)
        self.events: deque = deque()
        self.redis_ok = redis is not None

    # ---- keys ------------------------------------------------------------
    def key(self, what: str) -> str:
        return f"{PREFIX}:{self.instance}:{what}"

    @property
    def cfg(self) -> dict:
        return self.store.get("monitoring")

    # ---- adding ------------------------------------------------------------
    async def add(self, snap: dict) -> None:
        cfg = self.cfg
        blob = encode(snap, True) if cfg["enable_compression"] else snap
        self.minutes.append((snap["ts"], blob))
        finished = self._roll_hour(snap)
        self.prune()
        if self.redis is not None:
            await self._persist_snapshot(snap, finished)

    def _roll_hour(self, snap: dict) -> tuple[int, dict] | None:
        hour = int(snap["start"] // 3600 * 3600)
        finished = None
        if self.open_hour is not None and self.open_hour[0] != hour:
            finished = self.open_hour
            self.hours[finished[0]] = finished[1]
            self.open_hour = None
        if self.open_hour is None:
            self.open_hour = (hour, S.merge([snap]))
        else:
            self.open_hour = (hour, S.merge([self.open_hour[1], snap]))
        return finished

    def prune(self) -> None:
        cfg = self.cfg
        cutoff = time.time() - cfg["retention_hours"] * 3600
        while self.minutes and (self.minutes[0][0] < cutoff or len(self.minutes) > cfg["max_events"]):
            self.minutes.popleft()
        hcut = time.time() - cfg["hourly_retention_days"] * 86400
        for h in [h for h in self.hours if h + 3600 < hcut]:
            del self.hours[h]
        while len(self.events) > cfg["max_events"]:
            self.events.popleft()

    def recompress(self) -> None:
        """Apply a changed enable_compression to what is held."""
        compress = self.cfg["enable_compression"]
        self.minutes = deque((ts, encode(decode(b), True) if compress else decode(b)) for ts, b in self.minutes)

    async def add_event(self, kind: str, details: dict) -> dict:
        ev = {"ts": time.time(), "kind": kind, "details": details}
        self.events.append(ev)
        self.prune()
        if self.redis is not None:
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.rpush(self.key("events"), json.dumps(ev, default=str))
                pipe.ltrim(self.key("events"), -self.cfg["max_events"], -1)
                await pipe.execute()
            except Exception:
                log.warning("monitoring: could not persist an event to redis")
        return ev

    # ---- reading ---------------------------------------------------------
    def snapshots(self, since: float) -> list[dict]:
        return [decode(b) for ts, b in self.minutes if ts > since]

    def window(self, seconds: float, live: dict | None = None) -> tuple[dict, list[dict], str]:
        """Merged view of the last `seconds`, the snapshots in it, and the resolution used."""
        now = time.time()
        since = now - seconds
        oldest = self.minutes[0][0] if self.minutes else now
        if since >= oldest - self.cfg["snapshot_interval_seconds"] or not self._minutes_pruned(since, now):
            snaps = self.snapshots(since)
            resolution = "minute"
        else:
            # reaches past the minute history: whole hours (the open one included)
            snaps = [self.hours[h] for h in sorted(self.hours) if h + 3600 > since]
            if self.open_hour is not None:
                snaps.append(self.open_hour[1])
            resolution = "hour"
        parts = snaps + ([live] if live and live.get("seconds") else [])
        return S.merge(parts), snaps, resolution

    async def peers(self, since: float, hourly: bool) -> dict[str, list[dict]] | None:
        """The history of the other instances sharing this Redis (workers, replicas) since `since`:
        their minute snapshots, or with `hourly` their hour roll-ups (the open one included).
        {} without Redis or other instances; None when Redis does not answer."""
        if self.redis is None:
            return {}
        out = {}
        try:
            seen = await self.redis.hgetall(INSTANCES)
            gone = time.time() - self.cfg["hourly_retention_days"] * 86400  # nothing of theirs is kept longer
            stale = [i for i, ts in seen.items() if float(ts) < gone]
            if stale:
                await self.redis.hdel(INSTANCES, *stale)
            others = sorted(i.decode() if isinstance(i, bytes) else i for i, ts in seen.items() if float(ts) > since)
            for inst in others:
                if inst == self.instance:
                    continue
                if hourly:  # completed hours in order, then the open one
                    reply = await self.redis.hgetall(f"{PREFIX}:{inst}:hours")
                    blobs = [b for _, b in sorted(reply.items(), key=lambda kv: (kv[0] in (b"open", "open"), kv[0]))]
                    snaps = [s for s in map(decode, blobs) if s["ts"] > since]
                else:
                    snaps = await self._minutes_since(f"{PREFIX}:{inst}:minutes", since)
                if snaps:
                    out[inst] = snaps
        except Exception:
            log.warning("monitoring: could not read other instances' history from redis")
            return None
        return out

    async def _minutes_since(self, key: str, since: float) -> list[dict]:
        """The snapshots of a minutes list newer than `since`, read from its end a page at a time
        (they are appended in time order)."""
        page = max(64, int((time.time() - since) / self.cfg["snapshot_interval_seconds"]) + 8)
        found: list[dict] = []
        stop = -1
        while True:
            blobs = await self.redis.lrange(key, stop - page + 1, stop)
            snaps = [decode(b) for b in blobs]
            newer = [s for s in snaps if s["ts"] > since]
            found = newer + found
            if len(newer) < len(snaps) or len(blobs) < page:
                return found
            stop -= page

    def _minutes_pruned(self, since: float, now: float) -> bool:
        """Do the hourly roll-ups hold snapshots of the window that the minute history no longer has?"""
        hours = [h for h in self.hours if h + 3600 > since]
        if not hours:
            return False
        first = min(hours)
        rolled = sum(self.hours[h].get("count", 1) for h in hours)
        if self.open_hour is not None:
            rolled += self.open_hour[1].get("count", 1)
        kept = sum(1 for ts, _ in self.minutes if ts > first)
        return kept < rolled

    def stats(self) -> dict:
        mem_bytes = sum(len(b) if isinstance(b, bytes) else len(json.dumps(b)) for _, b in self.minutes)
        return {"snapshots": len(self.minutes), "hourly_rollups": len(self.hours) + (1 if self.open_hour else 0),
                "events": len(self.events), "approx_bytes": mem_bytes,
                "compressed": self.cfg["enable_compression"],
                "oldest": self.minutes[0][0] if self.minutes else None,
                "newest": self.minutes[-1][0] if self.minutes else None,
                "persisted_to": "redis" if self.redis is not None else ("file" if self.state_path else "memory"),
                "instance": self.instance}

    # ---- persistence -----------------------------------------------------
    async def _persist_snapshot(self, snap: dict, finished) -> None:
        cfg = self.cfg
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.rpush(self.key("minutes"), encode(snap, cfg["enable_compression"]))
            pipe.ltrim(self.key("minutes"), -cfg["max_events"], -1)
            pipe.expire(self.key("minutes"), int(cfg["retention_hours"] * 3600) + 3600)
            if finished is not None:
                pipe.hset(self.key("hours"), str(finished[0]), encode(finished[1], True))
            if self.open_hour is not None:
                pipe.hset(self.key("hours"), "open", encode(self.open_hour[1], True))
            pipe.hset(INSTANCES, self.instance, str(snap["ts"]))  # who else has history: see peers()
            await pipe.execute()
            self.redis_ok = True
        except Exception:
            if self.redis_ok:
                log.warning("monitoring: redis unavailable, history kept in memory only")
            self.redis_ok = False

    async def load(self) -> None:
        if self.redis is not None:
            try:
                await self._load_redis()
                return
            except Exception:
                log.warning("monitoring: could not load history from redis")
        if self.state_path and os.path.exists(self.state_path):
            try:
                with open(self.state_path) as fh:
                    state = json.load(fh)
                self._restore([(s["ts"], s) for s in state.get("minutes", [])],
                              {int(h): v for h, v in state.get("hours", {}).items()},
                              state.get("open_hour"), state.get("events", []))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("monitoring: history file unreadable (%s), starting empty", e)

    async def _load_redis(self) -> None:
        raw = await self.redis.lrange(self.key("minutes"), 0, -1)
        minutes = []
        for b in raw:
            try:
                s = decode(b)
                minutes.append((s["ts"], s))
            except (ValueError, KeyError, zlib.error):
                continue
        hours, open_hour = {}, None
        for h, b in (await self.redis.hgetall(self.key("hours"))).items():
            h = h.decode() if isinstance(h, bytes) else h
            try:
                v = decode(b)
            except (ValueError, zlib.error):
                continue
            if h == "open":
                open_hour = v
            else:
                hours[int(h)] = v
        events = [json.loads(e) for e in await self.redis.lrange(self.key("events"), 0, -1)]
        self._restore(minutes, hours, open_hour, events)

    def _restore(self, minutes, hours, open_hour, events) -> None:
        compress = self.cfg["enable_compression"]
        self.minutes = deque((ts, encode(s, True) if compress else s) for ts, s in sorted(minutes, key=lambda x: x[0]))
        self.hours.update(hours)
        if open_hour:
            self.open_hour = (int(open_hour["start"] // 3600 * 3600), open_hour)
        self.events = deque(events)
        # no pruning here: the persisted retention may still be loading (config store starts after us);
        # the next snapshot prunes with the live values

    def save_file(self) -> None:
        if not self.state_path or self.redis is not None:
            return
        state = {"minutes": [decode(b) for _, b in self.minutes], "hours": {str(h): v for h, v in self.hours.items()},
                 "open_hour": self.open_hour[1] if self.open_hour else None, "events": list(self.events)}
        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.state_path)), exist_ok=True)
            with open(tmp, "w") as fh:
                json.dump(state, fh, default=str)
            os.replace(tmp, self.state_path)
        except OSError as e:
            log.warning("monitoring: could not save history file: %s", e)
