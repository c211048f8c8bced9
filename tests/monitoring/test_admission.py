"""Admission control: slots, FIFO queue, 503 + Retry-After beyond it, recovery, live limits."""
from __future__ import annotations

import asyncio

from exporter.metrics import ADMISSION_SHED
from service.monitoring.snapshot import counter_total
from tests.monitoring.conftest import ctx_of

M = "/internal/monitoring"


async def fire(c, n, s=0.3):
    async def one():
        r = await c.get(f"/v1/text/test/slow?s={s}")
        return r.status, r.headers.get("Retry-After"), await r.json()
    return await asyncio.gather(*(one() for _ in range(n)))


async def test_sheds_beyond_queue_and_recovers(mon_client):
    c = await mon_client()
    r = await c.post(f"{M}/configure", json={"max_concurrent_requests": 2, "queue_size": 2})
    assert r.status == 200
    shed_before = counter_total(ADMISSION_SHED, reason="queue_full")
    res = await fire(c, 8)
    ok = [x for x in res if x[0] == 200]
    shed = [x for x in res if x[0] == 503]
    assert len(ok) == 4 and len(shed) == 4  # 2 running + 2 queued; the rest shed
    for status, retry_after, body in shed:
        assert retry_after is not None and int(retry_after) >= 1
        assert body["error_code"] == "SERVICE_OVERLOADED" and body["details"]["reason"] == "queue_full"
        assert body["request_id"]
    assert counter_total(ADMISSION_SHED, reason="queue_full") - shed_before == 4
    adm = (await (await c.get(f"{M}/system-load")).json())["admission"]
    assert adm["shed"]["queue_full"] == 4 and adm["active"] == 0 and adm["queued"] == 0
    # recovered: the next burst within capacity is served completely
    res = await fire(c, 4, 0.05)
    assert [x[0] for x in res] == [200] * 4
    # and the shed requests show in the analytics' status mix
    pat = await (await c.get(f"{M}/request-patterns?hours=1")).json()
    assert pat["status_mix"]["by_code"]["503"] == 4


async def test_queue_timeout_sheds(mon_client):
    c = await mon_client()
    await c.post(f"{M}/configure", json={"max_concurrent_requests": 1, "queue_size": 5,
                                         "queue_timeout_seconds": 0.1})
    res = await fire(c, 3, 0.4)
    assert sorted(x[0] for x in res) == [200, 503, 503]
    assert all(x[2]["details"]["reason"] == "queue_timeout" for x in res if x[0] == 503)


async def test_raising_the_limit_wakes_waiters_and_operators_bypass(mon_client):
    c = await mon_client()
    await c.post(f"{M}/configure", json={"max_concurrent_requests": 1, "queue_size": 10})
    burst = asyncio.ensure_future(fire(c, 4, 2.0))  # one at a time they would take 8 s
    while (await (await c.get(f"{M}/system-load")).json())["admission"]["queued"] < 3:
        await asyncio.sleep(0.02)
    # saturated, yet /internal answers (it is not queued behind the burst: that one is still running)
    r = await c.get(f"{M}/system-load")
    assert r.status == 200 and not burst.done()
    load = await r.json()
    assert load["admission"]["active"] == 1 and load["admission"]["queued"] == 3
    assert load["status"] in ("elevated", "high", "critical")
    await c.post(f"{M}/configure", json={"max_concurrent_requests": 10})
    # the three waiting requests are let in at once: all four run together, long before one could end
    peak = 0
    while not burst.done() and peak < 4:
        peak = max(peak, (await (await c.get(f"{M}/system-load")).json())["admission"]["active"])
        await asyncio.sleep(0.02)
    assert peak == 4
    res = await burst
    assert [x[0] for x in res] == [200] * 4


async def test_unlimited_by_default(mon_client):
    c = await mon_client()
    assert ctx_of(c).store.get("monitoring")["max_concurrent_requests"] == 0
    res = await fire(c, 20, 0.1)
    assert all(x[0] == 200 for x in res)
