"""Reading the process's own metrics back, summed over every worker.

With WORKERS > 1 (PROMETHEUS_MULTIPROC_DIR set) the samples are every
worker's files merged as prometheus_client's MultiProcessCollector merges
them (exporter/workerfiles.py: each file's keys decoded once, so a read costs
a fraction of a millisecond, not a full merge of every file held on the
event loop), so counters and histograms are the service's totals, not the
answering worker's; batched counts are flushed first (exporter/tally.py), as
a scrape does.
"""
from __future__ import annotations

import os

from exporter.tally import flush_all
from exporter.workerfiles import WorkerFiles

_readers: dict[str, WorkerFiles] = {}  # its own, not the scrape's: a scrape gives the loop back midway


def _files(path: str) -> WorkerFiles:
    files = _readers.get(path)
    if files is None:
        files = _readers[path] = WorkerFiles(path)
    return files


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def samples(metrics) -> list:
    """All samples of the given metric objects (every worker's, summed, in multiprocess mode)."""
    flush_all()
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        return _files(path).samples(dict.fromkeys(m._name for m in metrics))
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
