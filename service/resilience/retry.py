"""Retry decisions: exponential backoff with jitter, only for retryable kinds,
honouring Retry-After, bounded by max_retries and by the call's deadline.

Pure functions so the rules are testable without sleeping.
"""
from __future__ import annotations

import random

from service.providers.base import ProviderError

_rng = random.Random()


def backoff_delay(retry: int, base: float, cap: float, jitter: float, rng: random.Random = _rng) -> float:
    """Delay before retry number `retry` (1 = first retry): base * 2**(retry-1), capped,
    with the `jitter` share of it randomised (0.5: uniformly in [d/2, d])."""
    d = min(cap, base * (2 ** (retry - 1)))
    if jitter > 0 and d > 0:
        d = d * (1 - jitter) + rng.uniform(0, d * jitter)
    return d


class Decision:
    __slots__ = ("retry", "delay", "reason")

    def __init__(self, retry: bool, delay: float = 0.0, reason: str = ""):
        self.retry = retry
        self.delay = delay
        self.reason = reason

    def __repr__(self) -> str:
        return f"Decision(retry={self.retry}, delay={self.delay:.3f}, reason={self.reason!r})"


def decide(error: ProviderError, retries_done: int, max_retries: int, remaining: float,
           base: float, cap: float, jitter: float, rng: random.Random = _rng) -> Decision:
    """Whether to retry after `error`, and after how long.

    remaining: seconds left before the call's deadline.
    """
    if not error.retryable:
        return Decision(False, reason=f"{error.kind} errors are not retried")
    if retries_done >= max_retries:
        return Decision(False, reason=f"max_retries ({max_retries}) reached")
    delay = backoff_delay(retries_done + 1, base, cap, jitter, rng)
    if error.retry_after is not None and error.retry_after > delay:
        delay = error.retry_after   # Retry-After is a floor, never shortened by performance caps
    # a retry needs time for the wait and for at least a short attempt after it
    if delay + min(0.05, remaining * 0.1) >= remaining:
        return Decision(False, delay, reason=f"the deadline leaves no time for a retry after {delay:.3f}s")
    return Decision(True, delay, reason=f"retryable {error.kind}")
