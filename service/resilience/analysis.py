"""What the resilience layer measured, and what follows from it.

`Stats` records every AI call (its attempts, retries, backoff waits, breaker
decisions, outcome) in bounded per-operation windows.  The functions below
turn those measurements into the answers of the analysis endpoints:
performance-metrics, performance-impact, config-performance-analysis (with
recommendations, each a concrete config change with the measurement behind
it) and the AI performance view.
"""
from __future__ import annotations

import math
import time
from collections import deque

from service.providers.base import OPERATIONS

WINDOW_SAMPLES = 2000          # per operation
MIN_SAMPLES = 20               # attempts before a recommendation is made
RECENT_SECONDS = 900.0         # the "recent" window of rates
TIMEOUT_FLOOR_SECONDS = 5.0    # never suggest a shorter deadline than this


def quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def latency_summary(values: list[float]) -> dict:
    s = sorted(values)
    return {"count": len(s), "avg_ms": _ms(sum(s) / len(s)) if s else None, "p50_ms": _ms(quantile(s, 0.5)),
            "p95_ms": _ms(quantile(s, 0.95)), "p99_ms": _ms(quantile(s, 0.99)), "max_ms": _ms(s[-1] if s else None)}


class OpStats:
    def __init__(self):
        self.calls = 0
        self.successes = 0
        self.failures: dict[str, int] = {}        # final error code -> count
        self.attempts = 0
        self.attempt_errors: dict[str, int] = {}  # provider error kind -> count
        self.retries = 0
        self.retry_successes = 0                  # retry attempts that succeeded
        self.recovered_calls = 0                  # calls that succeeded after >= 1 retry
        self.exhausted = 0                        # calls that failed with retries used up
        self.rejections = 0                       # fail-fast by an open breaker
        self.cancelled = 0
        self.fallbacks: dict[str, int] = {}
        self.backoff_seconds = 0.0
        self.retry_added_seconds = 0.0            # in successful calls: time before the last attempt
        self.attempt_seconds = 0.0
        self.call_seconds = 0.0
        self.rejection_seconds = 0.0              # time fast-failed calls took
        self.tokens = {"prompt": 0, "completion": 0, "total": 0}
        # windows: calls (time, seconds, ok), attempts (time, seconds, ok, error kind or None)
        self.recent_calls: deque = deque(maxlen=WINDOW_SAMPLES)
        self.recent_attempts: deque = deque(maxlen=WINDOW_SAMPLES)


class Stats:
    def __init__(self):
        self.started = time.time()
        self.ops: dict[str, OpStats] = {op: OpStats() for op in OPERATIONS}
        self.in_flight = 0
        self.max_in_flight = 0

    def op(self, name: str) -> OpStats:
        s = self.ops.get(name)
        if s is None:
            s = self.ops[name] = OpStats()
        return s

    def reset(self) -> None:
        self.__init__()

    # ---- recording (hot path: a few additions) -----------------------------
    def attempt(self, op: str, seconds: float, ok: bool, kind: str | None, is_retry: bool, tokens=None) -> None:
        s = self.op(op)
        s.attempts += 1
        s.attempt_seconds += seconds
        s.recent_attempts.append((time.time(), seconds, ok, kind))
        if tokens:  # a failed attempt may have been billed too (an answer that did not parse)
            for k in ("prompt", "completion", "total"):
                s.tokens[k] += int(tokens.get(k, 0) or 0)
        if ok:
            if is_retry:
                s.retry_successes += 1
        else:
            s.attempt_errors[kind or "unknown"] = s.attempt_errors.get(kind or "unknown", 0) + 1

    def call(self, op: str, seconds: float, ok: bool, code: str | None, retries: int, backoff: float,
             last_attempt_seconds: float = 0.0, exhausted: bool = False) -> None:
        s = self.op(op)
        s.calls += 1
        s.call_seconds += seconds
        s.retries += retries
        s.backoff_seconds += backoff
        s.recent_calls.append((time.time(), seconds, ok))
        if ok:
            s.successes += 1
            if retries:
                s.recovered_calls += 1
                s.retry_added_seconds += max(0.0, seconds - last_attempt_seconds)
        else:
            s.failures[code or "unknown"] = s.failures.get(code or "unknown", 0) + 1
            if exhausted:
                s.exhausted += 1
            if code == "CIRCUIT_BREAKER_OPEN" and retries == 0:
                s.rejections += 1
                s.rejection_seconds += seconds

    def success(self, op: str, attempt_seconds: float, call_seconds: float, retries: int, backoff: float,
                tokens=None) -> None:
        """A call whose last attempt succeeded: attempt(op, attempt_seconds, True, None, retries > 0, tokens)
        and call(op, call_seconds, True, None, retries, backoff, attempt_seconds) in one step."""
        s = self.ops.get(op) or self.op(op)
        now = time.time()
        s.attempts += 1
        s.attempt_seconds += attempt_seconds
        s.recent_attempts.append((now, attempt_seconds, True, None))
        if tokens:
            t = s.tokens
            for k in ("prompt", "completion", "total"):
                t[k] += int(tokens.get(k, 0) or 0)
        s.calls += 1
        s.successes += 1
        s.call_seconds += call_seconds
        s.recent_calls.append((now, call_seconds, True))
        if retries:
            s.retry_successes += 1
            s.retries += retries
            s.backoff_seconds += backoff
            s.recovered_calls += 1
            s.retry_added_seconds += max(0.0, call_seconds - attempt_seconds)

    def cancelled(self, op: str) -> None:
        self.op(op).cancelled += 1

    def fallback(self, op: str, kind: str) -> None:
        s = self.op(op)
        s.fallbacks[kind] = s.fallbacks.get(kind, 0) + 1


