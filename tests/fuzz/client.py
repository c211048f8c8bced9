"""A plain HTTP/1.1 client for the fuzz tests: raw bytes in, (status, headers, body) out.

http.client sends exactly the bytes and headers given (no JSON re-encoding, no
header normalization beyond latin-1), which is what hostile input needs.  One
keep-alive connection, reopened whenever the service closes it.
"""
from __future__ import annotations

import http.client
import json

from tests.helpers import API_KEY

INPUT_ERRORS = (400, 411, 413, 415, 422)  # a client's bad input: the answer names the offending field


class Answer:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body[:300]!r}>"


class Client:
    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        self.sent = 0  # requests sent (the fuzz tests report how many cases ran)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                key: bool = True) -> Answer:
        hdrs = {"X-API-Key": API_KEY} if key else {}
        hdrs.update(headers or {})
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.putrequest(method, path, skip_accept_encoding=True)
                for k, v in hdrs.items():
                    self.conn.putheader(k, v)
                if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k in hdrs):
                    self.conn.putheader("Content-Length", str(len(body)))
                self.conn.endheaders(body)
                r = self.conn.getresponse()
                data = r.read()
                answer = Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
                if r.will_close:
                    self.close()
                self.sent += 1
                return answer
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                self.close()
                if attempt:
                    raise
            except Exception:
                self.close()
                raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, value, headers: dict | None = None) -> Answer:
        return self.request(method, path, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

    def config_version(self) -> int:
        a = self.request("GET", "/internal/config")
        assert a.status == 200, a
        return a.json()["version"]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def check_answer(a: Answer, what: str = "") -> None:
    """No 5xx; every 4xx is the JSON error shape with an error_code (and a field for input errors)."""
    assert a.status < 500, f"{what}: {a}"
    if a.status < 400:
        return
    assert a.headers.get("content-type", "").startswith("application/json"), f"{what}: {a} {a.headers}"
    doc = a.json()
    assert isinstance(doc.get("error_code"), str) and doc["error_code"], f"{what}: {a}"
    assert isinstance(doc.get("message"), str) and isinstance(doc.get("details"), dict), f"{what}: {a}"
    assert "request_id" in doc and "error" in doc, f"{what}: {a}"
    if a.status in INPUT_ERRORS:
        assert isinstance(doc["details"].get("field"), str) and doc["details"]["field"], f"{what}: {a}"
