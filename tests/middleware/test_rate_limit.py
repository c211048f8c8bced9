"""Rate limiting: GCRA leases on a real Redis, one global limit across processes, local fallback."""
import asyncio
import math
import time

import aiohttp
import pytest

from service.context import CTX
from service.redis_client import make_redis
from service.ratelimit.gcra import LEASE_SCRIPT, LocalGCRA, capacity
from tests.helpers import API_KEY

TEXT = "Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally."
BODY = {"text": TEXT}


def test_local_gcra_burst_then_rate():
    g = LocalGCRA(100)
    now = 1000.0
    allowed = [g.decide("k", 60, 4, now)[0] for _ in range(10)]
    assert allowed == [True] * 5 + [False] * 5
    ok, remaining, reset, retry = g.decide("k", 60, 4, now)
    assert not ok and 0 < retry <= 1.0
    assert g.decide("k", 60, 4, now + 1.0)[0]          # one more per second
    assert not g.decide("k", 60, 4, now + 1.0)[0]


def test_local_gcra_is_bounded():
    g = LocalGCRA(50)
    for i in range(500):
        g.decide(f"c{i}", 60, 1)
    assert len(g) <= 51 and g.evictions >= 449


async def test_lease_script_grants_exactly_the_limit(any_redis_url):
    r = make_redis(any_redis_url, {})
    script = r.register_script(LEASE_SCRIPT)
    interval_us = 60e6 / 600          # 10/s
    cap = capacity(600, 5, 0.1)
    assert cap == 6
    await script(keys=["{llmapi}:rl:warm"], args=[interval_us, cap, 1])  # connected, script loaded
    t0 = time.monotonic()
    results = await asyncio.gather(*(script(keys=["{llmapi}:rl:test"], args=[interval_us, cap, 4]) for _ in range(10)))
    came_due = int((time.monotonic() - t0) / 0.1)      # tokens that came due while the calls ran
    granted = sum(int(g) for g, *_ in results)
    assert 6 <= granted <= 6 + came_due                 # the burst, however many ask at once
    g, remaining, wait_us, reset_us = await script(keys=["{llmapi}:rl:test"], args=[interval_us, cap, 1])
    assert g == 0 and 0 < wait_us <= 100_000 and remaining == 0
    await asyncio.sleep(0.35)
    g, *_ = await script(keys=["{llmapi}:rl:test"], args=[interval_us, cap, 10])
    assert 3 <= g <= 4                                  # 0.35 s at 10/s
    ttl = await r.pttl("{llmapi}:rl:test")
    assert 0 < ttl <= 2000
    # a node that lost its script cache (a promoted replica, SCRIPT FLUSH) answers NOSCRIPT: loaded again there
    await r.script_flush()
    assert not (await r.script_exists(script.sha))[0]
    g, *_ = await script(keys=["{llmapi}:rl:test"], args=[interval_us, cap, 1])
    assert g in (0, 1) and (await r.script_exists(script.sha))[0]
    await r.aclose()


async def _hammer(client, n):
    return [(await client.post("/v1/text/summarize", json=BODY)) for _ in range(n)]


async def test_local_limit_429_with_headers(make_client):
    client = await make_client(RATE_LIMIT_ENABLED="true", RATE_LIMIT_REQUESTS_PER_MINUTE="60",
                               RATE_LIMIT_BURST_SIZE="2")
    rs = await _hammer(client, 5)
    assert [r.status for r in rs] == [200, 200, 200, 429, 429]
    ok = rs[0]
    assert ok.headers["RateLimit-Limit"] == "60"
    assert rs[-1].headers["RateLimit-Policy"] == "60;w=60;burst=2"
    assert int(ok.headers["RateLimit-Remaining"]) == 2
    denied = rs[-1]
    assert denied.headers["Retry-After"] == "1"
    assert denied.headers["RateLimit-Remaining"] == "0"
    assert int(denied.headers["RateLimit-Reset"]) >= 1
    err = await denied.json()
    assert err["error_code"] == "RATE_LIMITED"
    assert err["details"]["client_id"] == "key:operator"                 # the key's name, never the key
    assert err["details"]["limit_per_minute"] == 60
    # the operator routes are not limited
    assert (await client.get("/internal/middleware/rate-limiting/performance")).status == 200
    assert (await client.get("/v1/health")).status == 200
    perf = await (await client.get("/internal/middleware/rate-limiting/performance")).json()
    assert perf["mode"] == "local" and perf["decisions"]["denied"] == 2


