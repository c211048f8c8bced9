"""L2 on a real redis-server: sharing, key hygiene, SCAN invalidation, outage and recovery."""
import asyncio

import redis

from exporter.tally import flush_all
from exporter.metrics import REGISTRY
from tests.cache.conftest import TEXT, Provider, req
from tests.helpers import sync_redis, wait_until


def sample(name: str, **labels) -> float:
    flush_all()  # as a scrape does: batched counts reach the metrics
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_l2_is_shared_and_keys_hold_no_text(make_cache, any_redis_url):
    a = await make_cache(any_redis_url)
    b = await make_cache(any_redis_url)
    pa, pb = Provider(), Provider()
    value, hit = await a.get_or_compute(req(), pa)
    assert hit is False
    value_b, hit_b = await b.get_or_compute(req(), pb)   # another process: L1 empty, L2 answers
    assert (value_b, hit_b) == (value, True) and pb.calls == 0
    assert b.stats.totals()["redis_hits"] == 1
    assert (await b.get_or_compute(req(), pb)) == (value, True)   # now from its L1
    assert b.stats.totals()["memory_hits"] == 1
    r = sync_redis(any_redis_url)
    keys = [k.decode() for k in r.scan_iter(match="*cache*")]
    assert keys == ["{llmapi}:cache:" + a.key_for(req())]
    assert "Prometheus" not in keys[0]
    assert 0 < r.pttl(keys[0]) <= (a.store.get("cache")["base_ttl_seconds"] + 3600) * 1000
    r.close()


async def test_compressed_values_travel_through_l2(make_cache, any_redis_url):
    a = await make_cache(any_redis_url, compression_threshold_mb=0.0005)
    b = await make_cache(any_redis_url)
    big = b'{"result":"' + b"repeated words make it compressible " * 100

    async def compute(r):
        return big

    await a.get_or_compute(req(), compute)
    r = sync_redis(any_redis_url)
    raw = r.get("{llmapi}:cache:" + a.key_for(req()))
    r.close()
    assert len(raw) < len(big) / 3
    assert await b.get_or_compute(req(), Provider()) == (big, True)


async def test_invalidation_scans_redis_and_reaches_other_processes(make_cache, any_redis_url):
    a = await make_cache(any_redis_url)
    b = await make_cache(any_redis_url)
    p = Provider()
    for i in range(5):
        await a.get_or_compute(req(f"{TEXT} {i}"), p)
        await a.get_or_compute(req(f"{TEXT} {i}", op="sentiment"), p)
        await b.get_or_compute(req(f"{TEXT} {i}"), p)       # b holds the summarize keys in its L1
    assert p.calls == 10 and len(b.l1) == 5
    r = sync_redis(any_redis_url)
    on_primaries = {"target_nodes": r.PRIMARIES} if isinstance(r, redis.RedisCluster) else {}
    r.config_resetstat(**on_primaries)
    res = await a.invalidate("summarize:*")
    assert res["memory_removed"] == 5 and res["redis_removed"] == 5
    assert sorted(k.decode().split(":")[2] for k in r.scan_iter(match="{llmapi}:cache:*")) == ["sentiment"] * 5
    stats = r.info("commandstats", **on_primaries)
    if on_primaries:  # SCAN went to every primary (whichever holds the keys' slot); KEYS to none
        assert all("cmdstat_scan" in st and "cmdstat_keys" not in st for st in stats.values()), stats
        assert len(stats) == 3
    else:
        assert "cmdstat_scan" in stats and "cmdstat_keys" not in stats
    assert await wait_until(lambda: len(b.l1) == 0, 5)    # pub/sub told b
    r.close()


async def test_stale_copies_come_from_l2(make_cache, any_redis_url):
    a = await make_cache(any_redis_url, base_ttl_seconds=1, ttl_by_operation={}, adaptive_ttl=False)
    value, _ = await a.get_or_compute(req(), Provider())
    await asyncio.sleep(1.1)
    b = await make_cache(any_redis_url, base_ttl_seconds=1, ttl_by_operation={}, adaptive_ttl=False)
    assert await b.get_stale(req()) == value           # expired, but kept in Redis for fallbacks
    assert b.stats.stale_served["redis"] == 1
    p = Provider()
    assert (await b.get_or_compute(req(), p))[1] is False and p.calls == 1  # expired: never a hit


