"""Compression: negotiation by q-values, the bytes each algorithm produces, request bodies and bombs."""
import gzip
import json
import zlib

import aiohttp
import brotli
import pytest

from service.middleware.compression import compress, negotiate, parse_accept_encoding
from tests.helpers import API_KEY

ALL = frozenset({"br", "gzip", "deflate"})


@pytest.mark.parametrize("header, preferred, expected", [
    ("gzip", "gzip", "gzip"),
    ("br", "gzip", "br"),
    ("deflate", "gzip", "deflate"),
    ("gzip, deflate, br", "gzip", "gzip"),          # tie: the configured preference
    ("gzip, deflate, br", "br", "br"),
    ("gzip;q=0.5, br;q=0.9", "gzip", "br"),          # q wins over preference
    ("br;q=0.1, gzip;q=0.2, deflate;q=0.3", "br", "deflate"),
    ("gzip;q=0, br;q=0", "gzip", None),              # explicitly refused
    ("identity", "gzip", None),
    ("*", "deflate", "deflate"),
    ("*;q=0.5, gzip;q=0", "gzip", "br"),             # star covers the unlisted ones
    ("x-gzip", "gzip", "gzip"),
    ("GZIP;Q=1.0", "gzip", "gzip"),
    ("gzip;q=abc, br", "gzip", "br"),                # a malformed q is q=0
    ("gzip;q=nan, br;q=0.1", "gzip", "br"),          # so are non-finite and out-of-range ones
    ("gzip;q=inf", "gzip", None),
    ("br;q=2, gzip;q=0.5", "br", "gzip"),
    ("gzip;q=-1", "gzip", None),
    (",".join(["identity"] * 64 + ["gzip"]), "gzip", None),  # only the first 64 codings are read
    ("", "gzip", None),
])
def test_negotiation(header, preferred, expected):
    assert negotiate(header, ALL, preferred) == expected


def test_negotiation_respects_allowed():
    assert negotiate("br, gzip;q=0.5", frozenset({"gzip"}), "br") == "gzip"
    assert negotiate("br", frozenset({"gzip"}), "gzip") is None


def test_parse_accept_encoding():
    assert parse_accept_encoding("gzip;q=0.8, br , deflate;q=2") == {"gzip": 0.8, "br": 1.0, "deflate": 0.0}


@pytest.mark.parametrize("alg, decode", [
    ("gzip", gzip.decompress), ("deflate", zlib.decompress), ("br", brotli.decompress)])
@pytest.mark.parametrize("level", [1, 6, 9])
def test_algorithm_bytes(alg, decode, level):
    body = json.dumps({"text": "the quick brown fox " * 200}).encode()
    out = compress(alg, body, level)
    assert decode(out) == body
    assert len(out) < len(body) / 5
    if alg == "gzip":
        assert out[:2] == b"\x1f\x8b"          # gzip container
    if alg == "deflate":
        assert out[0] & 0x0F == 8             # zlib header (RFC 1950): HTTP 'deflate'


async def _raw(client, path, accept_encoding=None, method="GET", **kw):
    """Request without the client's automatic decoding, returns (response, raw bytes)."""
    headers = {"X-API-Key": API_KEY}
    if accept_encoding is not None:
        headers["Accept-Encoding"] = accept_encoding
    headers.update(kw.pop("headers", {}))
    async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("Accept-Encoding",)) as s:
        async with s.request(method, client.make_url(path), headers=headers, **kw) as r:
            return r, await r.read()


@pytest.mark.parametrize("accept, expected, decode", [
    ("br", "br", brotli.decompress), ("gzip", "gzip", gzip.decompress), ("deflate", "deflate", zlib.decompress),
    ("gzip;q=0.2, br;q=0.8", "br", brotli.decompress)])
async def test_responses_are_compressed_by_negotiation(make_client, accept, expected, decode):
    client = await make_client()
    plain_r, plain = await _raw(client, "/internal/config")
    assert "Content-Encoding" not in plain_r.headers
    assert len(plain) > 2048
    r, raw = await _raw(client, "/internal/config", accept)
    assert r.status == 200
    assert r.headers["Content-Encoding"] == expected
    assert "Accept-Encoding" in r.headers["Vary"]
    assert int(r.headers["Content-Length"]) == len(raw) < len(plain)
    doc = json.loads(decode(raw))
    assert doc["sections"] == json.loads(plain)["sections"]


