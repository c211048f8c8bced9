"""WORKERS > 1: every worker's metric files (PROMETHEUS_MULTIPROC_DIR), merged as prometheus_client's
MultiProcessCollector merges them, but read incrementally.

MultiProcessCollector reads every file and json-decodes every key of every file on every scrape, then
builds a Metric and Sample objects for each entry twice over: about 30 ms a WORKERS=2 scrape here, held
on the event loop.  A file only ever grows by appending entries (a key and its value's position never
change), so here each file's new keys are decoded once, the first scrape that sees them, and one
struct.unpack_from per file reads all its values from then on (its format skips the keys).

The merge means exactly what MultiProcessCollector's does (tests/exporter/test_workerfiles.py compares the
two on files of every type and gauge mode, as they grow and as live files go):

* counters, histograms and summaries are summed over the files, in the same (glob) order;
* gauges by their mode, one per metric: sum, min, max or mostrecent (the value with the latest timestamp;
  none before a first set) drop the pid, all keeps one series per pid; the live* modes the same (their
  files of dead workers are removed, see exporter/handler.py);
* histogram buckets are summed per `le`, then accumulated in `le` order, with _count their total;
* no exemplars, no timestamps, no units (the files hold none).
"""
from __future__ import annotations

import glob
import json
import mmap
import operator
import os
import struct

from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.exposition import labels_text, openmetrics_head, text_head, value_text

_HEADER = struct.Struct("<i")
_SUM, _MIN, _MAX, _RECENT, _ALL = range(5)
_GAUGE_RULES = {"sum": _SUM, "min": _MIN, "max": _MAX, "mostrecent": _RECENT, "all": _ALL}
PARSE_STEP = 50  # entries decoded between two chances to give the event loop back


def _rule(typ: str, mode: str) -> int:
    if typ != "gauge":
        return _SUM
    return _GAUGE_RULES.get(mode[4:] if mode.startswith("live") else mode, _ALL)


class _Point:
    """One label set of a family: its plain samples and, for a histogram, its buckets (sorted by le)."""

    __slots__ = ("labels", "scalars", "buckets", "count_prefix", "getter", "kept")

    def __init__(self, labels: tuple):
        self.labels = labels
        self.getter = None  # its slots' values (operator.itemgetter), rebuilt when a slot is added
        self.kept = None    # (those values, the lines written from them, their count)
        self.scalars: list[tuple[int, str, str]] = []           # (slot, prefix, sample name)
        self.buckets: list[tuple[float, int, str]] = []         # (le, slot, prefix)
        self.count_prefix = ""


class _Family:
    __slots__ = ("name", "typ", "heads", "points", "bucket_name", "count_name")

    def __init__(self, name: str, typ: str, doc: str):
        self.name, self.typ = name, typ
        self.bucket_name, self.count_name = name + "_bucket", name + "_count"
        self.heads = (text_head(name, typ, doc), openmetrics_head(name, typ, doc))
        self.points: dict[tuple, _Point] = {}


class _File:
    """What is known of one file: how far it was decoded, the slot of each entry, the struct reading them."""

    __slots__ = ("ino", "used", "typ", "mode", "pid", "rule", "slots", "families", "parts", "end", "struct")

    def __init__(self, ino: int, name: str):
        parts = name[:-3].split("_")
        self.ino, self.used = ino, 8
        self.typ = parts[0]
        self.mode = parts[1] if self.typ == "gauge" and len(parts) > 2 else ""
        self.pid = parts[-1]
        self.rule = _rule(self.typ, self.mode)
        self.slots: list[int] = []
        self.families: set[str] = set()
        self.parts: list[str] = ["<"]
        self.end = 0
        self.struct = struct.Struct("<")


