"""LLM telemetry against the fake OpenAI-compatible upstream, read back from a live /metrics scrape:
cost from a known price table, cache savings from a known number of hits, upstream quota, the pool."""
import asyncio

import pytest

from tests.helpers import API_KEY

H = {"X-API-Key": API_KEY}
TEXT = ("Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally and runs rules "
        "over this data to aggregate and record new time series or generate alerts.")
MODEL = "m-test"
PRICE_IN, PRICE_OUT = 2.5, 10.0  # USD per million tokens
SERVICE_ENV = {"AI_MODEL": MODEL}  # for the start fixture (conftest.py)


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one sample of an exposition (labels must match exactly those given)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.partition(" ")
        lname, _, rest = head.partition("{")
        if lname != name:
            continue
        got = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if p) if rest else {}
        got = {k: v.strip('"') for k, v in got.items()}
        if got == {k: str(v) for k, v in labels.items()}:
            return float(value.split(" ")[0])
    return None


class Env:
    def __init__(self, svc, up, s):
        self.svc, self.up, self.s = svc, up, s

    async def summarize(self, i: int):
        async with self.s.post(f"{self.svc.url}/v1/text/summarize", headers=H,
                               json={"text": f"{TEXT} Request number {i}."}) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def metrics(self) -> str:
        async with self.s.get(f"{self.svc.url}/metrics") as r:
            return await r.text()

    async def get(self, path: str):
        async with self.s.get(f"{self.svc.url}{path}", headers=H) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def post(self, path: str, body: dict, base: str | None = None, headers=H):
        async with self.s.post(f"{base or self.svc.url}{path}", headers=headers, json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def test_cost_and_cache_savings_from_a_known_price_table(start):
    env = await start()
    try:
        await env.post("/internal/config/pricing", {"input_usd_per_million": {MODEL: PRICE_IN},
                                                    "output_usd_per_million": {MODEL: PRICE_OUT}})
        answers = [await env.summarize(i) for i in range(3)]           # three misses: three AI calls
        hits = 4
        for _ in range(hits):
            again = await env.summarize(1)                               # hits of answer 1
            assert again["cache_hit"] is True
        toks = [a["metadata"]["tokens"] for a in answers]
        cost = sum(t["prompt"] * PRICE_IN + t["completion"] * PRICE_OUT for t in toks) / 1e6
        one = toks[1]
        m = await env.metrics()
        L = {"model": MODEL, "operation": "summarize"}
        assert sample(m, "llmapi_ai_cost_usd_total", **L) == pytest.approx(cost, rel=1e-9)
        assert sample(m, "llmapi_cache_saved_tokens_total", **L) == hits * (one["prompt"] + one["completion"])
        saved = hits * (one["prompt"] * PRICE_IN + one["completion"] * PRICE_OUT) / 1e6
        assert sample(m, "llmapi_cache_saved_cost_usd_total", **L) == pytest.approx(saved, rel=1e-9)
        G = {"gen_ai_operation_name": "summarize", "gen_ai_provider_name": "openai", "gen_ai_request_model": MODEL}
        assert sample(m, "gen_ai_client_token_usage_count", **G, gen_ai_token_type="input") == 3
        assert sample(m, "gen_ai_client_token_usage_sum", **G, gen_ai_token_type="input") == sum(
            t["prompt"] for t in toks)
        assert sample(m, "gen_ai_client_token_usage_sum", **G, gen_ai_token_type="output") == sum(
            t["completion"] for t in toks)
        assert sample(m, "gen_ai_client_operation_duration_seconds_count", **G, error_type="") == 3
        assert sample(m, "llmapi_ai_request_duration_seconds_count", provider="openai", model=MODEL,
                      outcome="success") == 3
        assert sample(m, "llmapi_ai_tokens_total", provider="openai", type="prompt") is None  # one name only
        # an unpriced operation exists at 0 from the start
        assert sample(m, "llmapi_ai_cost_usd_total", model=MODEL, operation="qa") == 0
    finally:
        await env.s.close()


async def test_failed_calls_carry_their_error_type(start):
    env = await start(AI_MAX_RETRIES="1")
    try:
        await env.post("/_control", {"error_rate": 1.0, "error_status": 500}, base=env.up.url, headers={})
        async with env.s.post(f"{env.svc.url}/v1/text/summarize", headers=H, json={"text": TEXT}) as r:
            assert r.status == 503
        m = await env.metrics()
        G = {"gen_ai_operation_name": "summarize", "gen_ai_provider_name": "openai", "gen_ai_request_model": MODEL}
        assert sample(m, "gen_ai_client_operation_duration_seconds_count", **G, error_type="server") == 1  # one call
        assert sample(m, "llmapi_ai_request_duration_seconds_count", provider="openai", model=MODEL,
                      outcome="server") == 2  # two attempts
    finally:
        await env.s.close()


async def test_upstream_quota_gauges_follow_the_ratelimit_headers(start):
    env = await start()
    try:
        await env.post("/_control", {"ratelimit_requests": 100, "ratelimit_tokens": 50_000}, base=env.up.url,
                       headers={})
        m = await env.metrics()
        assert sample(m, "llmapi_ai_upstream_remaining", kind="requests", model=MODEL) is None  # no answer yet
        used = 0
        for i in range(2):
            t = (await env.summarize(i))["metadata"]["tokens"]
            used += t["prompt"] + t["completion"]
        m = await env.metrics()
        assert sample(m, "llmapi_ai_upstream_remaining", kind="requests", model=MODEL) == 98
        assert sample(m, "llmapi_ai_upstream_remaining", kind="tokens", model=MODEL) == 50_000 - used
    finally:
        await env.s.close()


async def test_a_small_pool_under_concurrency_is_visible_and_named(start):
    env = await start(("--latency-ms", "300"), MAX_CONNECTIONS="2")
    try:
        n = 8
        m0 = await env.metrics()
        before = sample(m0, "llmapi_ai_pool_wait_seconds_count", provider="openai") or 0
        free_before = sample(m0, "llmapi_ai_pool_wait_seconds_bucket", provider="openai", le="0.0001") or 0
        burst = asyncio.gather(*(env.summarize(i) for i in range(n)))
        await asyncio.sleep(0.15)
        mid = await env.metrics()
        await burst
        assert sample(mid, "llmapi_ai_pool_waiting_requests", provider="openai") >= 1
        assert sample(mid, "llmapi_ai_pool_connections_in_use", provider="openai") == 2
        assert sample(mid, "llmapi_ai_pool_max_connections", provider="openai") == 2
        m = await env.metrics()
        assert sample(m, "llmapi_ai_pool_waiting_requests", provider="openai") == 0
        assert sample(m, "llmapi_ai_pool_connections_in_use", provider="openai") == 0
        # one acquisition per call (the start-up health probe may have taken one before)
        assert sample(m, "llmapi_ai_pool_wait_seconds_count", provider="openai") - before == n
        # 6 of 8 waited for one of 2 connections answering in 300 ms: at least 3 x 0.3 s in all
        assert sample(m, "llmapi_ai_pool_wait_seconds_sum", provider="openai") >= 0.9
        free = sample(m, "llmapi_ai_pool_wait_seconds_bucket", provider="openai", le="0.0001") - free_before
        assert free <= 2  # only the first two found a free slot
        ai = await env.get("/internal/monitoring/ai-performance")
        pool = ai["provider"]["pool"]
        assert pool["max_waiting"] >= 1 and pool["queued"] >= n - 2
        assert [f["kind"] for f in ai["findings"]] == ["connection_pool"]
        assert "max_connections" in ai["findings"][0]["message"]
        b = await env.get("/internal/monitoring/bottlenecks")
        found = [f for f in b["findings"] if f["kind"] == "connection_pool"]
        assert found and "ai.max_connections" in found[0]["message"]
        assert any(c["span"] == "ai.pool_wait" and c.get("inside") == "ai.call" for c in b["components"])
        # sized for the load, the same burst waits for nothing
        await env.post("/internal/ai/optimize-performance", {"max_connections": 16})
        await asyncio.gather(*(env.summarize(100 + i) for i in range(n)))
        m2 = await env.metrics()
        assert sample(m2, "llmapi_ai_pool_max_connections", provider="openai") == 16
        waited_before = sample(m, "llmapi_ai_pool_wait_seconds_sum", provider="openai")
        assert sample(m2, "llmapi_ai_pool_wait_seconds_sum", provider="openai") == pytest.approx(waited_before)
    finally:
        await env.s.close()


async def test_requests_are_counted_per_key_name_and_operation(make_client):
    from exporter.metrics import CLIENT_REQUESTS
    c = await make_client()

    def count(op):
        return sum(s.value for f in CLIENT_REQUESTS.collect() for s in f.samples
                   if s.name.endswith("_total") and s.labels["operation"] == op)

    before = {op: count(op) for op in ("summarize", "sentiment")}
    for i in range(3):
        assert (await c.post("/v1/text/summarize", json={"text": f"{TEXT} {i}"})).status == 200
    r = await c.post("/v1/text/batch", json={"requests": [{"operation": "sentiment", "text": TEXT},
                                                          {"operation": "summarize", "text": TEXT}]})
    assert r.status == 200
    await c.get("/metrics")  # flushes the tallies
    assert count("summarize") - before["summarize"] == 4 and count("sentiment") - before["sentiment"] == 1


async def test_latency_histograms_carry_the_request_id_as_exemplar(make_client):
    c = await make_client()
    r = await c.post("/v1/text/summarize", json={"text": f"{TEXT} exemplar"}, headers={"X-Request-ID": "rid-ex-42"})
    assert r.status == 200
    m = await (await c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})).text()
    for family in ("llmapi_http_request_duration_seconds_bucket", "gen_ai_client_operation_duration_seconds_bucket",
                   "llmapi_ai_request_duration_seconds_bucket"):
        marked = [ln for ln in m.splitlines() if ln.startswith(family) and '# {request_id="rid-ex-42"}' in ln]
        assert marked, family
