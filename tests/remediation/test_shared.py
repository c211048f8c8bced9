"""Two service processes on one real redis-server: a firing alert acts once; the other process reverts it."""
from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.helpers import API_KEY
from tests.remediation.conftest import load

HOOK = "/internal/alerts/webhook"
H = {"X-API-Key": API_KEY}


async def _json(session, method, url, **kw):
    async with session.request(method, url, headers=H, **kw) as r:
        return r.status, await r.json()


async def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_two_processes_on_one_redis_act_once_and_either_reverts(service_factory, redis_url):
    a = service_factory(REDIS_URL=redis_url)
    b = service_factory(REDIS_URL=redis_url)
    async with aiohttp.ClientSession() as s:
        st, _ = await _json(s, "POST", f"{a.url}/internal/remediation/error_rate", json={"mode": "enforce"})
        assert st == 200

        async def b_enforces():
            _, cfg = await _json(s, "GET", f"{b.url}/internal/config")
            return cfg["sections"]["remediation"]["values"]["error_rate_mode"] == "enforce"
        assert await _wait(b_enforces), "the mode change reaches the other process through Redis"

        # Alertmanager (or two of them, or its retries) delivers the same firing alert to both, at once, twice
        firing = load("error_rate_firing")
        answers = await asyncio.gather(*[_json(s, "POST", f"{u}{HOOK}", json=firing) for u in (a.url, b.url) * 2])
        outcomes = sorted(body["results"][0]["outcome"] for _, body in answers)
        assert outcomes == ["applied", "duplicate", "duplicate", "duplicate"], answers

        async def preset(url, want):
            _, cfg = await _json(s, "GET", f"{url}/internal/config")
            return cfg["sections"]["resilience"]["values"]["preset"] == want
        assert await _wait(lambda: preset(a.url, "aggressive")) and await _wait(lambda: preset(b.url, "aggressive"))
        _, st_b = await _json(s, "GET", f"{b.url}/internal/remediation")
        assert [p["entry"] for p in st_b["pending_reverts"]] == ["error_rate"]
        assert st_b["state"] == "redis" and st_b["actions_last_hour"] == 1

        # the resolve reaches whichever process: the revert happens once
        resolved = load("error_rate_resolved")
        answers = await asyncio.gather(*[_json(s, "POST", f"{u}{HOOK}", json=resolved) for u in (b.url, a.url)])
        outcomes = sorted(body["results"][0]["outcome"] for _, body in answers)
        assert outcomes == ["duplicate", "reverted"], answers
        assert await _wait(lambda: preset(a.url, "simple")) and await _wait(lambda: preset(b.url, "simple"))
        _, hist = await _json(s, "GET", f"{a.url}/internal/remediation/history")
        assert [h["outcome"] for h in hist["history"]] == ["reverted", "applied"]


async def test_redis_away_answers_503_so_alertmanager_retries_and_nothing_changes(make_client, fresh_redis):
    c = await make_client(REDIS_URL=fresh_redis.url)
    r = await c.post("/internal/remediation/error_rate", json={"mode": "enforce"})
    assert r.status == 200
    fresh_redis.stop()
    r = await c.post(HOOK, json=load("error_rate_firing"))
    body = await r.json()
    assert r.status == 503 and body["error_code"] == "REMEDIATION_STATE_UNAVAILABLE", body
    assert r.headers["Retry-After"]
    cfg = await (await c.get("/internal/config")).json()
    assert cfg["sections"]["resilience"]["values"]["preset"] == "simple"
    fresh_redis.start()  # back: the retry acts
    r = await c.post(HOOK, json=load("error_rate_firing"))
    assert r.status == 200 and (await r.json())["results"][0]["outcome"] == "applied"