def _read(path: str) -> tuple[int, bytes]:
    """(inode, the used part of the file), as MmapedDict.read_all_values_from_file reads it."""
    with open(path, "rb") as fh:
        data = fh.read(mmap.PAGESIZE)
        used = _HEADER.unpack_from(data, 0)[0] if len(data) >= 4 else 0
        if used > len(data):
            data += fh.read(used - len(data))
        return os.fstat(fh.fileno()).st_ino, data


class WorkerFiles:
    """The merged metrics of the files in one directory, kept between scrapes."""

    def __init__(self, path: str):
        self.path = path
        self.files: dict[str, _File] = {}
        self.families: dict[str, _Family] = {}
        self.slot_of: dict[tuple, int] = {}
        self.keys: dict[str, tuple] = {}

    # ---- decoding new entries --------------------------------------------------------------------
    def _key(self, key: str) -> tuple:
        k = self.keys.get(key)
        if k is None:
            metric_name, name, labels, doc = json.loads(key)
            k = self.keys[key] = (metric_name, name, tuple(sorted(labels.items())), doc)
        return k

    def _family(self, f: _File, metric_name: str, doc: str) -> _Family:
        fam = self.families.get(metric_name)
        if fam is None:
            fam = self.families[metric_name] = _Family(metric_name, f.typ, doc)
        return fam

    def _slot(self, key: tuple) -> tuple[int, bool]:
        slot = self.slot_of.get(key)
        if slot is None:
            slot = self.slot_of[key] = len(self.slot_of)
            return slot, True
        return slot, False

    def _entry(self, f: _File, key: str) -> int:
        metric_name, name, labels, doc = self._key(key)
        fam = self._family(f, metric_name, doc)
        f.families.add(metric_name)
        if f.typ == "gauge":
            labels = labels + (("pid", f.pid),)
            if f.rule != _ALL:
                labels = tuple(lv for lv in labels if lv[0] != "pid")
        elif f.typ == "histogram":
            le = next((v for k, v in labels if k == "le"), None)
            if le is not None:
                without = tuple(lv for lv in labels if lv[0] != "le")
                bound = float(le)
                slot, new = self._slot((metric_name, None, without, bound))
                if new:
                    point = self._point(fam, without)
                    if not point.buckets:
                        point.count_prefix = f"{fam.name}_count{labels_text(dict(without))} "
                    prefix = f"{fam.name}_bucket{labels_text(dict(without + (('le', floatToGoString(bound)),)))} "
                    point.buckets.append((bound, slot, prefix))
                    point.buckets.sort(key=lambda b: b[0])
                    point.getter = None
                return slot
        slot, new = self._slot((metric_name, name, labels))
        if new:
            point = self._point(fam, labels)
            point.scalars.append((slot, f"{name}{labels_text(dict(labels))} ", name))
            point.getter = None
        return slot

    @staticmethod
    def _point(fam: _Family, labels: tuple) -> _Point:
        point = fam.points.get(labels)
        if point is None:
            point = fam.points[labels] = _Point(labels)
        return point

    def _decode(self, f: _File, data: bytes, used: int):
        """Decode the entries appended since the last scrape (as prometheus_client's _read_all_values)."""
        pos, n = f.used, 0
        while pos < used:
            length = _HEADER.unpack_from(data, pos)[0]
            if length + pos > used:
                raise RuntimeError(f"metric file {self.path} is corrupted: an entry ends beyond its used size")
            key = data[pos + 4:pos + 4 + length].decode("utf-8")
            pos += 4 + length + (8 - (length + 4) % 8)
            f.slots.append(self._entry(f, key))
            f.parts.append(f"{pos - f.end}x{'dd' if f.rule == _RECENT else 'd8x'}" if pos > f.end else
                           ("dd" if f.rule == _RECENT else "d8x"))
            pos += 16
            f.end = pos
            n += 1
            if n % PARSE_STEP == 0:
                yield 0
        f.used = used
        if n:
            f.struct = struct.Struct("".join(f.parts))

    # ---- one scrape ------------------------------------------------------------------------------------
    def read(self):
        """A generator that merges every file's values: it yields between files (points to give the event
        loop back, as 0 samples) and returns (values by slot, None where absent; the names of the families present)."""
        values: list = [None] * len(self.slot_of)
        stamps: dict[int, float] = {}
        present: set[str] = set()
        seen = set()
        for path in glob.glob(os.path.join(self.path, "*.db")):
            try:
                ino, data = _read(path)
            except FileNotFoundError:  # a dead worker's live gauges, removed since the glob
                continue
            seen.add(path)
            f = self.files.get(path)
            used = _HEADER.unpack_from(data, 0)[0] if len(data) >= 4 else 0
            if f is None or f.ino != ino or used < f.used:
                f = self.files[path] = _File(ino, os.path.basename(path))
            if used > f.used:
                yield from self._decode(f, data, used)
                if len(values) < len(self.slot_of):
                    values.extend([None] * (len(self.slot_of) - len(values)))
            _merge(f, f.struct.unpack_from(data, 0), values, stamps)
            present |= f.families
            yield 0
        for path in [p for p in self.files if p not in seen]:
            del self.files[path]
        return values, present

    def render(self, values: list, present: set, om: bool, add):
        """Write the merged families; yields each one's sample count."""
        for metric_name, fam in self.families.items():
            if metric_name not in present:
                continue
            add(fam.heads[om])
            n = 0
            for point in fam.points.values():
                getter = point.getter
                if getter is None:
                    slots = [slot for _, slot, _ in point.buckets] + [slot for slot, _, _ in point.scalars]
                    getter = point.getter = operator.itemgetter(*slots, slots[0])  # (always a tuple)
                key, kept = getter(values), point.kept
                if kept is None or kept[0] != key:
                    lines = [f"{prefix}{value_text(v)}\n" for prefix, _, _, v in _present(fam, point, values)]
                    kept = point.kept = (key, "".join(lines), len(lines))
                add(kept[1])
                n += kept[2]
            yield n


    def samples(self, names) -> list:
        """prometheus_client Samples of the families named (metric names, as MultiProcessCollector's), read now."""
        gen = self.read()
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            values, present = stop.value
        out = []
        for metric_name in names:
            fam = self.families.get(metric_name)
            if fam is None or metric_name not in present:
                continue
            for point in fam.points.values():
                labels = dict(point.labels)
                for _, name, bound, v in _present(fam, point, values):
                    out.append(Sample(name, labels if bound is None else {**labels, "le": floatToGoString(bound)}, v))
        return out


