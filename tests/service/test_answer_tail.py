"""The per-request tail of an answer (service/text/service.py: finish, timestamp): rendered from tables and
a once-a-millisecond stamp, it must read back as the exact values."""
from __future__ import annotations

import calendar
import json
import re
import time

from service.text import service as text_service
from service.text.service import finish, timestamp


def test_the_tail_reads_back_as_the_processing_time_the_request_id_and_now():
    for took in (0.0, 0.000045, 0.0123456, 1.5, 12.0009):
        start = time.perf_counter() - took
        before = time.time()
        doc = json.loads(finish(b'{"operation":"summarize"', True, start, "rid-1"))
        after = time.time()
        assert doc["operation"] == "summarize" and doc["cache_hit"] is True and doc["request_id"] == "rid-1"
        assert took * 1000 - 0.002 <= doc["processing_time_ms"] < took * 1000 + 50  # (whole µs, float rounding)
        stamp = doc["timestamp"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
        ms = int(stamp[-4:-1])
        secs = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        assert int(before * 1000) <= int(secs) * 1000 + ms <= int(after * 1000)


def test_a_stamp_is_rendered_again_in_the_next_millisecond(monkeypatch):
    now = [1_780_000_000.1234]
    monkeypatch.setattr(text_service.time, "time", lambda: now[0])
    assert timestamp().endswith(":40.123Z")
    now[0] += 0.0005
    assert timestamp().endswith(":40.123Z")
    now[0] += 0.001
    assert timestamp().endswith(":40.124Z")
    now[0] += 1.0
    assert timestamp().endswith(":41.124Z")
