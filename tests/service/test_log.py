"""A request the HTTP parser rejects: a JSON 400 and one WARNING line, neither quoting the header line that broke it."""
import json
import socket

from tests.helpers import API_KEY


def _raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        return s.recv(4096)


def test_malformed_header_is_logged_without_its_value(service_factory):
    svc = service_factory(LOG_LEVEL="WARNING")
    secret = "sk-live-NOT-IN-LOGS-0123"
    answer = _raw(svc.port, b"POST /v1/text/summarize HTTP/1.1\r\nHost: x\r\nX-API-Key: " + secret.encode()
                  + b"\x00x\r\nContent-Length: 2\r\n\r\n{}")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b" 400 " in head.split(b"\r\n", 1)[0] and b"application/json" in head
    doc = json.loads(body)
    assert doc["error_code"] == "MALFORMED_REQUEST" and doc["details"]["field"] == "request"
    rid = doc["request_id"]  # a fresh request id, in the body and the header, as on every other answer
    assert isinstance(rid, str) and len(rid) == 32 and f"X-Request-ID: {rid}".encode() in head
    assert doc["message"] == "malformed HTTP request: Invalid header value char"
    assert secret.encode() not in answer
    ok = _raw(svc.port, f"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n\r\n".encode())
    assert b" 200 " in ok.split(b"\r\n", 1)[0]  # the service goes on serving
    svc.stop()
    out = svc.output()
    assert "malformed HTTP request from 127.0.0.1: Invalid header value char (400)" in out
    assert secret not in out and "Traceback" not in out


def test_an_over_long_header_line_is_refused_without_quoting_it(service_factory):
    svc = service_factory(LOG_LEVEL="WARNING")
    secret = "sk-live-LONG-LINE-0123"
    answer = _raw(svc.port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-API-Key: " + secret.encode() + b"a" * 20000
                  + b"\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b" 400 " in head.split(b"\r\n", 1)[0]
    assert json.loads(body)["message"] == "malformed HTTP request: Got more than 8190 bytes when reading"
    svc.stop()
    assert secret not in svc.output() and secret.encode() not in answer
