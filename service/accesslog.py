"""The access log: one JSON line per request, rendered without the logging machinery and written in batches.

A line has the fields of every other log line (service/log.py's JsonFormatter:
time, level, logger, message, request_id) and then key_name, status, method,
path and duration_ms, in the same JSON layout, so one parser reads both.  What makes it
cheap:

- no LogRecord, no formatter, no handler lock: the line is one %-format of
  values the middleware already holds.  The parts fixed by (method, path,
  status) are rendered once (for up to `max_shapes` of them, the config's
  logging.access_log_shapes, set by the errors middleware's subscriber) through the C JSON
  string encoder, so is the request id; the timestamp is formatted once a
  millisecond (its seconds part once a second), a duration once per
  microsecond value (up to DURATIONS of them);
- lines are buffered and written to stderr with one os.write per batch: on the
  next tick of the event loop after BATCH_DELAY, or at once when the buffer
  passes MAX_BUFFER bytes.  A batch is written in chunks of whole lines up to
  PIPE_BUF bytes, so lines of several worker processes sharing one pipe never
  interleave mid-line (to a regular file, in one write);
- nothing is lost on shutdown: the app's cleanup flushes (it is the last part
  to stop), and so does an atexit hook for any other exit.
"""
from __future__ import annotations

import asyncio
import atexit
import os
import select
import stat
import sys
import time
from json.encoder import encode_basestring_ascii as _q

BATCH_DELAY = 0.05            # seconds a line may wait in the buffer
MAX_BUFFER = 64 * 1024        # bytes buffered before an immediate write
CHUNK = getattr(select, "PIPE_BUF", 4096)
DURATIONS = 4096              # rendered durations kept (microseconds -> text)


class AccessLog:
    def __init__(self, fd: int | None = None, max_shapes: int = 1024):
        self.fd = fd
        self.max_shapes = max_shapes  # (method, path, status) and key names kept rendered (read on a miss only)
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sec = -1
        self._sec_text = ""
        self._ms = -1
        self._stamp = ""
        self._durations: dict[int, str] = {}
        self._chunk_fd, self._chunk_size = -1, CHUNK
        self._shapes: dict[tuple, tuple[str, str]] = {}
        self._names: dict[str | None, str] = {}
        atexit.register(self.flush)

    def _fd(self) -> int:
        return sys.stderr.fileno() if self.fd is None else self.fd

    def _name(self, key_name: str | None) -> str:
        """', "key_name": "<name>"' (a configured key's name, never the key; null before auth ran)."""
        text = ', "key_name": ' + ("null" if key_name is None else _q(key_name))
        if len(self._names) < self.max_shapes:
            self._names[key_name] = text
        return text

    def _shape(self, method: str, path: str, status: int) -> tuple[str, str]:
        """The two fixed parts of a line: before the request id, and between it and the duration."""
        head = (f'", "level": "INFO", "logger": "service.access", "message": {_q(f"{method} {path} {status}")}, '
                '"request_id": ')
        tail = f', "status": {int(status)}, "method": {_q(method)}, "path": {_q(path)}, "duration_ms": '
        if len(self._shapes) < self.max_shapes:
            self._shapes[(method, path, status)] = (head, tail)
        return head, tail

    def _duration(self, us: int) -> str:
        """duration_ms of `us` microseconds, 3 decimals; kept for the next request that takes as long (a float
        format costs 3,300 instructions, the lookup 200)."""
        if len(self._durations) >= DURATIONS:
            self._durations.clear()
        text = self._durations[us] = "%.3f" % (us / 1000)
        return text

    def bound(self, max_shapes: int) -> None:
        """A new bound (a config change, not per request): a lowered one drops the newest beyond it."""
        self.max_shapes = max_shapes
        for table in (self._shapes, self._names):
            for k in list(table)[max_shapes:]:
                del table[k]

    def memory_stats(self) -> dict:
        """What memory-analysis reports for the access log's rendered parts."""
        return {"entries": len(self._shapes), "key_names": len(self._names), "max_entries": self.max_shapes}

    def line(self, method: str, path: str, status: int, request_id: str, seconds: float,
             key_name: str | None = None) -> None:
        now = time.time()
        ms = int(now * 1000)
        if ms != self._ms:  # the timestamp is rendered once a millisecond
            self._ms = ms
            sec = ms // 1000
            if sec != self._sec:
                self._sec, self._sec_text = sec, '{"time": "' + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._stamp = f"{self._sec_text}.{ms % 1000:03d}Z"
        head, tail = self._shapes.get((method, path, status)) or self._shape(method, path, status)
        name = self._names.get(key_name)
        if name is None:
            name = self._name(key_name)
        us = round(seconds * 1e6)
        took = self._durations.get(us)
        if took is None:
            took = self._duration(us)
        text = f"{self._stamp}{head}{_q(request_id)}{name}{tail}{took}}}\n"
        self._lines.append(text)
        self._size += len(text)
        if self._size >= MAX_BUFFER:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(BATCH_DELAY, self.flush)
            except RuntimeError:  # no loop: write now
                self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        lines, self._lines, self._size = self._lines, [], 0
        data = "".join(lines).encode()
        fd = self._fd()
        chunk = self._chunk(fd)
        view = memoryview(data)
        start, n = 0, len(data)
        while start < n:  # chunks of whole lines, each at most `chunk` bytes (a longer line alone)
            end = start + chunk
            if end < n:
                cut = data.rfind(b"\n", start, end)
                end = cut + 1 if cut >= start else (data.find(b"\n", end) + 1 or n)
            _write_all(fd, view[start:end])
            start = end

    def _chunk(self, fd: int) -> int:
        """CHUNK for a pipe or a terminal; a regular file takes a batch in one write (Linux writes it at the
        file's offset under a lock, so the workers' batches cannot interleave mid-line there)."""
        if fd != self._chunk_fd:
            try:
                regular = stat.S_ISREG(os.fstat(fd).st_mode)
            except OSError:
                regular = False
            self._chunk_fd, self._chunk_size = fd, (1 << 30 if regular else CHUNK)
        return self._chunk_size

    def pending(self) -> int:
        return len(self._lines)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        except OSError:  # stderr gone (closed pipe): nothing to write to
            return
        view = view[n:]
