"""What the cache saved: every hit counts the tokens and cost its entry's original call spent.

An entry keeps the Usage of the call that computed it (service/resilience/meter.py; in Redis it travels
in the value's header), so a hit adds one dict count here, keyed by that Usage; a flush (once a second
under traffic, and every scrape) multiplies and adds them to llmapi_cache_saved_tokens_total and
llmapi_cache_saved_cost_usd_total{model, operation}.
"""
from __future__ import annotations

from exporter.metrics import CACHE_SAVED_COST, CACHE_SAVED_TOKENS
from exporter.tally import _Batch


class Savings(_Batch):
    def __init__(self, interval: float = 1.0):
        super().__init__(interval)
        self.tokens = 0
        self.cost = 0.0

    def hit(self, usage) -> None:
        p = self.pending
        p[usage] = p.get(usage, 0) + 1
        if self._timer is None:
            self._schedule()

    def flush(self) -> None:
        for (op, model, tokens, cost), n in self._take().items():
            CACHE_SAVED_TOKENS.labels(model, op).inc(tokens * n)
            CACHE_SAVED_COST.labels(model, op).inc(cost * n)
            self.tokens += tokens * n
            self.cost += cost * n
