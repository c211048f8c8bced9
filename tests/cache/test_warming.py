"""Background warming: hot keys are recomputed before they expire; user traffic goes first."""
import asyncio
import time

from tests.cache.conftest import TEXT, Provider, req

WARM = dict(base_ttl_seconds=2, ttl_by_operation={}, adaptive_ttl=False, popularity_threshold=2,
            enable_background_warming=True, warming_threshold=0.5, warming_interval_seconds=0.05)


async def test_warming_refreshes_a_hot_key_before_it_expires(make_cache):
    cache = await make_cache(**WARM)
    p = Provider()
    hot, cold = req(TEXT + " hot"), req(TEXT + " cold")
    await cache.get_or_compute(hot, p)
    await cache.get_or_compute(cold, p)
    first_store = cache.l1.data[cache.key_for(hot)].stored_at
    end = time.monotonic() + 3.5           # well past the first 2 s TTL
    while time.monotonic() < end:
        _, hit = await cache.get_or_compute(hot, p)
        assert hit is True                  # never a miss: refreshed in time
        await asyncio.sleep(0.1)
    assert cache.stats.warming["refreshed"] >= 1
    assert cache.l1.data[cache.key_for(hot)].stored_at > first_store
    assert (await cache.get_or_compute(cold, p))[1] is False   # not popular: expired
    assert cache.warmer.status()["running"] is True


async def test_without_warming_the_hot_key_expires(make_cache):
    cache = await make_cache(**{**WARM, "enable_background_warming": False})
    p = Provider()
    hot = req(TEXT + " hot")
    for _ in range(3):
        await cache.get_or_compute(hot, p)
    await asyncio.sleep(2.1)
    assert (await cache.get_or_compute(hot, p))[1] is False
    assert cache.stats.popular_expired_misses == 1


async def test_enabling_warming_live_starts_the_loop(make_cache):
    cache = await make_cache(**{**WARM, "enable_background_warming": False})
    assert cache.warmer.status()["running"] is False
    await cache.store.update("cache", {"enable_background_warming": True})
    assert cache.warmer.status()["running"] is True
    await cache.store.update("cache", {"enable_background_warming": False})
    await asyncio.sleep(0.2)
    assert cache.warmer.status()["running"] is False


async def test_warming_is_capped_and_yields_to_user_misses(make_cache):
    cache = await make_cache(**{**WARM, "enable_background_warming": False, "max_warming_operations": 2,
                                "warming_threshold": 0.99})
    p = Provider(delay=0.3)
    hot = [req(f"{TEXT} hot {i}") for i in range(5)]
    for r in hot:
        await cache.get_or_compute(r, p)
        await cache.get_or_compute(r, p)
        await cache.get_or_compute(r, p)
    await asyncio.sleep(0.05)              # all five are now within the warming window
    assert len(cache.warmer.due(time.time(), 0.99)) == 5
    # two user misses in flight: warming waits
    users = [asyncio.ensure_future(cache.get_or_compute(req(f"{TEXT} user {i}"), p)) for i in range(2)]
    await asyncio.sleep(0.01)
    assert cache.warmer.scan() == 0 and cache.stats.warming["deferred"] == 5
    await asyncio.gather(*users)
    # then at most max_warming_operations at once
    assert cache.warmer.scan() == 2
    assert len(cache.warmer.running) == 2
    await asyncio.sleep(0.01)
    calls = p.calls
    # a user miss on a key being warmed joins the refresh instead of computing again
    key = next(k for k in cache._flights)
    entry = cache.l1.data[key]
    entry.expires_at = time.time() - 1     # make the user request a miss
    value, _ = await cache.get_or_compute(entry.req, p)
    assert p.calls == calls and value
    await asyncio.gather(*list(cache.warmer.running))
    assert cache.stats.warming["refreshed"] == 2
