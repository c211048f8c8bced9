"""Breaker state shared across replicas (and workers) through Redis pub/sub.

pybreaker's CircuitRedisStorage is synchronous: every state read would block
the event loop on a Redis round trip.  Instead each process keeps its own
breakers and tells the others when one opens or closes: a message on one
channel, published from a task, never awaited by a request.  A process that
hears "open" opens its breaker of the same name (its recovery timeout starts
then); "closed" (a successful probe, an operator reset) closes it.  Half-open
is not shared: each process probes for itself.  With Redis down the breakers
simply work per process; the follower reconnects with backoff.
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid

from service.providers.base import OPERATIONS
from service.redis_client import follow, publish

log = logging.getLogger("service.resilience")

CHANNEL = "{llmapi}:resilience:breakers"   # hash tag: cluster-safe
PROVIDERS = ("local", "openai")


class SharedBreakers:
    def __init__(self, res):
        self.res = res
        self.origin = uuid.uuid4().hex
        self.redis = res.ctx.redis
        self._applying = False
        self._task: asyncio.Task | None = None
        self._sends: set[asyncio.Task] = set()
        self.sent = 0
        self.received = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.redis is not None

    # ---- out ----------------------------------------------------------------
    def on_change(self, name: str, old: str | None, new: str) -> None:
        """Breaker listener hook (sync, on the loop): publish opens and closes made here."""
        if self.redis is None or self._applying or new == "half-open":
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        t = loop.create_task(self._publish({"origin": self.origin, "breaker": name, "state": new}))
        self._sends.add(t)
        t.add_done_callback(self._sends.discard)

    async def _publish(self, msg: dict) -> None:
        try:
            await publish(self.redis, CHANNEL, json.dumps(msg))
            self.sent += 1
        except Exception as e:
            self.errors += 1
            log.debug("breaker state not shared: redis unavailable (%s)", type(e).__name__)

    # ---- in -----------------------------------------------------------------
    def apply(self, msg: dict) -> None:
        if msg.get("origin") == self.origin:
            return
        name, state = msg.get("breaker"), msg.get("state")
        if not isinstance(name, str) or "." not in name or state not in ("open", "closed"):
            return
        provider, op = name.split(".", 1)
        if provider not in PROVIDERS or op not in OPERATIONS:  # bounded breaker names and metric labels
            return
        self.received += 1
        b = self.res.breaker(provider, op)
        if b.state == state:
            return
        self._applying = True
        try:
            b.source = "redis"
            if state == "open":
                b.cb.open()
            else:
                b.cb.close()
        finally:
            b.source = "local"
            self._applying = False

    async def _follow(self) -> None:
        await follow(self.redis, CHANNEL, self._on_message, log, on_error=self._count_error)

    async def _on_message(self, raw) -> None:
        try:
            self.apply(json.loads(raw))
        except ValueError:
            pass

    def _count_error(self) -> None:
        self.errors += 1

    def info(self) -> dict:
        return {"enabled": self.enabled, "channel": CHANNEL if self.enabled else None, "sent": self.sent,
                "received": self.received, "errors": self.errors}

    async def start(self) -> None:
        if self.redis is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._sends:
            await asyncio.gather(*list(self._sends), return_exceptions=True)
