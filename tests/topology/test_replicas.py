"""Two service replicas (separate processes and ports) sharing one Redis Cluster."""
import asyncio
import math
import time

import pytest

from tests.middleware.test_rate_limit import _drive, ceiling_of
from tests.topology.conftest import call

pytestmark = pytest.mark.topology

TEXT = "Replicas behind a load balancer share one cache, one rate limit and one configuration through Redis."


@pytest.fixture
def two_replicas(redis_cluster, service_factory):
    redis_cluster.flush()

    def start(**env):
        env = dict(REDIS_URL=redis_cluster.url, MONITORING_SNAPSHOT_INTERVAL="3600", **env)
        return service_factory(**env), service_factory(**env)

    return start


async def test_one_global_rate_limit_across_replicas(two_replicas):
    rpm, burst = 12000, 20
    a, b = two_replicas(RATE_LIMIT_ENABLED="true", RATE_LIMIT_REQUESTS_PER_MINUTE=str(rpm),
                        RATE_LIMIT_BURST_SIZE=str(burst))
    counts_a, counts_b = {}, {}
    t0 = time.monotonic()
    await asyncio.gather(_drive(f"{a.url}/v1/text/summarize", t0 + 6.0, 8, counts_a),
                         _drive(f"{b.url}/v1/text/summarize", t0 + 6.0, 8, counts_b))
    elapsed = time.monotonic() - t0
    allowed = counts_a.get(200, 0) + counts_b.get(200, 0)
    ceiling = ceiling_of(rpm, burst, elapsed)
    overshoot = allowed / ceiling - 1
    print(f"cluster, 2 replicas: allowed {allowed} of ceiling {ceiling:.1f} in {elapsed:.2f}s "
          f"(overshoot {overshoot * 100:+.2f} %); a {counts_a} b {counts_b}")
    assert set(counts_a) | set(counts_b) <= {200, 429}, (counts_a, counts_b)
    perf = [call(f"{svc.url}/internal/middleware/rate-limiting/performance")[1] for svc in (a, b)]
    seen = (counts_a, counts_b, [(p["mode"], p.get("fallback_activations")) for p in perf])
    assert counts_a.get(200, 0) > 10 and counts_b.get(200, 0) > 10, seen
    assert allowed <= math.ceil(ceiling * 1.02), (allowed, ceiling, seen)
    assert sum(counts_a.values()) + sum(counts_b.values()) > 1.5 * allowed, seen   # the limit was under pressure


def test_config_cache_and_monitoring_are_shared(two_replicas):
    a, b = two_replicas()
    # a change on one replica reaches the other within a second
    t0 = time.monotonic()
    assert call(f"{a.url}/internal/config/text", "POST", {"max_text_length": 7777})[0] == 200
    seen = None
    while time.monotonic() - t0 < 5:
        if call(f"{b.url}/internal/config")[1]["sections"]["text"]["values"]["max_text_length"] == 7777:
            seen = time.monotonic() - t0
            break
        time.sleep(0.02)
    print(f"config change seen by the other replica after {seen}s")
    assert seen is not None and seen < 1.0
    # an answer computed by one replica is a cache hit on the other
    status, first = call(f"{a.url}/v1/text/summarize", "POST", {"text": TEXT})
    assert status == 200 and first["cache_hit"] is False
    status, second = call(f"{b.url}/v1/text/summarize", "POST", {"text": TEXT})
    assert status == 200 and second["cache_hit"] is True and second["result"] == first["result"]
    # the monitoring analyses count both replicas
    assert call(f"{b.url}/internal/monitoring/snapshot", "POST", {})[0] == 200
    doc = call(f"{a.url}/internal/monitoring/slow-endpoints")[1]
    assert len(doc["instances"]["included"]) == 2
    assert sum(e["requests"] for e in doc["endpoints"] if e["endpoint"] == "POST /v1/text/summarize") == 2
