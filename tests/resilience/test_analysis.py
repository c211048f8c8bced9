"""config-performance-analysis counts every rate inside one window."""
import time

import pytest

from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.context import Context
from service.providers.manager import ProviderManager
from service.resilience import Resilience, analysis


def _resilience() -> Resilience:
    store = ConfigStore(SECTIONS, env={"AI_TIMEOUT_SECONDS": "1"})
    ctx = Context(settings=None, store=store)
    ctx.providers = ProviderManager(store, {})
    return Resilience(ctx)


def _timeout_recs(res) -> list:
    return [r for r in analysis.config_analysis(res)["recommendations"] if r.get("field") == "timeout_seconds"]


async def test_old_timeouts_do_not_count_against_recent_attempts(monkeypatch):
    res = _resilience()
    long_ago = time.time() - 2 * analysis.RECENT_SECONDS
    monkeypatch.setattr(analysis.time, "time", lambda: long_ago)
    for _ in range(50):  # an incident, well before the window
        res.stats.attempt("summarize", 1.0, False, "timeout", False)
    monkeypatch.undo()
    for _ in range(100):  # healthy since, if slow: p99 near the 1 s deadline, no timeout
        res.stats.attempt("summarize", 0.9, True, None, False)
    assert _timeout_recs(res) == []
    for _ in range(20):  # timeouts inside the window do count
        res.stats.attempt("summarize", 1.0, False, "timeout", False)
    recs = _timeout_recs(res)
    assert len(recs) == 1 and "20 timeouts in 120 attempts" in recs[0]["reason"]


@pytest.mark.parametrize("retries", [0, 2])
def test_a_success_counts_as_its_attempt_and_its_call(retries):
    """Stats.success (the hot path's one step) leaves what attempt() and call() leave."""
    from service.resilience.analysis import Stats

    tokens = {"prompt": 12, "completion": 5, "total": 17}
    a, b = Stats(), Stats()
    a.attempt("summarize", 0.25, True, None, retries > 0, tokens)
    a.call("summarize", 0.75, True, None, retries, 0.3 if retries else 0.0, 0.25)
    b.success("summarize", 0.25, 0.75, retries, 0.3 if retries else 0.0, tokens)
    sa, sb = a.ops["summarize"], b.ops["summarize"]
    for s in (sa, sb):  # the windows' timestamps differ by microseconds
        s.recent_calls = [x[1:] for x in s.recent_calls]
        s.recent_attempts = [x[1:] for x in s.recent_attempts]
    assert vars(sa) == vars(sb)
