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


def labels_text(labels: dict) -> str:
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


_NEG_INF = float("-inf")


def value_text(v) -> str:
    """A sample value as Go writes it (prometheus_client's floatToGoString, with a fast path: below 1e6 a
    float's repr is already Go's text, and -Inf, NaN and large values take the general path)."""
    if v.__class__ is float:
        if _NEG_INF < v < 1e6:
            return repr(v)
    elif v.__class__ is int:
        return f"{v}.0"
    return floatToGoString(v)


def exemplar_text(e) -> str:
    ts = "" if e.timestamp is None else f" {e.timestamp}"
    return f" # {labels_text(e.labels) or '{}'} {value_text(e.value)}{ts}"


def _help_text(doc: str) -> str:
    return doc.replace("\\", "\\\\").replace("\n", "\\n")


def openmetrics_head(name: str, mtype: str, doc: str, unit: str = "") -> str:
    """The # HELP / # TYPE (/ # UNIT) lines of a family in OpenMetrics."""
    head = f"# HELP {name} {_esc_value(doc)}\n# TYPE {name} {mtype}\n"
    return head + f"# UNIT {name} {unit}\n" if unit else head


def text_head(name: str, mtype: str, doc: str) -> str:
    """The # HELP / # TYPE lines of a family in the text format (a counter's family name ends in _total)."""
    name = name + "_total" if mtype == "counter" else name + "_info" if mtype == "info" else name
    return f"# HELP {name} {_help_text(doc)}\n# TYPE {name} {_TEXT_TYPES.get(mtype, 'untyped')}\n"


def openmetrics_family(m, add) -> None:
    add(openmetrics_head(m.name, m.type, m.documentation, m.unit))
    for s in m.samples:
        if s.native_histogram is not None:
            continue  # OpenMetrics 1.0 has none (prometheus_client drops them too)
        ts = "" if s.timestamp is None else f" {s.timestamp}"
        ex = exemplar_text(s.exemplar) if s.exemplar else ""
        add(f"{s.name}{labels_text(s.labels)} {value_text(s.value)}{ts}{ex}\n")


def _text_line(s) -> str:
    ts = "" if s.timestamp is None else f" {int(float(s.timestamp) * 1000)}"
    return f"{s.name}{labels_text(s.labels)} {value_text(s.value)}{ts}\n"


def text_family(m, add) -> None:
    add(text_head(m.name, m.type, m.documentation))
    doc = _help_text(m.documentation)
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


def choose(accept: str) -> tuple[bool, str]:
    """(OpenMetrics?, content type) for an Accept header, as prometheus_client's choose_encoder decides."""
    fn, content_type = encoder(accept)
    return fn is openmetrics, content_type


def encoder(accept: str):
    """(encode function, content type) for an Accept header, as prometheus_client's choose_encoder decides."""
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OM
    _, content_type = choose_encoder(accept)
    if content_type.startswith("application/openmetrics-text"):
        return openmetrics, OM
    return text, content_type
