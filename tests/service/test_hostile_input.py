"""Hostile input found by hand and by the fuzz tests (tests/fuzz): each once, exactly.

Every one of these was a 500 with a traceback in the log (or, for x-gzip, a
body silently not decoded) before service/jsonbody.py and read_request.
"""
import asyncio
import gzip
import json
import logging
import re
import zlib

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.cache.keys import KeyBuilder
from service.config.sections import SECTIONS
from service.errors import ApiError, safe_field
from service.jsonbody import decode
from service.log import JsonFormatter
from service.providers.base import TextRequest
from tests.helpers import API_KEY

TEXT = "Prometheus scrapes metrics from instrumented jobs. It stores samples and evaluates rules."


async def _error(r, status: int, code: str, field: str | None = None) -> dict:
    assert r.status == status, await r.text()
    doc = await r.json()
    assert doc["error_code"] == code, doc
    if field is not None:
        assert doc["details"]["field"] == field, doc
    return doc


async def _post(client, path: str, raw: bytes, **headers):
    return await client.post(path, data=raw, headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize("body, field", [
    (b"[" * 5000 + b"]" * 5000, "body"),
    (b'{"a":' * 3000 + b"1" + b"}" * 3000, "body"),  # past the recursion limit: the path is not known
    (b'{"text":' + b"[" * 40 + b"]" * 40 + b"}", "text"),
    (b'{"requests":[{"operation":"summarize","text":"x","options":' + b'{"a":' * 40 + b"1" + b"}" * 41 + b"]}",
     "requests"),
])
@pytest.mark.parametrize("path", ["/v1/text/summarize", "/v1/text/batch", "/internal/config/text"])
async def test_deep_json_is_400_json_too_deep(make_client, path, body, field):
    client = await make_client()
    doc = await _error(await _post(client, path, body), 400, "JSON_TOO_DEEP", field)
    assert doc["details"]["max_depth"] == 32


async def test_the_depth_limit_is_live_config(make_client):
    client = await make_client()
    item = {"operation": "summarize", "text": TEXT, "options": {"max_length": 20}}  # depth 4
    r = await client.post("/v1/text/batch", json={"requests": [item]})
    assert r.status == 200, await r.text()
    r = await client.post("/internal/config/text", json={"max_json_depth": 3})
    assert r.status == 200, await r.text()
    await _error(await client.post("/v1/text/batch", json={"requests": [item]}), 400, "JSON_TOO_DEEP", "requests")
    await _error(await client.post("/internal/config/text", json={"max_json_depth": 1}), 422, "VALIDATION_ERROR",
                 "max_json_depth")


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
async def test_a_body_that_is_not_compressed_as_it_says_is_400(make_client, encoding):
    client = await make_client()
    raw = json.dumps({"text": TEXT}).encode()
    await _error(await _post(client, "/v1/text/summarize", raw, **{"Content-Encoding": encoding}), 400,
                 "INVALID_CONTENT_ENCODING", "Content-Encoding")
    real = {"gzip": gzip.compress, "br": brotli.compress, "deflate": zlib.compress}[encoding](raw)
    r = await _post(client, "/v1/text/summarize", real, **{"Content-Encoding": encoding})  # the same connection pool
    assert r.status == 200, await r.text()
    stats = await (await client.get("/internal/middleware/compression/stats")).json()
    assert stats["requests"]["undecodable"] == 1


@pytest.mark.parametrize("encoding", ["x-gzip", "zstd"])
async def test_encodings_aiohttp_does_not_decode_are_415(make_client, encoding):
    """x-gzip used to pass the middleware and reach the handler still compressed."""
    client = await make_client()
    raw = gzip.compress(json.dumps({"text": TEXT}).encode())
    await _error(await _post(client, "/v1/text/summarize", raw, **{"Content-Encoding": encoding}), 415,
                 "UNSUPPORTED_CONTENT_ENCODING", "Content-Encoding")


@pytest.mark.parametrize("path, raw, field", [
    ("/v1/text/batch", b'{"requests":[{"operation":"summarize","text":"hello world \\ud800 text text"}]}',
     "requests[0].text"),
    ("/v1/text/summarize", b'{"text":"hello world \\udfff text text"}', "text"),
    ("/v1/text/qa", b'{"text":"hello world text text","question":"why \\ud800?"}', "question"),
    ("/v1/text/summarize", b'{"text":"hello world \\u0000 text text"}', "text"),
    ("/v1/text/summarize", b'{"text":"hello world text text","\\ud800":1}', "\\ud800"),
    ("/internal/config/ai", b'{"model":"gpt\\ud800"}', "model"),
    ("/internal/config/cors", b'{"allow_origins":["http://a\\u0000"]}', "allow_origins[0]"),
])
async def test_lone_surrogates_and_nul_are_422_naming_the_field(make_client, path, raw, field):
    client = await make_client()
    before = (await (await client.get("/internal/config")).json())["version"]
    await _error(await _post(client, path, raw), 422, "INVALID_STRING", field)
    assert (await (await client.get("/internal/config")).json())["version"] == before


async def test_a_surrogate_pair_is_a_character_not_an_error(make_client):
    client = await make_client()
    r = await _post(client, "/v1/text/summarize", json.dumps({"text": TEXT + " \U0001f600"}).encode())
    assert r.status == 200, await r.text()


async def test_a_surrogate_as_raw_bytes_is_invalid_utf8(make_client):
    client = await make_client()
    raw = '{"text": "hello world \ud800 text text"}'.encode("utf-8", "surrogatepass")
    await _error(await _post(client, "/v1/text/summarize", raw), 400, "INVALID_JSON", "body")


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b"1" + b"0" * 5000])
@pytest.mark.parametrize("path, template, field", [
    ("/v1/text/summarize", b'{"text":"hello world text text","options":{"max_length":%s}}', "options.max_length"),
    ("/v1/text/batch", b'{"requests":[{"operation":"summarize","text":"hello world text","options":{"max_length":%s}}]}',
     "requests[0].options.max_length"),
    ("/internal/config/text", b'{"max_text_length":%s}', "max_text_length"),
    ("/internal/config/ai", b'{"temperature":%s}', "temperature"),
    ("/internal/config/rollback", b'{"version":%s}', "version"),
])
async def test_non_finite_and_huge_numbers_are_422_naming_the_field(make_client, literal, path, template, field):
    client = await make_client()
    before = (await (await client.get("/internal/config")).json())["version"]
    await _error(await _post(client, path, template % literal), 422, "INVALID_NUMBER", field)
    assert (await (await client.get("/internal/config")).json())["version"] == before


