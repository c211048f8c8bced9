"""Conventions every metric in exporter/metrics.py keeps (later additions included)."""
from __future__ import annotations

from prometheus_client import Gauge, Histogram

from exporter import metrics

FORBIDDEN_LABELS = {"key", "api_key", "ip", "client_ip", "remote", "path", "url", "user", "text", "request_id"}


def all_metrics():
    return [v for v in vars(metrics).values() if isinstance(v, (metrics.Counter, Gauge, Histogram))]


def test_prefix_and_registry():
    for m in all_metrics():
        assert m._name.startswith("llmapi_"), m._name
    names = {m._name for m in all_metrics()}
    assert len(names) == len(all_metrics())


def test_gauges_drop_dead_workers():
    """With WORKERS > 1 a gauge must use a live* multiprocess mode, or a dead worker's value lingers."""
    for m in all_metrics():
        if isinstance(m, Gauge):
            assert m._multiprocess_mode.startswith("live"), (m._name, m._multiprocess_mode)


def test_labels_are_bounded_kinds():
    for m in all_metrics():
        assert not FORBIDDEN_LABELS & set(m._labelnames), (m._name, m._labelnames)


def test_threshold_buckets():
    assert {1.0, 2.0, 3.0} <= set(metrics.HTTP_BUCKETS)
    assert {15.0, 30.0, 45.0} <= set(metrics.AI_BUCKETS)
    assert list(metrics.HTTP_DURATION._upper_bounds[:-1]) == list(metrics.HTTP_BUCKETS)
