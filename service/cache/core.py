"""ResponseCache: L1 memory + L2 Redis, single-flight, adaptive TTL, warming.

The interface TextService uses:
  key_for(req) -> str
  lookup(key, req) -> prefix_bytes | None       (a fresh L1 hit, synchronous)
  await get_or_compute(req, compute, key=None) -> (prefix_bytes, hit)
  await get_stale(req) -> bytes | None
  await health() -> dict; await start(); await close()

A hit costs the key hash, one dict lookup and a few counter additions: the
stored value is the ready-to-send body prefix.  Identical concurrent misses
share one compute (single-flight): everyone gets its result or the same
exception, and exceptions are never cached.

Every tunable is read from the "cache" config section; a change acts at once
(the store notifies `_on_config`: shrinking evicts, new thresholds apply).
"""
from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
import zlib
from collections import deque
from functools import partial
from time import perf_counter

from exporter.metrics import (CACHE_ENTRIES, CACHE_EVICTIONS, CACHE_HITS, CACHE_L2_TRANSITIONS, CACHE_MAX_MEMORY,
                              CACHE_MEMORY, CACHE_MISSES, CACHE_SINGLE_FLIGHT, CACHE_STALE_SERVED, CACHE_WARMING)
from exporter.tally import Tally
from service import spans
from service.background import cancel_and_wait
from service.cache import ttl as ttlmod
from service.cache.analytics import MB, Analytics
from service.cache.codec import from_blob, pack, to_blob, unpack, usage_of
from service.cache.keys import KeyBuilder, fingerprint, text_tier
from service.cache.maintenance import Maintenance
from service.cache.memory import CHUNK, Entry, MemoryTier
from service.cache.redis_tier import RedisTier
from service.cache.savings import Savings
from service.cache.warming import Warmer
from service.redis_client import topology

log = logging.getLogger("service.cache")


