"""Batched counting (exporter/tally.py) exports exactly what direct prometheus_client calls would."""
from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from exporter.tally import HistogramTally, LiveGauge, SummaryTally, Tally, flush_all

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# on the edges, between them, below the first and beyond the last
VALUES = [0.0, 0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 0.1000001, 0.7, 1.0, 3.0, 12.5]


def _histograms():
    reg = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", ["route"], buckets=BUCKETS, registry=reg)
    batched = Histogram("batched_seconds", "b", ["route"], buckets=BUCKETS, registry=reg)
    return reg, direct, batched


def _samples(reg, name: str) -> list:
    out = []
    for fam in reg.collect():
        if fam.name == name:
            out += [(s.name.replace(name, ""), s.labels.get("le"), s.labels.get("route"), s.value)
                    for s in fam.samples if not s.name.endswith("_created")]
    return sorted(out, key=str)


def test_histogram_tally_matches_direct_observations():
    reg, direct, batched = _histograms()
    tally = HistogramTally(batched)
    for i, v in enumerate(VALUES * 3):
        route = "/a" if i % 2 else "/b"
        direct.labels(route).observe(v)
        tally.observe((route,), v)
    assert _samples(reg, "batched_seconds") != _samples(reg, "direct_seconds")  # nothing exported before a flush
    tally.flush()
    assert _samples(reg, "batched_seconds") == _samples(reg, "direct_seconds")
    tally.observe(("/a",), 0.05)
    direct.labels("/a").observe(0.05)
    flush_all()  # what GET /metrics calls first
    assert _samples(reg, "batched_seconds") == _samples(reg, "direct_seconds")


def test_tally_totals_are_exact_before_and_after_the_flush():
    reg = CollectorRegistry()
    c = Counter("things", "t", ["kind"], registry=reg)
    t = Tally(lambda k: c.labels(k))
    for k in ["a", "b", "a", "a"]:
        t.add(k)
    t.add("b", 5)
    assert t.totals() == {"a": 3, "b": 6}
    t.flush()
    assert reg.get_sample_value("things_total", {"kind": "a"}) == 3
    assert reg.get_sample_value("things_total", {"kind": "b"}) == 6
    t.add("a")
    assert t.totals() == {"a": 4, "b": 6}


async def test_pending_counts_reach_prometheus_within_the_interval():
    reg, _, batched = _histograms()
    c = Counter("ticks", "t", ["kind"], registry=reg)
    t = Tally(lambda k: c.labels(k), interval=0.05)
    h = HistogramTally(batched, interval=0.05)
    t.add("x")
    h.observe(("/x",), 0.5)
    assert reg.get_sample_value("ticks_total", {"kind": "x"}) is None
    await asyncio.sleep(0.2)  # no scrape: the loop timer flushed
    assert reg.get_sample_value("ticks_total", {"kind": "x"}) == 1
    assert reg.get_sample_value("batched_seconds_count", {"route": "/x"}) == 1
    assert reg.get_sample_value("batched_seconds_sum", {"route": "/x"}) == 0.5


def test_live_gauge_is_copied_on_flush():
    reg = CollectorRegistry()
    g = Gauge("busy", "b", registry=reg)
    live = LiveGauge(g)
    live.value += 3
    live.value -= 1
    assert reg.get_sample_value("busy") == 0
    flush_all()
    assert reg.get_sample_value("busy") == 2
    assert b"busy 2.0" in generate_latest(reg)


def test_histogram_tally_keeps_the_last_request_id_per_bucket_as_exemplar():
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
    reg, direct, batched = _histograms()
    tally = HistogramTally(batched)
    tally.observe(("/a",), 0.005, "req-1")
    tally.observe(("/a",), 0.007, "req-2")   # same bucket (le=0.01): the last one wins
    tally.observe(("/a",), 0.5, "req-3")
    tally.observe(("/a",), 0.0001)           # no id: its bucket has no exemplar
    tally.flush()
    text = openmetrics(reg).decode()
    lines = {ln.split(" ")[0]: ln for ln in text.splitlines() if ln.startswith("batched_seconds_bucket")}
    assert '# {request_id="req-2"} 0.007' in lines['batched_seconds_bucket{le="0.01",route="/a"}']
    assert '# {request_id="req-3"} 0.5' in lines['batched_seconds_bucket{le="1.0",route="/a"}']
    assert "#" not in lines['batched_seconds_bucket{le="0.001",route="/a"}']
    assert reg.get_sample_value("batched_seconds_count", {"route": "/a"}) == 4


async def test_cells_added_to_in_place_are_flushed_every_interval_and_counted_in_totals():
    reg, direct, batched = _histograms()
    c = Counter("hits", "h", ["kind"], registry=reg)
    t = Tally(lambda k: c.labels(k), interval=0.05)
    h = HistogramTally(batched, interval=0.05)
    cell, hist = t.cell("x"), h.cell(("/a",))
    for round_ in range(2):  # the second round: cells outlive a flush, and the timer runs again by itself
        for v in VALUES:
            cell[0] += 1
            i = __import__("bisect").bisect_left(h.bounds, v)
            hist[i] += 1
            hist[-1] += v
            hist[h.size + i] = (f"req-{round_}", v)
            direct.labels("/a").observe(v)
        assert t.totals() == {"x": len(VALUES) * (round_ + 1)}  # exact before the flush too
        await asyncio.sleep(0.2)  # no add(), no scrape: the periodic timer flushed
        assert reg.get_sample_value("hits_total", {"kind": "x"}) == len(VALUES) * (round_ + 1)
        assert _samples(reg, "batched_seconds") == _samples(reg, "direct_seconds")
        assert cell == [0] and hist[-1] == 0.0 and not any(hist[:h.size])
    t.close()
    h.close()
    assert t._timer is None and h._timer is None


def test_summary_tally_matches_direct_observations():
    from prometheus_client import Summary
    reg = CollectorRegistry()
    direct = Summary("direct_s", "d", ["layer"], registry=reg)
    batched = Summary("batched_s", "b", ["layer"], registry=reg)
    tally = SummaryTally(batched)
    for i, v in enumerate(VALUES):
        layer = "auth" if i % 3 else "metrics"
        direct.labels(layer).observe(v)
        tally.observe((layer,), v)
    assert _samples(reg, "batched_s") != _samples(reg, "direct_s")
    flush_all()
    assert _samples(reg, "batched_s") == _samples(reg, "direct_s")
