"""Conventions every metric in exporter/metrics.py keeps (later additions included)."""
from __future__ import annotations

from prometheus_client import Gauge, Histogram, Summary

from exporter import metrics

FORBIDDEN_LABELS = {"key", "api_key", "ip", "client_ip", "remote", "path", "url", "user", "text", "request_id"}


def all_metrics():
    return [v for v in vars(metrics).values() if isinstance(v, (metrics.Counter, Gauge, Histogram, Summary))]


SEMCONV = {"gen_ai_client_token_usage", "gen_ai_client_operation_duration_seconds"}  # OTel GenAI names


def test_prefix_and_registry():
    for m in all_metrics():
        assert m._name.startswith("llmapi_") or m._name in SEMCONV, m._name
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


def test_genai_histograms_follow_the_semconv():
    """Names, labels and bucket advice of gen_ai.client.token.usage / gen_ai.client.operation.duration."""
    assert metrics.GENAI_TOKENS._name == "gen_ai_client_token_usage"
    assert metrics.GENAI_TOKENS._labelnames == ("gen_ai_operation_name", "gen_ai_provider_name",
                                                "gen_ai_request_model", "gen_ai_token_type")
    assert list(metrics.GENAI_TOKENS._upper_bounds[:-1]) == [4.0 ** i for i in range(14)]
    assert metrics.GENAI_DURATION._name == "gen_ai_client_operation_duration_seconds"
    assert metrics.GENAI_DURATION._labelnames[-1] == "error_type"
    assert list(metrics.GENAI_DURATION._upper_bounds[:-1]) == [0.01 * 2 ** i for i in range(14)]
    assert "llmapi_ai_tokens" not in {m._name for m in all_metrics()}  # the same data under one name only