class ResponseCache:
    def __init__(self, ctx):
        self.ctx = ctx
        self.store = ctx.store
        self.stats = Analytics(self.store.get("cache")["ghost_keys"])
        self.l1 = MemoryTier(self._on_remove)
        self.l2 = RedisTier(ctx.redis, self.store, self._on_event)
        self.keys = KeyBuilder(self.store.get("cache"), self.store.values.get("ai"))
        self.hot: dict[str, Entry] = {}          # popular keys (warming candidates)
        self.fps: dict[bytes, int] = {}          # fingerprint -> entries (duplicate analysis)
        self.duplicates = 0                      # entries beyond the first of their fingerprint
        self._flights: dict[str, asyncio.Future] = {}
        self._compute = None                     # the latest compute callable (warming reuses it)
        self._gen = 0                            # bumped by invalidation: older computes are not stored
        self._bg: set[asyncio.Task] = set()
        self.hit_counts = Tally(lambda key: CACHE_HITS.labels(*key))  # (tier, operation) -> hits
        self.savings = Savings()                 # tokens and cost the hits did not spend again
        self._miss_c: dict[str, object] = {}
        self._evict_c: dict[str, object] = {}
        self._entries_g = CACHE_ENTRIES.labels("memory")
        self.warmer = Warmer(self)
        self.maint = Maintenance(self)
        self.optimizations: deque[dict] = deque(maxlen=50)
        self._read_cfg()
        self.store.subscribe(self._on_config)
        self._gauges()
        self._preinit()

    def _preinit(self) -> None:
        """The series of known label values at 0, so rate() reads 0 before the first event."""
        from service.providers.base import OPERATIONS
        tiers = ("memory", "redis") if self.l2.configured else ("memory",)
        for op in OPERATIONS:
            self._miss_c[op] = CACHE_MISSES.labels(op)
            for tier in tiers:
                CACHE_HITS.labels(tier, op)
        for tier in tiers:
            CACHE_STALE_SERVED.labels(tier)
        for reason in ("capacity", "expired"):
            self._evict_c[reason] = CACHE_EVICTIONS.labels(reason)
        for result in ("refreshed", "failed"):
            CACHE_WARMING.labels(result)
        if self.l2.configured:
            for state in ("down", "up"):
                CACHE_L2_TRANSITIONS.labels(state)
            self.l2.preinit()
        self.maint.preinit(self.store.get("cache"))

    # ---- config ----------------------------------------------------------------
    def _read_cfg(self) -> None:
        cfg = self.store.get("cache")
        self._pop_thr = cfg["popularity_threshold"]
        self.stats.ghost_keys = cfg["ghost_keys"]
        while len(self.stats.ghosts) > cfg["ghost_keys"]:
            self.stats.ghosts.popitem(last=False)
        self._tiers = sorted((v, k) for k, v in cfg["text_size_tiers"].items())
        self.enabled = self.store.values.get("monitoring", {}).get("enable_caching", True)

    def _mon(self) -> dict | None:
        return self.store.values.get("monitoring")

    def _on_config(self, name: str, new: dict, old: dict) -> None:
        if name == "monitoring":
            self.enabled = new.get("enable_caching", True)
            return
        if name == "ai":
            self.keys.configure(self.store.get("cache"), new)
            return
        if name != "cache":
            return
        self.keys.configure(new, self.store.values.get("ai"))
        self._read_cfg()
        self.maint.preinit(new)
        now = time.time()
        n, freed = self.maint.enforce("resize", now)  # bounded per call: the rest in a task (maintenance.py)
        if n:
            log.info("cache resized", extra={"evicted": n, "bytes_freed": freed})
        self.maint.check_pressure(new, now)
        self._gauges()
        self.warmer.ensure()
        self.maint.wake()

    # ---- keys --------------------------------------------------------------------
    def key_for(self, req) -> str:
        return self.keys.key_for(req)

    def _tier(self, length: int) -> str:
        return text_tier(length, self._tiers)

    # ---- the request path ----------------------------------------------------------
    def lookup(self, key: str, req) -> bytes | None:
        """A fresh L1 hit for `key`, counted, or None (then call get_or_compute).

        Synchronous: a hit needs no await, only this dict lookup and a few additions.
        """
        if not self.enabled:
            return None
        e = self.l1.data.get(key)
        if e is None:
            return None
        now = time.time()
        if e.expires_at <= now:
            return None
        self.l1.data.move_to_end(key)
        e.hits += 1
        e.recent += 1
        if e.hits >= self._pop_thr and not e.popular:
            self._make_popular(e, req)
        cells = e.cells  # its (operation, size tier)'s hit counts: the analytics' and the metric's
        if cells is None:
            cells = e.cells = (self.stats.cell(e.op, e.tier), self.hit_counts.cell(("memory", e.op)))
        cells[0][0] += 1
        cells[1][0] += 1
        stats = self.stats
        if now < stats.cur_end:  # (the hits of the current minute; minute() starts the next one)
            stats.cur[1] += 1
        else:
            stats.minute(now)[1] += 1
        if e.usage is not None:
            self.savings.hit(e.usage)
        return zlib.decompress(e.value) if e.compressed else e.value

    async def get_or_compute(self, req, compute, key: str | None = None):
        t0 = perf_counter()
        self._compute = compute
        if not self.enabled:
            return await compute(req), False
        if key is None:
            key = self.keys.key_for(req)
        value = self.lookup(key, req)
        if value is not None:
            spans.record("cache.lookup", perf_counter() - t0)
            return value, True
        fut = self._flights.get(key)
        if fut is not None:
            self.stats.single_flight_joins += 1
            CACHE_SINGLE_FLIGHT.inc()
            return await asyncio.shield(fut)
        fut = asyncio.ensure_future(self._load(key, req, compute, self.l1.data.get(key), t0))
        self._flights[key] = fut
        fut.add_done_callback(partial(self._flight_done, key))
        return await asyncio.shield(fut)

    def _flight_done(self, key: str, fut: asyncio.Future) -> None:
        if self._flights.get(key) is fut:
            del self._flights[key]
        if not fut.cancelled():
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waited

    def user_inflight(self) -> int:
        return len(self._flights) - len(self.warmer.running)

    async def _load(self, key: str, req, compute, old: Entry | None, t0: float):
        gen = self._gen
        op = req.operation
        stier = self._tier(len(req.text))
        if self.l2.usable:
            t = perf_counter()
            blob = await self.l2.get(key)
            spans.record("cache.l2_get", perf_counter() - t)
            now = time.time()
            if blob is not None:
                try:
                    meta, stored = from_blob(blob)
                    value = unpack(stored, meta["z"]) if meta["exp"] > now else None
                except (ValueError, zlib.error):
                    value = None
                if value is not None:
                    usage = usage_of(meta)
                    if gen == self._gen:
                        e = Entry(key, stored, meta["z"], op, stier, float(meta.get("st", now)),
                                  float(meta.get("ttl", meta["exp"] - now)), fingerprint(req))
                        e.expires_at = meta["exp"]
                        e.usage = usage
                        self._put(e, self.store.get("cache"), now)
                    self.stats.hit(op, stier, "redis", now)
                    self.hit_counts.add(("redis", op))
                    if usage is not None:
                        self.savings.hit(usage)
                    spans.record("cache.lookup", perf_counter() - t0)
                    return value, True
        now = time.time()
        self._count_miss(key, req, op, stier, old, now)
        spans.record("cache.lookup", perf_counter() - t0)
        t = perf_counter()
        value = await compute(req)
        dt = perf_counter() - t
        spans.record("cache.compute", dt)
        acc = self.stats.compute[op]
        acc[0] += 1
        acc[1] += dt
        if gen == self._gen:
            e = self._store(key, req, value, time.time())
            if self.l2.usable:
                await self._l2_write(e)
        return value, False

    def _count_miss(self, key: str, req, op: str, stier: str, old: Entry | None, now: float) -> None:
        st = self.stats
        st.miss(op, stier, now)
        c = self._miss_c.get(op)
        if c is None:
            c = self._miss_c[op] = CACHE_MISSES.labels(op)
        c.inc()
        if old is not None:
            st.expired_misses += 1
            if old.popular:
                st.popular_expired_misses += 1
        elif key in st.ghosts:
            st.capacity_misses += 1
        if self.fps:
            fp = fingerprint(req)
            same = 1 if old is not None and old.fp == fp else 0
            if self.fps.get(fp, 0) - same > 0:
                st.normalization_misses += 1

    def _make_popular(self, e: Entry, req) -> None:
        e.popular = True
        self.l1.grow(e, e.attach(req))
        self.hot[e.key] = e
        cfg = self.store.get("cache")
        if cfg["adaptive_ttl"]:
            ttl = ttlmod.popular_ttl(e.op, cfg, self._mon())
            if ttl > e.ttl:
                e.ttl = ttl
                e.expires_at = e.stored_at + ttl
                if self.l2.usable:
                    self._spawn(self._l2_write(e))

    def _spawn(self, coro) -> None:
        t = asyncio.ensure_future(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    # ---- storing ---------------------------------------------------------------------
    def _store(self, key: str, req, value: bytes, now: float, hits: int = 0, popular: bool = False) -> Entry:
        cfg = self.store.get("cache")
        op = req.operation
        usage = getattr(value, "usage", None)  # a computed Answer carries what its call spent
        if type(value) is not bytes:
            value = bytes(value)  # the entry holds plain bytes (an Answer has a __dict__)
        ttl = (ttlmod.popular_ttl if popular else ttlmod.operation_ttl)(op, cfg, self._mon())
        stored, z = pack(value, int(cfg["compression_threshold_mb"] * MB), cfg["compression_level"])
        e = Entry(key, stored, z, op, self._tier(len(req.text)), now, ttl, fingerprint(req))
        e.usage = usage
        e.hits = hits
        if popular:
            e.popular = True
            e.attach(req)
        st = self.stats
        st.sets += 1
        st.set_bytes += len(value)
        st.stored_bytes += len(stored)
        st.compressed_sets += z
        self._put(e, cfg, now)
        if popular and self.l1.data.get(key) is e:
            self.hot[key] = e
        return e

    def _put(self, e: Entry, cfg: dict, now: float) -> None:
        max_bytes = int(cfg["max_memory_mb"] * MB)
        if e.size > max_bytes:  # larger than the whole tier: L2 only
            self.stats.evicted(e.key, "too_large")
            self._evicted_metric("too_large")
            return
        self.l1.put(e)
        n = self.fps.get(e.fp, 0)
        self.fps[e.fp] = n + 1
        if n:
            self.duplicates += 1
        # one insert evicts at most memory.CHUNK: a tier far over its limits (a shrink at work) drains in a task
        self.l1.evict_while(lambda: len(self.l1.data) > cfg["max_entries"] or self.l1.bytes > max_bytes,
                            cfg["eviction_policy"], now, "capacity", protect=e, limit=CHUNK)
        self.maint.check_pressure(cfg, now)
        self._gauges()

    async def _l2_write(self, e: Entry) -> None:
        keep = e.expires_at - time.time() + self.store.get("cache")["stale_ttl_seconds"]
        if keep > 0:
            await self.l2.set(e.key, to_blob(e.op, e.stored_at, e.ttl, e.expires_at, e.value, e.compressed,
                                              e.usage), keep)

    def _on_remove(self, e: Entry, reason: str) -> None:
        n = self.fps.get(e.fp, 0) - 1
        if n > 0:
            self.fps[e.fp] = n
            self.duplicates -= 1
        else:
            self.fps.pop(e.fp, None)
        if self.hot.get(e.key) is e:
            del self.hot[e.key]
        if reason != "replaced":
            self.stats.evicted(e.key, reason)
            self._evicted_metric(reason)

    def _evicted_metric(self, reason: str) -> None:
        c = self._evict_c.get(reason)
        if c is None:
            c = self._evict_c[reason] = CACHE_EVICTIONS.labels(reason)
        c.inc()

    def _gauges(self) -> None:
        self._entries_g.set(len(self.l1))
        CACHE_MEMORY.set(self.l1.bytes)
        CACHE_MAX_MEMORY.set(int(self.store.get("cache")["max_memory_mb"] * MB))

    # ---- warming ------------------------------------------------------------------------
    def refresh(self, e: Entry):
        """Recompute a hot entry in the background (None if it cannot be now)."""
        if e.key in self._flights or e.req is None or self._compute is None:
            return None
        e.warming = True
        fut = asyncio.ensure_future(self._warm(e, self._compute))
        self._flights[e.key] = fut
        fut.add_done_callback(partial(self._flight_done, e.key))
        return fut

    async def _warm(self, e: Entry, compute):
        gen = self._gen
        try:
            t = perf_counter()
            value = await compute(e.req)
            spans.record("cache.warm", perf_counter() - t)
        finally:
            e.warming = False
        if gen == self._gen and self.l1.data.get(e.key) is e:
            new = self._store(e.key, e.req, value, time.time(), hits=e.hits, popular=True)
            if self.l2.usable:
                await self._l2_write(new)
        return value, False

    # ---- fallbacks and health ---------------------------------------------------------------
    async def get_stale(self, req) -> bytes | None:
        key = self.keys.key_for(req)
        now = time.time()
        e = self.l1.data.get(key)
        if e is not None and now - e.expires_at <= self.store.get("cache")["stale_ttl_seconds"]:
            self.stats.stale_served["memory"] += 1
            CACHE_STALE_SERVED.labels("memory").inc()
            return unpack(e.value, e.compressed)
        if self.l2.usable:
            blob = await self.l2.get(key)
            if blob is not None:
                try:
                    meta, stored = from_blob(blob)
                    value = unpack(stored, meta["z"])
                except (ValueError, zlib.error):
                    return None
                self.stats.stale_served["redis"] += 1
                CACHE_STALE_SERVED.labels("redis").inc()
                return value
        return None

    async def health(self) -> dict:
        out = {"backend": "memory" if not self.l2.configured else "memory+redis", "entries": len(self.l1),
               "memory_bytes": self.l1.bytes}
        if self.l2.configured:
            out["redis_topology"] = topology(self.ctx.redis)
        if not self.l2.configured or not self.store.get("cache")["use_redis"]:
            return {"status": "healthy", **out}
        if not self.l2.up:
            return {"status": "unhealthy", **out, "redis": "down", "serving": "memory",
                    "down_for_seconds": round(time.time() - (self.l2.down_since or time.time()), 3),
                    "error": self.l2.last_error}
        try:
            rtt = await self.l2.ping()
        except Exception as e:
            self.l2.failed("ping", e)
            return {"status": "unhealthy", **out, "redis": "down", "serving": "memory", "error": self.l2.last_error}
        return {"status": "healthy", **out, "redis": "up", "redis_ping_ms": round(rtt * 1000, 3)}

    # ---- invalidation ----------------------------------------------------------------------
    async def invalidate(self, match: str) -> dict:
        """Drop every key matching the glob `match` ("<operation>:<digest>") in both tiers."""
        self._gen += 1
        n1, b1 = await self.l1.remove_matching(lambda e: fnmatch.fnmatchcase(e.key, match), "invalidated")
        n2 = await self.l2.delete_matching(match) if self.l2.configured else -1
        await self.l2.publish({"kind": "invalidate", "match": match})
        self._gauges()
        return {"match": match, "memory_removed": n1, "memory_bytes_freed": b1,
                "redis_removed": n2 if n2 >= 0 else None,
                "redis": "absent" if not self.l2.configured else ("up" if self.l2.up else "down")}

    def _on_event(self, event: dict) -> None:
        if event.get("kind") == "invalidate" and isinstance(event.get("match"), str):
            self._gen += 1
            self._spawn(self._invalidate_here(event["match"]))

    async def _invalidate_here(self, match: str) -> None:
        await self.l1.remove_matching(lambda e: fnmatch.fnmatchcase(e.key, match), "invalidated")
        self._gauges()

    def duplicate_entries(self) -> int:
        """Entries whose fully normalized content is already cached under another key (kept as they come and go)."""
        return self.duplicates

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.l2.start()
        if self.l2.configured and self.l2.up:
            from service.redis_client import warm_pool
            await warm_pool(self.ctx.redis)
        self.maint.start()
        self.warmer.ensure()

    async def close(self) -> None:
        self.hit_counts.close()
        self.savings.close()
        await self.warmer.close()
        await self.maint.close()
        await self.l2.close()
        await cancel_and_wait([*self._bg, *self._flights.values()])

    # ---- optimization ----------------------------------------------------------------------------
    async def weekly_optimization(self, source: str, **audit) -> dict:
        """Apply every recommendation that has an action; record before and after."""
        from service.cache.analytics import recommendations
        from service.cache.views import snapshot
        recs = recommendations(self)
        changes: dict = {}
        applied, informational = [], []
        for r in recs:
            if r["action"] is None:
                informational.append({"id": r["id"], "reason": r["reason"]})
                continue
            changes.update(r["action"]["changes"])
            applied.append({"id": r["id"], "reason": r["reason"], "changes": r["action"]["changes"],
                            "evidence": r["evidence"]})
        cfg = self.store.get("cache")
        before = {"measured": snapshot(self), "config": {k: cfg[k] for k in changes}}
        version = None
        if changes:
            await self.store.update("cache", changes, source=source, **audit)
            version = self.store.version
        cfg = self.store.get("cache")
        run = {"run": len(self.optimizations) + 1, "time": time.time(), "applied": applied,
               "informational": informational, "before": before,
               "after": {"measured": snapshot(self), "config": {k: cfg[k] for k in changes}},
               "config_version": version}
        self.optimizations.append(run)
        return run

    async def emergency_cleanup(self) -> dict:
        return await self.maint.emergency_cleanup()
