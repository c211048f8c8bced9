"""Property-based hostile input on every /v1/text route, against a real service process.

Every answer: no 5xx, the JSON error shape with an error_code (and the field,
for input errors).  Where the policy of service/jsonbody.py applies, the exact
answer: a lone surrogate or NUL anywhere in the body is 422 INVALID_STRING
(400 INVALID_JSON when it arrives as raw, invalid UTF-8 bytes), a non-finite or
out-of-range number literal is 422 INVALID_NUMBER, nesting past the depth limit
is 400 JSON_TOO_DEEP, and a body that does not decode as its Content-Encoding
is 400 INVALID_CONTENT_ENCODING.
"""
from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from service.openapi import SCHEMAS
from service.providers.base import OPERATIONS
from tests.fuzz import strategies as S
from tests.fuzz.client import check_answer

TEXT_POSTS = [f"/v1/text/{op}" for op in OPERATIONS] + ["/v1/text/process", "/v1/text/batch"]
BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
REFUSED_LITERALS = {"NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000}


def _strings(v):
    if isinstance(v, S.Raw):
        return
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from _strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from _strings(x)


def _literals(v):
    if isinstance(v, S.Raw):
        yield str(v)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _literals(x)
    elif isinstance(v, list):
        for x in v:
            yield from _literals(x)


def expected(value, raw_bytes: bool) -> tuple[int, str] | None:
    """What the body policy says this body must get, when it says anything."""
    bad = [s for s in _strings(value) if BAD_CHAR.search(s)]
    if raw_bytes and any(re.search("[\ud800-\udfff]", s) for s in bad):
        return 400, "INVALID_JSON"
    if any(lit in REFUSED_LITERALS for lit in _literals(value)):
        return 422, "INVALID_NUMBER"
    if bad:
        return 422, "INVALID_STRING"
    return None


def post(client, path, body: bytes, **headers):
    a = client.request("POST", path, body, {"Content-Type": "application/json", **headers})
    check_answer(a, f"POST {path} {body[:200]!r} {headers}")
    return a


def assert_policy(a, want):
    if want is not None:
        assert (a.status, a.json()["error_code"]) == want, a


@given(path=st.sampled_from(TEXT_POSTS), value=S.JSON_VALUES, raw_bytes=st.booleans())
def test_arbitrary_json_values(client, path, value, raw_bytes):
    a = post(client, path, S.dumps(value, raw_bytes))
    assert_policy(a, expected(value, raw_bytes))


@given(path=st.sampled_from(TEXT_POSTS), data=st.data(), raw_bytes=st.booleans())
def test_bodies_from_the_openapi_schemas(client, path, data, raw_bytes):
    schema = SCHEMAS["BatchRequest" if path.endswith("/batch") else "TextRequest"]
    value = data.draw(S.from_schema(schema, SCHEMAS))
    a = post(client, path, S.dumps(value, raw_bytes))
    assert_policy(a, expected(value, raw_bytes))


@given(path=st.sampled_from(TEXT_POSTS), text=S.HOSTILE_TEXT | S.PLAUSIBLE_TEXT, where=st.sampled_from(
    ["text", "question", "operation", "key", "batch_text", "option_name"]))
def test_hostile_strings_in_every_field(client, path, text, where):
    base = {"text": "Prometheus scrapes metrics from jobs. It stores samples and evaluates rules."}
    if where == "key":
        base[text] = 1
    elif where == "option_name":
        base["options"] = {text: 5}
    elif where != "batch_text":
        base[where] = text
    else:
        base["text"] = text
    value = {"requests": [dict(base, operation="summarize")]} if path.endswith("/batch") else base
    a = post(client, path, S.dumps(value))
    want = expected(value, False)
    assert_policy(a, want)
    bad = BAD_CHAR.search(text)
    # the field named is where the string was (a batch item's operation is set after: the string is not sent)
    if bad is not None and want is not None:
        field = a.json()["details"]["field"]
        prefix = "requests[0]." if path.endswith("/batch") else ""
        if where in ("text", "question", "operation", "batch_text"):
            assert field == prefix + ("text" if where == "batch_text" else where), a


@given(path=st.sampled_from(TEXT_POSTS + ["/internal/config/text", "/internal/cache/configure-ttl"]),
       body=S.deep_body())
def test_deep_nesting(client, path, body):
    a = post(client, path, body)
    depth = max(body.count(b"["), body.count(b"{"))
    if body.endswith((b"]", b"}")) and depth > 32:
        assert (a.status, a.json()["error_code"]) == (400, "JSON_TOO_DEEP"), a
        assert a.json()["details"]["max_depth"] == 32


@given(path=st.sampled_from(TEXT_POSTS), ctype=st.sampled_from(S.CONTENT_TYPES),
       encoding=st.sampled_from(S.ENCODINGS), coding=st.sampled_from(S.CODINGS), batch=st.booleans())
def test_content_type_and_encoding(client, path, ctype, encoding, coding, batch):
    item = {"text": "Prometheus scrapes metrics from jobs. It stores samples and evaluates rules.",
            "operation": "summarize"}
    if not path.endswith(("/process", "/batch", "/summarize")):
        item.pop("operation")
    value = {"requests": [item]} if path.endswith("/batch") else item
    body = S.encode(S.dumps(value), coding)
    headers = {"Content-Type": ctype} if ctype else {}
    if encoding:
        headers["Content-Encoding"] = encoding
    a = client.request("POST", path, body, headers)
    check_answer(a, f"POST {path} {headers} coding={coding}")
    if "\x7f" in ctype:  # the HTTP parser refuses the header before anything else looks
        assert (a.status, a.json()["error_code"]) == (400, "MALFORMED_REQUEST"), a
        return
    declared = encoding.strip().lower()
    if declared in ("gzip", "br") and coding == "plain":
        assert (a.status, a.json()["error_code"]) == (400, "INVALID_CONTENT_ENCODING"), a
    if declared in ("x-gzip", "zstd", "compress", "gzip, br", "gzip;q=1", "unknown"):
        assert (a.status, a.json()["error_code"]) == (415, "UNSUPPORTED_CONTENT_ENCODING"), a
    if declared == coding or (declared, coding) == ("deflate", "raw-deflate"):
        assert a.status != 400 or a.json()["error_code"] != "INVALID_CONTENT_ENCODING", a
