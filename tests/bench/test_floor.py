"""bench/floor.py answers a cache hit on the wire the way the service does."""
import json
import urllib.error
import urllib.request

import pytest

from tests.helpers import API_KEY, PYTHON, Proc, free_port, service_env

BODY = json.dumps({"text": "Prometheus scrapes metrics. Grafana shows them. Operators read dashboards.",
                   "options": {"max_length": 10}}).encode()


def _post(url: str, key: str | None = API_KEY):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    req = urllib.request.Request(url, data=BODY, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


@pytest.fixture
def floor():
    port = free_port()
    p = Proc([PYTHON, "-m", "bench.floor", "--port", str(port), "--size", "414", "--api-key", API_KEY], {}, port,
             "/v1/health")
    yield p
    p.stop()


def test_floor_answers_like_a_service_cache_hit(floor, tmp_path):
    status, headers, body = _post(f"{floor.url}/v1/text/summarize")
    assert status == 200 and len(body) == 414
    doc = json.loads(body)
    assert doc["cache_hit"] is True and doc["request_id"] == headers["X-Request-ID"]
    with pytest.raises(urllib.error.HTTPError) as e:
        _post(f"{floor.url}/v1/text/summarize", key="wrong-key-0123456789")
    assert e.value.code == 401

    port = free_port()
    svc = Proc([PYTHON, "-m", "service"], service_env(port, str(tmp_path)), port, "/v1/health")
    try:
        _post(f"{svc.url}/v1/text/summarize")
        _, svc_headers, svc_body = _post(f"{svc.url}/v1/text/summarize")
    finally:
        svc.stop()
    assert json.loads(svc_body)["cache_hit"] is True
    assert set(json.loads(svc_body)) >= set(doc)
    skip = {"Date", "Content-Length"}
    assert {k: v for k, v in headers.items() if k not in skip and k != "X-Request-ID"} == \
        {k: v for k, v in svc_headers.items() if k not in skip and k != "X-Request-ID"}
