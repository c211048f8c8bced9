"""Redis timeouts live in one place, the "redis" config section, and every Redis user reads them there."""
from service.config.sections import SECTIONS
from service.context import CTX
from service.settings import PROCESS_ENV


def test_no_other_place_defines_a_redis_timeout():
    elsewhere = [(s, f) for s, sec in SECTIONS.items() if s != "redis" for f in sec.fields
                 if "redis" in f and "timeout" in f]
    assert elsewhere == []
    assert not [k for k in PROCESS_ENV if k.startswith("REDIS_") and "TIMEOUT" in k]
    env = {f.env for f in SECTIONS["redis"].fields.values() if f.env}
    assert {"REDIS_SOCKET_TIMEOUT", "REDIS_CONNECT_TIMEOUT"} <= env


async def test_the_timeouts_are_read_live_by_the_pool_the_cache_and_the_rate_limiter(make_client, redis_url):
    client = await make_client(REDIS_URL=redis_url, REDIS_SOCKET_TIMEOUT="2", RATE_LIMIT_ENABLED="true")
    ctx = client.server.app[CTX]
    pool = ctx.redis.connection_pool
    assert pool.connection_kwargs["socket_timeout"] == 2.0 and pool.connection_kwargs["socket_connect_timeout"] == 2.0
    r = await client.post("/internal/config/redis", json={"socket_timeout_seconds": 0.7, "connect_timeout_seconds": 0.4,
                                                          "command_timeout_seconds": 0.3,
                                                          "rate_limit_timeout_ms": 120})
    assert r.status == 200, await r.text()
    assert pool.connection_kwargs["socket_timeout"] == 0.7 and pool.connection_kwargs["socket_connect_timeout"] == 0.4
    assert all(c.socket_timeout == 0.7 for c in pool._available_connections)
    assert ctx.cache.l2._timeout() == 0.3
    rl = ctx.ratelimiter._client()
    assert rl.connection_pool.connection_kwargs["socket_timeout"] == 0.12


def test_the_rate_limit_advice_moves_the_redis_sections_timeout():
    from service.middleware import advisor
    stats = {"decisions": {"total": 500}, "mode": "redis", "redis_calls": 400, "redis_p95_latency": 200.0,
             "redis_average_latency": 150.0, "local_cache_stats": {"evictions": 0, "hit_ratio": 0.95}}
    changes, applied, _ = advisor.plan_rate_limit(stats, {"local_cache_size": 16, "lease_window_ms": 100.0}, 250.0)
    assert changes == {"redis": {"rate_limit_timeout_ms": 500.0}}
    assert applied[0]["section"] == "redis"
