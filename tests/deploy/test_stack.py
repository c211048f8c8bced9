"""The local stack launcher (deploy/stack.py) and the scripted incident (deploy/incident.py), for real:
redis-server, Prometheus, Alertmanager, the service, the fake upstream and the webhook sink."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import pytest

from deploy.stack import Stack, alive, port_free, read_state
from tests.helpers import PYTHON, ROOT

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "deploy.stack", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env or dict(os.environ))


def get(url: str, key: str | None = None) -> dict:
    req = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def wait_until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.5)
    return False


def test_up_and_down_twice_leave_nothing_running(tmp_path):
    d = str(tmp_path / "stack")
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    try:
        for round_ in range(2):
            up = cli("up", "--dir", d, "--free-ports", env=env)
            assert up.returncode == 0, up.stderr
            state = read_state(d)
            comps = state["components"]
            assert set(comps) == {"redis", "upstream", "llmapi", "sink", "alertmanager", "prometheus"}
            key = open(state["key_file"]).read().strip()
            assert key and key in up.stdout  # the operator key is printed, and the same one both rounds
            for c in comps.values():
                assert c["url"] in up.stdout or c["port"] and f":{c['port']}" in up.stdout
            # the service answers with the generated key, Prometheus loaded the rules and scrapes the job
            assert get(f"{comps['llmapi']['url']}/internal/config", key)["sections"]
            rules = get(f"{comps['prometheus']['url']}/api/v1/rules")["data"]["groups"]
            assert rules and any(r.get("type") == "alerting" for g in rules for r in g["rules"])
            assert wait_until(lambda: {t["labels"]["job"] for t in get(f"{comps['prometheus']['url']}/api/v1/targets")
                                       ["data"]["activeTargets"] if t["health"] == "up"}
                              >= {"llmapi", "prometheus", "alertmanager"}, 60)  # (1 s scrapes time out at 1 s)
            # a second `up` on a running stack refuses and starts nothing
            again = cli("up", "--dir", d, "--free-ports", env=env)
            assert again.returncode == 1 and "already running" in again.stderr
            assert read_state(d)["components"] == comps

            down = cli("down", "--dir", d)
            assert down.returncode == 0, down.stderr
            assert "prometheus" in down.stdout and "redis" in down.stdout
            for name, c in comps.items():
                assert not alive(c["pid"]), name
                assert port_free(c["port"]), (name, c["port"])
            assert read_state(d) is None
    finally:  # a failed assertion must not leave the stack running
        cli("down", "--dir", d)
    assert "nothing was running" in cli("down", "--dir", d).stdout


def test_incident_fires_and_resolves_the_error_rate_and_quality_slo_alerts(tmp_path):
    stack = Stack(str(tmp_path / "stack"), profile="demo", usual_ports=False, api_key="incident-key-0123456789")
    stack.start()
    started = stack.state()["components"]
    try:
        run = cli("incident", "--dir", stack.dir, "--timeout", "150",
                  env=dict(os.environ, API_KEY="incident-key-0123456789"), timeout=420)
        out = run.stdout
        assert run.returncode == 0, out + run.stderr
        lines = out.splitlines()

        def first(text: str) -> int:
            return next(i for i, line in enumerate(lines) if text in line)
        # the timeline, in order: fault, firing in Prometheus, at the sink, healed, resolved at the sink
        order = [first("fault injected"), first("LlmapiErrorRateNeedsAttention firing in Prometheus"),
                 first("LlmapiErrorRateNeedsAttention notification reached the webhook sink"),
                 first("healed"), first("LlmapiErrorRateNeedsAttention resolved notification")]
        assert order == sorted(order), out
        quality = [first("LlmapiQualityBudgetBurn firing in Prometheus"),
                   first("LlmapiQualityBudgetBurn notification reached the webhook sink"),
                   first("LlmapiQualityBudgetBurn resolved notification")]
        assert quality == sorted(quality) and order[0] < quality[0] and quality[2] > order[3], out
        assert "incident done" in out
    finally:
        stack.stop()
    assert started and not any(alive(c["pid"]) for c in started.values())
