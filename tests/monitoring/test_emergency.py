"""Emergency mode: tightens, sheds, records; off restores the config exactly."""
from __future__ import annotations

import asyncio

from service.config.sections import SECTIONS
from service.config.schema import Field as F, Section
from service.config.store import ConfigStore
from service.monitoring import emergency
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
    if "cache" in store.sections and "base_ttl_seconds" in store.sections["cache"].fields:
        assert store.get("cache")["base_ttl_seconds"] < before["cache"]["base_ttl_seconds"]
    assert d["saved"]["ai"] == {"timeout_seconds": 42.0, "max_retries": 4}
    # it sheds: one slot, no queue
    res = await asyncio.gather(*(c.get("/test/slow?s=0.2") for _ in range(3)))
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
    res = await asyncio.gather(*(c.get("/test/slow?s=0.05") for _ in range(3)))
    assert all(r.status == 200 for r in res)


async def test_bad_bodies(mon_client):
    c = await mon_client()
    for body, field in (({"enabled": "yes"}, "enabled"), ({"mode": "on"}, "mode"), ({"reason": 5}, "reason")):
        r = await c.post(f"{M}/emergency-mode", json=body)
        assert r.status == 422 and (await r.json())["details"]["field"] == field
    assert ctx_of(c).store.get("monitoring")["emergency_mode"] is False


async def test_discovers_other_sections_at_run_time():
    """With cache and resilience sections shaped like the real ones, each is tightened and restored."""
    sections = dict(SECTIONS)
    sections["cache"] = Section("cache", {
        "base_ttl_seconds": F(int, 3600, 1, 10 ** 7), "max_ttl_seconds": F(int, 7200, 1, 10 ** 7),
        "stale_ttl_seconds": F(int, 3600, 0, 10 ** 7),
        "ttl_by_operation": F(dict, {"sentiment": 86400, "qa": 1800}, 1, 10 ** 7, item_type=int)})
    sections["resilience"] = Section("resilience", {
        "preset": F(str, "simple", choices=("simple", "production", "aggressive"))})
    store = ConfigStore(sections, env={})
    before = store.snapshot()
    changed, saved, _ = await emergency.enable(store, "load test")
    assert changed
    assert store.get("cache")["base_ttl_seconds"] == 900 and store.get("cache")["max_ttl_seconds"] == 1800
    assert store.get("cache")["stale_ttl_seconds"] == 3600  # fallbacks keep their stale answers
    assert store.get("cache")["ttl_by_operation"] == {"sentiment": 21600, "qa": 450}
    assert store.get("resilience")["preset"] == "aggressive"
    # an operator edit during the emergency is undone too: the previous config comes back exactly
    await store.update("cache", {"base_ttl_seconds": 60})
    changed, _, _ = await emergency.disable(store)
    assert changed and store.snapshot() == before
