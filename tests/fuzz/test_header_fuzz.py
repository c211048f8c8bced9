"""Property-based odd headers on every route: request ids, API version headers, Accept,
Accept-Encoding q-values and huge lists, keys, Content-Type.  No 5xx, the error shape,
and what the service echoes back stays bounded."""
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as S
from tests.fuzz.client import check_answer
from tests.helpers import API_KEY

HEADERS = ["X-Request-ID", "X-API-Version", "Accept", "Accept-Encoding", "X-API-Key", "Authorization",
           "Content-Type", "Origin", "X-Benchmark", "X-Forwarded-For", "Content-Encoding"]
ROUTES = [("POST", "/v1/text/summarize"), ("POST", "/v1/text/batch"), ("GET", "/v1/text/operations"),
          ("GET", "/v1/health"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/internal/config"),
          ("POST", "/internal/config/text"), ("GET", "/internal/cache/stats"), ("GET", "/v2/text/operations"),
          ("GET", "/internal/monitoring/performance"), ("POST", "/v1/text/qa"), ("GET", "/nope")]
BODY = b'{"text": "Prometheus scrapes metrics from jobs. It stores samples and evaluates rules."}'


def _value(name: str):
    if name == "Accept-Encoding":
        return S.ACCEPT_ENCODINGS
    if name == "Accept":
        return st.one_of(S.HEADER_VALUES, st.builds(lambda v: f"application/vnd.llmapi.{v}+json", S.HEADER_VALUES),
                         st.builds(lambda v: f"application/json; version={v}", S.HEADER_VALUES))
    if name == "Authorization":
        return st.one_of(S.HEADER_VALUES, st.builds(lambda v: f"Bearer {v}", S.HEADER_VALUES),
                         st.just(f"Bearer {API_KEY}"), st.just(f"bearer   {API_KEY}  "))
    return S.HEADER_VALUES


@st.composite
def header_sets(draw) -> dict:
    names = draw(st.lists(st.sampled_from(HEADERS), min_size=1, max_size=4, unique=True))
    return {n: draw(_value(n)) for n in names}


@given(route=st.sampled_from(ROUTES), headers=header_sets(), utf8=st.booleans())
def test_odd_headers(client, route, headers, utf8):
    method, path = route
    if utf8:  # the characters as UTF-8 bytes; else latin-1 (non-ASCII then is not valid UTF-8)
        headers = {k: v.encode("utf-8") for k, v in headers.items()}
    key = "X-API-Key" not in headers and "Authorization" not in headers
    body = BODY if method == "POST" else None
    hdrs = {"Content-Type": "application/json"} if method == "POST" else {}
    hdrs.update(headers)
    a = client.request(method, path, body, hdrs, key=key)
    check_answer(a, f"{method} {path} {headers}")
    assert len(a.body) < 200_000 or path in ("/openapi.json", "/metrics", "/internal/config"), a
    if a.status >= 400:
        doc = a.json()
        assert len(doc["message"]) < 600, doc
        assert all(len(str(v)) < 600 for v in doc["details"].values() if isinstance(v, str)), doc
    rid = a.headers.get("x-request-id", "")
    if a.status >= 400 and a.json()["request_id"] is None:  # refused by the HTTP parser: no request, no id
        assert a.json()["error_code"] in ("MALFORMED_REQUEST", "UNSUPPORTED_CONTENT_ENCODING"), a
    else:
        assert rid and len(rid) <= 128 and rid.isascii() and rid.isprintable(), a.headers


@pytest.mark.parametrize("value", ["gzip;q=nan", "br;q=2", "gzip;q=inf", "gzip;q=-1", "*;q=nan"])
def test_invalid_q_values_mean_not_acceptable(client, value):
    """RFC 9110 qvalues are 0..1: nan, inf, 2 and -1 do not make a coding preferred."""
    a = client.request("GET", "/openapi.json", headers={"Accept-Encoding": value})
    assert a.status == 200 and "content-encoding" not in a.headers, (value, a.headers)


def test_version_header_echo_is_bounded(client):
    a = client.request("GET", "/v1/text/operations", headers={"X-API-Version": "v1" * 3000})
    assert a.status == 400 and a.json()["error_code"] == "INVALID_API_VERSION"
    assert len(a.body) < 1000 and len(a.json()["details"]["requested"]) <= 33
    assert re.fullmatch(r"[ -~…]*", a.json()["details"]["requested"])
