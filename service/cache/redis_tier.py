"""L2: Redis through the shared redis.asyncio client, with outage backoff.

Every command is bounded by redis.command_timeout_seconds.  The first failure
marks L2 down: requests then skip Redis entirely (no latency per request, no
error to the client; L1 keeps answering) while one background probe pings
with exponential backoff up to cache.redis_retry_max_seconds.  The first
answered ping marks it up again.  Both transitions move llmapi_redis_up,
llmapi_cache_l2_up and llmapi_cache_l2_transitions_total{state}.

Keys are REDIS_PREFIX + cache key ("{llmapi}:cache:<op>:<digest>");
invalidation walks them with SCAN (never KEYS) and UNLINKs in batches.
Invalidations are published on "{llmapi}:cache:events" so every process
drops its L1 copies too.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Callable

from exporter.metrics import CACHE_L2_ERRORS, CACHE_L2_TRANSITIONS, CACHE_L2_UP, REDIS_LATENCY, REDIS_UP
from service.background import cancel_and_wait
from service.cache.keys import REDIS_PREFIX
from service.redis_client import follow, ping, publish, topology

log = logging.getLogger("service.cache")

EVENTS_CHANNEL = "{llmapi}:cache:events"
SCAN_COUNT = 500
MAX_PENDING = 100       # invalidations kept during an outage; beyond: everything is dropped at recovery
COMMANDS = ("get", "set", "scan", "publish", "ping")  # llmapi_cache_l2_errors{command}
FIRST_RETRY = 0.25


class RedisTier:
    def __init__(self, redis, store, on_event: Callable[[dict], None] | None = None):
        self.r = redis
        self.store = store
        self.on_event = on_event
        self.up = redis is not None
        self.origin = uuid.uuid4().hex
        self.outages = 0
        self.recoveries = 0
        self.down_since: float | None = None
        self.last_outage: dict | None = None
        self.last_error: str | None = None
        self.gets = self.get_hits = self.sets = self.errors = 0
        self.latency = {"get": [0, 0.0], "set": [0, 0.0]}
        self.pending: list[str] = []  # invalidation matches to apply once Redis is back
        self._probe: asyncio.Task | None = None
        self._listener: asyncio.Task | None = None
        # (no Redis, no series: a histogram of zeros would cost the series budget 30 lines)
        self._lat = {"get": REDIS_LATENCY.labels("cache_get"), "set": REDIS_LATENCY.labels("cache_set")} \
            if redis is not None else {}
        CACHE_L2_UP.set(1 if self.up else 0)

    @property
    def configured(self) -> bool:
        return self.r is not None

    @property
    def usable(self) -> bool:
        return self.up and self.store.get("cache")["use_redis"]

    def _timeout(self) -> float:
        return self.store.get("redis")["command_timeout_seconds"]

    # ---- commands (never raise) -------------------------------------------
    async def _timed(self, name: str, coro):
        """Run one command within the timeout; (True, result) or (False, None) after marking the failure."""
        t = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout()):
                res = await coro
        except Exception as e:
            self.failed(name, e)
            return False, None
        dt = time.perf_counter() - t
        self._lat[name].observe(dt)
        lat = self.latency[name]
        lat[0] += 1
        lat[1] += dt
        return True, res

    async def get(self, key: str) -> bytes | None:
        ok, raw = await self._timed("get", self.r.get(REDIS_PREFIX + key))
        if ok:
            self.gets += 1
            self.get_hits += raw is not None
        return raw

    async def set(self, key: str, blob: bytes, ttl_seconds: float) -> bool:
        ok, _ = await self._timed("set", self.r.set(REDIS_PREFIX + key, blob, px=max(1, int(ttl_seconds * 1000))))
        self.sets += ok
        return ok

    async def delete_matching(self, match: str) -> int:
        """UNLINK every key matching REDIS_PREFIX + match (a Redis glob).

        -1 when Redis is unusable: the match is then kept and applied before
        L2 is used again, so an invalidation is never undone by a recovery."""
        if not self.up:
            self._defer(match)
            return -1
        try:
            return await self._scan_delete(match)
        except Exception as e:
            self.failed("scan", e)
            self._defer(match)
            return -1

    def _defer(self, match: str) -> None:
        if not self.configured or match in self.pending:
            return
        self.pending.append(match)
        if len(self.pending) > MAX_PENDING:
            self.pending[:] = ["*"]

    async def _scan_delete(self, match: str) -> int:
        n = 0
        async with asyncio.timeout(max(5.0, self._timeout() * 10)):
            batch = []
            async for k in self.r.scan_iter(match=REDIS_PREFIX + match, count=SCAN_COUNT):
                batch.append(k)
                if len(batch) >= SCAN_COUNT:
                    n += await self.r.unlink(*batch)
                    batch = []
            if batch:
                n += await self.r.unlink(*batch)
        return n

    async def count(self, limit: int = 1_000_000) -> int | None:
        """Cache keys in Redis (SCAN, bounded); None when Redis is unusable."""
        if not self.usable:
            return None
        n = 0
        try:
            async with asyncio.timeout(max(5.0, self._timeout() * 10)):
                async for _ in self.r.scan_iter(match=REDIS_PREFIX + "*", count=SCAN_COUNT * 2):
                    n += 1
                    if n >= limit:
                        break
        except Exception as e:
            self.failed("scan", e)
            return None
        return n

    async def ping(self, timeout: float | None = None) -> float:
        """Round trip in seconds; raises when Redis does not answer."""
        t = time.perf_counter()
        async with asyncio.timeout(timeout or self._timeout()):
            await ping(self.r)
        return time.perf_counter() - t

    async def publish(self, event: dict) -> None:
        if not self.usable:
            return
        try:
            async with asyncio.timeout(self._timeout()):
                await publish(self.r, EVENTS_CHANNEL, json.dumps({**event, "origin": self.origin}))
        except Exception as e:
            self.failed("publish", e)

    # ---- outage handling ---------------------------------------------------
    @staticmethod
    def preinit() -> None:
        """The error series of every command at 0 (with Redis configured), so rate() reads 0 before the first."""
        for command in COMMANDS:
            CACHE_L2_ERRORS.labels(command)

    def failed(self, command: str, exc: BaseException) -> None:
        """`command` (one of COMMANDS) failed: count it, and the first failure starts an outage."""
        self.errors += 1
        CACHE_L2_ERRORS.labels(command).inc()
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        if not self.up:
            return
        self.up = False
        self.outages += 1
        self.down_since = time.time()
        REDIS_UP.set(0)
        CACHE_L2_UP.set(0)
        CACHE_L2_TRANSITIONS.labels("down").inc()
        log.warning("cache: Redis L2 unavailable, serving from memory", extra={"command": command,
                                                                              "error": self.last_error})
        try:
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop(), name="cache:l2-probe")
        except RuntimeError:
            pass

    def _recovered(self) -> None:
        down_for = time.time() - (self.down_since or time.time())
        self.up = True
        self.recoveries += 1
        self.last_outage = {"started": self.down_since, "duration_seconds": round(down_for, 3)}
        self.down_since = None
        REDIS_UP.set(1)
        CACHE_L2_UP.set(1)
        CACHE_L2_TRANSITIONS.labels("up").inc()
        log.warning("cache: Redis L2 back after %.1fs", down_for)

    async def _probe_loop(self) -> None:
        delay = FIRST_RETRY
        while True:
            await asyncio.sleep(delay)
            try:
                await self.ping()
                while self.pending:  # invalidations made during the outage, before L2 serves again
                    await self._scan_delete(self.pending[0])
                    self.pending.pop(0)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.last_error = f"{type(e).__name__}: {e}"[:200]
                delay = min(delay * 2, self.store.get("cache")["redis_retry_max_seconds"])
                continue
            self._recovered()
            return

    def status(self) -> dict:
        if not self.configured:
            return {"configured": False, "state": "absent"}
        avg = {k: round(v[1] / v[0] * 1000, 4) if v[0] else None for k, v in self.latency.items()}
        out = {"configured": True, "topology": topology(self.r), "enabled": self.store.get("cache")["use_redis"],
               "state": "up" if self.up else "down",
               "outages": self.outages, "recoveries": self.recoveries, "errors": self.errors,
               "last_error": self.last_error, "gets": self.gets, "get_hits": self.get_hits, "sets": self.sets,
               "avg_get_ms": avg["get"], "avg_set_ms": avg["set"], "last_outage": self.last_outage,
               "pending_invalidations": list(self.pending)}
        if self.down_since is not None:
            out["down_for_seconds"] = round(time.time() - self.down_since, 3)
        return out

    # ---- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        if not self.configured:
            CACHE_L2_UP.set(0)
            return
        try:  # (the first ping may also load a cluster's slot map and connect to every primary)
            await self.ping(max(5.0, self._timeout()))
            REDIS_UP.set(1)
        except Exception as e:
            self.failed("ping", e)
        if self.on_event is not None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="cache:l2-events")

    async def _listen(self) -> None:
        await follow(self.r, EVENTS_CHANNEL, self._on_event, log, first_delay=FIRST_RETRY,
                     max_delay=lambda: self.store.get("cache")["redis_retry_max_seconds"])

    async def _on_event(self, raw) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        if isinstance(event, dict) and event.get("origin") != self.origin:
            self.on_event(event)

    async def close(self) -> None:
        await cancel_and_wait([self._probe, self._listener])
        self._probe = self._listener = None
