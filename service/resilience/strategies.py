"""Resilience strategies and the presets that map each operation to one.

A strategy never exceeds the two ceilings of the "ai" section: retries are at
most ai.max_retries and the whole call (every attempt and every backoff) ends
by ai.timeout_seconds.  Within those, a strategy chooses how long one attempt
may take, how retries back off, and how quickly its breaker opens and probes
(factors applied to the "resilience" section's failure_threshold and
recovery_timeout).

`effective(op, ai, res)` turns the live config sections into the numbers one
call uses; GET /internal/resilience/config/current shows exactly that.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from service.providers.base import OPERATIONS

# with performance_mode on, a backoff (not a Retry-After) waits at most this long
PERFORMANCE_MODE_MAX_BACKOFF = 0.25


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    retry_cap: int | None        # at most this many retries (None: ai.max_retries)
    deadline_factor: float       # share of ai.timeout_seconds the whole call may take
    attempt_fraction: float      # share of the deadline one attempt may take
    backoff_base: float          # seconds before the first retry; doubles each retry
    backoff_max: float           # cap on one backoff
    jitter: float                # 0..1: part of each backoff that is randomised
    threshold_factor: float      # x resilience.failure_threshold
    recovery_factor: float       # x resilience.recovery_timeout


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("aggressive", "fail fast: one quick retry, half the deadline, breaker opens early and probes soon",
             retry_cap=1, deadline_factor=0.5, attempt_fraction=0.5, backoff_base=0.05, backoff_max=0.5,
             jitter=0.5, threshold_factor=0.6, recovery_factor=0.5),
    Strategy("balanced", "every allowed retry with moderate backoff; breaker at the configured threshold",
             retry_cap=None, deadline_factor=1.0, attempt_fraction=1.0, backoff_base=0.2, backoff_max=5.0,
             jitter=0.5, threshold_factor=1.0, recovery_factor=1.0),
    Strategy("conservative", "patient: slow backoff, tolerant breaker that stays open longer",
             retry_cap=None, deadline_factor=1.0, attempt_fraction=1.0, backoff_base=0.5, backoff_max=10.0,
             jitter=0.5, threshold_factor=1.5, recovery_factor=1.5),
    Strategy("critical", "maximise the chance of an answer: a hung attempt is cut at half the deadline and "
             "retried, breaker tolerant and quick to probe", retry_cap=None, deadline_factor=1.0,
             attempt_fraction=0.5, backoff_base=0.1, backoff_max=2.0, jitter=0.5, threshold_factor=2.0,
             recovery_factor=0.5),
)}


def _all(strategy: str, **overrides: str) -> dict[str, str]:
    m = {op: strategy for op in OPERATIONS}
    m.update(overrides)
    return m


PRESETS: dict[str, dict] = {
    "simple": {"description": "one balanced strategy for every operation",
               "operations": _all("balanced")},
    "development": {"description": "fast feedback: aggressive everywhere, qa balanced",
                    "operations": _all("aggressive", qa="balanced")},
    "production": {"description": "balanced for the heavy operations, aggressive for cheap sentiment, "
                                  "critical for qa", "operations": _all("balanced", sentiment="aggressive",
                                                                          qa="critical")},
    "aggressive": {"description": "crisis mode: fail fast on every operation", "operations": _all("aggressive")},
}


@dataclass(frozen=True)
class Effective:
    operation: str
    strategy: str
    max_retries: int
    timeout_seconds: float          # the deadline of the whole call
    attempt_timeout_seconds: float
    backoff_base: float
    backoff_max: float
    jitter: float
    failure_threshold: int
    recovery_timeout: float
    half_open_max_calls: int
    performance_mode: bool

    def as_dict(self) -> dict:
        d = asdict(self)
        d["circuit_breaker"] = {k: d.pop(k) for k in ("failure_threshold", "recovery_timeout", "half_open_max_calls")}
        d["retry"] = {k: d.pop(k) for k in ("max_retries", "backoff_base", "backoff_max", "jitter")}
        return d


def strategy_for(op: str, res: dict) -> Strategy:
    name = PRESETS[res["preset"]]["operations"].get(op, "balanced")
    return STRATEGIES[name]


def effective(op: str, ai: dict, res: dict) -> Effective:
    s = strategy_for(op, res)
    retries = ai["max_retries"] if s.retry_cap is None else min(ai["max_retries"], s.retry_cap)
    deadline = float(ai["timeout_seconds"]) * s.deadline_factor
    backoff_max = s.backoff_max
    if res["performance_mode"]:
        backoff_max = min(backoff_max, PERFORMANCE_MODE_MAX_BACKOFF)
    return Effective(
        operation=op, strategy=s.name, max_retries=retries, timeout_seconds=round(deadline, 6),
        attempt_timeout_seconds=round(deadline * s.attempt_fraction, 6),
        backoff_base=min(s.backoff_base, backoff_max), backoff_max=backoff_max, jitter=s.jitter,
        failure_threshold=max(1, round(res["failure_threshold"] * s.threshold_factor)),
        recovery_timeout=round(max(0.1, res["recovery_timeout"] * s.recovery_factor), 6),
        half_open_max_calls=res["half_open_max_calls"], performance_mode=res["performance_mode"])