async def test_minimum_size_exclusions_and_refusals(make_client):
    client = await make_client(COMPRESSION_MINIMUM_SIZE="1000000")
    r, raw = await _raw(client, "/internal/config", "gzip")
    assert "Content-Encoding" not in r.headers                      # below the minimum
    r = await client.post("/internal/middleware/compression/optimize",
                          json={"minimum_size": 0, "exclude_content_types": ["application/*"]})
    assert r.status == 200, await r.text()
    r, raw = await _raw(client, "/internal/config", "gzip")
    assert "Content-Encoding" not in r.headers                      # excluded family
    r = await client.post("/internal/middleware/compression/optimize", json={"exclude_content_types": []})
    r, raw = await _raw(client, "/internal/config", "gzip;q=0, identity")
    assert "Content-Encoding" not in r.headers                      # nothing acceptable
    r, raw = await _raw(client, "/internal/config", "gzip")
    assert r.headers["Content-Encoding"] == "gzip"
    # only when smaller: a tiny body with minimum 0 stays as it is
    r, raw = await _raw(client, "/v1/text/operations", "gzip", headers={})
    r2, raw2 = await _raw(client, "/openapi.json", "gzip")
    assert r2.headers.get("Content-Encoding") == "gzip"
    stats = await (await client.get("/internal/middleware/compression/stats")).json()
    assert stats["responses_compressed"] >= 2
    assert 0 < stats["average_compression_ratio"] < 1
    assert stats["bandwidth_savings_bytes"] > 0
    assert stats["cpu_overhead_percentage"] >= 0
    assert stats["skipped"]["too_small"] >= 1 and stats["skipped"]["excluded_type"] >= 1


async def test_tiny_bodies_are_sent_as_they_are_when_compression_does_not_help(make_client):
    from service.middleware.compression import Compression
    from service.config.sections import SECTIONS
    from service.config.store import ConfigStore
    from aiohttp import web

    store = ConfigStore(SECTIONS, env={"COMPRESSION_MINIMUM_SIZE": "0"})
    comp = Compression(store)
    resp = web.Response(body=b"{}", content_type="application/json")
    assert comp.maybe_compress(resp, "gzip", store.get("compression")) is None  # (small: compressed in place)
    assert resp.body == b"{}" and "Content-Encoding" not in resp.headers
    assert comp.skipped["not_smaller"] == 1


async def test_disabled_compression(make_client):
    client = await make_client(ENABLE_GZIP="false")
    r, raw = await _raw(client, "/internal/config", "gzip, br")
    assert "Content-Encoding" not in r.headers


TEXT = "Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally."


@pytest.mark.parametrize("encoding, encode", [
    ("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress)])
async def test_compressed_request_bodies_are_decoded(make_client, encoding, encode):
    client = await make_client()
    body = encode(json.dumps({"text": " ".join([TEXT] * 6)}).encode())
    r, raw = await _raw(client, "/v1/text/summarize", method="POST", data=body,
                        headers={"Content-Encoding": encoding, "Content-Type": "application/json"})
    assert r.status == 200, raw
    assert json.loads(raw)["operation"] == "summarize"
    stats = await (await client.get("/internal/middleware/compression/stats")).json()
    assert stats["requests"]["count"] == 1
    assert stats["requests"]["decoded_bytes"] > stats["requests"]["encoded_bytes"] > 0


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_decompression_bomb_is_stopped_at_the_cap(make_client, encoding):
    client = await make_client(MAX_DECOMPRESSED_SIZE_BYTES=str(256 * 1024))
    raw_size = 64 * 1024 * 1024                                     # 64 MiB of zeros
    zeros = b"\0" * raw_size
    bomb = {"gzip": lambda: gzip.compress(zeros, 9), "deflate": lambda: zlib.compress(zeros, 9),
            "br": lambda: brotli.compress(zeros, quality=5)}[encoding]()
    assert len(bomb) < raw_size / 500
    r, raw = await _raw(client, "/v1/text/summarize", method="POST", data=bomb,
                        headers={"Content-Encoding": encoding, "Content-Type": "application/json"})
    assert r.status == 413
    err = json.loads(raw)
    assert err["error_code"] in ("DECOMPRESSED_BODY_TOO_LARGE", "PAYLOAD_TOO_LARGE")
    assert err["details"]["limit_bytes"] == 256 * 1024
    assert "262144" in err["message"]
    stats = await (await client.get("/internal/middleware/compression/stats")).json()
    assert stats["requests"]["rejected"] == 1


async def test_decoded_size_also_obeys_the_request_size_limit(make_client):
    client = await make_client(MAX_JSON_SIZE_BYTES="1000")
    body = gzip.compress(json.dumps({"text": "a" * 5000}).encode())
    assert len(body) < 1000
    r, raw = await _raw(client, "/v1/text/summarize", method="POST", data=body,
                        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status == 413
    assert json.loads(raw)["details"]["limit_bytes"] == 1000


async def test_unknown_request_encoding_is_415(make_client):
    client = await make_client()
    r, raw = await _raw(client, "/v1/text/summarize", method="POST", data=b"xx",
                        headers={"Content-Encoding": "compress", "Content-Type": "application/json"})
    assert r.status == 415
    assert json.loads(raw)["details"]["field"] == "Content-Encoding"
    r = await client.post("/internal/middleware/compression/optimize", json={"decompress_requests": False})
    assert r.status == 200
    r, raw = await _raw(client, "/v1/text/summarize", method="POST", data=gzip.compress(b"{}"),
                        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status == 415
