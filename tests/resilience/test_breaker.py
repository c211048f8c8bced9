"""The pybreaker adapter: failures really count, cancellation does not, half-open is bounded."""
import asyncio
import logging

import pybreaker
import pytest

from exporter.metrics import BREAKER_STATE, BREAKER_TRANSITIONS, REGISTRY
from service.resilience.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerOpen


def _transitions(name, state):
    return REGISTRY.get_sample_value("llmapi_circuit_breaker_transitions_total", {"breaker": name, "state": state}) or 0


async def _call(b, coro_fn, threshold=3, recovery=60.0, half_open=1):
    t = b.admit(threshold, recovery, half_open)
    try:
        r = await coro_fn()
    except asyncio.CancelledError:
        b.release(t)
        raise
    except Exception:
        b.record(t, failed=True)
        raise
    b.record(t, failed=False)
    return r


async def _fail():
    await asyncio.sleep(0)
    raise RuntimeError("upstream down")


async def _ok():
    await asyncio.sleep(0)
    return "ok"


def test_why_not_plain_pybreaker_decorator():
    """Decorating an async def with pybreaker counts nothing: the reason for the adapter."""
    cb = pybreaker.CircuitBreaker(fail_max=1)

    @cb
    async def f():
        raise RuntimeError("x")

    async def run():
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await f()

    asyncio.run(run())
    assert cb.current_state == "closed" and cb.fail_counter == 0


async def test_failures_count_and_open_at_threshold():
    b = Breaker("t.fail")
    before = _transitions("t.fail", "open")
    for i in range(3):
        assert b.state == CLOSED
        with pytest.raises(RuntimeError):
            await _call(b, _fail)
    assert b.state == OPEN
    assert _transitions("t.fail", "open") == before + 1
    state = {st: REGISTRY.get_sample_value("llmapi_circuit_breaker_state", {"breaker": "t.fail", "state": st})
             for st in ("closed", "half-open", "open")}
    assert state == {"closed": 0, "half-open": 0, "open": 1}  # one 0/1 series per state
    with pytest.raises(BreakerOpen) as ei:
        b.admit(3, 60.0, 1)
    assert 59 < ei.value.retry_after <= 60
    assert b.counts["rejected"] == 1


async def test_the_threshold_and_recovery_of_each_admission_apply():
    b = Breaker("t.live")  # constructed with pybreaker's defaults; each admit brings the live config
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await _call(b, _fail, threshold=5)
    assert b.state == CLOSED
    with pytest.raises(RuntimeError):
        await _call(b, _fail, threshold=3)  # lowered to 3 (the third failure): opens now
    assert b.state == OPEN
    with pytest.raises(BreakerOpen):
        b.admit(3, 60.0, 1)
    assert b.admit(3, 0.0, 1).probe  # a recovery of 0 s: the next admission is the half-open probe


async def test_success_resets_consecutive_count():
    b = Breaker("t.reset")
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await _call(b, _fail)
    await _call(b, _ok)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await _call(b, _fail)
    assert b.state == CLOSED and b.cb.fail_counter == 2


async def test_cancellation_is_neither_failure_nor_success():
    b = Breaker("t.cancel")
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await _call(b, _fail)

    async def slow():
        await asyncio.sleep(10)

    task = asyncio.create_task(_call(b, slow))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.cb.fail_counter == 2 and b.state == CLOSED  # not counted as failure, nor reset as success
    assert b.counts["cancelled"] == 1


async def test_half_open_admits_at_most_max_probes_and_success_closes():
    b = Breaker("t.half")
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await _call(b, _fail, recovery=0.05)
    assert b.state == OPEN
    await asyncio.sleep(0.06)
    gate = asyncio.Event()

    async def probe():
        await gate.wait()
        return "ok"

    tasks = [asyncio.create_task(_call(b, probe, recovery=0.05, half_open=2)) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert b.state == HALF_OPEN and b.probes == 2
    rejected = [t for t in tasks if t.done()]
    assert len(rejected) == 3 and all(isinstance(t.exception(), BreakerOpen) for t in rejected)
    gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert b.state == CLOSED and b.probes == 0


async def test_cancelled_probe_frees_its_slot_and_failed_probe_reopens():
    b = Breaker("t.probe")
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await _call(b, _fail, recovery=0.05)
    await asyncio.sleep(0.06)

    async def slow():
        await asyncio.sleep(10)

    t = asyncio.create_task(_call(b, slow, recovery=0.05))
    await asyncio.sleep(0.01)
    assert b.state == HALF_OPEN and b.probes == 1
    with pytest.raises(BreakerOpen):
        b.admit(3, 0.05, 1)
    t.cancel()
    await asyncio.gather(t, return_exceptions=True)
    assert b.probes == 0 and b.state == HALF_OPEN
    with pytest.raises(RuntimeError):
        await _call(b, _fail, recovery=0.05)
    assert b.state == OPEN


async def test_late_outcome_of_a_call_admitted_before_opening_is_ignored():
    b = Breaker("t.late")
    gate = asyncio.Event()

    async def slow_ok():
        await gate.wait()
        return "ok"

    early = asyncio.create_task(_call(b, slow_ok, recovery=0.05))
    await asyncio.sleep(0)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await _call(b, _fail, recovery=0.05)
    assert b.state == OPEN
    await asyncio.sleep(0.06)
    gate.set()
    await early
    assert b.state == OPEN and b.counts["ignored"] == 1  # the stale success did not close it


async def test_each_state_change_logged_once(caplog):
    b = Breaker("t.log")
    with caplog.at_level(logging.WARNING, logger="service.resilience"):
        for _ in range(5):
            with pytest.raises((RuntimeError, BreakerOpen)):
                await _call(b, _fail)
    msgs = [r for r in caplog.records if r.getMessage() == "circuit breaker state changed"]
    assert len(msgs) == 1 and msgs[0].to == OPEN
    b.reset()
    assert b.state == CLOSED and b.cb.fail_counter == 0
    b.reset()  # already closed: no transition
    assert _transitions("t.log", "closed") == 1
    assert BREAKER_STATE.labels("t.log", "open")._value.get() == 0 and BREAKER_STATE.labels("t.log", "closed")._value.get() == 1
    assert BREAKER_TRANSITIONS is not None


async def test_the_state_and_counter_read_on_every_call_follow_pybreaker():
    """admit and record read CircuitMemoryStorage's `_state` and `_fail_counter` (pybreaker internals of the
    pinned version): they must be what cb.current_state and cb.fail_counter say, in every state."""
    b = Breaker("internals.summarize", threshold=2, recovery_timeout=0.05)

    def same():
        assert b.state == b.cb.current_state and b._mem._fail_counter == b.cb.fail_counter

    same()
    with pytest.raises(RuntimeError):
        await _call(b, _fail, threshold=2, recovery=0.05)
    same()
    assert b.cb.fail_counter == 1
    with pytest.raises(RuntimeError):
        await _call(b, _fail, threshold=2, recovery=0.05)
    same()
    assert b.state == OPEN
    await asyncio.sleep(0.06)
    assert await _call(b, _ok, threshold=2, recovery=0.05) == "ok"  # the probe closes it
    same()
    assert b.state == CLOSED and b.cb.fail_counter == 0
