"""The LLM telemetry of AI calls, in the shape of the OpenTelemetry GenAI semantic conventions.

Per attempt (each retry is one): llmapi_ai_request_duration_seconds{provider, model, outcome}, outcome
`success` or the attempt's error kind (the AI KPI's histogram: its buckets hold the 15/30/45 s edges).  Per call, retries and backoff included:

* gen_ai_client_operation_duration_seconds{gen_ai_operation_name, gen_ai_provider_name,
  gen_ai_request_model, error_type}, with a request id as exemplar (OpenMetrics; per bucket, the last one
  of each flush of the batched observations, exporter/tally.py);
* gen_ai_client_token_usage{..., gen_ai_token_type="input"|"output"} (the semconv buckets 1, 4, 16,
  ... 4^13): the tokens every attempt of the call was billed for (a failed call too, when an answer that
  did not parse was billed), and llmapi_ai_cost_usd_total{model, operation}, priced from the "pricing"
  config section (USD per million tokens by model; empty by default, so every call costs 0).

gen_ai_operation_name is the service's operation (summarize, sentiment, key_points, questions, qa):
a system-specific value, as the semconv allows.  error_type is the semconv's error.type: the error kind
of the call's last attempt (timeout, connection, rate_limited, server, client, parse, internal),
`circuit_breaker_open` when the breaker refused the call, `cancelled` when the caller went away; empty
on success (in Prometheus an empty label is an absent one, as the semconv has it).

`model` is bounded: the current provider's model, ai.model and the price table's models are known,
any other name is `other`.  A successful call returns its Usage, which the cache keeps with the entry
so that every hit can count what it saved (service/cache/savings.py).
"""
from __future__ import annotations

from bisect import bisect_left
from typing import NamedTuple

from exporter.metrics import (AI_COST, AI_DURATION, CACHE_SAVED_COST, CACHE_SAVED_TOKENS, GENAI_DURATION,
                              GENAI_TOKENS, OTHER)
from exporter.tally import HistogramTally, Tally
from service.log import request_id_var
from service.providers.base import OPERATIONS


class Usage(NamedTuple):
    """What one successful AI call spent."""
    operation: str
    model: str          # the bounded model label
    tokens: int         # input + output
    cost: float         # USD at the prices of the moment of the call


class CallKeys(NamedTuple):
    """What AiMeter.success adds to, for one (operation, provider, model label)."""
    operation: str
    model: str
    # the tallies' cells (exporter/tally.py, added to in place) of:
    attempt: list       # llmapi_ai_request_duration_seconds{provider, model, outcome="success"}
    call: list          # gen_ai_client_operation_duration_seconds{..., error_type=""}
    input: list         # gen_ai_client_token_usage{..., gen_ai_token_type="input"}
    output: list
    cost: list          # llmapi_ai_cost_usd_total{model, operation}
    input_price: float  # USD per million tokens
    output_price: float