# ---- views ----------------------------------------------------------------------
def _recent(d: deque, since: float) -> list:
    return [x for x in d if x[0] >= since]


def _rate(n: int, d: int) -> float | None:
    return round(n / d, 6) if d else None


def op_metrics(s: OpStats, since: float) -> dict:
    calls = _recent(s.recent_calls, since)
    attempts = _recent(s.recent_attempts, since)
    return {
        "calls": s.calls, "successes": s.successes, "failures": sum(s.failures.values()),
        "failures_by_code": dict(s.failures), "success_rate": _rate(s.successes, s.calls),
        "attempts": s.attempts, "attempt_errors_by_kind": dict(s.attempt_errors),
        "retries": s.retries, "retry_success_rate": _rate(s.retry_successes, s.retries),
        "calls_recovered_by_retry": s.recovered_calls, "calls_exhausted_retries": s.exhausted,
        "breaker_rejections": s.rejections, "cancelled": s.cancelled, "fallbacks": dict(s.fallbacks),
        "tokens": dict(s.tokens),
        "call_latency": latency_summary([c[1] for c in calls]),
        "attempt_latency": latency_summary([a[1] for a in attempts if a[2]]),
        "recent_error_rate": _rate(sum(1 for c in calls if not c[2]), len(calls)),
    }


def performance_metrics(res) -> dict:
    st: Stats = res.stats
    since = time.time() - RECENT_SECONDS
    ops = {op: op_metrics(s, since) for op, s in st.ops.items()}
    calls = sum(s.calls for s in st.ops.values())
    ok = sum(s.successes for s in st.ops.values())
    all_calls = [c[1] for s in st.ops.values() for c in _recent(s.recent_calls, since)]
    return {
        "timestamp": time.time(), "since": st.started, "window_seconds": RECENT_SECONDS,
        "summary": {"calls": calls, "successes": ok, "success_rate": _rate(ok, calls),
                    "retries": sum(s.retries for s in st.ops.values()),
                    "breaker_rejections": sum(s.rejections for s in st.ops.values()),
                    "fallbacks": sum(sum(s.fallbacks.values()) for s in st.ops.values()),
                    "in_flight": st.in_flight, "max_in_flight": st.max_in_flight,
                    "call_latency": latency_summary(all_calls)},
        "operations": ops,
        "circuit_breakers": {name: {"state": b.state, "failure_count": b.cb.fail_counter, **b.counts}
                             for name, b in res.breakers.items()},
        "batching": res.batcher.stats(),
    }


