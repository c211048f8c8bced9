"""The access log (service/accesslog.py): one JSON line per request in the layout of every other log
line, written in batches of whole lines, none lost on shutdown."""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import re
import select
import threading
import time
import unittest.mock
import urllib.request

import hypothesis
from hypothesis import strategies as st

from service import accesslog
from service.accesslog import AccessLog
from service.log import JsonFormatter, request_id_var
from tests.helpers import API_KEY


def _line(al: AccessLog, method: str, path: str, status: int, rid: str, seconds: float,
          key_name: str | None = None) -> None:
    """What the errors layer hands over for a request to `path` (as sent) that took `seconds` until now."""
    al.add(method, path, status, rid, key_name, time.perf_counter_ns() - round(seconds * 1e9))


def _read_all(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


def test_a_line_has_the_layout_and_values_of_a_formatted_log_record():
    r, w = os.pipe()
    try:
        al = AccessLog(fd=w)
        path = '/v1/text/"odd"\\path/é'  # as aiohttp's request.path has it: decoded, without the query
        before = time.time()
        _line(al, "POST", "/v1/text/%22odd%22%5Cpath/%C3%A9?q=1", 422, "rid-1", 0.0012345, "ci-bot")
        after = time.time()
        al.flush()
        line = _read_all(r).decode()
    finally:
        os.close(r)
        os.close(w)
    assert line.endswith("}\n") and line.count("\n") == 1
    doc = json.loads(line)
    # what service/log.py's formatter makes of the same record, for comparison
    rec = logging.LogRecord("service.access", logging.INFO, __file__, 1, "%s %s %s", ("POST", path, 422), None)
    for k, v in {"key_name": "ci-bot", "status": 422, "method": "POST", "path": path, "duration_ms": 1.234}.items():
        setattr(rec, k, v)
    token = request_id_var.set("rid-1")
    try:
        ref = json.loads(JsonFormatter().format(rec))
    finally:
        request_id_var.reset(token)
    assert list(doc) == list(ref)
    assert {k: v for k, v in doc.items() if k not in ("time", "duration_ms")} == {
        k: v for k, v in ref.items() if k not in ("time", "duration_ms")}
    assert 1.234 <= doc["duration_ms"] < 1000 and re.search(r'"duration_ms": \d+\.\d{3}}$', line)  # until added
    stamp = datetime.datetime.strptime(doc["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert before - 0.001 <= stamp.timestamp() <= after + 0.001  # when it was added, not when rendered
    assert doc["time"].endswith("Z") and len(doc["time"]) == len(ref["time"])
    assert line.isascii()  # non-ASCII is escaped, as json.dumps does


@contextlib.contextmanager
def _writes():
    """Every os.write's bytes, while it lasts."""
    writes: list[bytes] = []
    real = os.write

    def spy(fd, data):
        writes.append(bytes(data))
        return real(fd, data)
    os.write = spy
    try:
        yield writes
    finally:
        os.write = real


async def test_a_batch_is_written_in_whole_lines_no_write_larger_than_pipe_buf():
    r, w = os.pipe()
    os.set_blocking(r, False)
    al = AccessLog(fd=w)
    with _writes() as writes:
        for i in range(200):
            _line(al, "GET", f"/v1/text/operations?i={i}", 200, f"{i:032x}", 0.001)
        assert al.pending() == 200  # nothing written yet: batched
        al.flush()
    data = b""
    while True:
        try:
            chunk = os.read(r, 1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.close(w)
    assert len(writes) > 1
    assert all(len(c) <= select.PIPE_BUF and c.endswith(b"\n") for c in writes)
    lines = data.decode().splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == [f"{i:032x}" for i in range(200)]


def test_every_request_is_logged_once_and_none_is_lost_on_shutdown(service_factory):
    svc = service_factory(LOG_LEVEL="INFO")
    n = 120
    for i in range(n):
        req = urllib.request.Request(f"{svc.url}/v1/text/operations", headers={"X-API-Key": API_KEY,
                                                                                "X-Request-ID": f"req-{i}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    svc.stop()  # SIGTERM right after the last answer: its line may still be in the buffer
    lines = [json.loads(x) for x in svc.output().splitlines() if '"service.access"' in x]
    ids = [d["request_id"] for d in lines if d["path"] == "/v1/text/operations"]
    assert ids == [f"req-{i}" for i in range(n)]
    assert all(d["status"] == 200 and d["method"] == "GET" and d["duration_ms"] >= 0 for d in lines)


def test_access_log_off_writes_no_line(service_factory):
    svc = service_factory(LOG_LEVEL="INFO", ACCESS_LOG="false")
    req = urllib.request.Request(f"{svc.url}/v1/text/operations", headers={"X-API-Key": API_KEY})
    urllib.request.urlopen(req, timeout=10).read()
    svc.stop()
    assert '"service.access"' not in svc.output()


def test_a_line_longer_than_a_chunk_is_written_whole_between_its_neighbours():
    r, w = os.pipe()
    os.set_blocking(r, False)
    al = AccessLog(fd=w)
    paths = ["/short", "/" + "x" * (select.PIPE_BUF + 500), "/after"]
    for i, p in enumerate(paths):
        _line(al, "GET", p, 404, f"{i:032x}", 0.001)
    al.flush()
    data = os.read(r, 1 << 20)
    os.close(r)
    os.close(w)
    assert [json.loads(x)["path"] for x in data.decode().splitlines()] == paths


async def test_a_batch_goes_to_a_regular_file_in_one_write(tmp_path):
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    al = AccessLog(fd=fd)
    with _writes() as writes:
        for i in range(200):
            _line(al, "GET", "/v1/text/operations", 200, f"{i:032x}", 0.001)
        al.flush()
    os.close(fd)
    assert len(writes) == 1 and len(writes[0]) > select.PIPE_BUF
    assert [json.loads(x)["request_id"] for x in path.read_text().splitlines()] == [f"{i:032x}" for i in range(200)]


def _drain_pipe(r: int, out: list) -> None:
    while True:
        chunk = os.read(r, 1 << 16)
        if not chunk:
            return
        out.append(chunk)


async def test_a_stuck_sink_blocks_the_writer_thread_not_the_caller_and_loses_nothing():
    r, w = os.pipe()  # blocking, and nobody reads yet: the pipe holds 64 KiB, then a write waits
    al = AccessLog(fd=w)
    n = 3000  # ~700 KB: ten times what the pipe holds
    for i in range(n):
        _line(al, "GET", "/v1/text/operations", 200, f"{i:032x}", 0.001)
        if i % 250 == 249:
            al._batch_due()  # what the batch timer does on the event loop: it returns with the sink full
    al._batch_due()
    assert accesslog._WRITER.pending_bytes > 0  # the thread is stuck in a write, the caller went on
    assert al.memory_stats()["pending_bytes"] == accesslog._WRITER.pending_bytes  # memory-analysis shows it
    out: list[bytes] = []
    reader = threading.Thread(target=_drain_pipe, args=(r, out))
    reader.start()
    try:
        al.flush()  # waits until the thread wrote everything
    finally:
        os.close(w)
        reader.join(10)
        os.close(r)
    lines = b"".join(out).decode().splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == [f"{i:032x}" for i in range(n)]


def test_past_max_pending_the_caller_waits_for_the_sink_instead_of_dropping_lines(monkeypatch):
    monkeypatch.setattr(accesslog, "MAX_PENDING", 16 * 1024)
    r, w = os.pipe()
    al = AccessLog(fd=w)
    waits = accesslog._WRITER.waits
    out: list[bytes] = []
    reader = threading.Thread(target=_drain_pipe, args=(r, out))

    def produce():  # no event loop in this thread: each line goes to the writer at once
        for i in range(2000):
            _line(al, "GET", "/v1/text/operations", 200, f"{i:032x}", 0.001)
        al.flush()
    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(0.5)
    try:
        assert producer.is_alive()  # held back: the pipe is full and more than MAX_PENDING is waiting
    finally:
        reader.start()
        producer.join(10)
        os.close(w)
        reader.join(10)
        os.close(r)
    assert not producer.is_alive() and accesslog._WRITER.waits > waits
    lines = b"".join(out).decode().splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == [f"{i:032x}" for i in range(2000)]


async def test_after_a_slow_write_to_a_file_the_batches_go_to_the_thread_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(accesslog, "SLOW_WRITE", -1.0)  # every write counts as slow
    monkeypatch.setattr(accesslog._WRITER, "slow", False)
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    al = AccessLog(fd=fd)
    threads = accesslog._WRITER.queued
    for i in range(300):
        _line(al, "GET", "/v1/text/operations", 200, f"{i:032x}", 0.001)
        if i % 100 == 99:
            al._batch_due()
    al.flush()
    os.close(fd)
    assert accesslog._WRITER.queued - threads == 2  # the first batch written by the caller, the next two not
    assert [json.loads(x)["request_id"] for x in path.read_text().splitlines()] == [f"{i:032x}" for i in range(300)]


def test_the_service_keeps_answering_while_its_log_reader_is_stuck(tmp_path):
    """stderr into a pipe nobody reads (a stuck log driver): the pipe's 64 KiB fill after ~250 lines; the
    service answers on (the writer thread waits), and every line arrives once the reader resumes."""
    import subprocess

    from tests.helpers import PYTHON, ROOT, free_port, service_env, wait_http
    r, w = os.pipe()
    port = free_port()
    proc = subprocess.Popen([PYTHON, "-m", "service"], env=service_env(port, str(tmp_path), LOG_LEVEL="INFO"),
                            cwd=ROOT, stdout=w, stderr=w)
    os.close(w)
    out: list[bytes] = []
    reader = threading.Thread(target=_drain_pipe, args=(r, out))
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/health", proc=proc)  # its lines wait in the pipe: ~1 KB
        n = 1000  # ~250 KB of lines: four times what the pipe holds
        for i in range(n):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/text/operations",
                                         headers={"X-API-Key": API_KEY, "X-Request-ID": f"stuck-{i}"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
    finally:
        reader.start()
        proc.terminate()
        proc.wait(30)
        reader.join(30)
        os.close(r)
    ids = [json.loads(x)["request_id"] for x in b"".join(out).decode().splitlines()
           if '"service.access"' in x and "/v1/text/operations" in x]
    assert ids == [f"stuck-{i}" for i in range(n)]


def test_a_duration_has_three_decimals_as_a_float_format_gives_them():
    al = AccessLog()  # (nothing written)
    for us in (0, 5, 999, 1000, 1234, 59_999, 1_234_567):
        assert al._duration(us) == "%.3f}\n" % (us / 1000)


def _parsed_path(method: str, target: str) -> str | None:
    """request.path of `target` after the request parser the server uses (aiohttp's C one if built), None
    when it refuses the target."""
    from aiohttp.http_parser import HttpRequestParser
    loop = asyncio.new_event_loop()
    try:
        p = HttpRequestParser(unittest.mock.Mock(), loop, 2**16, max_line_size=8190, max_field_size=8190)
        try:
            messages, _, _ = p.feed_data(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        except Exception:  # refused: no request has it
            return None
        return messages[0][0].url.path
    finally:
        loop.close()


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.sampled_from(["GET", "POST", "OPTIONS", "CONNECT"]),
                  st.one_of(st.lists(st.sampled_from(list("/abc.~%2F7E?#=&+;:@") + ["%20", "%7e", "%2f", "%C3%A9"]),
                                     max_size=24).map(lambda parts: "/" + "".join(parts)),
                            st.sampled_from(["*", "h:443", "http://h/x%20y?q", "http://h:80", "https://h/a/../b",
                                             "/a#b?c", "/a?b#c"])))
def test_the_logged_path_of_a_target_is_aiohttps_request_path(method, target):
    assert _parsed_path("GET", "/v1/%7Ea%20b?x=1") == "/v1/~a b"
    path = _parsed_path(method, target)
    assert path is None or accesslog.request_path(method, target) == path


def test_many_key_names_do_not_multiply_the_rendered_shapes():
    r, w = os.pipe()
    os.set_blocking(r, False)
    al = AccessLog(fd=w, max_shapes=16)
    for i in range(40):  # forty keys on one route: one shape, the names beside it (16 kept, the rest rendered)
        _line(al, "POST", "/v1/text/summarize", 200, f"{i:032x}", 0.001, f"client-{i}")
    al.flush()
    data = os.read(r, 1 << 20)
    os.close(r)
    os.close(w)
    assert len(al._shapes) == 1 and len(al._names) == 16
    assert [json.loads(x)["key_name"] for x in data.decode().splitlines()] == [f"client-{i}" for i in range(40)]
