"""exporter/exposition.py writes what prometheus_client's encoders write: both outputs, parsed by
prometheus_client's own parsers, hold the same families, samples and exemplars."""
from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.exposition import generate_latest as reference_text
from prometheus_client.openmetrics.exposition import generate_latest as reference_om
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter import exposition
from exporter.metrics import REGISTRY


def _norm(v: float):
    return "NaN" if math.isnan(v) else v


def families(parse, body: bytes) -> list:
    out = []
    for f in parse(body.decode()):
        samples = sorted((s.name, tuple(sorted(s.labels.items())), _norm(s.value), s.timestamp,
                          (tuple(sorted(s.exemplar.labels.items())), s.exemplar.value, s.exemplar.timestamp)
                          if s.exemplar else None) for s in f.samples)
        out.append((f.name, f.type, f.documentation, getattr(f, "unit", ""), samples))
    return sorted(out)


def odd_registry() -> CollectorRegistry:
    r = CollectorRegistry()
    c = Counter("t_requests", 'doc with "quotes", a \\ backslash\nand a newline', ["route", "q"], registry=r)
    c.labels("/v1/text/summarize", 'a "quoted" \\ value\nline two').inc(3)
    c.labels("/é/ünïcode", "").inc(exemplar={"request_id": "rid-1"})
    g = Gauge("t_level", "a gauge", ["k"], registry=r, unit="bytes")
    g.labels("inf").set(float("inf"))
    g.labels("-inf").set(float("-inf"))
    g.labels("nan").set(float("nan"))
    g.labels("big").set(1.5e21)
    g.labels("small").set(-2.5e-9)
    g.labels("int").set(7)
    h = Histogram("t_duration_seconds", "a histogram", ["op"], buckets=(0.1, 1, 2.5), registry=r)
    h.labels("summarize").observe(0.05, exemplar={"request_id": "abc"})
    h.labels("summarize").observe(3)
    h.labels("qa")
    Summary("t_size_bytes", "a summary", registry=r).observe(12)
    Info("t_build", "build info", registry=r).info({"version": "1.2.3", "commit": "abc"})
    Enum("t_state", "a state set", states=["closed", "open"], registry=r).state("open")
    Gauge("t_plain", "no labels", registry=r).set(0)
    return r


@pytest.mark.parametrize("fmt", ["openmetrics", "text"])
def test_same_meaning_as_prometheus_client_on_odd_values(fmt):
    r = odd_registry()
    ours, ref, parse = ((exposition.openmetrics(r), reference_om(r), parse_om) if fmt == "openmetrics"
                        else (exposition.text(r), reference_text(r), parse_text))
    assert families(parse, ours) == families(parse, ref)
    if fmt == "openmetrics":
        assert ours.endswith(b"# EOF\n")
        assert b'request_id="abc"' in ours  # exemplars kept
    else:
        assert b"# {" not in ours


async def exercise(client) -> None:
    """A few requests of each kind through the in-process service, their counts flushed into the registry."""
    for path in ("/v1/text/operations", "/v1/health", "/internal/config", "/no/such/route"):
        await (await client.get(path)).read()
    await (await client.post("/v1/text/summarize", json={"text": "Prometheus scrapes metrics from jobs. "
                                                                 "It stores samples and runs rules."})).read()
    from exporter.tally import flush_all
    flush_all()


@pytest.mark.parametrize("fmt", ["openmetrics", "text"])
async def test_same_meaning_on_the_service_registry(fmt, kpi_client):
    await exercise(kpi_client)
    ours, ref, parse = ((exposition.openmetrics(REGISTRY), reference_om(REGISTRY), parse_om) if fmt == "openmetrics"
                        else (exposition.text(REGISTRY), reference_text(REGISTRY), parse_text))
    got = families(parse, ours)
    assert len(got) > 30
    assert got == families(parse, ref)


def test_encoder_follows_accept():
    assert exposition.encoder("application/openmetrics-text; version=1.0.0")[0] is exposition.openmetrics
    assert exposition.encoder("text/plain")[0] is exposition.text
    assert exposition.encoder("")[0] is exposition.text