async def test_tiers_and_adaptive_limits(make_client):
    client = await make_client(RATE_LIMIT_ENABLED="true", RATE_LIMIT_REQUESTS_PER_MINUTE="60")
    r = await client.post("/internal/middleware/rate-limiting/optimize",
                          json={"client_tier_limits": {"premium": 200, "standard": 100, "basic": 50},
                                "client_tiers": {"operator": "premium"}})
    assert r.status == 200, await r.text()
    cfg = (await r.json())["config"]
    assert cfg["client_tiers"] == {"operator": "premium"}                # by key name
    assert API_KEY not in await r.text()
    r = await client.post("/v1/text/summarize", json=BODY)
    assert r.headers["RateLimit-Limit"] == "200"
    r = await client.post("/internal/middleware/rate-limiting/optimize",
                          json={"adaptive_limits": True, "peak_multiplier": 2.0, "off_peak_multiplier": 0.5,
                                "peak_hours": list(range(24))})
    assert r.status == 200
    r = await client.post("/v1/text/summarize", json=BODY)
    assert r.headers["RateLimit-Limit"] == "400"
    await client.post("/internal/middleware/rate-limiting/optimize", json={"peak_hours": []})
    r = await client.post("/v1/text/summarize", json=BODY)
    assert r.headers["RateLimit-Limit"] == "100"
    await client.post("/internal/middleware/rate-limiting/optimize", json={"client_tiers": {"operator": None}})
    r = await client.post("/v1/text/summarize", json=BODY)
    assert r.headers["RateLimit-Limit"] == "30"


async def test_global_throttle(make_client):
    client = await make_client(RATE_LIMIT_BURST_SIZE="1")
    r = await client.post("/internal/monitoring/enable-throttling", json={"max_requests_per_minute": 60})
    assert r.status == 200
    body = await r.json()
    assert body["throttling"]["enabled"] and body["throttling"]["max_requests_per_minute"] == 60
    rs = await _hammer(client, 4)
    assert [r.status for r in rs] == [200, 200, 429, 429]
    assert (await rs[-1].json())["details"]["scope"] == "global"
    r = await client.post("/internal/monitoring/enable-throttling", json={"max_requests_per_minute": None})
    assert (await r.json())["throttling"]["enabled"] is False
    assert (await client.post("/v1/text/summarize", json=BODY)).status == 200


def ceiling_of(rpm: int, burst: int, elapsed: float) -> float:
    return capacity(rpm, burst, 0.1) + rpm / 60 * elapsed


async def _drive(url: str, stop_at: float, workers: int, counts: dict):
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as s:
        async def worker():
            while time.monotonic() < stop_at:
                async with s.post(url, json=BODY) as r:
                    await r.read()
                    counts[r.status] = counts.get(r.status, 0) + 1
        await asyncio.gather(*(worker() for _ in range(workers)))


@pytest.mark.parametrize("rpm, burst", [(1200, 10), (30000, 20)])   # 20/s: leases of a few; 500/s: leases of ~25
async def test_two_processes_share_one_global_limit(redis_url, service_factory, rpm, burst):
    env = dict(REDIS_URL=redis_url, RATE_LIMIT_ENABLED="true", RATE_LIMIT_REQUESTS_PER_MINUTE=str(rpm),
               RATE_LIMIT_BURST_SIZE=str(burst))
    a, b = service_factory(**env), service_factory(**env)
    counts_a, counts_b = {}, {}
    duration = 6.0
    t0 = time.monotonic()
    await asyncio.gather(_drive(f"{a.url}/v1/text/summarize", t0 + duration, 8, counts_a),
                         _drive(f"{b.url}/v1/text/summarize", t0 + duration, 8, counts_b))
    elapsed = time.monotonic() - t0
    allowed = counts_a.get(200, 0) + counts_b.get(200, 0)
    print(f"allowed {allowed} of ceiling {ceiling_of(rpm, burst, elapsed):.1f} in {elapsed:.2f}s; a {counts_a} b {counts_b}")
    assert set(counts_a) | set(counts_b) <= {200, 429}, (counts_a, counts_b)
    ceiling = ceiling_of(rpm, burst, elapsed)
    # both processes served traffic, and together they stayed within 2 % of one limit
    assert counts_a.get(200, 0) > 10 and counts_b.get(200, 0) > 10, (counts_a, counts_b)
    assert allowed <= math.ceil(ceiling * 1.02), (allowed, ceiling, counts_a, counts_b)
    assert allowed >= 0.85 * ceiling, (allowed, ceiling)
    total = sum(counts_a.values()) + sum(counts_b.values())
    assert total > 3 * allowed                  # the limit really was under pressure
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as s:
        async with s.get(f"{a.url}/internal/middleware/rate-limiting/performance") as r:
            perf = await r.json()
    assert perf["mode"] == "redis"
    # most decisions needed no Redis round trip
    assert perf["local_cache_stats"]["hit_ratio"] > 0.8, perf
    assert perf["redis_calls"] < perf["decisions"]["total"] / 3, perf


