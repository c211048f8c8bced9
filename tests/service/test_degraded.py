"""Degraded answers (a stale cached copy served because the AI service failed) are counted once per
API response in llmapi_text_degraded_responses_total: the quality SLO's bad events besides 5xx."""
from __future__ import annotations

import asyncio

from exporter.metrics import REGISTRY
from service.providers.fake_upstream import FakeUpstream

TEXT = ("Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally and runs rules "
        "over this data to aggregate and record new time series or generate alerts.")


def degraded(operation: str) -> float:
    v = REGISTRY.get_sample_value("llmapi_text_degraded_responses_total",
                                  {"operation": operation, "reason": "stale_cache"})
    return v or 0.0


async def test_stale_fallbacks_count_once_per_response(make_client):
    up = await FakeUpstream().start()
    try:
        c = await make_client(AI_PROVIDER="openai", OPENAI_BASE_URL=up.base_url, AI_MAX_RETRIES=0,
                              CACHE_DEFAULT_TTL=1)
        assert (await c.post("/internal/config/cache", json={"ttl_by_operation": {}})).status == 200
        texts = [f"{TEXT} Item {i}." for i in range(2)]
        for t in texts:
            assert (await c.post("/v1/text/summarize", json={"text": t})).status == 200
        fresh = await (await c.post("/v1/text/summarize", json={"text": texts[0]})).json()
        assert fresh["cache_hit"] and "fallback" not in fresh
        before = degraded("summarize"), degraded("batch")
        for op in ("summarize", "qa", "batch"):  # pre-initialised: rate() reads 0 before the first one
            assert REGISTRY.get_sample_value("llmapi_text_degraded_responses_total",
                                             {"operation": op, "reason": "stale_cache"}) is not None
        await asyncio.sleep(1.2)                  # let both entries expire (TTL 1 s); stale copies stay
        up.state.update({"error_rate": 1.0})
        r = await c.post("/v1/text/summarize", json={"text": texts[0]})
        body = await r.json()
        assert r.status == 200 and body["fallback"] is True
        assert degraded("summarize") == before[0] + 1
        r = await c.post("/v1/text/batch", json={"requests": [{"operation": "summarize", "text": t} for t in texts]})
        items = (await r.json())["results"]
        assert [i["response"]["fallback"] for i in items] == [True, True]
        assert degraded("batch") == before[1] + 1           # one response, one count
        assert degraded("summarize") == before[0] + 1       # the batch's items are not counted again
    finally:
        await up.stop()
