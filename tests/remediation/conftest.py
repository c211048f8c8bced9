"""Payloads captured from a real prometheus-alertmanager (tests/remediation/capture.py), and variations of them."""
from __future__ import annotations

import copy
import dataclasses
import json
import os

import pytest

from exporter import playbook
from tests.remediation.capture import PAYLOADS


def load(name: str) -> dict:
    with open(os.path.join(PAYLOADS, f"{name}.json")) as fh:
        return json.load(fh)


def variant(name: str, fingerprint: str | None = None, starts_at: str | None = None, **labels) -> dict:
    """A captured payload with its alert's fingerprint, startsAt or labels changed (a different alert)."""
    p = copy.deepcopy(load(name))
    for a in p["alerts"]:
        if fingerprint:
            a["fingerprint"] = fingerprint
        if starts_at:
            a["startsAt"] = starts_at
        a["labels"].update(labels)
    return p


@pytest.fixture
def payloads():
    return load


@pytest.fixture
def tune_entry(monkeypatch):
    """Replace a playbook entry's limits for one test: tune_entry('error_rate', cooldown_seconds=0)."""
    import service.remediation as rem_mod

    def tune(name: str, **changes):
        old = playbook.BY_NAME[name]
        new = dataclasses.replace(old, **changes)
        pb = tuple(new if e.name == name else e for e in playbook.PLAYBOOK)
        by = {**playbook.BY_NAME, name: new}
        monkeypatch.setattr(rem_mod, "PLAYBOOK", pb)
        monkeypatch.setattr(rem_mod, "BY_NAME", by)
        return new

    return tune
