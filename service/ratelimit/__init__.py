"""Rate limiting: one global limit per client across processes, without a Redis call per request.

Each client (and the global throttle) is a GCRA bucket in Redis
("{llmapi}:rl:c:<client id>", "{llmapi}:rl:global"; the client id is
`key:<key name>` or `ip:<keyed hash of the address>`, never a key).  A process does not ask Redis per
request: it leases tokens, a few at a time, with one atomic Lua call
(service/ratelimit/gcra.py) and spends them locally.  Redis never grants
more than the limit allows, so the limit holds exactly across any number of
processes; a lease is sized to about `lease_window_ms` of the process's own
traffic, is refilled in the background before it runs out, and expires
after twice that window (an unused remainder is dropped, never carried into
a later burst).  When Redis grants nothing the bucket is closed locally
until the time Redis named, so refused requests cost no Redis call either.

Without Redis (no REDIS_URL, `use_redis` off) every process enforces the
limit alone with the same algorithm in memory.  When Redis fails or is
slower than `redis.rate_limit_timeout_ms` the limiter falls back to that local limiter
for `redis_retry_seconds`, probes Redis in the background and goes back to
it when it answers.  Memory for both is bounded by `local_cache_size`
clients.  Nothing in here raises to the request: a broken Redis means local
limiting, never a 5xx.

The local fallback limits each process to its share of the limit, so N
processes falling back together still hold about one limit, not N: while
Redis answers, every process keeps itself in a member set ("{llmapi}:rl:members",
a heartbeat every MEMBER_BEAT seconds, forgotten after MEMBER_TTL), and the
fallback divides the rate and the burst by the member count last seen.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from time import monotonic, perf_counter

from exporter.metrics import RATE_LIMIT_DECISIONS, RATE_LIMIT_FALLBACK, RATE_LIMIT_LEASES, REDIS_LATENCY
from exporter.tally import Tally
from service.background import cancel_and_wait
from service.ratelimit.gcra import LEASE_SCRIPT, LocalGCRA, capacity

log = logging.getLogger("service.ratelimit")

KEY_PREFIX = "{llmapi}:rl"
GLOBAL = "global"          # the throttle's bucket, and its tier label in llmapi_rate_limit_decisions
DEFAULT_TIER = "default"   # the tier label of a client without a configured tier
LEASE_RESULTS = ("granted", "partial", "empty", "error")  # llmapi_rate_limit_leases{result}
GRANTED, PARTIAL, EMPTY, ERROR = LEASE_RESULTS
LEASE_COMMAND = "ratelimit_lease"  # llmapi_redis_command_duration_seconds{command} of a lease
MIN_LEASE_TTL = 0.05
MEMBERS = f"{KEY_PREFIX}:members"
MEMBER_BEAT = 5.0      # seconds between heartbeats of one process
MEMBER_TTL = 20.0      # a process not heard of for this long no longer counts


async def _close_quietly(client) -> None:
    try:
        await client.aclose()
    except Exception:
        pass


class Bucket:
    __slots__ = ("tokens", "expires", "refill", "want", "used", "leased_at", "rate", "remaining", "reset_at",
                 "denied_until", "retry_at")

    def __init__(self):
        self.tokens = 0
        self.expires = 0.0
        self.refill = None
        self.want = 1
        self.used = 0
        self.leased_at = 0.0
        self.rate = 0.0          # requests/s through this process, smoothed
        self.remaining = 0       # tokens left in Redis after the last lease
        self.reset_at = 0.0      # monotonic time the Redis bucket is full again
        self.denied_until = 0.0  # Redis granted nothing: refuse locally until then
        self.retry_at = 0.0


class RateLimiter:
    def __init__(self, store, redis_url: str | None):
        self.store = store
        self.redis_url = redis_url
        self.buckets: dict[str, Bucket] = {}
        cfg = store.get("rate_limit")
        self.local = LocalGCRA(cfg["local_cache_size"])
        self._redis = None
        self._script = None
        self._old_clients: list = []
        self._closing: set = set()
        self.down_until = 0.0
        self._probe = None
        self.member = uuid.uuid4().hex   # this process in the member set
        self.sharing = 1                 # processes sharing the limits, as last seen in Redis
        self._beat_at = 0.0
        self._beat: asyncio.Future | None = None
        self._policy: dict = {}
        self.prefixes: tuple = ()
        self.reset_stats()
        self._build()
        store.subscribe(self._on_config)

    # ---- config ------------------------------------------------------------------
    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section == "redis":
            if new["rate_limit_timeout_ms"] != old.get("rate_limit_timeout_ms"):
                self._drop_client()  # the next decision connects with the new timeout
            return
        if section != "rate_limit":
            return
        self._build()
        if new["redis_pool_size"] != old.get("redis_pool_size") or new["use_redis"] != old.get("use_redis"):
            self._drop_client()
        if new["requests_per_minute"] != old.get("requests_per_minute") or new["burst_size"] != old.get("burst_size") \
                or new["client_tier_limits"] != old.get("client_tier_limits") \
                or new["global_limit_per_minute"] != old.get("global_limit_per_minute"):
            # leases and refusals were sized for the old limits
            for b in self.buckets.values():
                b.tokens = 0
                b.denied_until = 0.0
                b.want = 1

    def _build(self) -> None:
        cfg = self.store.get("rate_limit")
        self.prefixes = tuple(cfg["paths"])
        self.local.max_keys = cfg["local_cache_size"]
        self.redis_enabled = bool(self.redis_url) and cfg["use_redis"]
        self.lease_window = cfg["lease_window_ms"] / 1000.0
        self.lease_ttl = max(MIN_LEASE_TTL, 2 * self.lease_window)
        self._preinit(cfg)

    def _preinit(self, cfg: dict) -> None:
        """Known label values at 0, so rate() reads 0 before the first event: a decision of every tier (the
        configured ones again after a change), and with Redis the lease results and the lease latency."""
        for tier in (GLOBAL, DEFAULT_TIER, *cfg["client_tier_limits"]):
            for allowed in (True, False):
                self.decisions.child_for((allowed, tier))
        if self.redis_enabled:
            for result in LEASE_RESULTS:
                RATE_LIMIT_LEASES.labels(result)
            REDIS_LATENCY.labels(LEASE_COMMAND)

    @property
    def mode(self) -> str:
        if not self.redis_enabled:
            return "local"
        return "fallback" if monotonic() < self.down_until else "redis"

    def _client(self):
        if self._redis is None:
            from service.redis_client import make_redis

            cfg = self.store.get("rate_limit")
            # any topology; the script's one key decides the node, and a NOSCRIPT (a new primary, a
            # flushed script cache) loads it again there
            self._redis = make_redis(self.redis_url, {}, max_connections=cfg["redis_pool_size"],
                                     timeout=self.store.get("redis")["rate_limit_timeout_ms"] / 1000.0, retries=0)
            self._script = self._redis.register_script(LEASE_SCRIPT)
        return self._redis

    def _drop_client(self) -> None:
        """Forget the client (its settings changed); it is closed in the background."""
        if self._redis is None:
            return
        old, self._redis, self._script = self._redis, None, None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._old_clients.append(old)
            return
        task = loop.create_task(_close_quietly(old))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        self._drop_client()
        await cancel_and_wait([self._probe, self._beat, *(b.refill for b in self.buckets.values())])
        self._probe = self._beat = None
        for c in self._old_clients:
            await _close_quietly(c)
        self._old_clients.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # ---- who and how much ------------------------------------------------------------
    def limit_for(self, name: str | None, key_tier: str | None, cfg: dict) -> tuple[int, str]:
        """(limit, tier) of a client: client_tiers[key name], else its key's own tier, else the default."""
        tier = cfg["client_tiers"].get(name, key_tier) if name is not None else None
        limit = cfg["client_tier_limits"].get(tier) if tier is not None else None
        if limit is None:
            tier = DEFAULT_TIER
            limit = cfg["requests_per_minute"]
        if cfg["adaptive_limits"]:
            limit = max(1, int(limit * self.multiplier(cfg)))
        return limit, tier

    @staticmethod
    def multiplier(cfg: dict, now: float | None = None) -> float:
        hour = int((time.time() if now is None else now) // 3600 % 24)
        return cfg["peak_multiplier"] if hour in cfg["peak_hours"] else cfg["off_peak_multiplier"]

    def policy(self, limit: int, burst: int) -> str:
        key = (limit, burst)
        p = self._policy.get(key)
        if p is None:
            if len(self._policy) > 256:
                self._policy.clear()
            p = self._policy[key] = f"{limit};w=60;burst={burst}"
        return p

    # ---- decisions -----------------------------------------------------------------
    def check(self, key: str, limit: int, burst: int):
        """Decide without awaiting: (allowed, remaining, reset_s, retry_s), or None when the caller must
        `await acquire(...)` (the local lease is empty)."""
        if not self.redis_enabled:
            self.local_decisions += 1
            return self.local.decide(key, limit, burst)
        b = self.buckets.get(key)
        if b is None:
            return None
        now = monotonic()
        if b.tokens > 0 and now < b.expires:
            b.tokens -= 1
            b.used += 1
            self.lease_hits += 1
            if b.tokens * 2 <= b.want and b.refill is None and now >= self.down_until:
                b.refill = asyncio.ensure_future(self._refill(key, b, limit, burst))
            return True, b.remaining + b.tokens, b.reset_at - now, 0.0
        if now < b.denied_until:
            self.lease_hits += 1
            return False, 0, b.reset_at - now, b.denied_until - now
        return None

    async def acquire(self, key: str, limit: int, burst: int):
        """The slow path: wait for a lease from Redis (shared by concurrent requests of the bucket)."""
        t0 = perf_counter()
        self.slow_path += 1
        try:
            for _ in range(4):
                now = monotonic()
                if now < self.down_until:
                    self._maybe_probe(now)
                    return self._local(key, limit, burst)
                b = self.buckets.get(key)
                if b is None:
                    b = self.buckets[key] = Bucket()
                    if len(self.buckets) > self.store.get("rate_limit")["local_cache_size"]:
                        self._evict()
                if b.tokens > 0 and now < b.expires:
                    b.tokens -= 1
                    b.used += 1
                    return True, b.remaining + b.tokens, b.reset_at - now, 0.0
                if now < b.denied_until:
                    return False, 0, b.reset_at - now, b.denied_until - now
                if b.refill is None:
                    b.refill = asyncio.ensure_future(self._refill(key, b, limit, burst))
                if not await asyncio.shield(b.refill):
                    return self._local(key, limit, burst)
            # the leases kept going to concurrent requests: refuse this one briefly
            return False, 0, 0.0, self.lease_ttl
        finally:
            self.slow_path_seconds += perf_counter() - t0

    def _local(self, key: str, limit: int, burst: int):
        """Redis is unusable: this process's share of the limit (see the module doc)."""
        self.fallback_decisions += 1
        n = self.sharing
        return self.local.decide(key, max(1, limit // n), burst // n)

    async def _heartbeat(self) -> None:
        """Keep this process in the member set and learn how many share the limits (one slot, one round trip)."""
        now = time.time()
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.zadd(MEMBERS, {self.member: now})
            pipe.zremrangebyscore(MEMBERS, "-inf", now - MEMBER_TTL)
            pipe.zcard(MEMBERS)
            pipe.pexpire(MEMBERS, int(MEMBER_TTL * 2000))
            *_, n, _ = await pipe.execute()
            self.sharing = max(1, int(n))
        except Exception:
            pass

    def _evict(self) -> None:
        for k in list(self.buckets)[: max(1, len(self.buckets) // 10)]:
            b = self.buckets[k]
            if b.refill is None:
                del self.buckets[k]
                self.bucket_evictions += 1

    async def _refill(self, key: str, b: Bucket, limit: int, burst: int) -> bool:
        """Lease tokens for the bucket; False when Redis failed (the caller limits locally)."""
        now = monotonic()
        if b.leased_at:
            dt = now - b.leased_at
            if dt > 0:
                sample = b.used / dt
                b.rate = sample if b.rate == 0 else 0.5 * b.rate + 0.5 * sample
        cap = capacity(limit, burst, self.lease_window)
        b.want = max(1, min(max(1, cap // 2), math.ceil(b.rate * self.lease_window)))
        want = b.want
        rkey = f"{KEY_PREFIX}:{'c:' + key if key != GLOBAL else GLOBAL}"
        t0 = perf_counter()
        try:
            self._client()
            granted, remaining, wait_us, reset_us = await self._script(
                keys=[rkey], args=[60_000_000.0 / limit, cap, want])
        except asyncio.CancelledError:
            b.refill = None
            raise
        except Exception as e:
            b.refill = None
            self._failed(e)
            return False
        finally:
            dt = perf_counter() - t0
            self.redis_calls += 1
            self.redis_seconds += dt
            self.redis_recent.append(dt)
            if dt > self.redis_max:
                self.redis_max = dt
            REDIS_LATENCY.labels(LEASE_COMMAND).observe(dt)
        now = monotonic()
        granted = int(granted)
        if now >= b.expires:
            b.tokens = 0
        b.tokens += granted
        b.expires = now + self.lease_ttl
        b.remaining = int(remaining)
        b.reset_at = now + int(reset_us) / 1e6
        if granted == 0:
            # the bucket is empty: refuse locally until a token is due, and at least for a while (half the
            # lease window, at most half the bucket's refill time) so a saturated client costs no Redis call
            # per request; the tokens that come due meanwhile wait in Redis for the next lease
            interval = 60.0 / limit
            hold = min(self.lease_window / 2, (cap - 1) * interval / 2)
            b.denied_until = now + max(int(wait_us) / 1e6, hold)
        else:
            b.denied_until = 0.0
        b.leased_at = now
        b.used = 0
        if now - self._beat_at >= MEMBER_BEAT:
            self._beat_at = now
            self._beat = asyncio.ensure_future(self._heartbeat())
        self.tokens_leased += granted
        RATE_LIMIT_LEASES.labels(GRANTED if granted == want else PARTIAL if granted else EMPTY).inc()
        if self.down_until:
            self._recovered()
        b.refill = None
        return True

    # ---- Redis health ----------------------------------------------------------------
    def _failed(self, e: Exception) -> None:
        self.redis_errors += 1
        RATE_LIMIT_LEASES.labels(ERROR).inc()
        now = monotonic()
        if now >= self.down_until:
            self.fallback_activations += 1
            log.warning("rate limit: Redis unavailable (%s), limiting locally", type(e).__name__)
        self.down_until = now + self.store.get("rate_limit")["redis_retry_seconds"]
        RATE_LIMIT_FALLBACK.set(1)

    def _recovered(self) -> None:
        self.down_until = 0.0
        RATE_LIMIT_FALLBACK.set(0)
        log.info("rate limit: Redis is back, limits are global again")

    def _maybe_probe(self, now: float) -> None:
        """While falling back, check Redis in the background (never on a request's time)."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_redis())

    async def _probe_redis(self) -> None:
        delay = max(0.0, self.down_until - monotonic())
        await asyncio.sleep(delay)
        try:
            await self._client().ping()
        except Exception as e:
            self._failed(e)
            return
        self._recovered()

    # ---- accounting -----------------------------------------------------------------
    def count(self, allowed: bool, tier: str) -> None:
        self.decisions.add((allowed, tier))

    def decision_totals(self) -> tuple[int, int]:
        allowed = denied = 0
        for (ok, _), n in self.decisions.totals().items():
            if ok:
                allowed += n
            else:
                denied += n
        return allowed, denied

    def reset_stats(self) -> None:
        self.since = time.time()
        if getattr(self, "decisions", None) is None:
            self.decisions = Tally(lambda k: RATE_LIMIT_DECISIONS.labels("allowed" if k[0] else "denied", k[1]))
        else:
            self.decisions.reset()
        self.lease_hits = 0
        self.slow_path = 0
        self.slow_path_seconds = 0.0
        self.local_decisions = 0
        self.fallback_decisions = 0
        self.fallback_activations = 0
        self.redis_calls = 0
        self.redis_errors = 0
        self.redis_seconds = 0.0
        self.redis_max = 0.0
        self.redis_recent: deque = deque(maxlen=512)
        self.tokens_leased = 0
        self.bucket_evictions = 0

    def stats(self) -> dict:
        allowed, denied = self.decision_totals()
        decisions = allowed + denied
        without_rtt = self.lease_hits + self.local_decisions + self.fallback_decisions
        recent = sorted(self.redis_recent)
        return {
            "mode": self.mode,
            "decisions": {"allowed": allowed, "denied": denied, "total": decisions},
            "redis_average_latency": round(self.redis_seconds / self.redis_calls * 1000, 4) if self.redis_calls else 0.0,
            "redis_p95_latency": round(recent[int(0.95 * (len(recent) - 1))] * 1000, 4) if recent else 0.0,
            "redis_max_latency": round(self.redis_max * 1000, 4),
            "redis_calls": self.redis_calls,
            "redis_errors": self.redis_errors,
            "requests_per_redis_call": round(decisions / self.redis_calls, 2) if self.redis_calls else None,
            "tokens_leased": self.tokens_leased,
            "local_cache_stats": {
                "hit_ratio": round(min(1.0, without_rtt / decisions), 4) if decisions else 1.0,
                "lease_hits": self.lease_hits,
                "slow_path": self.slow_path,
                "local_decisions": self.local_decisions,
                "fallback_decisions": self.fallback_decisions,
                "clients_leasing": len(self.buckets),
                "clients_local": len(self.local),
                "capacity": self.store.get("rate_limit")["local_cache_size"],
                "evictions": self.bucket_evictions + self.local.evictions,
            },
            "slow_path_average_ms": round(self.slow_path_seconds / self.slow_path * 1000, 4) if self.slow_path else 0.0,
            "fallback_activations": self.fallback_activations,
            "processes_sharing": self.sharing,
            "fallback_share": round(1 / self.sharing, 4),
            "since": self.since,
        }
