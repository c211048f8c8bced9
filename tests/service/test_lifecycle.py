"""Lifecycle: what the app starts it stops, in a declared order; followers reconnect without leaking."""
from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from service.context import CTX
from service.redis_client import pool_stats


async def _pubsub_clients(url) -> int:
    admin = aioredis.from_url(url)
    try:
        return len(await admin.client_list(_type="pubsub"))
    except aioredis.ConnectionError:
        return -1
    finally:
        await admin.aclose()


async def _wait_for(cond, timeout=15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_each_pubsub_reconnect_closes_the_connection_it_replaces(make_client, fresh_redis):
    """Redis goes away three times; each follower (config, cache events, breakers) reconnects with a
    new pub/sub connection and gives the old one back to the (bounded) pool."""
    client = await make_client(REDIS_URL=fresh_redis.url)
    ctx = client.server.app[CTX]
    url = fresh_redis.url
    await _wait_for(lambda: _followers_at_least(url, 3))
    followers = await _pubsub_clients(url)
    in_use = pool_stats(ctx.redis)["connections_in_use"]
    for _ in range(3):
        fresh_redis.stop()
        await asyncio.sleep(0.3)
        fresh_redis.start()
        await _wait_for(lambda: _followers_at_least(url, followers))
    await asyncio.sleep(0.3)
    assert await _pubsub_clients(url) == followers
    assert pool_stats(ctx.redis)["connections_in_use"] == in_use  # the replaced ones went back


async def _followers_at_least(url, n: int) -> bool:
    return await _pubsub_clients(url) >= n


async def test_nothing_the_app_started_still_runs_once_it_stopped(make_client, redis_url):
    before = set(asyncio.all_tasks())
    client = await make_client(REDIS_URL=redis_url, RATE_LIMIT_ENABLED="true", CACHE_AUTO_CLEANUP="true")
    resp = await client.post("/v1/text/sentiment", json={"text": "a perfectly fine sentence to look at"})
    assert resp.status == 200
    started = set(asyncio.all_tasks()) - before - {asyncio.current_task()}
    assert started, "the app runs background tasks (collectors, followers, monitors)"
    await client.close()
    left = [t.get_name() for t in asyncio.all_tasks() - before - {asyncio.current_task()} if not t.done()]
    assert left == []


def test_start_up_order_is_declared():
    from service.app import lifecycle
    from service.context import Context
    names = [f.__name__ for f in lifecycle(Context(settings=None, store=None))]
    assert names.index("config") < names.index("cache") < names.index("monitoring") < names.index("collectors")
    assert names.index("redis_client") < names.index("config")  # so Redis closes after all its users


async def test_one_event_loop_lag_probe_feeds_the_gauge_and_the_monitor(make_client, monkeypatch):
    import time

    from exporter import collectors
    from exporter.metrics import EVENT_LOOP_LAG
    monkeypatch.setattr(collectors, "LAG_INTERVAL", 0.05)
    client = await make_client()
    await asyncio.sleep(0.1)
    probes = [t for t in asyncio.all_tasks() if "lag" in t.get_name()]
    assert len(probes) == 1, [t.get_name() for t in probes]
    time.sleep(0.3)  # block the loop: the probe wakes at least 0.25 s late
    await asyncio.sleep(0.12)
    assert EVENT_LOOP_LAG._value.get() >= 0.2
    load = await (await client.get("/internal/monitoring/system-load")).json()
    assert load["event_loop"]["lag_max_ms"] >= 200
