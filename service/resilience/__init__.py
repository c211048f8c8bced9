"""AI-call resilience: circuit breakers, retries, deadlines, micro-batching.

`Resilience.call(req)` is the one way the text pipeline reaches the AI
provider.  Per call, with the operation's effective config
(strategies.effective: preset -> strategy, bounded by ai.max_retries and the
deadline ai.timeout_seconds):

    until the deadline:
        breaker admits?         (open: fail fast, no upstream call)
        one attempt             (bounded by the attempt timeout and the deadline;
                                 through the micro-batcher when ai.batch_processing)
        outcome -> breaker      (a cancellation is neither success nor failure)
        retry?                  (retry.decide: retryable kind, retries left, backoff
                                 or Retry-After fits before the deadline)

It raises AIUnavailable (TextService answers a stale cached copy marked as a
fallback, else 503 with Retry-After) or, for errors a retry cannot fix
(client, parse), the ProviderError itself.  Everything is read live from the
config store, so a preset or threshold change acts on the next call.  With
Redis, breakers that open or close in one process open or close in the others
too (shared.py), without a Redis round trip on the request path.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import NamedTuple

from exporter.metrics import BREAKER_REJECTIONS, BREAKER_STATES, BREAKER_TRANSITIONS, FALLBACKS, RETRIES
from service import spans
from service.errors import drop_tracebacks
from service.providers.base import OPERATIONS, ProviderError, ProviderResult, TextRequest
from service.resilience.analysis import Stats
from service.resilience.batching import Batcher
from service.resilience.breaker import OPEN, Breaker, BreakerOpen
from service.resilience.meter import AiMeter, CallKeys
from service.resilience.retry import decide
from service.resilience.strategies import Effective, effective

log = logging.getLogger("service.resilience")

__all__ = ["AIUnavailable", "Resilience"]


class AIUnavailable(Exception):
    """The AI service cannot answer now (breaker open, retries exhausted, deadline)."""

    def __init__(self, error_code: str, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.retry_after = retry_after


class _Plan(NamedTuple):
    """What every call of one operation reads, valid while the "ai", "resilience" and "pricing" section
    objects and the current provider are the ones it was made from (call() checks them by identity)."""
    ai: dict
    res: dict
    pricing: dict
    current: object      # the provider
    eff: Effective
    provider: str        # its name
    model: str           # the bounded model label (AiMeter.model)
    br: Breaker
    keys: CallKeys       # AiMeter.success's label keys and prices


class Resilience:
    def __init__(self, ctx):
        self.ctx = ctx
        self.stats = Stats()
        self.meter = AiMeter(ctx)
        self.breakers: dict[str, Breaker] = {}
        self.batcher = Batcher(ctx)
        self.optimizations: deque[dict] = deque(maxlen=50)
        self._eff: dict[str, tuple] = {}
        self._plans: dict[str, _Plan] = {}  # per operation: what call() reads (see _Plan)
        self._call_span: list | None = None  # the span "ai.call"'s cell, taken at the first success
        from service.resilience.benchmark import BenchmarkJobs
        from service.resilience.shared import SharedBreakers
        self.benchmarks = BenchmarkJobs(self)
        self.shared = SharedBreakers(self)
        ctx.store.subscribe(self._on_config_change)

    # ---- config ----------------------------------------------------------------
    def effective(self, op: str) -> Effective:
        """The op's effective config; recomputed only when a section object changes."""
        store = self.ctx.store
        ai, res = store.get("ai"), store.get("resilience")
        hit = self._eff.get(op)
        if hit is not None and hit[0] is ai and hit[1] is res:
            return hit[2]
        eff = effective(op, ai, res)
        self._eff[op] = (ai, res, eff)
        return eff

    def _on_config_change(self, section: str, new: dict, old: dict) -> None:
        if section == "ai" and old.get("batch_processing") and not new.get("batch_processing"):
            self.batcher.on_disable()
        if section == "resilience" and new.get("preset") != old.get("preset"):
            log.info("resilience preset changed", extra={"preset": new.get("preset"), "previous": old.get("preset")})

    # ---- breakers -----------------------------------------------------------------
    def breaker(self, provider: str, op: str) -> Breaker:
        name = f"{provider}.{op}"
        b = self.breakers.get(name)
        if b is None:
            eff = self.effective(op)
            b = self.breakers[name] = Breaker(name, eff.failure_threshold, eff.recovery_timeout)
            b.on_change = self.shared.on_change
        return b

    def breaker_view(self, b: Breaker) -> dict:
        op = b.name.split(".", 1)[1]
        eff = self.effective(op)
        return {**b.info(eff.recovery_timeout, eff.failure_threshold, eff.half_open_max_calls),
                "operation": op, "provider": b.name.split(".", 1)[0], "strategy": eff.strategy}

    def reset_breaker(self, name: str) -> list[dict]:
        names = list(self.breakers) if name == "all" else [name]
        out = []
        for n in names:
            b = self.breakers[n]
            previous = b.reset()
            log.info("circuit breaker reset by operator", extra={"breaker": n, "previous": previous})
            out.append({"name": n, "previous_state": previous, "state": b.state})
        return out

    # ---- the call -------------------------------------------------------------------
    def _plan(self, op: str, current) -> "_Plan":
        """What every call of `op` to the current provider reads, worked out once per section objects."""
        store = self.ctx.store
        eff = self.effective(op)
        meter = self.meter
        model = meter.model()
        p = _Plan(store.get("ai"), store.get("resilience"), store.get("pricing"), current, eff, current.name,
                  model, self.breaker(current.name, op), meter.keys(op, current.name, model))
        self._plans[op] = p
        return p

    async def call(self, req: TextRequest) -> ProviderResult:
        op = req.operation
        current = self.ctx.providers.current
        vals = self.ctx.store.values  # (the store's live sections: a change replaces the section's dict)
        plan = self._plans.get(op)
        if plan is None or plan.ai is not vals["ai"] or plan.res is not vals["resilience"] \
                or plan.pricing is not vals["pricing"] or plan.current is not current:
            plan = self._plan(op, current)
        eff = plan.eff
        provider = plan.provider
        meter = self.meter
        model = plan.model
        br = plan.br
        st = self.stats
        start = time.perf_counter()
        deadline = start + eff.timeout_seconds
        retries = 0
        backoff = 0.0
        billed: dict | None = None  # tokens of failed attempts that were still billed (an answer that did not parse)
        st.in_flight += 1
        if st.in_flight > st.max_in_flight:
            st.max_in_flight = st.in_flight
        try:
            while True:
                try:
                    ticket = br.admit(eff.failure_threshold, eff.recovery_timeout, eff.half_open_max_calls)
                except BreakerOpen as e:
                    BREAKER_REJECTIONS.labels(br.name).inc()
                    meter.call(op, provider, model, time.perf_counter() - start, "circuit_breaker_open")
                    raise self._give_up(op, start, retries, backoff, "CIRCUIT_BREAKER_OPEN",
                                        f"the AI service is failing; {e} (retry in {e.retry_after:.1f}s)",
                                        e.retry_after)
                t0 = time.perf_counter()
                attempt_timeout = min(deadline - t0, eff.attempt_timeout_seconds)
                try:
                    if self.ctx.store.values["ai"]["batch_processing"]:
                        async with asyncio.timeout(attempt_timeout):  # (in this task: wait_for would start another)
                            result = await self.batcher.submit(req)
                    else:  # the provider itself: no ProviderManager.process, no _attempt coroutine between
                        self.batcher.provider_calls += 1
                        process = current.process
                        if getattr(process, "takes_deadline", False):
                            # it bounds its own wait (a timer on it): no asyncio.timeout, no cancellation
                            result = await process(req, until=asyncio.get_running_loop().time() + attempt_timeout)
                        else:
                            async with asyncio.timeout(attempt_timeout):
                                result = await process(req)
                except asyncio.CancelledError:
                    br.release(ticket)
                    raise
                except TimeoutError:
                    err = ProviderError("timeout", f"no answer within {attempt_timeout:.3f}s")
                except ProviderError as e:
                    err = e
                except Exception as e:  # a provider bug: counts against the breaker, never retried
                    log.exception("AI provider raised an unexpected error", extra={"operation": op})
                    err = ProviderError("internal", f"provider failed: {type(e).__name__}")
                else:
                    end = time.perf_counter()
                    dt = end - t0
                    br.record(ticket, failed=False)
                    total = end - start
                    tok = result.tokens
                    result.usage = meter.success(plan.keys, dt, total, billed, tok)
                    st.success(op, dt, total, retries, backoff, tok)
                    span = self._call_span  # (spans.record("ai.call", total), in place)
                    if span is None:
                        span = self._call_span = spans.cell("ai.call")
                    span[0] += 1
                    span[1] += total
                    if total > span[2]:
                        span[2] = total
                    return result

                dt = time.perf_counter() - t0
                drop_tracebacks(err)  # (it and what it chains hold frames that hold them: cycles per failed attempt)
                br.record(ticket, failed=err.kind != "client")  # a rejected request proves the upstream alive
                meter.attempt(provider, model, err.kind, dt)
                st.attempt(op, dt, False, err.kind, retries > 0, err.tokens)
                if err.tokens:
                    billed = meter.add_tokens(billed, err.tokens)
                remaining = deadline - time.perf_counter()
                d = decide(err, retries, eff.max_retries, remaining, eff.backoff_base, eff.backoff_max, eff.jitter)
                if d.retry and br.state == OPEN:
                    d.retry, d.reason = False, "the breaker opened"
                elif d.retry and eff.performance_mode and br.cb.fail_counter * 2 >= eff.failure_threshold:
                    d.retry, d.reason = False, "performance_mode: the breaker is half-way to open"
                if not d.retry:
                    meter.call(op, provider, model, time.perf_counter() - start, err.kind, billed)
                    raise self._final(op, start, retries, backoff, err, d.reason, br, eff)
                RETRIES.labels(op).inc()
                retries += 1
                backoff += d.delay
                log.debug("retrying AI call", extra={"operation": op, "retry": retries, "delay_s": round(d.delay, 4),
                                                     "kind": err.kind})
                await asyncio.sleep(d.delay)
        except asyncio.CancelledError:
            st.cancelled(op)
            meter.call(op, provider, model, time.perf_counter() - start, "cancelled", billed)
            raise
        finally:
            st.in_flight -= 1

    def _give_up(self, op: str, start: float, retries: int, backoff: float, code: str, message: str,
                 retry_after: float, exhausted: bool = False) -> AIUnavailable:
        total = time.perf_counter() - start
        self.stats.call(op, total, False, code, retries, backoff, exhausted=exhausted)
        spans.record("ai.call", total)
        return AIUnavailable(code, message, max(0.001, retry_after))

    def _final(self, op: str, start: float, retries: int, backoff: float, err: ProviderError, reason: str,
               br: Breaker, eff: Effective) -> Exception:
        attempts = retries + 1
        if not err.retryable:
            total = time.perf_counter() - start
            self.stats.call(op, total, False, "AI_PROVIDER_ERROR", retries, backoff)
            spans.record("ai.call", total)
            return err
        code = {"timeout": "AI_TIMEOUT", "rate_limited": "AI_RATE_LIMITED"}.get(err.kind, "AI_SERVICE_UNAVAILABLE")
        retry_after = err.retry_after or br.open_remaining(eff.recovery_timeout) or 1.0
        msg = f"the AI service failed ({err.kind}) after {attempts} attempt{'s' if attempts > 1 else ''}: {reason}"
        return self._give_up(op, start, retries, backoff, code, msg, retry_after,
                             exhausted=retries >= eff.max_retries)

    def record_fallback(self, req: TextRequest, kind: str) -> None:
        """TextService reports how it answered after an AIUnavailable: 'stale_cache' or 'unavailable'."""
        FALLBACKS.labels(req.operation, kind).inc()
        self.stats.fallback(req.operation, kind)

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        provider = self.ctx.providers.current.name
        for op in OPERATIONS:  # known label values at 0: rate() reads 0 before the first event
            b = self.breaker(provider, op)
            BREAKER_REJECTIONS.labels(b.name)
            for state in BREAKER_STATES:
                BREAKER_TRANSITIONS.labels(b.name, state)
            RETRIES.labels(op)
            for kind in ("stale_cache", "unavailable"):
                FALLBACKS.labels(op, kind)
        self.meter.preinit()
        await self.shared.start()

    async def close(self) -> None:
        await self.shared.close()
        await self.benchmarks.close()
        await self.batcher.close()
