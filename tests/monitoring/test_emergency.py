"""Emergency mode: tightens, sheds, records; off restores the config exactly."""
from __future__ import annotations

import asyncio

from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.monitoring import emergency
from service.resilience.strategies import PRESETS
from tests.monitoring.conftest import ctx_of

M = "/internal/monitoring"


async def test_round_trip_restores_exactly(mon_client):
    c = await mon_client()
    store = ctx_of(c).store
    # an operator's own settings, which emergency mode must give back
    await store.update("ai", {"timeout_seconds": 42.0, "max_retries": 4})
    await c.post(f"{M}/configure", json={"max_concurrent_requests": 50, "queue_size": 300,
                                         "emergency_max_concurrent_requests": 1, "emergency_queue_size": 0})
    before = store.snapshot()
    r = await c.post(f"{M}/emergency-mode")
    d = await r.json()
    assert r.status == 200 and d["emergency_mode"] is True and d["changed"] is True
    assert store.get("ai")["timeout_seconds"] == 10.0 and store.get("ai")["max_retries"] == 1
    assert store.get("monitoring")["max_concurrent_requests"] == 1 and store.get("monitoring")["queue_size"] == 0
    if "resilience" in store.sections and "preset" in store.sections["resilience"].fields:
        assert store.get("resilience")["preset"] == "aggressive"
    assert store.get("cache") == before["cache"]  # TTLs shrink where they are computed (service/cache/ttl.py)
    assert d["saved"]["ai"] == {"timeout_seconds": 42.0, "max_retries": 4}
    # it sheds: one slot, no queue
    res = await asyncio.gather(*(c.get("/v1/text/test/slow?s=0.2") for _ in range(3)))
    assert sorted(r.status for r in res) == [200, 503, 503]
    # recorded: status, config history, events
    st = await (await c.get(f"{M}/emergency-mode")).json()
    assert st["emergency_mode"] is True and st["since"] is not None
    again = await (await c.post(f"{M}/emergency-mode", json={"enabled": True})).json()
    assert again["changed"] is False
    r = await c.post(f"{M}/emergency-mode", json={"enabled": False})
    d = await r.json()
    assert r.status == 200 and d["emergency_mode"] is False and d["changed"] is True
    assert store.snapshot() == before
    sources = [e["source"] for e in store.public_history(10)]
    assert "emergency-mode:on" in sources and "emergency-mode:off" in sources
    ev = await (await c.get(f"{M}/events?kind=emergency_mode")).json()
    assert [e["details"]["enabled"] for e in ev["events"]] == [False, True]
    res = await asyncio.gather(*(c.get("/v1/text/test/slow?s=0.05") for _ in range(3)))
    assert all(r.status == 200 for r in res)


async def test_bad_bodies(mon_client):
    c = await mon_client()
    for body, field in (({"enabled": "yes"}, "enabled"), ({"mode": "on"}, "mode"), ({"reason": 5}, "reason")):
        r = await c.post(f"{M}/emergency-mode", json=body)
        assert r.status == 422 and (await r.json())["details"]["field"] == field
    assert ctx_of(c).store.get("monitoring")["emergency_mode"] is False


def test_it_names_the_fields_it_changes():
    """Every field emergency mode changes is named, exists in its section, and has its monitoring setting."""
    mon = SECTIONS["monitoring"].fields
    for sec, name, how, setting in emergency.CHANGES:
        assert name in SECTIONS[sec].fields, (sec, name)
        assert setting in mon and how in (emergency.CAP, emergency.SET, emergency.LIMIT)
    assert mon["emergency_resilience_preset"].choices == SECTIONS["resilience"].fields["preset"].choices
    assert set(mon["emergency_resilience_preset"].choices) == set(PRESETS)
    named = {(sec, name) for sec, name, _, _ in emergency.CHANGES}
    store = ConfigStore(SECTIONS, env={})
    planned = {(sec, k) for sec, ch in emergency.plan(store).items() for k in ch}
    assert planned and planned <= named  # nothing guessed: no cache field, no other section


async def test_a_cached_answer_lives_base_ttl_times_the_factor_once(make_client, redis_url):
    """3600 s x 0.25 = 900 s, in memory and in Redis (the factor was once applied twice: 225 s)."""
    import redis.asyncio as aioredis
    from service.cache.keys import REDIS_PREFIX
    from service.context import CTX
    c = await make_client(REDIS_URL=redis_url)
    cache = c.app[CTX].cache
    r = await c.post(f"{M}/emergency-mode", json={"enabled": True, "reason": "test"})
    assert r.status == 200 and (await r.json())["emergency_mode"] is True
    assert c.app[CTX].store.get("cache")["base_ttl_seconds"] == 3600
    r = await c.post("/v1/text/summarize", json={"text": "Emergency mode shortens how long cached answers live."})
    assert r.status == 200
    [entry] = list(cache.l1.entries())
    assert entry.ttl == 900.0
    rc = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in rc.scan_iter(match=REDIS_PREFIX + "summarize:*")]
        assert len(keys) == 1
        stale = c.app[CTX].store.get("cache")["stale_ttl_seconds"]  # kept on for fallbacks, not scaled
        assert 895 <= await rc.ttl(keys[0]) - stale <= 900
    finally:
        await rc.aclose()
    await c.post(f"{M}/emergency-mode", json={"enabled": False})
    r = await c.post("/v1/text/summarize", json={"text": "After the emergency answers live the whole base TTL."})
    assert max(e.ttl for e in cache.l1.entries()) == 3600.0
