"""The committed payloads are what a real prometheus-alertmanager sends through the generated config.

Recaptures them (tests/remediation/capture.py) and compares: the same fields
with the same types, the same labels and fingerprints (Alertmanager derives a
fingerprint from the labels alone), the same receiver; only times and the
external URL differ.  The credential arrives as `Authorization: Bearer`, read
by Alertmanager from its credentials_file.
"""
from __future__ import annotations

import shutil

import pytest

from deploy import alertmanager as am_config
from service.remediation import payload
from tests.remediation.capture import TOKEN, capture
from tests.remediation.conftest import load

NAMES = ("error_rate_firing", "error_rate_resolved", "memory_firing", "memory_resolved")
VOLATILE = {"startsAt", "endsAt", "externalURL"}


def shape(v):
    if isinstance(v, dict):
        return {k: (type(x).__name__ if k in VOLATILE else shape(x)) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v]
    return v


@pytest.mark.skipif(not shutil.which("prometheus-alertmanager"), reason="prometheus-alertmanager not installed")
async def test_committed_payloads_match_a_fresh_capture(tmp_path):
    got = await capture(str(tmp_path))
    assert set(got) == set(NAMES)
    for name in NAMES:
        fresh, committed = got[name]["payload"], load(name)
        assert shape(fresh) == shape(committed), name
        assert got[name]["authorization"] == f"Bearer {TOKEN}"
        assert fresh["receiver"] == am_config.RECEIVER and fresh["version"] == "4"


@pytest.mark.parametrize("name", NAMES)
def test_committed_payloads_parse(name):
    p = payload.parse(load(name))
    assert p["alerts"] and all(a["fingerprint"] and a["startsAt"] for a in p["alerts"])
    assert p["status"] == name.rsplit("_", 1)[1]
