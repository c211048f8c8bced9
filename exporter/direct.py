"""One process's scrape: the registry's counters, gauges, histograms and summaries written from their values.

prometheus_client's collect() builds a Metric and a Sample namedtuple (and a labels dict) for every sample
of every scrape: about 5 us a sample on this box, most of a single-process scrape.  Here each child's
sample prefixes (`name{labels} `, a histogram's bucket lines with their `le`) are rendered once and kept,
and a scrape reads the values and writes one line per sample.

It reads prometheus_client internals of the pinned version: a wrapper's `_name`, `_type`, `_documentation`,
`_unit`, `_labelnames`, `_metrics` (children by label values) and `_lock`, a MutexValue's `_value` and
`_exemplar`, a histogram child's `_buckets`, `_sum` and `_upper_bounds` (exporter/tally.py writes those
too), a summary child's `_count` and `_sum`.  tests/exporter/test_direct.py compares the output with
prometheus_client's own encoders, family by family, sample by sample, exemplars included, so a library
change that moves them fails a test.

Anything else in a registry (a custom collector, Info, Enum, a gauge with set_function, any
metric while *_created samples are on) goes through its collect() and exporter/exposition.py.
"""
from __future__ import annotations

import weakref

from prometheus_client import Counter, Gauge, Histogram, Summary
from prometheus_client import metrics as _pc_metrics
from prometheus_client.utils import floatToGoString

from exporter.exposition import (exemplar_text, labels_text, openmetrics_family, openmetrics_head, text_family,
                                 text_head, value_text)

_DIRECT = (Counter, Gauge, Histogram, Summary)
PREFIX_CACHE = 50_000  # children whose prefixes are kept (a label explosion only costs speed)


class _Plan:
    """What a wrapper's samples look like: the family's heads and each child's prefixes."""

    def __init__(self, metric):
        name, mtype = metric._name, metric._type
        self.heads = (text_head(name, mtype, metric._documentation),
                      openmetrics_head(name, mtype, metric._documentation, metric._unit))
        self.labelnames = metric._labelnames
        self.prefixes: dict[tuple, object] = {}
        self.texts: dict[tuple, tuple] = {}  # (label values, OpenMetrics?) -> (values, a histogram child's lines)
        if mtype == "histogram":
            self.les = [floatToGoString(b) for b in metric._upper_bounds]
            self.with_sum = metric._upper_bounds[0] >= 0
            self.child_prefix = self._histogram_prefixes
        elif mtype == "summary":
            self.child_prefix = self._summary_prefixes
        else:
            self.child_prefix = self._scalar_prefix
        self.name = name + "_total" if mtype == "counter" else name

    def _scalar_prefix(self, labels: dict) -> str:
        return f"{self.name}{labels_text(labels)} "

    def _histogram_prefixes(self, labels: dict) -> tuple:
        name = self.name
        buckets = tuple(f"{name}_bucket{labels_text({**labels, 'le': le})} " for le in self.les)
        return (buckets, f"{name}_count{labels_text(labels)} ",
                f"{name}_sum{labels_text(labels)} " if self.with_sum else None)

    def _summary_prefixes(self, labels: dict) -> tuple:
        text = labels_text(labels)
        return f"{self.name}_count{text} ", f"{self.name}_sum{text} "

    def prefix(self, labelvalues: tuple):
        p = self.prefixes.get(labelvalues)
        if p is None:
            p = self.child_prefix(dict(zip(self.labelnames, labelvalues)))
            if len(self.prefixes) >= PREFIX_CACHE:
                self.prefixes.clear()
            self.prefixes[labelvalues] = p
        return p


_plans: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # wrapper -> its _Plan


def _plan(metric) -> _Plan:
    plan = _plans.get(metric)
    if plan is None:
        plan = _plans[metric] = _Plan(metric)
    return plan


def direct(collector) -> bool:
    """Whether `collector` is written here (else through its collect())."""
    if type(collector) not in _DIRECT or _pc_metrics._use_created:
        return False
    if collector._labelnames:
        return True
    return "_child_samples" not in collector.__dict__  # set_function replaces it


def _children(metric) -> list:
    if not metric._labelnames:
        return [((), metric)]
    with metric._lock:
        return list(metric._metrics.items())


def _scalars(metric, plan: _Plan, om: bool, add) -> int:
    prefix = plan.prefix
    n = 0
    for labelvalues, child in _children(metric):
        v = child._value
        ex = v._exemplar if om else None
        add(f"{prefix(labelvalues)}{value_text(v._value)}{exemplar_text(ex) if ex else ''}\n")
        n += 1
    return n


def _histogram_text(child, prefixes: tuple, om: bool) -> str:
    buckets, count, total = prefixes
    lines = []
    acc = 0.0
    for p, b in zip(buckets, child._buckets):
        acc += b._value
        ex = b._exemplar if om else None
        lines.append(f"{p}{value_text(acc)}{exemplar_text(ex) if ex else ''}\n")
    lines.append(f"{count}{value_text(acc)}\n")
    if total is not None:
        lines.append(f"{total}{value_text(child._sum._value)}\n")
    return "".join(lines)


def _histograms(metric, plan: _Plan, om: bool, add) -> int:
    """A child's lines are kept with the values they were written from: a child unchanged since the last
    scrape (most of them, between two scrapes) costs a read of its values and one comparison."""
    prefix, texts = plan.prefix, plan.texts
    n = 0
    for labelvalues, child in _children(metric):
        prefixes = prefix(labelvalues)
        bs = child._buckets
        key = [b._value for b in bs]
        key.append(child._sum._value)
        if om:
            key += [b._exemplar for b in bs]
        kept = texts.get((labelvalues, om))
        if kept is None or kept[0] != key:
            if len(texts) >= PREFIX_CACHE:
                texts.clear()
            kept = texts[(labelvalues, om)] = (key, _histogram_text(child, prefixes, om))
        add(kept[1])
        n += len(bs) + 1 + (prefixes[2] is not None)
    return n


def _summaries(metric, plan: _Plan, om: bool, add) -> int:
    prefix = plan.prefix
    n = 0
    for labelvalues, child in _children(metric):
        count, total = prefix(labelvalues)
        add(f"{count}{value_text(child._count._value)}\n{total}{value_text(child._sum._value)}\n")
        n += 2
    return n


_WRITERS = {"histogram": _histograms, "summary": _summaries}


def write(collector, om: bool, add) -> int:
    """Write one collector's families in OpenMetrics (`om`) or the text format; returns its sample count."""
    if direct(collector):
        plan = _plan(collector)
        add(plan.heads[om])
        return _WRITERS.get(collector._type, _scalars)(collector, plan, om, add)
    family = openmetrics_family if om else text_family
    n = 0
    for m in collector.collect():
        family(m, add)
        n += len(m.samples)
    return n


def collectors(registry) -> list:
    """The collectors of a prometheus_client registry, in its order (its target_info too, if set)."""
    with registry._lock:
        out = list(registry._collector_to_names)
    if registry._target_info:
        out.insert(0, _TargetInfo(registry))
    return out


class _TargetInfo:
    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        return [self.registry._target_info_metric()]


def render(registries, om: bool, add):
    """Write every collector of `registries`, yielding each one's sample count (a point to give the loop back)."""
    for registry in registries:
        for c in collectors(registry):
            yield write(c, om, add)
