"""The memory tier, single-flight, TTL and key strategy, in-process (no Redis)."""
import asyncio
import time

import pytest

from exporter.tally import flush_all
from exporter.metrics import REGISTRY
from tests.cache.conftest import TEXT, Provider, req


def sample(name: str, **labels) -> float:
    flush_all()  # as a scrape does: batched counts reach the metrics
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_second_identical_request_is_a_memory_hit(make_cache):
    cache = await make_cache()
    p = Provider()
    hits0 = sample("llmapi_cache_hits_total", tier="memory", operation="summarize")
    miss0 = sample("llmapi_cache_misses_total", operation="summarize")
    first, hit1 = await cache.get_or_compute(req(), p)
    again, hit2 = await cache.get_or_compute(req(), p)
    assert (hit1, hit2) == (False, True)
    assert again == first and p.calls == 1
    assert sample("llmapi_cache_hits_total", tier="memory", operation="summarize") == hits0 + 1
    assert sample("llmapi_cache_misses_total", operation="summarize") == miss0 + 1
    assert cache.stats.totals()["hit_ratio"] == 0.5


async def test_memory_hits_count_in_the_breakdown_the_minute_series_and_the_metric(make_cache):
    # a hit adds to its entry's cells and to the current minute without looking either up
    cache = await make_cache()
    p = Provider()
    hits0 = sample("llmapi_cache_hits_total", tier="memory", operation="summarize")
    await cache.get_or_compute(req(), p)
    for _ in range(3):
        assert (await cache.get_or_compute(req(), p))[1] is True
    stats = cache.stats
    assert stats.breakdown(0)["summarize"]["memory_hits"] == 3
    assert stats.totals()["memory_hits"] == 3 and stats.totals()["misses"] == 1
    assert stats.series(1)[-1]["hits"] == 3
    assert sample("llmapi_cache_hits_total", tier="memory", operation="summarize") == hits0 + 3
    stats.cur[0] -= 1  # the current minute is over: the next hit starts a new one
    stats.cur_end -= 60.0
    assert (await cache.get_or_compute(req(), p))[1] is True
    assert stats.series(1)[-1]["hits"] == 1 and stats.totals()["memory_hits"] == 4


async def test_single_flight_one_compute_for_concurrent_identical_misses(make_cache):
    cache = await make_cache()
    p = Provider(delay=0.05)
    results = await asyncio.gather(*(cache.get_or_compute(req(), p) for _ in range(25)))
    assert p.calls == 1
    assert len({v for v, _ in results}) == 1
    assert all(hit is False for _, hit in results)
    assert cache.stats.single_flight_joins == 24
    # different requests are not merged
    await asyncio.gather(*(cache.get_or_compute(req(TEXT + f" number {i}."), p) for i in range(5)))
    assert p.calls == 6


async def test_single_flight_shares_the_error_and_never_caches_it(make_cache):
    cache = await make_cache()
    boom = RuntimeError("provider down")
    p = Provider(delay=0.05, fail=boom)
    results = await asyncio.gather(*(cache.get_or_compute(req(), p) for _ in range(10)), return_exceptions=True)
    assert p.calls == 1
    assert all(r is boom for r in results)
    assert len(cache.l1) == 0
    p.fail = None
    value, hit = await cache.get_or_compute(req(), p)
    assert hit is False and p.calls == 2 and b"answer 2" in value


async def test_cancelled_first_caller_does_not_cancel_the_others(make_cache):
    cache = await make_cache()
    p = Provider(delay=0.1)
    first = asyncio.ensure_future(cache.get_or_compute(req(), p))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(cache.get_or_compute(req(), p))
    await asyncio.sleep(0.01)
    first.cancel()
    value, hit = await second
    assert p.calls == 1 and hit is False and value
    assert (await cache.get_or_compute(req(), p))[1] is True


async def test_ttl_expiry_then_recompute(make_cache):
    cache = await make_cache(base_ttl_seconds=1, ttl_by_operation={}, adaptive_ttl=False)
    p = Provider()
    await cache.get_or_compute(req(), p)
    assert (await cache.get_or_compute(req(), p))[1] is True
    await asyncio.sleep(1.1)
    value, hit = await cache.get_or_compute(req(), p)
    assert hit is False and p.calls == 2
    assert cache.stats.expired_misses == 1


async def test_ttl_table_per_operation(make_cache):
    cache = await make_cache(base_ttl_seconds=50, ttl_by_operation={"sentiment": 500}, adaptive_ttl=False)
    p = Provider()
    await cache.get_or_compute(req(op="sentiment"), p)
    await cache.get_or_compute(req(op="summarize"), p)
    ttls = {e.op: e.ttl for e in cache.l1.entries()}
    assert ttls == {"sentiment": 500, "summarize": 50}
    # a live change applies to the next store
    await cache.store.update("cache", {"base_ttl_seconds": 70})
    await cache.get_or_compute(req(op="key_points"), p)
    assert {e.op: e.ttl for e in cache.l1.entries()}["key_points"] == 70


