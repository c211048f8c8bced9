"""Reading the process's own metrics back, summed over every worker.

With WORKERS > 1 (PROMETHEUS_MULTIPROC_DIR set) the samples come from
prometheus_client's MultiProcessCollector, so counters and histograms are the
service's totals, not the answering worker's; batched counts are flushed
first (exporter/tally.py), as a scrape does.
"""
from __future__ import annotations

import os

from exporter.tally import flush_all


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def samples(metrics) -> list:
    """All samples of the given metric objects (every worker's, summed, in multiprocess mode)."""
    flush_all()
    if multiprocess():
        from prometheus_client.multiprocess import MultiProcessCollector
        wanted = {m._name for m in metrics}
        out = []
        for fam in MultiProcessCollector(None).collect():
            if fam.name in wanted:
                out.extend(fam.samples)
        return out
    out = []
    for m in metrics:
        for fam in m.collect():
            out.extend(fam.samples)
    return out


def counter_sums(metric, label: str) -> dict[str, float]:
    """{label value: total} of a counter, summed over its other labels (and workers)."""
    out: dict[str, float] = {}
    for s in samples((metric,)):
        if s.name.endswith("_total"):
            k = s.labels.get(label, "")
            out[k] = out.get(k, 0.0) + s.value
    return out
