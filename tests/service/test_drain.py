"""SIGTERM with SHUTDOWN_DRAIN_SECONDS: readiness fails first while requests are still served, then the process exits."""
import json
import signal
import time
import urllib.error
import urllib.request

from tests.helpers import API_KEY


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _summarize(url: str) -> int:
    req = urllib.request.Request(f"{url}/v1/text/summarize", method="POST", headers={
        "X-API-Key": API_KEY, "Content-Type": "application/json"},
        data=json.dumps({"text": "Draining keeps serving while the load balancer stops routing here."}).encode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def test_liveness_and_readiness_are_separate_probes(service_factory):
    svc = service_factory()
    assert _get(f"{svc.url}/v1/health/live") == (200, {"live": True, "pid": svc.proc.pid})
    assert _get(f"{svc.url}/v1/health/ready") == (200, {"ready": True})


def test_sigterm_drains_before_stopping(service_factory):
    svc = service_factory(SHUTDOWN_DRAIN_SECONDS="3", GRACEFUL_TIMEOUT="5")
    assert _get(f"{svc.url}/v1/health/ready")[0] == 200
    svc.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2
    status, body = _get(f"{svc.url}/v1/health/ready")
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
        status, body = _get(f"{svc.url}/v1/health/ready")
    assert status == 503 and body["reason"] == "draining after SIGTERM", body
    assert _summarize(svc.url) == 200                       # still serving while draining
    assert _get(f"{svc.url}/v1/health/live")[0] == 200
    assert _get(f"{svc.url}/v1/health")[1]["ready"] is False
    assert svc.proc.wait(15) == 0                           # then it stops by itself
    assert "Traceback" not in svc.output()