async def test_adaptive_ttl_keeps_popular_keys_longer(make_cache):
    cache = await make_cache(base_ttl_seconds=1, ttl_by_operation={}, adaptive_ttl=True, max_ttl_seconds=3,
                             popularity_factor=3.0, popularity_threshold=2)
    p = Provider()
    popular, plain = req(TEXT + " popular"), req(TEXT + " plain")
    await cache.get_or_compute(popular, p)
    await cache.get_or_compute(plain, p)
    for _ in range(2):
        assert (await cache.get_or_compute(popular, p))[1] is True
    entry = cache.l1.data[cache.key_for(popular)]
    assert entry.popular and entry.ttl == 3
    assert cache.l1.data[cache.key_for(plain)].ttl == 1
    await asyncio.sleep(1.2)
    assert (await cache.get_or_compute(popular, p))[1] is True   # extended
    assert (await cache.get_or_compute(plain, p))[1] is False    # expired


async def test_adaptive_ttl_is_capped_and_can_be_off(make_cache):
    cache = await make_cache(base_ttl_seconds=100, ttl_by_operation={}, adaptive_ttl=True, max_ttl_seconds=120,
                             popularity_factor=5.0, popularity_threshold=1)
    p = Provider()
    await cache.get_or_compute(req(), p)
    await cache.get_or_compute(req(), p)
    assert cache.l1.data[cache.key_for(req())].ttl == 120
    await cache.store.update("cache", {"adaptive_ttl": False})
    other = req(TEXT + " other")
    await cache.get_or_compute(other, p)
    await cache.get_or_compute(other, p)
    assert cache.l1.data[cache.key_for(other)].ttl == 100


async def test_configure_size_shrinking_evicts_at_once(make_cache):
    import os
    cache = await make_cache()

    async def compute(r):
        return os.urandom(4000)

    reqs = [req(f"{TEXT} item {i}") for i in range(40)]
    for r in reqs:
        await cache.get_or_compute(r, compute)
    assert len(cache.l1) == 40
    before = sample("llmapi_cache_evictions_total", reason="resize")
    await cache.store.update("cache", {"max_entries": 10})
    assert len(cache.l1) == 10
    assert sample("llmapi_cache_evictions_total", reason="resize") == before + 30
    assert set(cache.l1.data) == {cache.key_for(r) for r in reqs[-10:]}  # lru: the most recent stay
    # shrinking the memory cap evicts at once too
    cap_mb = 0.02  # about four entries
    await cache.store.update("cache", {"max_memory_mb": cap_mb})
    assert 0 < len(cache.l1) <= 5 and cache.l1.bytes <= cap_mb * 1024 * 1024
    assert sample("llmapi_cache_evictions_total", reason="resize") > before + 30
    # the caps hold for later inserts
    for r in reqs[:10]:
        await cache.get_or_compute(r, compute)
    assert len(cache.l1) <= 5 and cache.l1.bytes <= cap_mb * 1024 * 1024


@pytest.mark.parametrize("policy,victim", [("lru", 0), ("lfu", 1), ("ttl", 2)])
async def test_eviction_policies(make_cache, policy, victim):
    cache = await make_cache(max_entries=4, eviction_policy=policy, adaptive_ttl=False, popularity_threshold=100,
                             ttl_by_operation={"sentiment": 100, "summarize": 1000, "qa": 5000}, base_ttl_seconds=1000)
    p = Provider()
    a, b, c, d = req(TEXT + " a"), req(TEXT + " b", op="sentiment"), req(TEXT + " c", op="qa"), req(TEXT + " d")
    for r in (a, b, c, d):
        await cache.get_or_compute(r, p)
    for _ in range(3):          # a: least recent after the touches below, but most used
        await cache.get_or_compute(a, p)
    for r in (c, d, b):         # a is now the least recently used
        await cache.get_or_compute(r, p)
    await cache.get_or_compute(c, p)
    await cache.get_or_compute(d, p)
    # lru evicts a; lfu evicts b (1 hit, fewer than c and d which have 2); ttl evicts b (sentiment: 100 s)
    await cache.get_or_compute(req(TEXT + " e"), p)
    gone = [r for r in (a, b, c, d) if cache.key_for(r) not in cache.l1.data]
    expected = {"lru": [a], "lfu": [b], "ttl": [b]}[policy]
    assert gone == expected