async def test_negative_zero_is_an_ordinary_out_of_range_number(make_client):
    client = await make_client()
    await _error(await _post(client, "/v1/text/summarize",
                             b'{"text":"hello world text text","options":{"max_length":-0}}'),
                 422, "VALIDATION_ERROR", "options.max_length")


async def _raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("header", [b"X-API-Key: \xffk\xfe", b"Authorization: Bearer \xff\xfe"])
async def test_a_key_that_is_not_utf8_is_401(make_client, header):
    client = await make_client()
    status, doc = await _raw_request(client.server.port, b"GET /internal/config HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
    assert status == 401 and doc["error_code"], doc


@pytest.mark.parametrize("value", ["gzip;q=nan", "br;q=2", "gzip;q=inf", "*;q=nan"])
async def test_an_invalid_q_value_does_not_select_a_coding(make_client, value):
    client = await make_client()
    r = await client.get("/openapi.json", headers={"Accept-Encoding": value}, auto_decompress=False)
    assert r.status == 200 and "Content-Encoding" not in r.headers


async def test_an_over_long_version_header_is_answered_and_echoed_bounded(make_client):
    client = await make_client()
    doc = await _error(await client.get("/v1/text/operations", headers={"X-API-Version": "v1" * 3000}), 400,
                       "INVALID_API_VERSION", "header")
    assert len(doc["details"]["requested"]) <= 33 and len(doc["message"]) < 100


async def test_an_unknown_content_encoding_is_echoed_bounded(make_client):
    client = await make_client()
    doc = await _error(await _post(client, "/v1/text/summarize", b"{}", **{"Content-Encoding": "x" * 4000}), 415,
                       "UNSUPPORTED_CONTENT_ENCODING", "Content-Encoding")
    assert len(doc["message"]) < 100


@pytest.mark.parametrize("rid", ["\u00c0", "caf\u00e9-1", "a\u200bb", 'a"b', "a\\b"])
async def test_a_request_id_that_is_not_printable_ascii_or_has_a_quote_or_backslash_is_replaced(make_client, rid):
    client = await make_client()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + rid.encode() + b"\r\nConnection: close\r\n\r\n")
    await writer.drain()
    head = (await reader.read()).split(b"\r\n\r\n", 1)[0].decode("latin-1")
    writer.close()
    echoed = [line.split(": ", 1)[1] for line in head.split("\r\n") if line.lower().startswith("x-request-id:")]
    assert len(echoed) == 1 and echoed[0].isascii() and len(echoed[0]) == 32, echoed