async def test_redis_outage_falls_back_locally_without_5xx(fresh_redis, service_factory):
    svc = service_factory(REDIS_URL=fresh_redis.url, RATE_LIMIT_ENABLED="true", RATE_LIMIT_REQUESTS_PER_MINUTE="60",
                          RATE_LIMIT_BURST_SIZE="4", REDIS_SOCKET_TIMEOUT="0.5")
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as s:
        async def post():
            async with s.post(f"{svc.url}/v1/text/summarize", json=BODY) as r:
                await r.read()
                return r.status

        async def perf():
            async with s.get(f"{svc.url}/internal/middleware/rate-limiting/performance") as r:
                return await r.json()

        assert await post() == 200
        assert (await perf())["mode"] == "redis"
        fresh_redis.stop()
        statuses = [await post() for _ in range(12)]
        assert all(st in (200, 429) for st in statuses), statuses
        assert 429 in statuses and 200 in statuses        # limited, locally
        p = await perf()
        assert p["mode"] == "fallback" and p["fallback_activations"] >= 1
        assert p["local_cache_stats"]["fallback_decisions"] >= 1
        fresh_redis.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (await perf())["mode"] != "redis":
            await post()
            await asyncio.sleep(0.3)
        assert (await perf())["mode"] == "redis"


async def test_redis_settings_change_live(redis_url, make_client):
    client = await make_client(REDIS_URL=redis_url, RATE_LIMIT_ENABLED="true", RATE_LIMIT_REQUESTS_PER_MINUTE="6000")
    assert (await client.post("/v1/text/summarize", json=BODY)).status == 200
    rl = client.server.app[CTX].ratelimiter
    first = rl._redis
    assert first is not None
    r = await client.post("/internal/middleware/rate-limiting/optimize", json={"redis_pool_size": 3,
                                                                              "lease_window_ms": 50})
    assert r.status == 200
    assert rl._redis is None                      # rebuilt on next use with the new pool size
    for _ in range(5):
        assert (await client.post("/v1/text/summarize", json=BODY)).status == 200
    assert rl._redis is not None and rl._redis is not first
    assert rl._redis.connection_pool.max_connections == 3
    keys = [k for k in await rl._redis.keys("*rl*") if k != b"{llmapi}:rl:members"]   # (the fallback's member set)
    assert keys and all(k.startswith(b"{llmapi}:rl:c:") for k in keys)
    assert all(API_KEY.encode() not in k for k in keys)


async def test_replicas_falling_back_together_hold_about_one_limit(fresh_redis, service_factory):
    """Redis gone: each of two processes limits to half the limit (the member count last seen), not to all of it."""
    rpm, burst = 1200, 10                                   # 20/s
    env = dict(REDIS_URL=fresh_redis.url, RATE_LIMIT_ENABLED="true", RATE_LIMIT_REQUESTS_PER_MINUTE=str(rpm),
               RATE_LIMIT_BURST_SIZE=str(burst), REDIS_SOCKET_TIMEOUT="0.5")
    a, b = service_factory(**env), service_factory(**env)
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as s:
        async def perf(svc):
            async with s.get(f"{svc.url}/internal/middleware/rate-limiting/performance") as r:
                return await r.json()

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:                  # both lease from Redis and see each other
            await asyncio.gather(_drive(f"{a.url}/v1/text/summarize", time.monotonic() + 0.3, 2, {}),
                                 _drive(f"{b.url}/v1/text/summarize", time.monotonic() + 0.3, 2, {}))
            if [(await perf(svc))["processes_sharing"] for svc in (a, b)] == [2, 2]:
                break
            await asyncio.sleep(0.5)
        assert [(await perf(svc))["processes_sharing"] for svc in (a, b)] == [2, 2]
        fresh_redis.stop()
        await asyncio.gather(*(_drive(f"{svc.url}/v1/text/summarize", time.monotonic() + 1.0, 2, {}) for svc in (a, b)))
        counts_a, counts_b = {}, {}                         # (the first second: leases run out, fallback starts)
        t0 = time.monotonic()
        await asyncio.gather(_drive(f"{a.url}/v1/text/summarize", t0 + 4.0, 4, counts_a),
                             _drive(f"{b.url}/v1/text/summarize", t0 + 4.0, 4, counts_b))
        elapsed = time.monotonic() - t0
        assert [(await perf(svc))["mode"] for svc in (a, b)] == ["fallback", "fallback"]
    allowed = counts_a.get(200, 0) + counts_b.get(200, 0)
    one_limit = ceiling_of(rpm, burst, elapsed)
    print(f"fallback, 2 replicas: allowed {allowed} in {elapsed:.2f}s; one limit allows {one_limit:.0f}, "
          f"a limit each would allow {2 * one_limit:.0f}; a {counts_a} b {counts_b}")
    assert set(counts_a) | set(counts_b) <= {200, 429}
    assert counts_a.get(200, 0) > 5 and counts_b.get(200, 0) > 5      # each still serves its share
    assert allowed <= 1.15 * one_limit, (allowed, one_limit)          # about one limit, not two
