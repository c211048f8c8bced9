"""What this machine does to code that has not run for a while: the same small piece of Python work
(a JSON round trip and a 50-key dict, ~25 µs) timed back to back, after 2 ms and 50 ms asleep, and
after 50 ms of busy-waiting in the same process (no sleep, no wake-up: only other code running).

On the 2-core VM of 2026-12-02 the unit took ~27 µs back to back and ~150 µs after 50 ms either
asleep or busy-waiting: its code and data had left the CPU's caches, whether or not the vCPU
idled.  The extra is paid once per piece of code per wake-up, in proportion to how much distinct code
and data it touches, which is why a proxy whose upstream answers after 50 ms adds more than one whose
upstream answers at once, and a small C relay (bench/relay.py) almost nothing either way."""
from __future__ import annotations

import json
import time

_DOC = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}] * 2, "temperature": 0.0}


def _unit() -> None:
    json.loads(json.dumps(_DOC))
    sorted({str(i): i for i in range(50)}.items())


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _timed(before, reps: int) -> float:
    """The median µs of one unit run right after before()."""
    out = []
    for _ in range(reps):
        before()
        t = time.perf_counter()
        _unit()
        out.append(time.perf_counter() - t)
    out.sort()
    return round(out[len(out) // 2] * 1e6, 1)


def probe(reps: int = 40) -> dict:
    for _ in range(200):
        _unit()
    return {"hot_us": _timed(lambda: None, reps * 5),
            "after_sleep_2ms_us": _timed(lambda: time.sleep(0.002), reps),
            "after_sleep_50ms_us": _timed(lambda: time.sleep(0.05), reps),
            "after_busy_50ms_us": _timed(lambda: _busy(0.05), reps)}
