"""Sampled per-layer overhead of the stack (service/middleware/stack.py).

One request in `middleware.sample_every` runs the stack's sampled loop,
which records perf_counter() before and after every call: each layer's
enter, the handler, each layer's leave.  The gap between two neighbouring
timestamps belongs to exactly one thing:

    around an enter or a leave   that layer's own time
    around the handler           the route handler
    between two calls            the runner itself (label "stack")

What taking a timestamp costs (measured once at start-up on two calls in a
row) is subtracted from every gap.  A sample cut short by an exception
(a layer refused the request) is counted as incomplete and not used.
An unsampled request costs one countdown.
"""
from __future__ import annotations

from collections import deque
from operator import sub
from time import perf_counter

from exporter.metrics import MIDDLEWARE_OVERHEAD
from exporter.tally import SummaryTally
from service import spans

HANDLER = "handler"
RUNNER = "stack"  # the runner's own time between the layers' calls


def module_name(module) -> str:
    return getattr(module, "NAME", module.__name__.rsplit(".", 1)[-1])


class StackProfiler:
    def __init__(self, store, order):
        self.store = store
        self.names = [module_name(m) for m in order]
        self.every = store.get("middleware")["sample_every"]
        self.labels = self._gap_labels(self.names)
        self.expected = len(self.labels) + 1
        self.stats: dict[str, list] = {}  # label -> [count, total_s, max_s]
        self.totals: deque = deque(maxlen=2048)  # (overhead_s, handler_s) of recent samples
        self.complete = 0
        self.incomplete = 0
        # every gap's series exists from the start (0 samples), so rate() reads 0 before the first sample
        for label in self.labels:
            if label != HANDLER:
                MIDDLEWARE_OVERHEAD.labels(label)
        self._keys = [(label,) for label in self.names + [RUNNER]]  # the summary's label values, in row order
        self._rows = None  # self.stats' rows in the order finish() adds to them (made at the first sample)
        self._hist = SummaryTally(MIDDLEWARE_OVERHEAD)  # (a direct observation: a lock and ~7 k instructions, 20 a sample)
        self.probe_cost = probe_cost()
        store.subscribe(self._on_config)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section == "middleware":
            self.every = new["sample_every"]

    @staticmethod
    def _gap_labels(names: list[str]) -> list[str]:
        """The label of each gap between neighbouring timestamps of a complete sample."""
        forward = [x for name in names for x in (name, RUNNER)]
        backward = [x for name in reversed(names) for x in (RUNNER, name)]
        return forward + [HANDLER] + backward

    def finish(self, ts: list) -> None:
        """One sample's timestamps: for n layers, gap 2i is layer i's enter, gap 4n - 2i its leave, gap 2n the
        handler, and every odd gap the runner's own time between two calls (see _gap_labels)."""
        if len(ts) != self.expected:
            self.incomplete += 1
            return
        self.complete += 1
        cost = self.probe_cost
        g = [d - cost if d > cost else 0.0 for d in map(sub, ts[1:], ts)]
        rows = self._rows
        if rows is None:  # [count, total_s, max_s] of each layer, then the runner's, then the handler's
            rows = self._rows = [self.stats.setdefault(label, [0, 0.0, 0.0]) for label in self.names + [RUNNER]]
            rows.append(self.stats.setdefault(HANDLER, [0, 0.0, 0.0]))
        n = len(self.names)
        last = 4 * n
        observe = self._hist.observe
        keys = self._keys
        overhead = 0.0
        for i, row in enumerate(rows):
            if i < n:
                d = g[2 * i] + g[last - 2 * i]
            elif i == n:
                d = sum(g[1::2])
            else:
                d = g[2 * n]
            row[0] += 1
            row[1] += d
            if d > row[2]:
                row[2] = d
            if i <= n:
                observe(keys[i], d)
                overhead += d
        self.totals.append((overhead, d))
        spans.record("middleware.stack", overhead)

    # ---- views -------------------------------------------------------------
    def breakdown(self) -> dict[str, dict]:
        """Average own time per sampled request, by middleware (or group), in ms."""
        n = max(1, self.complete)
        out = {}
        for label, (c, t, m) in self.stats.items():
            if label == HANDLER:
                continue
            out[label] = {"avg_ms": round(t / n * 1000, 4), "max_ms": round(m * 1000, 4), "samples": c}
        return out

    def handler_avg_ms(self) -> float:
        s = self.stats.get(HANDLER)
        return round(s[1] / s[0] * 1000, 4) if s and s[0] else 0.0

    def total_ms(self) -> float:
        return round(sum(v["avg_ms"] for v in self.breakdown().values()), 4)

    def percentile_ms(self, q: float) -> float:
        vals = sorted(o for o, _ in self.totals)
        if not vals:
            return 0.0
        return round(vals[min(len(vals) - 1, int(q * len(vals)))] * 1000, 4)

    def reset(self) -> None:
        self.stats.clear()
        self._rows = None
        self.totals.clear()
        self.complete = self.incomplete = 0

    def snapshot(self) -> dict:
        total = self.total_ms()
        handler = self.handler_avg_ms()
        return {"total": total, "breakdown": self.breakdown(), "handler_avg_ms": handler,
                "overhead_share": round(total / (total + handler), 4) if total + handler > 0 else 0.0,
                "p95_ms": self.percentile_ms(0.95), "samples": self.complete, "incomplete_samples": self.incomplete,
                "sample_every": self.every, "order": self.names,
                "probe_cost_subtracted_ms": round(self.probe_cost * 1000, 5)}


def now() -> float:
    return perf_counter()


def probe_cost(rounds: int = 2000) -> float:
    """What one timestamp adds to a gap (median over `rounds` pairs taken back to back), seconds."""
    samples = []
    for _ in range(rounds):
        ts = []
        t = ts.append
        t(perf_counter())
        t(perf_counter())
        samples.append(ts[1] - ts[0])
    samples.sort()
    return samples[len(samples) // 2]
