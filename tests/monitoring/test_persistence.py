"""History survives a restart: in Redis when configured, else in STATE_DIR on a clean shutdown."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request

from tests.helpers import API_KEY, free_port

M = "/internal/monitoring"


def call(url, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"X-API-Key": API_KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def ops_requests(url) -> int:
    d = call(f"{url}{M}/request-patterns?hours=1")
    return {r["endpoint"]: r["requests"] for r in d["routes"]}.get("GET /v1/text/operations", 0)


def test_history_survives_restart_with_redis(service_factory, redis_url, redis_server):
    port = free_port()
    env = {"REDIS_URL": redis_url, "MONITORING_SNAPSHOT_INTERVAL": "0.3"}
    p = service_factory(port=port, **env)
    call(f"{p.url}{M}/configure", "POST", {"enable_compression": True})
    for _ in range(7):
        call(f"{p.url}/v1/text/operations")
    time.sleep(1.0)  # at least one snapshot holds them
    before = call(f"{p.url}{M}/history?hours=1")["stats"]
    assert before["persisted_to"] == "redis" and before["snapshots"] >= 2
    assert p.stop() == 0
    keys = subprocess.run(["redis-cli", "-p", str(redis_server.port), "--scan", "--pattern", "{llmapi}:monitoring:*"],
                          capture_output=True, text=True).stdout.split()
    minutes = [k for k in keys if k.endswith(":minutes")]
    assert minutes and all(k.startswith("{llmapi}:monitoring:") for k in keys)
    first = subprocess.run(["redis-cli", "-p", str(redis_server.port), "--no-raw", "lindex", minutes[0], "-1"],
                           capture_output=True, text=True).stdout
    assert first.startswith('"z')  # compressed, as configured
    p2 = service_factory(port=port, **env)
    assert ops_requests(p2.url) == 7
    after = call(f"{p2.url}{M}/history?hours=1")
    assert after["stats"]["snapshots"] >= before["snapshots"]
    assert sum(s["requests"] for s in after["snapshots"]) >= 7 + 2  # + the two calls above
    ev = call(f"{p2.url}{M}/events?kind=configure")
    assert ev["events"][0]["details"]["changes"] == {"enable_compression": True}


def test_history_survives_clean_restart_without_redis(service_factory):
    port = free_port()
    p = service_factory(port=port, MONITORING_SNAPSHOT_INTERVAL="3600")
    for _ in range(5):
        call(f"{p.url}/v1/text/operations")
    assert p.stop() == 0  # SIGTERM: the partial interval is snapshotted and written to STATE_DIR
    p2 = service_factory(port=port, MONITORING_SNAPSHOT_INTERVAL="3600")
    assert ops_requests(p2.url) == 5
    assert call(f"{p2.url}{M}/history")["stats"]["persisted_to"] == "file"
