"""Breakers, deadlines, Retry-After and presets against the fake OpenAI-compatible upstream, over real HTTP.

Assertions count upstream calls (GET /_stats), not timings; the few time checks
are loose correctness bounds (a deadline holds, a Retry-After was waited).
"""
import asyncio
import time

from tests.helpers import API_KEY

TEXT = ("Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally and runs rules "
        "over this data to aggregate and record new time series or generate alerts.")
H = {"X-API-Key": API_KEY}


class Env:
    def __init__(self, svc, up, session):
        self.svc, self.up, self.s = svc, up, session
        self.n = 0

    async def summarize(self):
        self.n += 1
        async with self.s.post(f"{self.svc.url}/v1/text/summarize", headers=H,
                               json={"text": f"{TEXT} Unique request {self.n}."}) as r:
            return r.status, await r.json(), r.headers

    async def calls(self):
        async with self.s.get(f"{self.up.url}/_stats") as r:
            return (await r.json())["calls"]

    async def stats(self):
        async with self.s.get(f"{self.up.url}/_stats") as r:
            return await r.json()

    async def control(self, **kw):
        async with self.s.post(f"{self.up.url}/_control", json=kw) as r:
            assert r.status == 200, await r.text()

    async def post(self, path, body):
        async with self.s.post(f"{self.svc.url}{path}", headers=H, json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def get(self, path):
        async with self.s.get(f"{self.svc.url}{path}", headers=H) as r:
            return await r.json()


async def test_breaker_opens_fails_fast_probes_and_closes(start):
    e = await start(("--error-rate", "1", "--error-status", "503"), AI_MAX_RETRIES=0, AI_TIMEOUT_SECONDS=5,
                    CIRCUIT_BREAKER_FAILURE_THRESHOLD=3, CIRCUIT_BREAKER_RECOVERY_TIMEOUT=1.5)
    async with e.s:
        await e.post("/internal/resilience/circuit-breakers/configure", {"half_open_max_calls": 2})
        for _ in range(3):
            status, body, _ = await e.summarize()
            assert status == 503 and body["error_code"] == "AI_SERVICE_UNAVAILABLE"
        assert await e.calls() == 3
        br = (await e.get("/internal/resilience/circuit-breakers"))["circuit_breakers"]["openai.summarize"]
        assert br["state"] == "open"
        # open: fail fast, the upstream is not called
        for _ in range(5):
            status, body, headers = await e.summarize()
            assert status == 503 and body["error_code"] == "CIRCUIT_BREAKER_OPEN"
            assert 1 <= int(headers["Retry-After"]) <= 2
        assert await e.calls() == 3
        # after recovery_timeout: exactly half_open_max_calls probes reach the upstream
        await e.control(latency_ms=400)
        await asyncio.sleep(1.6)
        results = await asyncio.gather(*(e.summarize() for _ in range(6)))
        assert all(r[0] == 503 for r in results)
        assert sorted(r[1]["error_code"] for r in results).count("CIRCUIT_BREAKER_OPEN") == 4
        assert await e.calls() == 5
        br = (await e.get("/internal/resilience/circuit-breakers"))["circuit_breakers"]["openai.summarize"]
        assert br["state"] == "open"  # the failed probes re-opened it
        # upstream healthy again: after the timeout one probe succeeds and closes the breaker
        await e.control(latency_ms=0, error_rate=0)
        await asyncio.sleep(1.6)
        status, body, _ = await e.summarize()
        assert status == 200 and body["success"] is True
        br = (await e.get("/internal/resilience/circuit-breakers"))["circuit_breakers"]["openai.summarize"]
        assert br["state"] == "closed"
        assert (await e.summarize())[0] == 200
        assert await e.calls() == 7
        metrics = await (await e.s.get(f"{e.svc.url}/metrics")).text()
        assert 'llmapi_circuit_breaker_transitions_total{breaker="openai.summarize",state="open"} 2.0' in metrics
        assert 'llmapi_circuit_breaker_state{breaker="openai.summarize",state="closed"} 1.0' in metrics
        assert 'llmapi_circuit_breaker_state{breaker="openai.summarize",state="open"} 0.0' in metrics
        assert 'llmapi_resilience_fallbacks_total{kind="unavailable",operation="summarize"}' in metrics
        # the state changes are logged once each
        log = e.svc.output()
        assert log.count('"circuit breaker state changed"') == 5  # open, half-open, open, half-open, closed


async def test_slow_upstream_request_ends_by_its_deadline(start):
    e = await start(("--latency-ms", "3000"), AI_TIMEOUT_SECONDS=1, AI_MAX_RETRIES=10)
    async with e.s:
        t = time.monotonic()
        status, body, headers = await e.summarize()
        elapsed = time.monotonic() - t
        assert status == 503 and body["error_code"] == "AI_TIMEOUT"
        assert "Retry-After" in headers
        assert elapsed < 1 + 4  # the deadline held: ten retries of 1 s each would take 11 s


async def test_retry_after_is_honoured(start):
    e = await start(("--error-rate", "1", "--error-status", "429", "--retry-after", "1"),
                    AI_MAX_RETRIES=1, AI_TIMEOUT_SECONDS=10, CIRCUIT_BREAKER_FAILURE_THRESHOLD=100)
    async with e.s:
        t = time.monotonic()
        status, body, headers = await e.summarize()
        elapsed = time.monotonic() - t
        assert status == 503 and body["error_code"] == "AI_RATE_LIMITED"
        assert headers["Retry-After"] == "1"
        assert await e.calls() == 2
        assert elapsed >= 1.0  # the retry waited the upstream's Retry-After
        # a Retry-After beyond the deadline: no retry, and the client is told when to come back
        await e.control(retry_after=30)
        status, body, headers = await e.summarize()
        assert status == 503 and headers["Retry-After"] == "30"
        assert await e.calls() == 3


async def test_switching_presets_changes_behaviour_live(start):
    e = await start(("--error-rate", "1", "--error-status", "502"), AI_MAX_RETRIES=3, AI_TIMEOUT_SECONDS=10,
                    CIRCUIT_BREAKER_FAILURE_THRESHOLD=100)
    async with e.s:
        assert (await e.summarize())[0] == 503
        assert await e.calls() == 4  # balanced (simple preset): every allowed retry
        await e.post("/internal/resilience/config/apply-preset", {"preset": "aggressive"})
        assert (await e.summarize())[0] == 503
        assert await e.calls() == 6  # aggressive: one retry
        await e.post("/internal/ai/optimize-performance", {"max_retries": 0})
        assert (await e.summarize())[0] == 503
        assert await e.calls() == 7
        pm = await e.get("/internal/resilience/performance-metrics")
        assert pm["operations"]["summarize"]["retries"] == 4
        impact = await e.get("/internal/resilience/performance-impact")
        assert impact["summary"]["backoff_wait_ms_total"] > 0


async def test_batching_bounds_upstream_concurrency(start):
    e = await start(("--latency-ms", "300"), AI_TIMEOUT_SECONDS=10)
    async with e.s:
        out = await asyncio.gather(*(e.summarize() for _ in range(12)))
        assert all(r[0] == 200 for r in out)
        unbatched = (await e.stats())["max_in_flight"]
        assert unbatched >= 8
        async with e.s.post(f"{e.up.url}/_reset") as r:
            assert r.status == 200
        await e.post("/internal/ai/configure-batching", {"enable_batching": True, "batch_size": 2,
                                                         "batch_timeout_ms": 20, "max_concurrent_batches": 2})
        out = await asyncio.gather(*(e.summarize() for _ in range(12)))
        assert all(r[0] == 200 for r in out)
        st = await e.stats()
        assert st["calls"] == 12 and st["max_in_flight"] <= 4
        b = (await e.get("/internal/monitoring/ai-performance"))["batching"]
        assert b["items"] == 12 and b["batches"] >= 6
