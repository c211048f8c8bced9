"""A thin asyncio adapter over pybreaker.

pybreaker's own async paths do not fit asyncio: `call_async` needs Tornado,
and decorating an `async def` only "calls" the function (creating the
coroutine), so every call counts as a success and failures never count.
`with cb.calling(): await ...` does count, but pybreaker would then count an
`asyncio.CancelledError` as a failure (or, excluded, as a success), and its
half-open state lets any number of calls through.

So the adapter splits a call in two synchronous steps around the await:

    ticket = breaker.admit(threshold, recovery, half_open_max)   # may raise BreakerOpen
    try:
        result = await work()
    except asyncio.CancelledError:
        breaker.release(ticket)          # neither success nor failure
        raise
    except SomeError as e:
        breaker.record(ticket, failed=True)
    else:
        breaker.record(ticket, failed=False)

`record` replays the outcome through `with cb.calling():` so pybreaker's
state machine (consecutive failure counter, trip, half-open success/failure,
listeners) decides.  Being synchronous on the event loop, admit and record are
atomic.  Outcomes of calls admitted before the last state change are ignored:
only the probes decide a half-open breaker, and a call that was in flight when
the breaker opened neither re-opens nor closes it.
"""
from __future__ import annotations

import logging
import time
from collections import deque

import pybreaker

from exporter.metrics import BREAKER_STATE, BREAKER_STATES, BREAKER_TRANSITIONS

log = logging.getLogger("service.resilience")

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN


def export_state(name: str, state: str) -> None:
    """llmapi_circuit_breaker_state: 1 for `state`, 0 for the breaker's other states."""
    for s in BREAKER_STATES:
        BREAKER_STATE.labels(name, s).set(1 if s == state else 0)


class BreakerOpen(Exception):
    def __init__(self, name: str, retry_after: float, half_open: bool = False):
        super().__init__(f"circuit breaker {name} is {'half-open (probe slots full)' if half_open else 'open'}")
        self.name = name
        self.retry_after = retry_after
        self.half_open = half_open


class _Failure(Exception):
    """Raised inside pybreaker's `calling()` to report a failed call."""


class Ticket:
    __slots__ = ("probe", "generation", "done")

    def __init__(self, probe: bool, generation: int):
        self.probe = probe
        self.generation = generation
        self.done = False


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: "Breaker"):
        self.owner = owner

    def state_change(self, cb, old_state, new_state) -> None:
        self.owner._on_state_change(old_state.name if old_state is not None else None, new_state.name)


