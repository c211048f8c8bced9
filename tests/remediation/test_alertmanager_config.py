"""deploy/alertmanager.yml, generated from the playbook: current, valid, routing playbook alerts to the service."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from deploy import alertmanager as am
from exporter.playbook import PLAYBOOK


def test_committed_file_is_current():
    from exporter import genfiles
    assert genfiles.stale(am.outputs()) == [], "run `make alerts` and commit deploy/alertmanager.yml"


def test_amtool_check_config_passes():
    r = subprocess.run(["amtool", "check-config", am.PATH], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("entry", PLAYBOOK, ids=[e.name for e in PLAYBOOK])
def test_each_playbook_alert_reaches_the_service_and_the_people(entry):
    labels = [f"{k}={v}" for k, v in entry.label_matchers().items()] + ["job=llmapi"]
    r = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={am.PATH}", *labels],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{am.RECEIVER},{entry.matchers.get('severity', 'default')}"


def test_other_alerts_go_to_people_only():
    for labels in (["alertname=LlmapiErrorRateTargetMissed", "severity=warning"],
                   ["alertname=LlmapiErrorRateNeedsAttention", "severity=warning"],  # matcher mismatch
                   ["alertname=Other"]):
        r = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={am.PATH}", *labels],
                           capture_output=True, text=True)
        assert am.RECEIVER not in r.stdout, labels


def test_the_service_receiver_sends_resolves_and_reads_its_credential_from_a_file():
    with open(am.PATH) as fh:
        text = fh.read()
    cfg = yaml.safe_load(text)
    rcv = next(r for r in cfg["receivers"] if r["name"] == am.RECEIVER)
    hook = rcv["webhook_configs"][0]
    assert hook["send_resolved"] is True and hook["url"].endswith("/internal/alerts/webhook")
    auth = hook["http_config"]["authorization"]
    assert auth == {"type": "Bearer", "credentials_file": am.CREDENTIALS_FILE}
    assert "credentials:" not in text and "api_key" not in text.lower()
    routes = [r for r in cfg["route"]["routes"] if r["receiver"] == am.RECEIVER]
    assert len(routes) == len(PLAYBOOK) and all(r["continue"] and r["group_by"] == ["..."] for r in routes)
