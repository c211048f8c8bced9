"""The analysis views and admin removals on a large memory tier: bounded work, honest answers."""
import asyncio
import random
import time

from bench.fill import fill
from service.cache import views
from service.cache.analytics import recommendations
from service.cache.memory import Entry, MemoryTier
from tests.cache.conftest import Provider, req


async def _large(make_cache, n=3000, sample=500, **cfg):
    cache = await make_cache(max_entries=1_000_000, max_memory_mb=10_000.0, analysis_sample_size=sample, **cfg)
    fill(cache, n, expired_share=0.3)
    return cache


class Ticker:
    """A task that counts its turns on the event loop while the block runs: other work got the loop that often."""

    def __init__(self):
        self.ticks = 0
        self._stop = False

    async def _run(self):
        while not self._stop:
            self.ticks += 1
            await asyncio.sleep(0)

    async def __aenter__(self):
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc):
        self._stop = True
        await self._task


def _touches(cache) -> list:
    """Count reads of `expires_at`/`hits` of every entry: what a view really looks at."""
    seen: list = []

    class Spy(Entry):
        __slots__ = ()

    for e in cache.l1.slots:
        e.__class__ = Spy
    orig_exp = Entry.expires_at
    orig_hits = Entry.hits
    Spy.expires_at = property(lambda s: (seen.append(id(s)), orig_exp.__get__(s))[1],
                              lambda s, v: orig_exp.__set__(s, v))
    Spy.hits = property(lambda s: (seen.append(id(s)), orig_hits.__get__(s))[1],
                        lambda s, v: orig_hits.__set__(s, v))
    return seen


async def test_views_look_at_a_bounded_sample_and_say_so(make_cache):
    cache = await _large(make_cache)
    seen = _touches(cache)
    st = (await views.performance_analysis(cache))["memory"]  # the memory block of stats too
    up = await views.usage_patterns(cache)
    recommendations(cache)
    assert st["sampling"] == {"sampled": True, "sample_size": 500, "entries": 3000}
    assert up["sampling"] == st["sampling"]
    # each view read at most its sample (plus the popular keys it may rank), never the whole tier
    assert len(set(seen)) <= 500 * 3 + len(cache.hot)
    assert 500 <= len(set(seen)) < 3000
    # the estimate is an estimate of the truth (30 % expired)
    truth = sum(1 for e in cache.l1.slots if e.expires_at <= time.time())
    assert abs(st["expired_entries"] - truth) <= 0.1 * 3000


async def test_small_tiers_are_not_sampled(make_cache):
    cache = await _large(make_cache, n=300)
    st = (await views.performance_analysis(cache))["memory"]
    assert st["sampling"] == {"sampled": False, "sample_size": 300, "entries": 300}
    assert st["expired_entries"] == sum(1 for e in cache.l1.slots if e.expires_at <= time.time())


async def test_key_analysis_counts_are_exact_without_a_scan(make_cache):
    cache = await _large(make_cache)
    seen = _touches(cache)
    ka = await views.key_analysis(cache)
    assert seen == []  # no entry looked at
    entries = list(cache.l1.entries())
    assert ka["keys"] == len(entries) == 3000
    by_op: dict = {}
    for e in entries:
        by_op[e.op] = by_op.get(e.op, 0) + 1
    assert ka["keys_by_operation"] == dict(sorted(by_op.items()))
    sizes = [len(e.key) + len("{llmapi}:cache:") for e in entries]
    assert (ka["key_size_bytes"]["min"], ka["key_size_bytes"]["max"]) == (min(sizes), max(sizes))
    assert ka["key_size_bytes"]["avg"] == round(sum(sizes) / len(sizes), 2)
    fps: dict = {}
    for e in entries:
        fps[e.fp] = fps.get(e.fp, 0) + 1
    assert ka["duplication"]["duplicate_entries"] == sum(n - 1 for n in fps.values() if n > 1) > 0


def test_the_sampling_index_stays_consistent_as_entries_come_and_go():
    removed = []
    tier = MemoryTier(lambda e, reason: removed.append(e))
    rnd = random.Random(3)
    keys = [f"summarize:{i}" for i in range(200)]
    for _ in range(5000):
        k = rnd.choice(keys)
        if rnd.random() < 0.6:
            tier.put(Entry(k, b"v", False, rnd.choice(["qa", "summarize"]), "small", 0.0, 10.0))
        else:
            tier.remove(k, "invalidated")
    assert sorted(id(e) for e in tier.slots) == sorted(id(e) for e in tier.data.values())
    assert all(tier.slots[e.slot] is e for e in tier.data.values())
    assert sum(tier.by_op.values()) == sum(tier.key_lengths.values()) == len(tier.data)
    assert len(tier.sample(50)) == min(50, len(tier.data))
    assert {id(e) for e in tier.sample(len(tier.data))} == {id(e) for e in tier.data.values()}


