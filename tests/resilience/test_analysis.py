"""config-performance-analysis counts every rate inside one window."""
import time

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
