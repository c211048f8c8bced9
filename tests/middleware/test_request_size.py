"""Request size limits: from Content-Length before reading, while streaming, per content type."""
import asyncio
import json

import pytest

from service.middleware.request_size import classify
from tests.helpers import API_KEY

TEXT = "Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally."


@pytest.mark.parametrize("ctype, cls", [
    ("application/json", "json"), ("application/json; charset=utf-8", "json"), ("application/problem+json", "json"),
    ("", "json"), ("application/x-www-form-urlencoded", "form"), ("multipart/form-data; boundary=x", "file"),
    ("application/octet-stream", "streaming"), ("application/x-ndjson", "streaming"), ("text/plain", "other")])
def test_classify(ctype, cls):
    assert classify(ctype) == cls


async def _exchange(port: int, head: bytes, body: bytes = b"", read_timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """Raw HTTP/1.1: send head (+ body), read one response; returns (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        status_line = await asyncio.wait_for(reader.readline(), read_timeout)
        headers = {}
        while True:
            line = await asyncio.wait_for(reader.readline(), read_timeout)
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        data = await asyncio.wait_for(reader.readexactly(n), read_timeout) if n else b""
        return int(status_line.split()[1]), headers, data
    finally:
        writer.close()


def _head(path: str, ctype: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: {ctype}\r\n{extra}\r\n").encode()


async def test_content_length_over_limit_is_refused_before_the_body_is_sent(make_client):
    client = await make_client(MAX_JSON_SIZE_BYTES="4096")
    # only the head: the server answers without waiting for a single body byte
    status, headers, body = await _exchange(client.port, _head("/v1/text/summarize", "application/json",
                                                               "Content-Length: 104857600\r\n"))
    assert status == 413
    err = json.loads(body)
    assert err["error_code"] == "PAYLOAD_TOO_LARGE"
    assert err["details"]["limit_bytes"] == 4096 and err["details"]["content_class"] == "json"
    assert err["details"]["checked"] == "Content-Length"
    assert "4096" in err["message"]
    assert headers.get("connection", "").lower() == "close"


async def test_limit_is_exact(make_client):
    client = await make_client(MAX_JSON_SIZE_BYTES="300")
    ok = json.dumps({"text": TEXT}).encode()
    pad = 300 - len(ok)
    at_limit = json.dumps({"text": TEXT + " " * pad}).encode()
    assert len(at_limit) == 300
    r = await client.post("/v1/text/summarize", data=at_limit, headers={"Content-Type": "application/json"})
    assert r.status == 200
    r = await client.post("/v1/text/summarize", data=at_limit + b" ", headers={"Content-Type": "application/json"})
    assert r.status == 413


async def test_chunked_body_is_stopped_while_streaming(make_client):
    client = await make_client(MAX_JSON_SIZE_BYTES="20000")

    async def gen():
        yield b'{"text": "'
        for _ in range(100):
            yield b"a" * 1000
        yield b'"}'

    r = await client.post("/v1/text/summarize", data=gen(), headers={"Content-Type": "application/json"})
    assert r.status == 413
    err = await r.json()
    assert err["details"]["checked"] == "while reading"
    assert err["details"]["limit_bytes"] == 20000
    stats = await (await client.get("/internal/middleware/request-size/stats")).json()
    assert stats["rejected_while_streaming"] == 1
    # a small chunked body is fine
    async def small():
        yield json.dumps({"text": TEXT}).encode()
    r = await client.post("/v1/text/summarize", data=small(), headers={"Content-Type": "application/json"})
    assert r.status == 200


async def test_chunked_raw_and_streaming_switch(make_client):
    client = await make_client(MAX_JSON_SIZE_BYTES="2000")
    chunk = b"a" * 1500
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    status, _, data = await _exchange(client.port, _head("/v1/text/summarize", "application/json",
                                                         "Transfer-Encoding: chunked\r\n"), body)
    assert status == 413
    r = await client.post("/internal/middleware/request-size/optimize", json={"enable_streaming": False})
    assert r.status == 200
    status, _, data = await _exchange(client.port, _head("/v1/text/summarize", "application/json",
                                                         "Transfer-Encoding: chunked\r\n"), body)
    assert status == 411
    assert json.loads(data)["details"]["field"] == "Content-Length"


async def test_lying_content_length_cannot_smuggle_a_bigger_body(make_client):
    client = await make_client(MAX_JSON_SIZE_BYTES="2000")
    real = json.dumps({"text": "b" * 50_000}).encode()
    # claims 100 bytes, sends 50 kB: only the 100 bytes are the body (truncated JSON) and the rest is not a
    # valid next request (the parser answers 400 and closes); nothing above the limit reaches a handler
    status, _, data = await _exchange(client.port, _head("/v1/text/summarize", "application/json",
                                                         "Content-Length: 100\r\n"), real)
    assert status == 400
    stats = await (await client.get("/internal/middleware/request-size/stats")).json()
    assert stats["by_content_class"]["json"]["max_seen_bytes"] <= 2000


async def test_claims_more_than_it_sends_within_the_limit(make_client):
    client = await make_client(MAX_JSON_SIZE_BYTES="2000")
    body = json.dumps({"text": TEXT}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(_head("/v1/text/summarize", "application/json", "Content-Length: 1500\r\n") + body)
    await writer.drain()
    writer.write_eof()  # the rest never comes: the server sees the body end early and answers 4xx or closes
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert line == b"" or int(line.split()[1]) < 500


@pytest.mark.parametrize("ctype, env, data", [
    ("application/x-www-form-urlencoded", {"MAX_FORM_SIZE_BYTES": "100"}, b"a=" + b"x" * 200),
    ("application/octet-stream", {"MAX_STREAMING_SIZE_BYTES": "100"}, b"\0" * 200),
    ("text/plain", {"MAX_REQUEST_SIZE_BYTES": "100"}, b"x" * 200),
])
async def test_limits_per_content_type(make_client, ctype, env, data):
    client = await make_client(**env)
    r = await client.post("/v1/text/summarize", data=data, headers={"Content-Type": ctype})
    assert r.status == 413
    assert (await r.json())["details"]["limit_bytes"] == 100
    # a json body of the same size passes the (larger) json limit
    r = await client.post("/v1/text/summarize", json={"text": TEXT})
    assert r.status == 200


async def test_check_before_the_handler(make_client):
    client = await make_client(MAX_JSON_SIZE_BYTES="2000", REQUEST_SIZE_CHECK_ASYNC="false")

    async def gen():
        for _ in range(10):
            yield b"a" * 1000

    r = await client.post("/v1/text/summarize", data=gen(), headers={"Content-Type": "application/json"})
    assert r.status == 413
    r = await client.post("/v1/text/summarize", json={"text": TEXT})
    assert r.status == 200


async def test_limits_change_live_and_disable(make_client):
    client = await make_client()
    big = json.dumps({"text": "c" * 5000}).encode()
    r = await client.post("/internal/middleware/request-size/optimize", json={"progressive_limits": {"json": 1024}})
    assert r.status == 200 and r.headers
    assert (await r.json())["config"]["max_json_size"] == 1024
    r = await client.post("/v1/text/summarize", data=big, headers={"Content-Type": "application/json"})
    assert r.status == 413
    await client.post("/internal/config/request_size", json={"enabled": False})
    r = await client.post("/v1/text/summarize", data=big, headers={"Content-Type": "application/json"})
    assert r.status == 200


async def test_chunk_size_is_the_read_size_of_the_check_before_the_handler(make_client):
    """request_size.chunk_size (the guide's request-size/optimize sets it) is read: a body checked before
    the handler is read that many bytes at a time, so an oversized one is refused within one chunk."""
    client = await make_client(REQUEST_SIZE_CHECK_ASYNC="false")
    body = json.dumps({"text": TEXT + " " + "word " * 1900}).encode()  # about 9.6 KiB

    async def reads() -> int:
        return (await (await client.get("/internal/middleware/request-size/stats")).json())["checked_before_handler"]["reads"]

    r = await client.post("/internal/middleware/request-size/optimize", json={"chunk_size": 1024})
    assert r.status == 200
    before = await reads()
    r = await client.post("/v1/text/summarize", data=body, headers={"Content-Type": "application/json"})
    assert r.status == 200  # the body reached the handler whole
    assert await reads() - before >= len(body) // 1024
    r = await client.post("/internal/middleware/request-size/optimize", json={"chunk_size": 65536})
    before = await reads()
    r = await client.post("/v1/text/summarize", data=body, headers={"Content-Type": "application/json"})
    assert r.status == 200
    assert await reads() - before <= 2


def test_a_body_that_stalls_gets_408_and_the_connection_closes(service_factory):
    """A client that sends part of its body and stops holds the request only for
    request_size.body_read_timeout_seconds, then gets 408 REQUEST_TIMEOUT."""
    import json as _json
    import socket

    from tests.helpers import API_KEY as KEY
    svc = service_factory(BODY_READ_TIMEOUT_SECONDS="0.5")
    with socket.create_connection(("127.0.0.1", svc.port), timeout=20) as s:
        s.sendall(b"POST /v1/text/summarize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-API-Key: " + KEY.encode() + b"\r\nContent-Length: 200\r\n\r\n{\"text\": \"only the start")
        data = b""
        while chunk := s.recv(65536):  # the service answers, then closes the connection
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0].split()[1] == b"408"
    doc = _json.loads(body)
    assert doc["error_code"] == "REQUEST_TIMEOUT" and doc["details"]["field"] == "body"
    svc.stop()
    assert "Traceback" not in svc.output()
