"""exporter/direct.py writes a registry as prometheus_client's encoders do: both expositions parse to the same
families, samples and exemplars, for the wrappers it writes itself and for what it hands to collect()."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.exposition import generate_latest as reference_text
from prometheus_client.openmetrics.exposition import generate_latest as reference_om
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter import direct
from exporter.metrics import REGISTRY
from tests.exporter.test_exposition import exercise, families, odd_registry


def ours(registry, om: bool) -> tuple[bytes, int]:
    out: list[str] = []
    n = sum(direct.render([registry], om, out.append))
    return ("".join(out) + ("# EOF\n" if om else "")).encode(), n


def assert_same(registry) -> list:
    got = None
    for om, ref, parse in ((True, reference_om, parse_om), (False, reference_text, parse_text)):
        body, n = ours(registry, om)
        got = families(parse, body)
        assert got == families(parse, ref(registry)), "openmetrics" if om else "text"
        assert n == sum(len(f[4]) for f in got)
    return got


def test_same_meaning_on_odd_values_and_other_kinds():
    r = odd_registry()
    Gauge("t_fn", "a gauge with a function", registry=r).set_function(lambda: 42)
    Counter("t_exemplar_total", "a counter with an exemplar", registry=r).inc(2, exemplar={"request_id": "r-9"})
    Summary("t_own_seconds", "a labelled summary", ["layer"], registry=r).labels("auth").observe(0.25)
    assert direct.direct(r._names_to_collectors["t_requests"]) and direct.direct(r._names_to_collectors["t_own_seconds"])
    assert not direct.direct(r._names_to_collectors["t_fn"])                 # set_function: through collect()
    got = assert_same(r)
    assert {f[0]: f for f in got}["t_fn"][4][0][2] == 42.0
    assert b'request_id="r-9"' in ours(r, True)[0] and b'request_id="abc"' in ours(r, True)[0]
    assert b"# {" not in ours(r, False)[0]


def test_children_added_or_changed_between_scrapes_appear():
    r = CollectorRegistry()
    c = Counter("t_calls", "calls", ["op"], registry=r)
    h = Histogram("t_seconds", "durations", ["op"], buckets=(0.5, 1), registry=r)
    c.labels("a").inc()
    assert_same(r)
    c.labels("b").inc(4)
    h.labels("b").observe(0.7)
    got = assert_same(r)
    assert ("t_calls_total", (("op", "b"),), 4.0, None, None) in {f[0]: f for f in got}["t_calls"][4]
    h.labels("b").observe(3, exemplar={"request_id": "late"})  # a histogram child kept from the last scrape changes
    got = assert_same(r)
    assert ("t_seconds_count", (("op", "b"),), 2.0, None, None) in {f[0]: f for f in got}["t_seconds"][4]
    assert b'request_id="late"' in ours(r, True)[0]


@pytest.mark.parametrize("om", [True, False])
async def test_same_meaning_on_the_service_registry(om, kpi_client):
    await exercise(kpi_client)
    got = assert_same(REGISTRY)
    assert len(got) > 30
    assert sum(direct.direct(c) for c in direct.collectors(REGISTRY)) > 30  # the service's are written directly
