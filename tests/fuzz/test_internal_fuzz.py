"""Property-based hostile input on every /internal route and every GET route's query string.

Bodies are drawn from the config sections (service/config/sections.py: the
schema every tuning body is validated against) with boundary, just-outside,
non-finite and wrong-type values and extra fields, and from arbitrary JSON.
A rejected body must leave the config version unchanged; an accepted one is
rolled back before the next example.  Query parameters are the ones the
handlers read (found in the source, so a new one is fuzzed too), with
non-finite, huge, negative-zero, percent-encoded and non-ASCII values.
"""
from __future__ import annotations

import pathlib
import re
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.config.sections import SECTIONS
from tests.fuzz import strategies as S
from tests.fuzz.client import check_answer

ROOT = pathlib.Path(__file__).resolve().parents[2]
_PARAM = re.compile(r'(?:query_number|_bool_query)\(request, "(\w+)"|query\.get\("(\w+)"|"(\w+)" in request\.query')


def query_params() -> list[str]:
    names = {"version"}  # versioning.query_param
    for path in [*(ROOT / "service").rglob("*.py"), ROOT / "exporter" / "handler.py"]:
        for m in _PARAM.finditer(path.read_text()):
            names.add(next(g for g in m.groups() if g))
    return sorted(names)


PARAMS = query_params()


@pytest.fixture(scope="module")
def routes(fuzz_service):
    from tests.fuzz.client import Client
    c = Client(fuzz_service.port)
    doc = c.request("GET", "/openapi.json").json()
    c.close()
    out = {"get": [], "post": []}
    for path, ops in doc["paths"].items():
        for method in ops:
            out[method].append(path)
    assert len(out["get"]) > 30 and len(out["post"]) > 40, out
    return out


def _fill(path: str, value: str) -> str:
    """A templated path ({section}, {id}, {name}) with a concrete (sometimes hostile) segment."""
    return re.sub(r"{(\w+)}", lambda m: value, path)


SEGMENTS = st.one_of(st.sampled_from(["text", "cache", "ai", "monitoring", "nope", "x" * 300, "%00", "%ED%A0%80",
                                      "..", "%2F", "summarize", "0", "-1"]),
                     st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=12))


@given(data=st.data(), segment=SEGMENTS)
def test_internal_bodies_from_the_config_sections(client, routes, data, segment):
    path = data.draw(st.sampled_from([p for p in routes["post"] if p.startswith("/internal")]))
    path = _fill(path, segment)
    name = path.rsplit("/", 1)[1] if path.startswith("/internal/config/") else None
    section = SECTIONS[name] if name in SECTIONS else SECTIONS[data.draw(st.sampled_from(sorted(SECTIONS)))]
    value = data.draw(st.one_of(S.section_body(section), S.JSON_VALUES))
    before = client.config_version()
    a = client.request("POST", path, S.dumps(value), {"Content-Type": "application/json"})
    check_answer(a, f"POST {path} {S.dumps(value)[:300]!r}")
    if a.status >= 400:
        assert client.config_version() == before, f"rejected POST {path} changed the config: {a}"
    else:
        client.restore()


@given(data=st.data(), body=st.one_of(S.deep_body(), st.sampled_from([b"", b" ", b"null", b"[]", b'"x"', b"{",
                                                                       b"{}x", b"\xff\xfe", b"\xef\xbb\xbf{}"])),
       ctype=st.sampled_from(S.CONTENT_TYPES))
def test_internal_raw_bodies(client, routes, data, body, ctype):
    path = _fill(data.draw(st.sampled_from([p for p in routes["post"] if p.startswith("/internal")])), "text")
    before = client.config_version()
    a = client.request("POST", path, body, {"Content-Type": ctype} if ctype else {})
    check_answer(a, f"POST {path} {body[:100]!r} {ctype!r}")
    if a.status >= 400:
        assert client.config_version() == before, f"rejected POST {path} changed the config: {a}"
    else:
        client.restore()


@given(data=st.data(), params=st.dictionaries(st.sampled_from(PARAMS), S.QUERY_VALUES, min_size=1, max_size=4),
       segment=SEGMENTS)
def test_query_parameters_of_every_get_route(client, routes, data, params, segment):
    path = _fill(data.draw(st.sampled_from(routes["get"])), segment)
    if path.endswith("/memory-hotspots"):
        params.pop("enable", None)  # ?enable= switches tracing on (a slow, state-changing GET; see the report)
    query = "&".join(f"{k}={quote(v, safe='%/:,+')}" for k, v in params.items())  # (a % stays: raw escapes too)
    before = client.config_version()
    a = client.request("GET", f"{path}?{query}")
    check_answer(a, f"GET {path}?{query[:300]}")
    assert client.config_version() == before, f"GET {path} changed the config: {a}"


NUMERIC = sorted({m.group(1) for p in (ROOT / "service").rglob("*.py")
                  for m in re.finditer(r'query_number\(request, "(\w+)"', p.read_text())})
BAD_NUMBERS = ("nan", "NaN", "inf", "-inf", "Infinity", "1e400", "9" * 5000, "abc", "%00", "%ED%A0%80", "")


@pytest.mark.parametrize("name", NUMERIC)
def test_numeric_query_parameters_refuse_non_finite_and_junk(client, routes, name):
    """Each numeric parameter is read by some GET route; there every bad value is a 422 naming it."""
    readers = []
    for path in routes["get"]:
        if "{" in path:
            continue
        a = client.request("GET", f"{path}?{name}=nan")
        check_answer(a, f"GET {path}?{name}=nan")
        if a.status == 422:
            readers.append(path)
    assert readers, f"no GET route refuses {name}=nan"
    for path in readers:
        for bad in BAD_NUMBERS:
            a = client.request("GET", f"{path}?{name}={bad}")
            assert a.status == 422 and a.json()["details"]["field"] == name, (path, bad, a)
