"""The SLO catalog: objectives, SLIs over API traffic only, and the mixin config the rules are rendered with."""
from __future__ import annotations

import re

from exporter import kpis, mixin, slos
from exporter.metrics import HTTP_BUCKETS


def test_three_slos_with_objectives_from_the_kpis():
    assert [s.name for s in slos.SLOS] == ["availability", "quality", "latency"]
    assert slos.BY_NAME["availability"].objective == 1 - kpis.BY_KEY["error_rate"].target
    assert slos.BY_NAME["latency"].objective == 0.95       # the KPI is a P95
    for s in slos.SLOS:
        assert 0.9 <= s.objective < 1 and s.runbook and s.description
        assert s.budget == round(1 - s.objective, 10)


def test_latency_threshold_is_an_exact_bucket_edge():
    assert slos.LATENCY_THRESHOLD == 2.0 and slos.LATENCY_THRESHOLD in HTTP_BUCKETS
    assert slos.LATENCY_LE == "2.0"


def test_quality_counts_errors_and_degraded_answers():
    e = slos.BY_NAME["quality"].error_ratio()
    assert 'status=~"5.."' in e and slos.DEGRADED in e
    assert slos.DEGRADED not in slos.BY_NAME["availability"].error_ratio()


def test_windows_and_selector_come_from_the_config():
    cfg = mixin.Config(selector='job="x"')
    e = slos.BY_NAME["availability"].error_ratio(cfg, "1h")
    assert set(re.findall(r"\[(\w+)\]", e)) == {"1h"}
    assert 'job="llmapi"' not in e and 'job="x"' in e
    assert mixin.TEST.w("1h") == "30s" and mixin.DEFAULT.w("1h") == "1h"
    assert all(mixin.seconds(mixin.TEST.w(w)) < mixin.seconds(w) for w in mixin.SLI_WINDOWS)