def performance_impact(res) -> dict:
    """Latency the resilience layer adds or saves, from measurements."""
    st: Stats = res.stats
    out_ops = {}
    tot = {"calls": 0, "attempt_s": 0.0, "call_s": 0.0, "backoff_s": 0.0, "retry_added_s": 0.0, "recovered": 0,
           "rejections": 0, "rejection_s": 0.0, "failed_attempt_s": 0.0, "failed_attempts": 0}
    for op, s in st.ops.items():
        failed = [a[1] for a in s.recent_attempts if not a[2]]
        avg_failed = sum(failed) / len(failed) if failed else None
        overhead = s.call_seconds - s.attempt_seconds - s.backoff_seconds - s.rejection_seconds
        out_ops[op] = {
            "calls": s.calls,
            "retry_added_latency_ms_total": round(s.retry_added_seconds * 1000, 3),
            "retry_added_latency_ms_per_recovered_call": round(s.retry_added_seconds / s.recovered_calls * 1000, 3)
            if s.recovered_calls else None,
            "backoff_wait_ms_total": round(s.backoff_seconds * 1000, 3),
            "calls_recovered_by_retry": s.recovered_calls,
            "breaker_rejections": s.rejections,
            "fast_fail_avg_ms": round(s.rejection_seconds / s.rejections * 1000, 4) if s.rejections else None,
            "avg_failed_attempt_ms": _ms(avg_failed),
            "estimated_time_saved_by_breaker_ms": round(s.rejections * avg_failed * 1000, 3)
            if avg_failed is not None and s.rejections else 0.0,
            "layer_overhead_ms_per_call": round(max(0.0, overhead) / s.calls * 1000, 4) if s.calls else None,
        }
        tot["calls"] += s.calls
        tot["attempt_s"] += s.attempt_seconds
        tot["call_s"] += s.call_seconds
        tot["backoff_s"] += s.backoff_seconds
        tot["retry_added_s"] += s.retry_added_seconds
        tot["recovered"] += s.recovered_calls
        tot["rejections"] += s.rejections
        tot["rejection_s"] += s.rejection_seconds
        tot["failed_attempt_s"] += sum(failed)
        tot["failed_attempts"] += len(failed)
    decisions = sum(b.decisions for b in res.breakers.values())
    decision_s = sum(b.decision_seconds for b in res.breakers.values())
    avg_failed = tot["failed_attempt_s"] / tot["failed_attempts"] if tot["failed_attempts"] else None
    overhead = tot["call_s"] - tot["attempt_s"] - tot["backoff_s"] - tot["rejection_s"]
    return {
        "timestamp": time.time(), "since": st.started,
        "summary": {
            "calls": tot["calls"],
            "breaker_decisions": decisions,
            "breaker_decision_avg_us": round(decision_s / decisions * 1e6, 3) if decisions else None,
            "breaker_decision_ms_total": round(decision_s * 1000, 3),
            "retry_added_latency_ms_total": round(tot["retry_added_s"] * 1000, 3),
            "retry_added_latency_ms_per_recovered_call": round(tot["retry_added_s"] / tot["recovered"] * 1000, 3)
            if tot["recovered"] else None,
            "calls_recovered_by_retry": tot["recovered"],
            "backoff_wait_ms_total": round(tot["backoff_s"] * 1000, 3),
            "breaker_rejections": tot["rejections"],
            "fast_fail_avg_ms": round(tot["rejection_s"] / tot["rejections"] * 1000, 4) if tot["rejections"] else None,
            "estimated_time_saved_by_breaker_ms": round(tot["rejections"] * avg_failed * 1000, 3)
            if avg_failed is not None else 0.0,
            "layer_overhead_ms_per_call": round(max(0.0, overhead) / tot["calls"] * 1000, 4) if tot["calls"] else None,
            "share_of_ai_time_in_resilience": _rate(round(tot["backoff_s"] + max(0.0, overhead), 6),
                                                    round(tot["call_s"], 6) or 0),
        },
        "operations": out_ops,
        "method": ("measured per call: attempt durations, backoff sleeps and breaker decision time; "
                   "retry-added latency is, for calls that succeeded after retries, the time before the "
                   "successful attempt; time saved is fast-failed calls x the measured mean failed-attempt time"),
    }