async def test_admin_removals_yield_to_the_loop_between_chunks(make_cache):
    cache = await _large(make_cache, n=20_000, sample=100)
    async with Ticker() as t:
        before = t.ticks
        res = await cache.invalidate("qa:*")
    ticks = t.ticks
    assert res["memory_removed"] == sum(1 for i in range(20_000) if i % 5 == 4) or res["memory_removed"] > 0
    assert not any(e.op == "qa" for e in cache.l1.entries())
    assert ticks - before >= 20_000 // 4096  # the loop ran other work while 20,000 entries were examined


async def test_the_evicted_keys_remembered_are_bounded_by_cache_ghost_keys(make_cache):
    cache = await make_cache(max_entries=5, ghost_keys=10)
    p = Provider()
    for i in range(60):
        await cache.get_or_compute(req(f"Some text to cache, number {i}. It has two sentences."), p)
    await asyncio.sleep(0)
    assert len(cache.stats.ghosts) == 10
    mem = views._memory(cache)   # what bench/soak.py waits for before it takes its reference
    assert (mem["ghost_keys"], mem["max_ghost_keys"]) == (10, 10)
    await cache.store.update("cache", {"ghost_keys": 3})
    assert len(cache.stats.ghosts) == 3
    mem = views._memory(cache)
    assert (mem["ghost_keys"], mem["max_ghost_keys"]) == (3, 3)


async def test_pressure_responses_on_a_large_tier_yield_to_the_loop_and_are_exact(make_cache):
    """clear_expired, evict_old and clear_all over 200,000 entries: the first step runs in the caller, the rest in
    steps between which other work runs (a ticker counts its turns), and each ends with the right result."""
    n = 200_000
    cache = await make_cache(max_entries=1_000_000, max_memory_mb=10_000.0, pressure_threshold=0.8,
                             emergency_threshold=0.99)
    fill(cache, n, expired_share=0.3)

    async def crossing(t: Ticker, response: str) -> dict:
        """Move max_memory_mb so the tier sits at 90 % of it (pressure, not emergency), with `response`."""
        mb = cache.l1.bytes / (1024 * 1024) / 0.9
        before = t.ticks
        await cache.store.update("cache", {"pressure_response": response, "max_memory_mb": mb})
        last = cache.stats.pressure["pressure"]["last"]
        assert last["response"] == response
        await cache.maint.settled()
        assert last["done"] is True
        assert t.ticks - before >= 5, (response, t.ticks - before)  # the loop ran other work between the steps
        return last

    async with Ticker() as t:
        now = time.time()
        expired = sum(1 for e in cache.l1.slots if e.expires_at <= now)
        assert 0.25 * n < expired < 0.35 * n
        last = await crossing(t, "clear_expired")
        assert last["entries_freed"] == expired and len(cache.l1) == n - expired
        assert not any(e.expires_at <= now for e in cache.l1.slots)

        before = len(cache.l1)
        last = await crossing(t, "evict_old")
        target = 0.8 * 0.9 * cache.store.get("cache")["max_memory_mb"] * 1024 * 1024
        assert cache.l1.bytes <= target < cache.l1.bytes + 1024  # evicted down to the target, not past it
        assert last["entries_freed"] == before - len(cache.l1) > 4096

        await cache.store.update("cache", {"max_memory_mb": 10_000.0})
        fill(cache, n)  # (fill's keys: the same keys again, so the tier holds n)
        last = await crossing(t, "clear_all")
        assert last["entries_freed"] == n and len(cache.l1) == 0 and cache.l1.bytes == 0
        assert cache.l1.slots == [] and cache.l1.by_op == {}


async def test_a_config_change_shrinking_a_large_tier_evicts_in_steps_that_yield(make_cache):
    """max_entries lowered from 200,000 to 1,000: the change evicts at most memory.CHUNK entries in the
    caller, the rest in steps between which other work runs; inserts meanwhile evict at most CHUNK each;
    the tier ends at the new limit exactly."""
    from service.cache.memory import CHUNK
    n = 200_000
    cache = await make_cache(max_entries=1_000_000, max_memory_mb=10_000.0)
    fill(cache, n)
    async with Ticker() as t:
        before = t.ticks
        await cache.store.update("cache", {"max_entries": 1_000})
        assert n - len(cache.l1) <= CHUNK  # the caller's step only
        left = len(cache.l1)
        fill(cache, 1, seed=99)  # an insert meanwhile (fill's first key again, stored through _put)
        assert left - len(cache.l1) <= CHUNK + 1
        await cache.maint.settled()
        assert len(cache.l1) == 1_000
        assert t.ticks - before >= 5, t.ticks - before