async def test_expired_entries_are_evicted_first(make_cache):
    cache = await make_cache(max_entries=3, base_ttl_seconds=1, ttl_by_operation={"qa": 100}, adaptive_ttl=False)
    p = Provider()
    await cache.get_or_compute(req(TEXT + " 1", op="qa"), p)
    short = req(TEXT + " 2")
    await cache.get_or_compute(short, p)
    await cache.get_or_compute(req(TEXT + " 3", op="qa"), p)
    await asyncio.sleep(1.1)
    before = sample("llmapi_cache_evictions_total", reason="expired")
    await cache.get_or_compute(req(TEXT + " 4", op="qa"), p)
    assert cache.key_for(short) not in cache.l1.data
    assert sample("llmapi_cache_evictions_total", reason="expired") == before + 1


async def test_key_strategy(make_cache):
    cache = await make_cache()
    spaced = req("  Prometheus   scrapes\n metrics from instrumented jobs.  ")
    plain = req("Prometheus scrapes metrics from instrumented jobs.")
    upper = req("PROMETHEUS scrapes metrics from instrumented jobs.")
    nfd = req("Cafe\u0301 scrapes metrics from instrumented jobs.")
    nfc = req("Caf\u00e9 scrapes metrics from instrumented jobs.")
    k = cache.key_for
    assert k(spaced) == k(plain) and k(nfd) == k(nfc) and k(upper) != k(plain)
    assert k(req(TEXT, max_length=20)) != k(req(TEXT, max_length=30))
    assert k(req(TEXT, op="summarize")).startswith("summarize:")
    assert "Prometheus" not in k(plain) and len(k(plain)) == len("summarize:") + 32
    await cache.store.update("cache", {"normalize_case": True})
    assert k(upper) == k(plain)
    await cache.store.update("cache", {"enable_normalization": False})
    assert k(spaced) != k(plain) and k(nfd) != k(nfc)
    await cache.store.update("cache", {"use_content_hash": False})
    assert len(k(plain)) == len("summarize:") + 64
    await cache.store.update("cache", {"include_metadata": True})
    before = k(plain)
    await cache.store.update("ai", {"model": "another-model"})
    assert k(plain) != before