class AiMeter:
    def __init__(self, ctx):
        self.ctx = ctx
        self._known: tuple = (None, None, None, frozenset())
        # the four histograms and the cost counter of every call are batched (exporter/tally.py: a scrape and
        # every in-process reader flush them first), as the HTTP histograms are
        self._attempts = HistogramTally(AI_DURATION)
        self._durations = HistogramTally(GENAI_DURATION)
        self._tokens = HistogramTally(GENAI_TOKENS)
        self._costs = Tally(lambda key: AI_COST.labels(*key))
        self._calls: dict = {}  # (op, provider, model) -> the token and cost keys of its calls (bounded labels)

    # ---- the model label ------------------------------------------------------------
    def known_models(self) -> frozenset:
        store = self.ctx.store
        ai, pricing, provider = store.get("ai"), store.get("pricing"), self.ctx.providers.current
        k = self._known
        if k[0] is ai and k[1] is pricing and k[2] is provider:
            return k[3]
        names = frozenset({ai["model"], provider.model, *pricing["input_usd_per_million"],
                           *pricing["output_usd_per_million"]})
        self._known = (ai, pricing, provider, names)
        return names

    def label(self, model: str) -> str:
        return model if model in self.known_models() else OTHER

    def model(self) -> str:
        """The label of the model the current provider asks for."""
        return self.label(self.ctx.providers.current.model)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        p = self.ctx.store.get("pricing")
        return (input_tokens * p["input_usd_per_million"].get(model, 0.0)
                + output_tokens * p["output_usd_per_million"].get(model, 0.0)) / 1e6

    # ---- recording ----------------------------------------------------------------------
    def attempt(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        self._attempts.observe((provider, model, outcome), seconds, request_id_var.get() or None)

    @staticmethod
    def add_tokens(total: dict | None, tokens: dict | None) -> dict | None:
        """Tokens of one more attempt added to the call's (prompt/completion dicts)."""
        if not tokens:
            return total
        if total is None:
            return {"prompt": int(tokens.get("prompt") or 0), "completion": int(tokens.get("completion") or 0)}
        return {"prompt": total["prompt"] + int(tokens.get("prompt") or 0),
                "completion": total["completion"] + int(tokens.get("completion") or 0)}

    def call(self, op: str, provider: str, model: str, seconds: float, error_type: str = "",
             tokens: dict | None = None) -> Usage | None:
        """One call: its duration, and what it was billed for; the Usage of a successful one."""
        self._durations.observe((op, provider, model, error_type), seconds, request_id_var.get() or None)
        if tokens is None:
            return None
        keys = self._calls.get((op, provider, model))
        if keys is None:
            keys = self._calls[(op, provider, model)] = ((op, provider, model, "input"), (op, provider, model, "output"),
                                                         (model, op))
        tin, tout = int(tokens.get("prompt") or 0), int(tokens.get("completion") or 0)
        self._tokens.observe(keys[0], tin)
        self._tokens.observe(keys[1], tout)
        cost = self.cost(model, tin, tout)
        self._costs.add(keys[2], cost)
        return None if error_type else Usage(op, model, tin + tout, cost)

    def keys(self, op: str, provider: str, model: str) -> "CallKeys":
        """The label keys and prices of one (operation, provider, model label) for `success`, at the prices
        of the "pricing" section now (a caller keeps them only while that section object is the same)."""
        p = self.ctx.store.get("pricing")
        return CallKeys(op, model, self._attempts.cell((provider, model, "success")),
                        self._durations.cell((op, provider, model, "")),
                        self._tokens.cell((op, provider, model, "input")),
                        self._tokens.cell((op, provider, model, "output")), self._costs.cell((model, op)),
                        p["input_usd_per_million"].get(model, 0.0), p["output_usd_per_million"].get(model, 0.0))

    def success(self, k: "CallKeys", attempt_seconds: float, call_seconds: float, billed: dict | None,
                tokens: dict | None) -> Usage | None:
        """A call whose last attempt succeeded: attempt(..., "success", attempt_seconds) and
        call(..., call_seconds, "", add_tokens(billed, tokens)) in one step; its Usage (None when no
        tokens are known)."""
        rid = request_id_var.get() or None
        self._attempts.add(k.attempt, attempt_seconds, rid)  # (the cells of k, in place: exporter/tally.py)
        self._durations.add(k.call, call_seconds, rid)
        if tokens:
            tin, tout = int(tokens.get("prompt") or 0), int(tokens.get("completion") or 0)
            if billed is not None:
                tin, tout = tin + billed["prompt"], tout + billed["completion"]
        elif billed is not None:
            tin, tout = billed["prompt"], billed["completion"]
        else:
            return None
        bounds = self._tokens.bounds
        c = k.input
        c[bisect_left(bounds, tin)] += 1
        c[-1] += tin
        c = k.output
        c[bisect_left(bounds, tout)] += 1
        c[-1] += tout
        cost = (tin * k.input_price + tout * k.output_price) / 1e6  # (what cost() gives)
        k.cost[0] += cost
        return Usage(k.operation, k.model, tin + tout, cost)

    def preinit(self) -> None:
        """Create the series of the current provider and model at 0, so rate() shows 0 before the first call."""
        provider, model = self.ctx.providers.current.name, self.model()
        AI_DURATION.labels(provider, model, "success")
        for op in OPERATIONS:
            GENAI_DURATION.labels(op, provider, model, "")
            for t in ("input", "output"):
                GENAI_TOKENS.labels(op, provider, model, t)
            AI_COST.labels(model, op)
            CACHE_SAVED_TOKENS.labels(model, op)
            CACHE_SAVED_COST.labels(model, op)
