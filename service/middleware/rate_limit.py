"""Rate limiting per client and the global throttle.

A client is its key's name (`key:<name>`, from auth), or for a request without
a key (public routes, the open mode) a keyed hash of its address
(`ip:<hmac>`, service/secret.py).  Its tier is `rate_limit.client_tiers[name]`,
else the tier of its API_KEYS_FILE entry, else the default limit.

Innermost, after auth, so the client is known.  Only paths under
`rate_limit.paths` are limited (/v1/text by default): health, metrics and
the /internal operator routes stay reachable while clients are throttled.
The decision is made by service/ratelimit (GCRA in Redis with local token
leases; local GCRA without Redis).  A refusal is 429 with Retry-After and
RateLimit-Limit / -Remaining / -Reset / -Policy; allowed answers carry
RateLimit-Limit / -Remaining / -Reset unless `headers` is off.
"""
from __future__ import annotations

import math

from service.context import BENCHMARK_MARK, KEY_NAME, KEY_TIER
from service.errors import ApiError
from service.keys import ANONYMOUS, BENCHMARK
from service.middleware.stack import Layer, Wait
from service.ratelimit import GLOBAL, RateLimiter

NAME = "rate_limit"


def _refuse(rl: RateLimiter, decision, limit: int, burst: int, scope: str, tier: str | None, cid: str | None):
    retry = max(1, math.ceil(decision[3]))
    headers = {"Retry-After": str(retry), "RateLimit-Limit": str(limit), "RateLimit-Remaining": "0",
               "RateLimit-Reset": str(max(retry, math.ceil(decision[2]))), "RateLimit-Policy": rl.policy(limit, burst)}
    details = {"scope": scope, "limit_per_minute": limit, "burst_size": burst, "retry_after_seconds": retry}
    if tier is not None:
        details["tier"] = tier
    if cid is not None:
        details["client_id"] = cid
    what = "the service-wide throttle" if scope == "global" else "your rate limit"
    return ApiError(429, "RATE_LIMITED", f"{what} of {limit} requests per minute is used up; retry in {retry}s",
                    details, headers=headers)


class RateLimitLayer(Layer):
    """None (not limited), or what the answer's RateLimit headers say: (limit, decision, headers on)."""
    name = NAME

    def __init__(self, ctx):
        rl = ctx.ratelimiter
        if rl is None:
            rl = ctx.ratelimiter = RateLimiter(ctx.store, ctx.settings.redis_url)
        self.rl = rl
        self.get = ctx.store.get
        self.secret = ctx.secret

    def skips(self, path: str, method: str) -> bool:
        cfg = self.get("rate_limit")
        return not ((cfg["enabled"] or cfg["global_limit_per_minute"] is not None) and path.startswith(self.rl.prefixes))

    def enter(self, request):
        cfg = self.get("rate_limit")
        glimit = cfg["global_limit_per_minute"]
        rl = self.rl
        if not ((cfg["enabled"] or glimit is not None) and request.path.startswith(rl.prefixes)) \
                or request.get(BENCHMARK_MARK):
            return None
        g = None
        if glimit is not None:
            g = rl.check(GLOBAL, glimit, cfg["burst_size"])
            if g is None:
                return Wait((cfg, None))  # no local lease of the global throttle: ask Redis
            self._check_global(g, cfg)
        if not cfg["enabled"]:
            rl.count(True, GLOBAL)
            return glimit, g, cfg["headers"]
        cid, limit, tier = self._client(request, cfg)
        d = rl.check(cid, limit, cfg["burst_size"])
        if d is None:
            return Wait((cfg, g))
        return self._decided(cfg, d, limit, tier, cid)

    async def wait(self, request, pending):
        cfg, g = pending
        rl = self.rl
        burst = cfg["burst_size"]
        glimit = cfg["global_limit_per_minute"]
        if glimit is not None and g is None:
            g = await rl.acquire(GLOBAL, glimit, burst)
            self._check_global(g, cfg)
            if not cfg["enabled"]:
                rl.count(True, GLOBAL)
                return glimit, g, cfg["headers"]
            cid, limit, tier = self._client(request, cfg)
            d = rl.check(cid, limit, burst)
            if d is None:
                d = await rl.acquire(cid, limit, burst)
        else:
            cid, limit, tier = self._client(request, cfg)
            d = await rl.acquire(cid, limit, burst)
        return self._decided(cfg, d, limit, tier, cid)

    def _check_global(self, g, cfg) -> None:
        if not g[0]:
            self.rl.count(False, GLOBAL)
            raise _refuse(self.rl, g, cfg["global_limit_per_minute"], cfg["burst_size"], "global", None, None)

    def _client(self, request, cfg) -> tuple:
        """(client id, its limit, its tier): a key's name, else a keyed hash of the address."""
        name = request.get(KEY_NAME)
        if name in UNNAMED:
            name = None
            cid = self.secret.client_ip_id(request.remote)
        else:
            cid = "key:" + name
        limit, tier = self.rl.limit_for(name, request.get(KEY_TIER), cfg)
        return cid, limit, tier

    def _decided(self, cfg, d, limit: int, tier, cid: str):
        self.rl.count(d[0], tier)
        if not d[0]:
            raise _refuse(self.rl, d, limit, cfg["burst_size"], "client", tier, cid)
        return limit, d, cfg["headers"]

    def leave(self, request, resp, state):
        if state is not None and state[2]:
            limit, d, _ = state
            h = resp.headers
            h["RateLimit-Limit"] = str(limit)
            h["RateLimit-Remaining"] = str(d[1])
            h["RateLimit-Reset"] = str(math.ceil(d[2]) if d[2] > 0 else 0)


UNNAMED = (None, ANONYMOUS, BENCHMARK)  # requests limited by address, not by key


def make(ctx):
    return RateLimitLayer(ctx)
