"""The access log: one JSON line per request, rendered without the logging machinery and written in batches.

A line has the fields of every other log line (service/log.py's JsonFormatter:
time, level, logger, message, request_id) and then key_name, status, method,
path and duration_ms, in the same JSON layout, so one parser reads both.  What makes it
cheap:

- no LogRecord, no formatter, no handler lock, and nothing rendered while the
  request is answered: the errors layer hands over small values it already
  holds (method, target as sent, status, request id, key name, start in
  perf_counter_ns) and the line waits as a tuple of them and its end; the
  request's own objects are freed as before, for the next requests to reuse
  while they are in the CPU's caches.  A batch's lines are rendered together
  in one loop that calls nothing per line in the usual case: the parts fixed
  by (method, target, status) are rendered once (for up to `max_shapes` of
  them, the config's logging.access_log_shapes, set by the errors
  middleware's subscriber), so is a key name's, the timestamp once a millisecond (its
  seconds once a second), a duration once per microsecond value (up to
  DURATIONS of them); the request id goes in as it is, since the errors layer
  only takes one with nothing to escape.  A line's wall-clock time is its end
  plus the clock's offset at rendering, 50 ms later at most.  Against
  rendering each line as its request ends: 15.3 k → 10.8 k instructions a
  request (2026-12-02, the errors layer's leave with the batch's rendering
  and write amortized);
- lines are buffered and written to stderr with one os.write per batch: on the
  next tick of the event loop after BATCH_DELAY, or at once when MAX_LINES
  wait (at 16 k requests a second every 16 ms, ~55 KB).  A batch is written
  in chunks of whole lines up to
  PIPE_BUF bytes, so lines of several worker processes sharing one pipe never
  interleave mid-line (to a regular file, in one write);
- the event loop does not wait for a slow sink: it writes a batch itself while
  the sink keeps up (a pipe that poll says has room for a chunk, a regular file
  whose last write took under SLOW_WRITE), and hands the rest to the process's
  writer thread (_Writer), started on the first such batch, until the thread
  has caught up: a pipe whose reader is slow (a container runtime's log
  driver) or a disk under writeback throttling blocks that thread, not the
  requests.  Only when the batches waiting for it pass MAX_PENDING bytes does
  the loop wait (backpressure: a line is never dropped).  A thread for every
  batch cost more than it saved: in alternating rounds against the loop
  writing (2026-12-02, cached hits), 4-7 % more CPU per request, its wake-ups
  and GIL hand-offs, while a 64 KB write to a file here takes ~75 µs, on disk
  and on tmpfs alike;
- nothing is lost on shutdown: the app's cleanup flushes and waits until the
  thread wrote everything (it is the last part to stop), and so does an atexit
  hook for any other exit.
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import os
import select
import stat
import sys
import threading
import time
from json.encoder import encode_basestring_ascii as _q
from time import perf_counter_ns

from aiohttp import http_parser
from yarl import URL

_C_PARSER = http_parser.HttpRequestParser is not http_parser.HttpRequestParserPy  # what the server parses with

BATCH_DELAY = 0.05            # seconds a line may wait in the buffer
MAX_LINES = 256               # lines buffered before an immediate write (~55 KB of the usual lines)
CHUNK = getattr(select, "PIPE_BUF", 4096)
DURATIONS = 4096              # rendered durations kept (microseconds -> text)
MAX_PENDING = 8 * 1024 * 1024  # bytes handed to the writer thread and not yet written before the loop waits
SLOW_WRITE = 0.005            # seconds: a write to a regular file slower than this sends the next batches to the thread

_MS = tuple(f".{i:03d}Z" for i in range(1000))  # a timestamp's milliseconds and its zone
_US = tuple(f".{i:03d}}}\n" for i in range(1000))  # a duration's microseconds and the line's end


def request_path(method: str, target: str) -> str:
    """aiohttp's request.path of a request line's target: the path of the URL the server's parser makes of
    it, decoded, without the query or fragment.  (Its C parser and its Python one part an origin-form
    target differently when a '#' comes before a '?'.)"""
    try:
        if method == "CONNECT":
            return URL.build(authority=target, encoded=True).path
        if target.startswith("/"):
            if _C_PARSER and "?" in target:
                return URL.build(path=target.partition("?")[0], encoded=True).path
            return URL.build(path=target.partition("#")[0].partition("?")[0], encoded=True).path
        return URL(target, encoded=True).path
    except ValueError:  # (the parser refused such a target: no request had it)
        return target


class AccessLog:
    def __init__(self, fd: int | None = None, max_shapes: int = 1024):
        self.fd = fd
        self.max_shapes = max_shapes  # (method, target, status) and key names kept rendered (read on a miss only)
        self._rows: list[tuple] = []  # (method, target, status, request id, key name, start, end) of each line
        self._timer: asyncio.TimerHandle | None = None
        self._secs: dict[int, str] = {}
        self._durations: dict[int, str] = {}
        self._chunk_fd, self._chunk_size = -1, CHUNK
        self._shapes: dict[tuple, tuple[str, str]] = {}  # (method, target, status) -> (head, tail)
        self._names: dict[str | None, str] = {}
        atexit.register(self.flush)

    def _fd(self) -> int:
        return sys.stderr.fileno() if self.fd is None else self.fd

    def add(self, method: str, target: str, status: int, request_id: str, key_name: str | None,
            start: int) -> None:
        """A request's line, its answer sent now: `target` is its request line's target as sent (aiohttp's
        RawRequestMessage.path), `start` its perf_counter_ns() on arrival, `request_id` printable ASCII
        without a quote or backslash (service/middleware/errors.py makes sure), so the line has it as it is.  Only
        these small values wait for the batch, not the request's objects (which its next requests reuse
        while they are still in the CPU's caches)."""
        rows = self._rows
        rows.append((method, target, status, request_id, key_name, start, perf_counter_ns()))
        n = len(rows)
        if n == 1:
            try:
                self._timer = asyncio.get_running_loop().call_later(BATCH_DELAY, self._batch_due)
            except RuntimeError:  # no loop: to the writer now
                self._batch_due()
        elif n >= MAX_LINES:
            self._batch_due()

    def _render(self, rows: list) -> bytes:
        """The lines of `rows`, in order, each of six parts: the time (rendered once a millisecond), the head
        of its shape, the request id, the key name, the tail of its shape, the duration.  A line's wall-clock
        time is the perf_counter_ns() of its end plus the clock's offset now (a batch waits at most
        BATCH_DELAY)."""
        offset = time.time_ns() - perf_counter_ns()  # (integers: no float rounding per line)
        shapes, names, durations = self._shapes, self._names, self._durations
        parts: list[str] = []
        last_ms, stamp = -1, ""
        for method, target, status, rid, key_name, start, end in rows:
            ms = (end + offset) // 1_000_000
            if ms != last_ms:
                last_ms, stamp = ms, self._stamp(ms)
            us = (end - start + 500) // 1000
            head, tail = shapes.get((method, target, status)) or self._shape(method, target, status)
            parts += (stamp, head, rid, names.get(key_name) or self._name(key_name), tail,
                      durations.get(us) or self._duration(us))
        return "".join(parts).encode()

    def _stamp(self, ms: int) -> str:
        """'{"time": "<date>T<time>.<ms>Z' of a millisecond since the epoch (the last few seconds kept)."""
        sec = ms // 1000
        text = self._secs.get(sec)
        if text is None:
            if len(self._secs) >= 4:
                self._secs.clear()
            text = self._secs[sec] = '{"time": "' + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return text + _MS[ms % 1000]

    def _name(self, key_name: str | None) -> str:
        """'", "key_name": "<name>"' (a configured key's name, never the key; null before auth ran), after
        the request id's closing quote; kept apart from the shapes, so many keys do not multiply them."""
        text = '", "key_name": ' + ("null" if key_name is None else _q(key_name))
        if len(self._names) < self.max_shapes:
            self._names[key_name] = text
        return text

    def _shape(self, method: str, target: str, status: int) -> tuple[str, str]:
        """The two fixed parts of a line: from the time to the request id's opening quote, and from the key
        name to the duration.  Kept by the target as sent; the line has the path as aiohttp's request.path
        gives it (decoded, without the query)."""
        path = request_path(method, target)
        head = (f'", "level": "INFO", "logger": "service.access", "message": {_q(f"{method} {path} {status}")}, '
                '"request_id": "')
        tail = f', "status": {int(status)}, "method": {_q(method)}, "path": {_q(path)}, "duration_ms": '
        if len(self._shapes) < self.max_shapes:
            self._shapes[(method, target, status)] = (head, tail)
        return head, tail

    def _duration(self, us: int) -> str:
        """duration_ms of `us` microseconds, 3 decimals, and the line's end; kept for the next line that took
        as long (up to DURATIONS of them)."""
        if len(self._durations) >= DURATIONS:
            self._durations.clear()
        text = self._durations[us] = str(us // 1000) + _US[us % 1000]
        return text

    def bound(self, max_shapes: int) -> None:
        """A new bound (a config change, not per request): a lowered one drops the newest beyond it."""
        self.max_shapes = max_shapes
        for table in (self._shapes, self._names):
            for k in list(table)[max_shapes:]:
                del table[k]

    def memory_stats(self) -> dict:
        """What memory-analysis reports: the rendered parts kept, the lines buffered for the next batch, and
        the bytes handed to the writer thread that a slow sink has not taken yet (with the times the loop
        waited because they passed max_pending_bytes)."""
        return {"entries": len(self._shapes), "key_names": len(self._names), "max_entries": self.max_shapes,
                "buffered_lines": len(self._rows), "pending_bytes": _WRITER.pending_bytes,
                "max_pending_bytes": MAX_PENDING, "sink_waits": _WRITER.waits}

    def flush(self, wait: bool = True) -> None:
        """Write the buffered lines: on this thread while the sink keeps up, else through the writer thread;
        with `wait` (shutdown, tests), return once everything is written."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._rows:
            rows, self._rows = self._rows, []
            data = self._render(rows)
            fd = self._fd()
            chunk = self._chunk(fd)
            if _WRITER.idle():
                data = self._write_now(fd, data, chunk)
            if data:
                _WRITER.put(fd, data, chunk)
        if wait:
            _WRITER.wait(_WRITER.queued)

    def _write_now(self, fd: int, data: bytes, chunk: int) -> bytes:
        """Write what the sink takes without waiting; return the rest, for the writer thread.  A pipe or a
        terminal takes a chunk while poll says it has room (a chunk of at most PIPE_BUF bytes then fits); a
        regular file always, unless its last write took over SLOW_WRITE (writeback throttling, a slow
        disk): then the batches go to the thread until one write there is quick again."""
        if chunk != CHUNK:
            if _WRITER.slow:
                return data
            t = time.perf_counter()
            _write_all(fd, data)
            _WRITER.slow = time.perf_counter() - t > SLOW_WRITE
            return b""
        view = memoryview(data)
        for start, end in _chunks(data, chunk):
            if not select.select((), (fd,), (), 0)[1]:
                return data[start:]
            _write_all(fd, view[start:end])
        return b""

    def _batch_due(self) -> None:
        """The batch timer and a full buffer: the lines go to the writer thread, the loop goes on."""
        self.flush(wait=False)

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
        return len(self._rows)


class _Writer:
    """The process's one access-log writer thread: batches are written in the order they were put."""

    def __init__(self):
        self._cond = threading.Condition()
        self._batches: collections.deque = collections.deque()
        self._thread: threading.Thread | None = None
        self.queued = 0         # batches put so far (a batch's sequence number)
        self.written = 0        # batches written so far
        self.pending_bytes = 0  # put and not yet written
        self.waits = 0          # times the loop waited for the sink (MAX_PENDING reached)
        self.slow = False       # the last write to a regular file took over SLOW_WRITE

    def idle(self) -> bool:
        """Nothing waits to be written: a new batch may be written by its caller without reordering lines."""
        return self.written == self.queued

    def put(self, fd: int, data: bytes, chunk: int) -> int:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="access-log-writer", daemon=True)
                self._thread.start()
            if self.pending_bytes > MAX_PENDING:  # the sink is stuck: wait for it rather than drop lines
                self.waits += 1
                while self.pending_bytes > MAX_PENDING and self._thread.is_alive():
                    self._cond.wait(1.0)
            self._batches.append((fd, data, chunk))
            self.queued += 1
            self.pending_bytes += len(data)
            self._cond.notify_all()
            return self.queued

    def wait(self, seq: int) -> None:
        """Until batch `seq` and every one before it is written (or the thread is gone: it wrote them here)."""
        with self._cond:
            while self.written < seq:
                if self._thread is None or not self._thread.is_alive():
                    self._drain()
                    return
                self._cond.wait(1.0)

    def _drain(self) -> None:
        """Write what is left on the calling thread (the writer thread died), under the lock."""
        while self._batches:
            fd, data, chunk = self._batches.popleft()
            _write_batch(fd, data, chunk)
            self.written += 1
            self.pending_bytes -= len(data)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._batches:
                    self._cond.wait()
                fd, data, chunk = self._batches[0]
            t = time.perf_counter()
            try:
                _write_batch(fd, data, chunk)
            finally:
                self.slow = chunk != CHUNK and time.perf_counter() - t > SLOW_WRITE
                with self._cond:
                    self._batches.popleft()
                    self.written += 1
                    self.pending_bytes -= len(data)
                    self._cond.notify_all()


def _chunks(data: bytes, chunk: int):
    """(start, end) of each run of whole lines in `data` of at most `chunk` bytes (a longer line alone)."""
    start, n = 0, len(data)
    while start < n:
        end = start + chunk
        if end < n:
            cut = data.rfind(b"\n", start, end)
            end = cut + 1 if cut >= start else (data.find(b"\n", end) + 1 or n)
        yield start, end
        start = end


def _write_batch(fd: int, data: bytes, chunk: int) -> None:
    view = memoryview(data)
    for start, end in _chunks(data, chunk):
        _write_all(fd, view[start:end])


_WRITER = _Writer()


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
