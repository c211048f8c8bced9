"""bench/relay.py: haproxy forwards the fake upstream's answers unchanged over kept-alive connections,
and without haproxy the bench row says why it is skipped."""
import http.client
import json

import pytest

from bench import relay
from tests.helpers import start_fake_upstream

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Grafana shows the metrics."}]})


def test_missing_says_why_when_haproxy_is_absent(monkeypatch):
    monkeypatch.setattr(relay.shutil, "which", lambda name: None)
    assert "haproxy is not installed" in relay.missing()


@pytest.mark.skipif(relay.missing() is not None, reason="haproxy is not installed (make bench installs it)")
def test_relay_forwards_to_the_upstream_on_one_connection():
    up = start_fake_upstream()
    try:
        rel = relay.start(up.port, {})
        try:
            conn = http.client.HTTPConnection("127.0.0.1", rel.port, timeout=10)
            answers = []
            for _ in range(3):
                conn.request("POST", "/v1/chat/completions", CHAT, {"Content-Type": "application/json"})
                r = conn.getresponse()
                answers.append((r.status, json.loads(r.read())))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", up.port, timeout=10)
            conn.request("GET", "/_stats")
            stats = json.loads(conn.getresponse().read())
        finally:
            rel.stop()
    finally:
        up.stop()
    assert [s for s, _ in answers] == [200, 200, 200]
    assert answers[0][1]["choices"][0]["message"]["content"]
    assert stats["calls"] == 3 and stats["connections"] == 1  # the relay reused its server connection
