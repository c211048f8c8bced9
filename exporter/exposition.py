"""A faster encoder of the two exposition formats, for what exporter/handler.py collects.

prometheus_client's encoders check and escape every character of every name
and label value of every sample on every scrape (about 40 us a sample here).
The names of this exporter's metrics are fixed and its label sets repeat from
scrape to scrape, so this encoder renders a label set once and keeps it
(up to LABEL_CACHE of them), and writes each sample with one %-format.  The
output means exactly what prometheus_client's does: tests/exporter/
test_exposition.py parses both with prometheus_client's own parsers and
compares them family by family, sample by sample, exemplars included, and
`promtool check metrics` reads it.

- openmetrics(): OpenMetrics 1.0 (# HELP / # TYPE / # UNIT, exemplars on
  histogram buckets and counter totals, `# EOF`).
- text(): the Prometheus text format 0.0.4 (counters named with _total, no
  exemplars, info/stateset as gauges, unknown as untyped).
"""
from __future__ import annotations

from prometheus_client.utils import floatToGoString

LABEL_CACHE = 50_000
_labels_cache: dict[tuple, str] = {}

_TEXT_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary",
               "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}


def _esc_value(v: str) -> str:
    if "\\" in v or "\n" in v or '"' in v:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return v


def _labels(labels: dict) -> str:
    """`{a="x",b="y"}` (sorted by name, values escaped), or "" for no labels."""
    if not labels:
        return ""
    key = tuple(labels.items())
    s = _labels_cache.get(key)
    if s is None:
        s = "{" + ",".join(f'{k}="{_esc_value(v)}"' for k, v in sorted(labels.items())) + "}"
        if len(_labels_cache) >= LABEL_CACHE:
            _labels_cache.clear()
        _labels_cache[key] = s
    return s


def _value(v) -> str:
    if v.__class__ is int:
        return f"{v}.0"
    return floatToGoString(v)


def _exemplar(e) -> str:
    ts = "" if e.timestamp is None else f" {e.timestamp}"
    return f" # {_labels(e.labels) or '{}'} {_value(e.value)}{ts}"


def _help_text(doc: str) -> str:
    return doc.replace("\\", "\\\\").replace("\n", "\\n")


def openmetrics_family(m, add) -> None:
    name = m.name
    add(f"# HELP {name} {_esc_value(m.documentation)}\n# TYPE {name} {m.type}\n")
    if m.unit:
        add(f"# UNIT {name} {m.unit}\n")
    for s in m.samples:
        if s.native_histogram is not None:
            continue  # OpenMetrics 1.0 has none (prometheus_client drops them too)
        ts = "" if s.timestamp is None else f" {s.timestamp}"
        ex = _exemplar(s.exemplar) if s.exemplar else ""
        add(f"{s.name}{_labels(s.labels)} {_value(s.value)}{ts}{ex}\n")


def _text_line(s) -> str:
    ts = "" if s.timestamp is None else f" {int(float(s.timestamp) * 1000)}"
    return f"{s.name}{_labels(s.labels)} {_value(s.value)}{ts}\n"


def text_family(m, add) -> None:
    mtype = m.type
    name = m.name + "_total" if mtype == "counter" else m.name + "_info" if mtype == "info" else m.name
    doc = _help_text(m.documentation)
    add(f"# HELP {name} {doc}\n# TYPE {name} {_TEXT_TYPES.get(mtype, 'untyped')}\n")
    extra: dict[str, list[str]] = {}  # OpenMetrics-only samples: gauges of their own, after the family
    for s in m.samples:
        for suffix in ("_created", "_gsum", "_gcount"):
            if s.name == m.name + suffix:
                extra.setdefault(suffix, []).append(_text_line(s))
                break
        else:
            add(_text_line(s))
    for suffix, lines in sorted(extra.items()):
        add(f"# HELP {m.name}{suffix} {doc}\n# TYPE {m.name}{suffix} gauge\n")
        for line in lines:
            add(line)


def _encode(source, family, tail: str) -> bytes:
    out: list[str] = []
    for m in source.collect():
        family(m, out.append)
    out.append(tail)
    return "".join(out).encode()


def openmetrics(source) -> bytes:
    return _encode(source, openmetrics_family, "# EOF\n")


def text(source) -> bytes:
    return _encode(source, text_family, "")


def family_encoder(accept: str):
    """(family function, closing text, content type) for an Accept header (as choose_encoder decides)."""
    fn, content_type = encoder(accept)
    return (openmetrics_family, "# EOF\n", content_type) if fn is openmetrics else (text_family, "", content_type)


def encoder(accept: str):
    """(encode function, content type) for an Accept header, as prometheus_client's choose_encoder decides."""
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OM
    _, content_type = choose_encoder(accept)
    if content_type.startswith("application/openmetrics-text"):
        return openmetrics, OM
    return text, content_type