async def test_redis_outage_serves_from_memory_and_recovers(make_cache, fresh_redis):
    cache = await make_cache(fresh_redis.url, redis_retry_max_seconds=0.5)
    await cache.store.update("redis", {"command_timeout_seconds": 0.5})
    p = Provider()
    down0 = sample("llmapi_cache_l2_transitions_total", state="down")
    up0 = sample("llmapi_cache_l2_transitions_total", state="up")
    known = req(TEXT + " known")
    value, _ = await cache.get_or_compute(known, p)
    assert cache.l2.sets == 1 and (await cache.health())["status"] == "healthy"

    fresh_redis.stop()
    # answers keep coming: hits from L1, misses computed, no exception
    assert await cache.get_or_compute(known, p) == (value, True)
    for i in range(5):
        v, hit = await cache.get_or_compute(req(f"{TEXT} during outage {i}"), p)
        assert v and hit is False
    assert cache.l2.up is False
    assert sample("llmapi_redis_up") == 0 and sample("llmapi_cache_l2_up") == 0
    assert sample("llmapi_cache_l2_transitions_total", state="down") == down0 + 1
    errors = cache.l2.errors
    for i in range(5):  # while down, requests skip Redis (no per-request attempts)
        await cache.get_or_compute(req(f"{TEXT} still down {i}"), p)
    assert cache.l2.errors == errors
    health = await cache.health()
    assert health["status"] == "unhealthy" and health["redis"] == "down"

    fresh_redis.start()
    assert await wait_until(lambda: cache.l2.up, 20)
    assert sample("llmapi_redis_up") == 1 and sample("llmapi_cache_l2_up") == 1
    assert sample("llmapi_cache_l2_transitions_total", state="up") == up0 + 1
    after = req(TEXT + " after recovery")
    await cache.get_or_compute(after, p)
    r = redis.Redis(port=fresh_redis.port)
    assert r.exists("{llmapi}:cache:" + cache.key_for(after)) == 1   # L2 used again
    r.close()
    other = await make_cache(fresh_redis.url)
    assert (await other.get_or_compute(after, Provider()))[1] is True
    assert (await cache.health())["status"] == "healthy"
    assert cache.l2.status()["last_outage"]["duration_seconds"] > 0


async def test_redis_down_at_start_is_not_fatal(make_cache, fresh_redis):
    fresh_redis.stop()
    cache = await make_cache(fresh_redis.url, redis_retry_max_seconds=0.5)
    assert cache.l2.up is False
    p = Provider()
    await cache.get_or_compute(req(), p)
    assert (await cache.get_or_compute(req(), p))[1] is True
    fresh_redis.start()
    assert await wait_until(lambda: cache.l2.up, 20)


async def test_invalidation_during_an_outage_is_applied_before_l2_serves_again(make_cache, fresh_redis):
    cache = await make_cache(fresh_redis.url, redis_retry_max_seconds=0.5)
    p = Provider()
    await cache.get_or_compute(req(), p)
    r = redis.Redis(port=fresh_redis.port)
    dump = r.dump("{llmapi}:cache:" + cache.key_for(req()))
    fresh_redis.stop()
    res = await cache.invalidate("summarize:*")
    assert res["memory_removed"] == 1 and res["redis_removed"] is None
    assert cache.l2.pending == ["summarize:*"]
    cache.l2._probe.cancel()  # hold the probe while the old copy is put back (no persistence here,
    fresh_redis.start()       # as a surviving replica would still have it)
    r = redis.Redis(port=fresh_redis.port)
    r.restore("{llmapi}:cache:" + cache.key_for(req()), 0, dump)
    cache.l2._probe = asyncio.ensure_future(cache.l2._probe_loop())
    assert await wait_until(lambda: cache.l2.up, 20)
    assert cache.l2.pending == []
    assert r.exists("{llmapi}:cache:" + cache.key_for(req())) == 0
    r.close()
    assert (await cache.get_or_compute(req(), p))[1] is False
