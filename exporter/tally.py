"""Hot-path counting: a dict addition per event, pushed into Prometheus once a second.

A labelled prometheus_client counter costs ~0.4 us per inc (a lock) and a
histogram observation ~2 us (a Python loop over the buckets and two locks);
the request path counts every request, so it adds to plain dicts here and a
timer on the event loop flushes the sums at most one second later.  GET
/metrics flushes every tally of its process first (`flush_all`), so a scrape
is exact for the worker that answers it.  `Tally.totals()` is exact at any
moment (flushed + pending).
"""
from __future__ import annotations

import asyncio
import time
import weakref
from bisect import bisect_left
from typing import Callable

from prometheus_client.samples import Exemplar

EXEMPLAR_MAX = 64  # characters of an id in an exemplar (OpenMetrics: at most 128 for its whole label set)

_live: "weakref.WeakSet" = weakref.WeakSet()


def flush_all() -> None:
    """Push every pending count of this process into its Prometheus metrics."""
    for t in list(_live):
        t.flush()


class _Batch:
    """Pending counts flushed by a loop timer at most `interval` seconds after the first one.

    A hot path may hold a key's cell (`cell(key)`) and add to it in place: cells stay across flushes
    (a flush drains them), and once a cell was handed out the tally flushes every `interval` while
    the loop runs, as nothing tells it when a cell changed."""

    def __init__(self, interval: float):
        self.interval = interval
        self.pending: dict = {}
        self._children: dict = {}
        self._timer = None
        self._periodic = False
        _live.add(self)

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the next flush_all() (every scrape) pushes them
            return
        self._timer = loop.call_later(self.interval, self.flush)

    def _cancel(self) -> None:
        """No timer left behind (flush_all may come first)."""
        if self._timer is not None:
            self._timer.cancel()  # (harmless when the timer itself is running)
            self._timer = None

    def _take(self) -> dict:
        """The pending counts, and no timer left behind."""
        self._cancel()
        pending, self.pending = self.pending, {}
        return pending

    def _rearm(self) -> None:
        if self._periodic and self._timer is None:
            self._schedule()

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.flush()
        self._periodic = False
        self._cancel()


class Tally(_Batch):
    def __init__(self, child_for: Callable, interval: float = 1.0):
        super().__init__(interval)
        self.child_for = child_for      # key -> prometheus child (labels(...))
        self.flushed: dict = {}
        self.cells: dict = {}           # key -> [pending count]

    def cell(self, key) -> list:
        """`key`'s pending count as a one-item list to add to in place (`cell[0] += n`)."""
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = [0]
        self._periodic = True
        self._rearm()
        return c

    def add(self, key, n: int = 1) -> None:
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = [0]
        c[0] += n
        if self._timer is None:
            self._schedule()

    def flush(self) -> None:
        self._cancel()
        for key, c in self.cells.items():
            n = c[0]
            if not n:
                continue
            c[0] = 0
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.child_for(key)
            child.inc(n)
            self.flushed[key] = self.flushed.get(key, 0) + n
        self._rearm()

    def totals(self) -> dict:
        out = dict(self.flushed)
        for k, c in self.cells.items():
            if c[0]:
                out[k] = out.get(k, 0) + c[0]
        return out

    def reset(self) -> None:
        """Forget the totals (Prometheus counters keep counting)."""
        self.flush()
        self.flushed = {}


class HistogramTally(_Batch):
    """Batched observations of a labelled prometheus_client Histogram.

    `observe(key, seconds, exemplar_id)` finds the bucket with bisect (C)
    and adds to a list; `flush()` adds the counts to the child's bucket and
    sum values.  Those are prometheus_client internals (`_buckets`, `_sum`)
    of the pinned version; tests/exporter/test_tally.py checks the
    exposition matches direct observations, so a library change that moves
    them fails a test.

    Exemplars stay cheap: per key and bucket only the last id of the flush
    interval is kept (one list store per observation), and the flush makes
    it that bucket's exemplar ({"request_id": id}, its value, the flush
    time).  OpenMetrics shows them; prometheus_client keeps none in
    multiprocess mode (WORKERS > 1).

    A cell (`cell(key)`) is that list: [count per bucket..., (id, value) or None per bucket..., sum],
    for a hot path to add to in place (`bounds` and `size` say where).
    """

    def __init__(self, histogram, interval: float = 1.0, companions: tuple = ()):
        super().__init__(interval)
        self.histogram = histogram
        self.companions = companions  # flushed with it (e.g. the LiveGauge of the same requests)
        self.bounds = list(histogram._upper_bounds)
        self.size = len(self.bounds)
        self.cells: dict = {}

    def _new(self, key) -> list:
        c = self.cells[key] = [0] * self.size + [None] * self.size + [0.0]
        return c

    def cell(self, key) -> list:
        c = self.cells.get(key) or self._new(key)
        self._periodic = True
        self._rearm()
        return c

    def observe(self, key, value: float, exemplar_id: str | None = None) -> None:
        p = self.cells.get(key)
        if p is None:
            p = self._new(key)
        if self._timer is None:
            self._schedule()
        self.add(p, value, exemplar_id)

    def add(self, p: list, value: float, exemplar_id: str | None = None) -> None:
        """One observation added to a cell in place (from `cell()`: its flush timer is running)."""
        i = bisect_left(self.bounds, value)
        p[i] += 1
        p[-1] += value
        if exemplar_id is not None:
            p[self.size + i] = (exemplar_id, value)

    def flush(self) -> None:
        self._cancel()
        n = self.size
        now = None
        for key, p in self.cells.items():
            if not any(p[:n]):
                continue
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.histogram.labels(*key)
            buckets = child._buckets
            for i in range(n):
                if p[i]:
                    buckets[i].inc(p[i])
                    p[i] = 0
                    ex = p[n + i]
                    if ex is not None:
                        now = now or time.time()
                        buckets[i].set_exemplar(Exemplar({"request_id": ex[0][:EXEMPLAR_MAX]}, ex[1], now))
                        p[n + i] = None
            child._sum.inc(p[-1])
            p[-1] = 0.0
        for c in self.companions:
            c.flush()
        self._rearm()


class SummaryTally(_Batch):
    """Batched observations of a labelled prometheus_client Summary: a count and a sum per key, added to
    the child's `_count` and `_sum` (internals of the pinned version, checked by tests/exporter/test_tally.py)."""

    def __init__(self, summary, interval: float = 1.0):
        super().__init__(interval)
        self.summary = summary

    def observe(self, key, value: float) -> None:
        p = self.pending.get(key)
        if p is None:
            p = self.pending[key] = [0, 0.0]
            if self._timer is None:
                self._schedule()
        p[0] += 1
        p[1] += value

    def flush(self) -> None:
        for key, (n, total) in self._take().items():
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.summary.labels(*key)
            child._count.inc(n)
            child._sum.inc(total)


class LiveGauge:
    """An integer gauge kept as a plain attribute (`value += 1`), copied into
    its Prometheus gauge on every flush: by flush_all() (a scrape) and with
    the HistogramTally it is a companion of (once a second under traffic)."""

    def __init__(self, gauge):
        self.gauge = gauge
        self.value = 0
        _live.add(self)

    def flush(self) -> None:
        self.gauge.set(self.value)
