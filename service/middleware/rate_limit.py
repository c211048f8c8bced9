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
from time import perf_counter

from aiohttp import web

from service.errors import ApiError
from service.middleware.stackperf import SAMPLE, timed_inner
from service.keys import ANONYMOUS, BENCHMARK
from service.ratelimit import GLOBAL, RateLimiter

NAME = "rate_limit"
PROBED = True


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


def make(ctx):
    rl = ctx.ratelimiter
    if rl is None:
        rl = ctx.ratelimiter = RateLimiter(ctx.store, ctx.settings.redis_url)
    get = ctx.store.get
    secret = ctx.secret
    unnamed = (None, ANONYMOUS, BENCHMARK)

    @web.middleware
    async def rate_limit_middleware(request: web.Request, handler):
        rec = SAMPLE.get()
        if rec is not None:
            rec.append(perf_counter())
        cfg = get("rate_limit")
        glimit = cfg["global_limit_per_minute"]
        enabled = cfg["enabled"]
        if (enabled or glimit is not None) and request.path.startswith(rl.prefixes) \
                and not request.get("benchmark"):
            burst = cfg["burst_size"]
            if glimit is not None:
                d = rl.check(GLOBAL, glimit, burst)
                if d is None:
                    d = await rl.acquire(GLOBAL, glimit, burst)
                if not d[0]:
                    rl.count(False, GLOBAL)
                    raise _refuse(rl, d, glimit, burst, "global", None, None)
            if enabled:
                name = request.get("key_name")
                if name in unnamed:
                    name = None
                    cid = secret.client_ip_id(request.remote)
                else:
                    cid = "key:" + name
                limit, tier = rl.limit_for(name, request.get("key_tier"), cfg)
                d = rl.check(cid, limit, burst)
                if d is None:
                    d = await rl.acquire(cid, limit, burst)
                rl.count(d[0], tier)
                if not d[0]:
                    raise _refuse(rl, d, limit, burst, "client", tier, cid)
            else:
                rl.count(True, GLOBAL)
                limit = glimit
            resp = await handler(request) if rec is None else await timed_inner(rec, handler, request)
            if cfg["headers"]:
                h = resp.headers
                h["RateLimit-Limit"] = str(limit)
                h["RateLimit-Remaining"] = str(d[1])
                h["RateLimit-Reset"] = str(math.ceil(d[2]) if d[2] > 0 else 0)
        else:
            resp = await handler(request) if rec is None else await timed_inner(rec, handler, request)
        if rec is not None:
            rec.append(perf_counter())
        return resp

    return rate_limit_middleware