def _present(fam: _Family, point: _Point, values: list):
    """(prefix, sample name, le or None, value) of each sample of a point present in `values`: its buckets
    accumulated in `le` order, then their total as _count, then its other samples."""
    if point.buckets:
        acc, any_bucket, name = 0.0, False, fam.bucket_name
        for bound, slot, prefix in point.buckets:
            v = values[slot]
            if v is not None:
                acc += v
                any_bucket = True
                yield prefix, name, bound, acc
        if any_bucket:
            yield point.count_prefix, fam.count_name, None, acc
    for slot, prefix, name in point.scalars:
        v = values[slot]
        if v is not None:
            yield prefix, name, None, v


def _merge(f: _File, raw: tuple, values: list, stamps: dict) -> None:
    rule, slots = f.rule, f.slots
    if rule == _SUM:
        for s, v in zip(slots, raw):
            c = values[s]
            values[s] = 0.0 + v if c is None else c + v
    elif rule == _RECENT:
        it = iter(raw)
        for s, v, t in zip(slots, it, it):
            if stamps.get(s, 0.0) < t:
                values[s] = v
                stamps[s] = t
    elif rule == _MIN:
        for s, v in zip(slots, raw):
            c = values[s]
            if c is None or v < c:
                values[s] = v
    elif rule == _MAX:
        for s, v in zip(slots, raw):
            c = values[s]
            if c is None or v > c:
                values[s] = v
    else:
        for s, v in zip(slots, raw):
            values[s] = v
