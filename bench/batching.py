"""Bench scenarios for AI micro-batching: uncached requests (every text unique),
batching off vs on, to the fake OpenAI-compatible upstream and to the local
provider.

Upstream: the same number of upstream calls, but at most batch_size x
max_concurrent_batches of them in flight (an upstream with a concurrency quota
stops answering 429), paid for in queueing latency.  Local: about batch_size
times fewer provider calls at similar or better req/s (the local provider is CPU
on the event loop; a call has little fixed cost to amortise).  Each result carries
the provider and upstream call counts, the upstream's peak in-flight calls and
the service's batching stats next to req/s and latency.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import urllib.request

from bench.load import _bundled
from tests.helpers import API_KEY, PYTHON, Proc, free_port, service_env, start_fake_upstream

UPSTREAM_LATENCY_MS = 50
BATCHING = {"enable_batching": True, "batch_size": 4, "batch_timeout_ms": 5, "max_concurrent_batches": 2}
TEXT = ("Operators batch concurrent model calls so that a rate-limited upstream sees a bounded number of "
        "requests at once, trading a few milliseconds of queueing for fewer rejected calls.")


class _Pair:
    """The service and its fake upstream, stopped together."""

    def __init__(self, svc: Proc, up: Proc):
        self.svc, self.up = svc, up
        self.url = svc.url

    def stop(self) -> None:
        self.svc.stop()
        self.up.stop()


def starter(batching: bool, upstream: bool = True):
    def start(state: str, _redis) -> _Pair:
        up = start_fake_upstream("--latency-ms", str(UPSTREAM_LATENCY_MS))
        port = free_port()
        ai = {"AI_PROVIDER": "openai", "OPENAI_BASE_URL": f"{up.url}/v1", "OPENAI_API_KEY": "sk-bench"} \
            if upstream else {"AI_PROVIDER": "local"}
        env = service_env(port, state, LOG_LEVEL="WARNING", AI_TIMEOUT_SECONDS="30", **ai)
        try:
            svc = Proc([PYTHON, "-m", "service"], env, port, "/v1/health")
        except Exception:
            up.stop()
            raise
        pair = _Pair(svc, up)
        pair.batching = batching
        return pair
    return start


def _json(method: str, url: str, body: dict | None = None, key: bool = True) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = API_KEY
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _drive(url: str, duration: float, connections: int, start_n: int) -> dict:
    n = itertools.count(start_n)

    def body() -> bytes:
        return json.dumps({"text": f"{TEXT} Unique request {next(n)}.", "options": {"max_length": 20}}).encode()

    res = asyncio.run(_bundled(url, body, {"X-API-Key": API_KEY, "Content-Type": "application/json"},
                               duration, connections))
    res["tool"] = "bundled-unique-bodies"
    return res


def drive(pair: _Pair, duration: float, connections: int) -> dict:
    if pair.batching:
        _json("POST", f"{pair.url}/internal/ai/configure-batching", BATCHING)
    _drive(f"{pair.url}/v1/text/summarize", 1.0, connections, 10_000_000)  # warm up
    _json("POST", f"{pair.up.url}/_reset", key=False)
    perf = f"{pair.url}/internal/monitoring/ai-performance"
    b0, calls0 = _json("GET", perf)["batching"], _json("GET", perf)["summary"]["attempts"]
    res = _drive(f"{pair.url}/v1/text/summarize", duration, connections, 0)
    up = _json("GET", f"{pair.up.url}/_stats", key=False)
    ai = _json("GET", perf)
    b = ai["batching"]
    res["upstream_calls"] = up["calls"]
    res["upstream_max_in_flight"] = up["max_in_flight"]
    res["ai_calls"] = ai["summary"]["attempts"] - calls0
    res["provider_calls"] = b["provider_batch_calls"] - b0["provider_batch_calls"]
    res["batching"] = {k: b[k] for k in ("enabled", "batch_size", "batch_timeout_ms", "max_concurrent_batches")}
    print(f"  {('batching on' if pair.batching else 'batching off'):13}: {res['ai_calls']} AI calls in "
          f"{res['provider_calls']} provider calls, upstream calls {up['calls']} "
          f"(peak {up['max_in_flight']} in flight), p50 {res['p50_ms']:.1f} ms")
    return res
