"""WORKERS > 1: /internal/cache/stats says whose figures it gives, and sums every worker under "service"."""
from __future__ import annotations

import json
import time
import urllib.request

from tests.helpers import API_KEY

TEXT = {"text": "Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally."}


def _call(url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:  # a new connection each time: SO_REUSEPORT spreads them
        return json.loads(r.read())


def _stats_until(url: str, pred, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = _call(url, "/internal/cache/stats")
        if pred(s) or time.monotonic() > deadline:
            return s
        time.sleep(0.1)


def test_service_block_sums_both_workers(service_factory):
    svc = service_factory(WORKERS="2")
    _stats_until(svc.url, lambda s: s["service"]["workers"] == 2, timeout=20)
    n = 40
    for _ in range(n):
        assert _call(svc.url, "/v1/text/summarize", TEXT)["success"] is True
    # each worker has its own memory tier: one miss per worker that served the text, the rest hits
    s = _stats_until(svc.url, lambda s: s["service"]["lookups"] == n)
    service = s["service"]
    assert service["lookups"] == n and service["workers"] == 2
    assert 1 <= service["misses"] <= 2 and service["hits"] == n - service["misses"]
    assert service["hits_by_tier"].get("memory") == service["hits"]
    # the top-level figures are the answering worker's only
    seen = {}
    for _ in range(30):
        s = _call(svc.url, "/internal/cache/stats")
        seen[s["worker"]] = s["lookups"]
    assert set(seen) == {0, 1}
    assert sum(seen.values()) == n and all(v < n for v in seen.values())