async def test_unknown_paths_and_methods_name_their_field(make_client):
    client = await make_client()
    await _error(await client.get("/v1/text/nope"), 404, "NOT_FOUND", "path")
    await _error(await client.delete("/v1/text/summarize"), 405, "METHOD_NOT_ALLOWED", "method")


async def test_each_rejection_logs_one_line_without_traceback(make_client, capfd):
    client = await make_client(LOG_LEVEL="INFO")  # (the JSON log and the access log go to stderr)
    cases = [
        ("/v1/text/summarize", b"[" * 5000 + b"]" * 5000, {}),
        ("/v1/text/summarize", json.dumps({"text": TEXT}).encode(), {"Content-Encoding": "gzip"}),
        ("/v1/text/batch", b'{"requests":[{"operation":"summarize","text":"hello \\ud800 world text"}]}', {}),
        ("/v1/text/summarize", b'{"text":"hello world text text","options":{"max_length":NaN}}', {}),
        ("/internal/config/text", b'{"max_text_length":1' + b"0" * 5000 + b"}", {}),
    ]
    for path, raw, headers in cases:
        capfd.readouterr()
        r = await _post(client, path, raw, **headers)
        assert 400 <= r.status < 500, await r.text()
        await asyncio.sleep(0.05)  # aiohttp's own log of the connection, if any, comes after the answer
        lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
        assert len(lines) == 1, lines
        assert lines[0]["request_id"] == r.headers["X-Request-ID"] and lines[0]["status"] == r.status
        assert "traceback" not in lines[0] and lines[0]["level"] == "INFO"


# ---- units ---------------------------------------------------------------------------------------
def test_depth_limit_boundary():
    assert decode(b"[" * 32 + b"]" * 32, 32) is not None
    with pytest.raises(ApiError) as e:
        decode(b"[" * 33 + b"]" * 33, 32)
    assert e.value.error_code == "JSON_TOO_DEEP"
    assert decode(b'{"a":"' + b"[" * 100 + b'"}', 32) == {"a": "[" * 100}  # brackets inside strings do not count


def test_decode_paths_name_nested_fields():
    with pytest.raises(ApiError) as e:
        decode(b'{"a":[1,{"b":[0,"x\\u0000"]}]}', 32)
    assert e.value.details["field"] == "a[1].b[1]"
    with pytest.raises(ApiError) as e:
        decode(b'{"a":[1,{"b":[0,1e999]}]}', 32)
    assert e.value.details["field"] == "a[1].b[1]"


def test_cache_keys_and_log_lines_never_fail_on_surrogates_or_nul():
    keys = KeyBuilder(SECTIONS["cache"].defaults(), {"provider": "local", "model": "m\ud800"})
    assert keys.key_for(TextRequest("summarize", "a\ud800b\x00c", {}, None)).startswith("summarize:")
    rec = logging.LogRecord("service", logging.WARNING, __file__, 1, "bad %s", ("\ud800\x00",), None)
    line = JsonFormatter().format(rec)
    assert line.isascii() and json.loads(line)["message"] == "bad \ud800\x00"


def test_safe_field():
    assert safe_field("text") == "text"
    assert safe_field("a\ud800\x00") == "a\\ud800\\x00"
    assert safe_field("") == '""'
    assert len(safe_field("x" * 10_000)) <= 121


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(st.sampled_from(["\\", "u", "d", "8", "0", "c", "D", "\ud800", "\udbff", "\udc00", "\x00",
                                         "a", "\U0001f600", '"', "\u00e9"]), max_size=16), min_size=1, max_size=3),
       st.booleans())
def test_the_escape_filter_never_misses_a_nul_or_lone_surrogate(strings, ascii_only):
    """Whatever the backslashes and escapes around it, a string holding NUL or a lone surrogate is refused,
    and one without is accepted (the regex in front of the walk is only a filter)."""
    raw = json.dumps(strings, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if not ascii_only and any(re.search("[\ud800-\udfff]", s) for s in strings):
        return  # raw surrogate bytes: invalid UTF-8, tested above
    decoded = json.loads(raw)  # (two surrogates of a pair next to each other decode as one character)
    if any(re.search("[\x00\ud800-\udfff]", s) for s in decoded):
        with pytest.raises(ApiError) as e:
            decode(raw, 32)
        assert e.value.error_code == "INVALID_STRING"
    else:
        assert decode(raw, 32) == decoded