# ---- config analysis and optimisations --------------------------------------
def config_analysis(res) -> dict:
    store = res.ctx.store
    ai, rc, bc = store.get("ai"), store.get("resilience"), store.get("batching")
    st: Stats = res.stats
    since = time.time() - RECENT_SECONDS
    recs: list[dict] = []
    ops_out = {}
    all_ok_attempts: list[float] = []
    timeouts = attempts_n = 0
    retries = retry_ok = exhausted = opened = 0
    for op, s in st.ops.items():
        eff = res.effective(op)
        ok_att = [a[1] for a in _recent(s.recent_attempts, since) if a[2]]
        all_ok_attempts += ok_att
        att = _recent(s.recent_attempts, since)
        attempts_n += len(att)
        timeouts += sum(1 for a in att if a[3] == "timeout")  # the same window as the attempts
        retries += s.retries
        retry_ok += s.retry_successes
        exhausted += s.exhausted
        lat = latency_summary(ok_att)
        p99 = lat["p99_ms"]
        ops_out[op] = {
            "strategy": eff.strategy, "effective": eff.as_dict(), "measured": {
                "attempts": len(att), "success_latency": lat,
                "timeout_headroom": round(eff.attempt_timeout_seconds * 1000 / p99, 2) if p99 else None,
                "retry_success_rate": _rate(s.retry_successes, s.retries),
                "recent_error_rate": _rate(sum(1 for a in att if not a[2]), len(att))}}
    for b in res.breakers.values():
        opened += b.counts["opened"]

    # 1. the deadline against measured success latency
    s_ok = sorted(all_ok_attempts)
    p99 = quantile(s_ok, 0.99)
    timeout = float(ai["timeout_seconds"])
    if len(s_ok) >= MIN_SAMPLES and p99 is not None:
        suggested = max(TIMEOUT_FLOOR_SECONDS, round(p99 * 4, 1))
        if timeout > 2 * suggested:
            recs.append(_rec("ai", "timeout_seconds", timeout, suggested,
                             f"p99 of {len(s_ok)} successful attempts is {p99 * 1000:.0f} ms; a deadline of "
                             f"{timeout:g}s lets a hung upstream hold requests far longer than healthy calls take",
                             "medium"))
        elif attempts_n and timeouts / attempts_n > 0.05 and p99 > 0.8 * timeout:
            recs.append(_rec("ai", "timeout_seconds", timeout, min(600.0, round(timeout * 1.5, 1)),
                             f"{timeouts} timeouts in {attempts_n} attempts and p99 success latency "
                             f"{p99 * 1000:.0f} ms is near the {timeout:g}s deadline", "high"))
    # 2. retries that do not help, or help and run out
    if retries >= MIN_SAMPLES:
        rate = retry_ok / retries
        if rate < 0.1 and ai["max_retries"] > 0:
            recs.append(_rec("ai", "max_retries", ai["max_retries"], max(0, ai["max_retries"] - 1),
                             f"only {retry_ok} of {retries} retries succeeded ({rate:.0%}): retries mostly add "
                             "latency and upstream load", "medium"))
        elif rate > 0.5 and exhausted and ai["max_retries"] < 10:
            recs.append(_rec("ai", "max_retries", ai["max_retries"], ai["max_retries"] + 1,
                             f"{rate:.0%} of retries succeed but {exhausted} calls ran out of retries", "low"))
    # 3. a breaker that flaps while the upstream mostly works
    total_att = sum(s.attempts for s in st.ops.values())
    total_err = sum(sum(s.attempt_errors.values()) for s in st.ops.values())
    if opened >= 3 and total_att >= MIN_SAMPLES and total_err / total_att < 0.2:
        new = min(1000, max(rc["failure_threshold"] + 1, round(rc["failure_threshold"] * 1.5)))
        recs.append(_rec("resilience", "failure_threshold", rc["failure_threshold"], new,
                         f"breakers opened {opened} times while only {total_err / total_att:.0%} of attempts "
                         "failed: the threshold trips on short bursts", "medium"))
    elif total_att >= MIN_SAMPLES and total_err / total_att > 0.5 and opened == 0 and rc["failure_threshold"] > 2:
        recs.append(_rec("resilience", "failure_threshold", rc["failure_threshold"],
                         max(2, rc["failure_threshold"] // 2),
                         f"{total_err / total_att:.0%} of attempts failed and no breaker opened: calls keep "
                         "waiting on a failing upstream", "high"))
    # 4. batching that only adds waiting
    bst = res.batcher.stats()
    if ai["batch_processing"] and bst["batches"] >= MIN_SAMPLES and bst["avg_batch_size"] is not None \
            and bst["avg_batch_size"] < 1.5 and bc["batch_timeout_ms"] > 1:
        recs.append(_rec("batching", "batch_timeout_ms", bc["batch_timeout_ms"], 1.0,
                         f"average batch holds {bst['avg_batch_size']:.2f} requests yet each waits up to "
                         f"{bc['batch_timeout_ms']:g} ms (measured mean wait {bst['avg_wait_ms']} ms): "
                         "concurrency is too low for batching to merge calls", "medium"))
    return {"timestamp": time.time(), "preset": rc["preset"], "sample_window_seconds": RECENT_SECONDS,
            "min_samples": MIN_SAMPLES, "operations": ops_out, "recommendations": recs,
            "data_sufficient": attempts_n >= MIN_SAMPLES,
            "summary": {"attempts_measured": attempts_n, "retries": retries, "breaker_openings": opened,
                        "recommendation_count": len(recs)},
            "last_applied": res.optimizations[-1] if res.optimizations else None}


def _rec(section: str, field: str, current, suggested, reason: str, priority: str) -> dict:
    return {"section": section, "field": field, "current": current, "suggested": suggested,
            "reason": reason, "priority": priority}
