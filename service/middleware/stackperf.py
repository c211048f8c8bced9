"""Sampled per-middleware overhead of the stack.

The outermost probed middleware (security) times one request in
`middleware.sample_every`: it puts a list in the SAMPLE context variable and
every probed middleware appends perf_counter() at four points (entry, before
calling the inner handler, after it returns, exit).  The flat list of a
complete sample is the call order, so the gap between two neighbouring
timestamps belongs to exactly one thing:

    entry->before inner       the probed middleware itself
    before inner->next entry  the unprobed middlewares between (and dispatch)
    innermost before->after   the route handler
    ... and the same on the way back out.

An unsampled request costs each probed middleware one ContextVar.get() and
four `is not None` tests.  Samples cut short (a middleware answered without
calling the inner handler) are counted as incomplete and not used.  What the
probes themselves add to a probed middleware's own time (measured once at
start-up on a middleware that does nothing) is subtracted.
"""
from __future__ import annotations

from collections import deque
from contextvars import ContextVar
from time import perf_counter

from exporter.metrics import MIDDLEWARE_OVERHEAD
from service import spans

SAMPLE: ContextVar = ContextVar("llmapi_middleware_sample", default=None)

HANDLER = "handler"


def module_name(module) -> str:
    return getattr(module, "NAME", module.__name__.rsplit(".", 1)[-1])


class StackProfiler:
    def __init__(self, store, order):
        self.store = store
        self.names = [module_name(m) for m in order]
        self.probed = [module_name(m) for m in order if getattr(m, "PROBED", False)]
        self.every = store.get("middleware")["sample_every"]
        self.labels = self._gap_labels(order)
        self.expected = 4 * len(self.probed)
        self.stats: dict[str, list] = {}  # label -> [count, total_s, max_s]
        self.totals: deque = deque(maxlen=2048)  # (overhead_s, handler_s) of recent samples
        self.complete = 0
        self.incomplete = 0
        # every gap's series exists from the start (0 samples), so rate() reads 0 before the first sample
        self._hist: dict = {label: MIDDLEWARE_OVERHEAD.labels(label) for label in self.labels if label != HANDLER}
        self.probe_cost = probe_cost()
        self._probed_set = frozenset(self.probed)
        store.subscribe(self._on_config)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section == "middleware":
            self.every = new["sample_every"]

    def _gap_labels(self, order) -> list[str]:
        """The label of each gap between neighbouring timestamps of a complete sample."""
        names = [module_name(m) for m in order]
        probed_idx = [i for i, m in enumerate(order) if getattr(m, "PROBED", False)]
        forward: list[str] = []
        between: list[str] = []  # label of the gap from probed k's 'before inner' to probed k+1's entry
        for k, i in enumerate(probed_idx):
            if k + 1 < len(probed_idx):
                j = probed_idx[k + 1]
                mid = names[i + 1:j]
                between.append("+".join(mid) if mid else names[j])
        for k, i in enumerate(probed_idx):
            forward.append(names[i])                       # entry -> before inner
            if k + 1 < len(probed_idx):
                forward.append(between[k])                 # -> next probed entry
        inner_rest = names[probed_idx[-1] + 1:] if probed_idx else []
        self.handler_includes = inner_rest  # unprobed middlewares inside the innermost probed one
        middle = HANDLER
        backward: list[str] = []
        for k in range(len(probed_idx) - 1, -1, -1):
            backward.append(names[probed_idx[k]])          # after inner -> exit
            if k > 0:
                backward.append(between[k - 1])            # exit -> outer's 'after inner'
        return forward + [middle] + backward

    def finish(self, ts: list) -> None:
        if len(ts) != self.expected:
            self.incomplete += 1
            return
        self.complete += 1
        per: dict[str, float] = {}
        prev = ts[0]
        for label, t in zip(self.labels, ts[1:]):
            per[label] = per.get(label, 0.0) + (t - prev)
            prev = t
        handler = per.pop(HANDLER, 0.0)
        stats = self.stats
        hist = self._hist
        probed = self._probed_set
        cost = self.probe_cost
        for label, d in per.items():
            if label in probed:
                d = d - cost if d > cost else 0.0
            s = stats.get(label)
            if s is None:
                s = stats[label] = [0, 0.0, 0.0]
            s[0] += 1
            s[1] += d
            if d > s[2]:
                s[2] = d
            hist[label].observe(d)
        s = stats.get(HANDLER)
        if s is None:
            s = stats[HANDLER] = [0, 0.0, 0.0]
        s[0] += 1
        s[1] += handler
        if handler > s[2]:
            s[2] = handler
        overhead = ts[-1] - ts[0] - handler - cost * len(probed)
        self.totals.append((overhead, handler))
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
        self.totals.clear()
        self.complete = self.incomplete = 0

    def snapshot(self) -> dict:
        total = self.total_ms()
        handler = self.handler_avg_ms()
        return {"total": total, "breakdown": self.breakdown(), "handler_avg_ms": handler,
                "overhead_share": round(total / (total + handler), 4) if total + handler > 0 else 0.0,
                "p95_ms": self.percentile_ms(0.95), "samples": self.complete, "incomplete_samples": self.incomplete,
                "sample_every": self.every, "order": self.names, "probed": self.probed,
                "probe_cost_subtracted_ms": round(self.probe_cost * 1000, 5),
                "handler_includes": self.handler_includes}


def now() -> float:
    return perf_counter()


def probe_cost(rounds: int = 2000) -> float:
    """Own time the probes alone give a probed middleware (median over `rounds` no-op runs), seconds."""
    async def noop(_request):
        return None

    samples = []
    for _ in range(rounds):
        rec = [perf_counter()]
        coro = timed_inner(rec, noop, None)
        try:
            coro.send(None)
        except StopIteration:
            pass
        rec.append(perf_counter())
        samples.append((rec[1] - rec[0]) + (rec[3] - rec[2]))
    samples.sort()
    return samples[len(samples) // 2]


async def timed_inner(rec: list, handler, request):
    """Call the inner handler of a sampled request between two probes."""
    rec.append(perf_counter())
    try:
        return await handler(request)
    finally:
        rec.append(perf_counter())
