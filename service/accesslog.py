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

BATCH_DELAY = 0.05            # seconds a line may wait in the buffer
MAX_BUFFER = 64 * 1024        # bytes buffered before an immediate write
CHUNK = getattr(select, "PIPE_BUF", 4096)
DURATIONS = 4096              # rendered durations kept (microseconds -> text)
MAX_PENDING = 8 * 1024 * 1024  # bytes handed to the writer thread and not yet written before the loop waits
SLOW_WRITE = 0.005            # seconds: a write to a regular file slower than this sends the next batches to the thread


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
        """What memory-analysis reports: the rendered parts kept, the lines buffered for the next batch, and
        the bytes handed to the writer thread that a slow sink has not taken yet (with the times the loop
        waited because they passed max_pending_bytes)."""
        return {"entries": len(self._shapes), "key_names": len(self._names), "max_entries": self.max_shapes,
                "buffered_lines": len(self._lines), "pending_bytes": _WRITER.pending_bytes,
                "max_pending_bytes": MAX_PENDING, "sink_waits": _WRITER.waits}

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
            self._batch_due()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(BATCH_DELAY, self._batch_due)
            except RuntimeError:  # no loop: to the writer now
                self._batch_due()

    def flush(self, wait: bool = True) -> None:
        """Write the buffered lines: on this thread while the sink keeps up, else through the writer thread;
        with `wait` (shutdown, tests), return once everything is written."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            lines, self._lines, self._size = self._lines, [], 0
            data = "".join(lines).encode()
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
        return len(self._lines)


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
