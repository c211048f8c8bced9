"""Retry rules and strategy/preset bounds (pure functions)."""
import random

import pytest

from service.config.sections import SECTIONS
from service.providers.base import OPERATIONS, ProviderError
from service.resilience.retry import backoff_delay, decide
from service.resilience.strategies import PRESETS, STRATEGIES, effective

AI = SECTIONS["ai"].defaults()
RES = SECTIONS["resilience"].defaults()


def test_backoff_is_exponential_capped_and_jittered():
    rng = random.Random(1)
    for n, full in ((1, 0.2), (2, 0.4), (3, 0.8), (6, 5.0)):
        for _ in range(50):
            d = backoff_delay(n, 0.2, 5.0, 0.5, rng)
            assert full / 2 <= d <= full
    assert backoff_delay(3, 0.2, 5.0, 0.0) == pytest.approx(0.8)


@pytest.mark.parametrize("kind,retry", [("timeout", True), ("connection", True), ("rate_limited", True),
                                        ("server", True), ("client", False), ("parse", False)])
def test_only_retryable_kinds(kind, retry):
    assert decide(ProviderError(kind, "x"), 0, 3, 10.0, 0.1, 1.0, 0.5).retry is retry


def test_bounded_by_max_retries_and_deadline():
    e = ProviderError("server", "x")
    assert decide(e, 3, 3, 10.0, 0.1, 1.0, 0.5).retry is False
    assert decide(e, 2, 3, 10.0, 0.1, 1.0, 0.5).retry is True
    assert decide(e, 0, 3, 0.05, 0.1, 1.0, 0.0).retry is False  # the backoff does not fit


def test_retry_after_is_a_floor_and_must_fit():
    d = decide(ProviderError("rate_limited", "x", 429, retry_after=2.0), 0, 3, 10.0, 0.1, 1.0, 0.5)
    assert d.retry and d.delay == 2.0
    d = decide(ProviderError("rate_limited", "x", 429, retry_after=30.0), 0, 3, 10.0, 0.1, 1.0, 0.5)
    assert not d.retry and "deadline" in d.reason


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_maps_every_operation_within_the_ai_ceilings(preset):
    res = dict(RES, preset=preset)
    for op in OPERATIONS:
        assert PRESETS[preset]["operations"][op] in STRATEGIES
        for retries in (0, 3, 10):
            for timeout in (0.5, 30.0):
                e = effective(op, dict(AI, max_retries=retries, timeout_seconds=timeout), res)
                assert e.max_retries <= retries
                assert e.timeout_seconds <= timeout
                assert e.attempt_timeout_seconds <= e.timeout_seconds
                assert e.failure_threshold >= 1


def test_presets_differ_where_it_matters():
    simple = effective("summarize", AI, dict(RES, preset="simple"))
    aggressive = effective("summarize", AI, dict(RES, preset="aggressive"))
    assert simple.strategy == "balanced" and aggressive.strategy == "aggressive"
    assert aggressive.max_retries < simple.max_retries
    assert aggressive.failure_threshold < simple.failure_threshold
    assert aggressive.timeout_seconds < simple.timeout_seconds
    assert effective("qa", AI, dict(RES, preset="production")).strategy == "critical"


def test_performance_mode_caps_backoff():
    e = effective("summarize", AI, dict(RES, preset="production", performance_mode=True))
    assert e.backoff_max <= 0.25