class Breaker:
    def __init__(self, name: str, threshold: int = 5, recovery_timeout: float = 60.0):
        self.name = name
        self.generation = 0
        self.probes = 0
        self.opened_at: float | None = None   # monotonic
        self.last_change: float = time.time()
        self.transitions: deque[dict] = deque(maxlen=50)
        self.counts = {"admitted": 0, "rejected": 0, "successes": 0, "failures": 0, "cancelled": 0,
                       "ignored": 0, "opened": 0}
        self.decision_seconds = 0.0   # time spent in admit + record
        self.decisions = 0
        self.source = "local"         # "redis" while a change heard from another process is applied
        self.on_change = None         # fn(name, old, new), e.g. SharedBreakers.on_change
        self.cb = pybreaker.CircuitBreaker(fail_max=threshold, reset_timeout=recovery_timeout, name=name,
                                           listeners=[_Listener(self)])
        self._limits = (threshold, recovery_timeout)  # what admit() last gave the pybreaker
        # the state and failure counter as pybreaker keeps them (CircuitMemoryStorage's `_state` and
        # `_fail_counter` in the pinned version: what `cb.current_state` and `cb.fail_counter` return through
        # three and two property calls; admit and record read them on every call; tests/resilience/
        # test_breaker.py checks they follow the public properties, so a library change fails a test)
        self._mem = self.cb._state_storage
        if not isinstance(self._mem, pybreaker.CircuitMemoryStorage) or not hasattr(self._mem, "_state") \
                or not hasattr(self._mem, "_fail_counter"):
            raise TypeError("Breaker reads pybreaker's CircuitMemoryStorage internals")
        export_state(name, CLOSED)

    # ---- state -----------------------------------------------------------
    @property
    def state(self) -> str:
        return self._mem._state  # (cb.current_state)

    def _on_state_change(self, old: str | None, new: str) -> None:
        if old == new:
            return
        self.generation += 1
        self.last_change = time.time()
        if new == OPEN:
            self.opened_at = time.monotonic()
            self.counts["opened"] += 1
        export_state(self.name, new)
        BREAKER_TRANSITIONS.labels(self.name, new).inc()
        self.transitions.append({"time": self.last_change, "from": old, "to": new, "source": self.source})
        log.warning("circuit breaker state changed", extra={"breaker": self.name, "from": old, "to": new,
                                                              "fail_counter": self.cb.fail_counter,
                                                              "source": self.source})
        if self.on_change is not None:
            self.on_change(self.name, old, new)

    def open_remaining(self, recovery_timeout: float) -> float:
        if self.state != OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + recovery_timeout - time.monotonic())

    # ---- a call ------------------------------------------------------------
    def admit(self, threshold: int, recovery_timeout: float, half_open_max: int) -> Ticket:
        t0 = time.perf_counter()
        try:
            if threshold != self._limits[0] or recovery_timeout != self._limits[1]:  # (live config: set on change)
                self.cb.fail_max, self.cb.reset_timeout = threshold, recovery_timeout
                self._limits = (threshold, recovery_timeout)
            state = self._mem._state  # (self.state)
            if state == OPEN:
                remaining = self.open_remaining(recovery_timeout)
                if remaining > 0:
                    self.counts["rejected"] += 1
                    raise BreakerOpen(self.name, remaining)
                self.cb.half_open()
                state = HALF_OPEN
            if state == HALF_OPEN:
                if self.probes >= half_open_max:
                    self.counts["rejected"] += 1
                    raise BreakerOpen(self.name, min(1.0, recovery_timeout), half_open=True)
                self.probes += 1
                self.counts["admitted"] += 1
                return Ticket(True, self.generation)
            self.counts["admitted"] += 1
            return Ticket(False, self.generation)
        finally:
            self.decision_seconds += time.perf_counter() - t0
            self.decisions += 1

    def release(self, ticket: Ticket) -> None:
        """The call ended without an outcome (cancelled): free its probe slot."""
        if ticket.done:
            return
        ticket.done = True
        if ticket.probe:
            self.probes -= 1
        self.counts["cancelled"] += 1

    def record(self, ticket: Ticket, failed: bool) -> None:
        if ticket.done:
            return
        t0 = time.perf_counter()
        ticket.done = True
        if ticket.probe:
            self.probes -= 1
        self.counts["failures" if failed else "successes"] += 1
        mem = self._mem
        state = mem._state  # (self.state)
        if ticket.generation != self.generation or state == OPEN:
            self.counts["ignored"] += 1
        elif not failed and not ticket.probe and state == CLOSED and mem._fail_counter == 0:  # (cb.fail_counter)
            pass  # pybreaker would reset a counter at 0 and call the listeners' no-op success(): nothing changes
        else:
            try:
                with self.cb.calling():
                    if failed:
                        raise _Failure()
            except (_Failure, pybreaker.CircuitBreakerError):
                pass
        self.decision_seconds += time.perf_counter() - t0
        self.decisions += 1

    # ---- operator actions ---------------------------------------------------
    def reset(self) -> str:
        previous = self.state
        self.cb.close()   # resets the failure counter; the listener logs a real change
        if previous == CLOSED:
            self.generation += 1  # outcomes of calls in flight no longer count
        return previous

    def info(self, recovery_timeout: float | None = None, threshold: int | None = None,
             half_open_max: int | None = None) -> dict:
        d = {"name": self.name, "state": self.state, "failure_count": self.cb.fail_counter,
             "failure_threshold": threshold if threshold is not None else self.cb.fail_max,
             "recovery_timeout": recovery_timeout if recovery_timeout is not None else self.cb.reset_timeout,
             "half_open_max_calls": half_open_max, "probes_in_flight": self.probes,
             "last_state_change": self.last_change, **self.counts,
             "avg_decision_us": round(self.decision_seconds / self.decisions * 1e6, 3) if self.decisions else 0.0,
             "recent_transitions": list(self.transitions)[-10:]}
        if self.state == OPEN:
            d["open_remaining_seconds"] = round(self.open_remaining(
                recovery_timeout if recovery_timeout is not None else self.cb.reset_timeout), 3)
        return d