async def test_memory_cap_holds_for_random_payloads(make_cache):
    import gc
    import os
    import random
    import tracemalloc
    rnd = random.Random(7)
    cap_mb = 4.0
    cache = await make_cache(max_memory_mb=cap_mb, max_entries=1_000_000, compression_threshold_mb=0.002)
    cap = cap_mb * 1024 * 1024

    async def compute(r):
        n = rnd.randint(20, 20_000)
        if rnd.random() < 0.5:
            return os.urandom(n)                               # incompressible
        return " ".join(rnd.choices(words, k=n // 8)).encode()   # compressible

    words = [f"word{i}" for i in range(500)]
    reqs = [req(f"{TEXT} {i} " + "y" * rnd.randint(0, 2000)) for i in range(1500)]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        peak_accounted = 0
        for r in reqs:
            await cache.get_or_compute(r, compute)
            peak_accounted = max(peak_accounted, cache.l1.bytes)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        accounted = cache.l1.bytes
        cache.l1.clear("cleared")
        gc.collect()
        freed = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert peak_accounted <= cap
    assert accounted >= 0.5 * cap  # the cap is used, not avoided
    assert held <= 1.1 * cap       # what the process really holds (ghost list and counters included)
    assert abs((held - freed) - accounted) <= 0.1 * accounted  # the accounting matches real memory


async def test_pressure_response_evicts_below_the_threshold(make_cache):
    cache = await make_cache(max_memory_mb=0.1, pressure_threshold=0.5, pressure_response="evict_old",
                             emergency_threshold=0.99)
    p = Provider()
    cap = 0.1 * 1024 * 1024
    for i in range(200):
        await cache.get_or_compute(req(f"{TEXT} {i}"), p)
        assert cache.l1.bytes < 0.5 * cap
    assert cache.stats.pressure["pressure"]["events"] > 0
    assert cache.stats.evictions["pressure"] > 0
    # a live change of the response: clear_all empties the tier at the next crossing
    await cache.store.update("cache", {"pressure_response": "clear_all", "pressure_threshold": 0.2})
    for i in range(40):
        await cache.get_or_compute(req(f"{TEXT} again {i}"), p)
    assert cache.stats.pressure["pressure"]["last"]["response"] == "clear_all"


async def test_emergency_response_clears_expired(make_cache):
    cache = await make_cache(max_memory_mb=0.05, base_ttl_seconds=1, ttl_by_operation={"qa": 1000},
                             adaptive_ttl=False, pressure_threshold=0.94, pressure_response="none",
                             emergency_threshold=0.95, emergency_response="clear_expired")
    p = Provider()
    cap = 0.05 * 1024 * 1024
    i = 0
    while cache.l1.bytes < 0.5 * cap:
        await cache.get_or_compute(req(f"{TEXT} short {i}"), p)
        i += 1
    await asyncio.sleep(1.1)
    while "emergency" not in cache.stats.pressure:
        await cache.get_or_compute(req(f"{TEXT} long {i}", op="qa"), p)
        i += 1
    assert all(e.op == "qa" for e in cache.l1.entries())
    assert cache.stats.pressure["emergency"]["last"]["response"] == "clear_expired"


async def test_emergency_cleanup_drops_expired_and_evicts_to_target(make_cache):
    cache = await make_cache(base_ttl_seconds=1, ttl_by_operation={"qa": 1000}, adaptive_ttl=False,
                             max_memory_mb=1.0, emergency_cleanup_target=0.05, pressure_threshold=0.99,
                             emergency_threshold=1.0)
    p = Provider()
    for i in range(30):
        await cache.get_or_compute(req(f"{TEXT} {i}"), p)
    await asyncio.sleep(1.1)
    for i in range(200):
        await cache.get_or_compute(req(f"{TEXT} {i}", op="qa"), p)
    res = await cache.emergency_cleanup()
    assert res["expired_removed"] == 30 and res["evicted"] > 0
    assert cache.l1.bytes <= 0.05 * 1024 * 1024 == res["target_bytes"] or cache.l1.bytes <= res["target_bytes"]
    assert res["after"]["entries"] == len(cache.l1) < res["before"]["entries"]


async def test_auto_cleanup_runs_in_the_background(make_cache):
    cache = await make_cache(base_ttl_seconds=1, ttl_by_operation={}, adaptive_ttl=False, stale_ttl_seconds=0)
    p = Provider()
    for i in range(5):
        await cache.get_or_compute(req(f"{TEXT} {i}"), p)
    await asyncio.sleep(1.1)
    assert len(cache.l1) == 5  # expired entries wait (stale copies) without cleanup
    await cache.store.update("cache", {"auto_cleanup": True, "cleanup_interval_minutes": 0.01})
    deadline = time.monotonic() + 10
    while len(cache.l1) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(cache.l1) == 0
    assert cache.stats.cleanups["runs"] >= 1 and cache.maint.status()["auto_cleanup"]["running"]


async def test_get_stale_serves_expired_copies_within_the_stale_window(make_cache):
    cache = await make_cache(base_ttl_seconds=1, ttl_by_operation={}, adaptive_ttl=False, stale_ttl_seconds=3600)
    p = Provider()
    value, _ = await cache.get_or_compute(req(), p)
    await asyncio.sleep(1.1)
    assert await cache.get_stale(req()) == value
    assert await cache.get_stale(req(TEXT + " never seen")) is None
    await cache.store.update("cache", {"stale_ttl_seconds": 0})
    assert await cache.get_stale(req()) is None


async def test_large_values_are_compressed_and_served_intact(make_cache):
    cache = await make_cache(compression_threshold_mb=0.001)
    big = (b'{"result":"' + b"the same words again " * 400)

    async def compute(r):
        return big

    await cache.get_or_compute(req(), compute)
    e = cache.l1.data[cache.key_for(req())]
    assert e.compressed and len(e.value) < len(big) / 4
    assert (await cache.get_or_compute(req(), compute)) == (big, True)


async def test_caching_can_be_switched_off(make_cache):
    cache = await make_cache()
    await cache.store.update("monitoring", {"enable_caching": False})
    p = Provider()
    for _ in range(3):
        assert (await cache.get_or_compute(req(), p))[1] is False
    assert p.calls == 3 and len(cache.l1) == 0


async def test_invalidate_by_operation_and_pattern(make_cache):
    cache = await make_cache()
    p = Provider()
    for op in ("summarize", "sentiment", "qa"):
        for i in range(3):
            await cache.get_or_compute(req(f"{TEXT} {i}", op=op), p)
    res = await cache.invalidate("sentiment:*")
    assert res["memory_removed"] == 3 and res["redis_removed"] is None
    assert {e.op for e in cache.l1.entries()} == {"summarize", "qa"}
    res = await cache.invalidate("q*")
    assert res["memory_removed"] == 3
    assert (await cache.get_or_compute(req(f"{TEXT} 0", op="qa"), p))[1] is False


async def test_invalidation_during_compute_is_not_undone(make_cache):
    cache = await make_cache()
    p = Provider(delay=0.1)
    task = asyncio.ensure_future(cache.get_or_compute(req(), p))
    await asyncio.sleep(0.02)
    await cache.invalidate("*")
    await task
    assert len(cache.l1) == 0
