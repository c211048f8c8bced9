"""Handing the heap's free pages back to the OS (glibc `malloc_trim`).

glibc's free() gives memory back only from the top of its heap.  Objects above
512 bytes (pymalloc's limit) live there: among them the cache's ready-to-send
values and the validation memo's parsed texts.  Once the cache is full each miss
frees an old value and allocates a new one somewhere else, so free chunks
scatter through the heap and RSS rises by ~2.5 MB over the following minute
although the bytes in use stay flat (bench/soak.py: the heap's free bytes, not its
used bytes, grew).  `malloc_trim(0)` releases every free page wherever it is;
every monitoring.heap_trim_seconds it runs on the event loop: a fraction of a
millisecond for a heap of tens of MB, but it walks every free chunk (tens of ms
for a heap of 200,000 scattered values), and in a thread it would hold the
heap's lock against the loop all the same.  So OVER_BUDGET_STREAK trims in a row
that each take longer than monitoring.heap_trim_max_ms (one alone may be the
box's noise), or one that takes FAR_OVER times it, pause the trimming
(memory-analysis says so, a warning is logged) until either field changes.
glibc's heap figures (mallinfo2, in memory-analysis) are read right after each
trim, under its budget: reading them walks the free chunks as well.  Where
malloc_trim does not exist (another libc), nothing runs and memory-analysis says
so.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time

from service.monitoring import process

log = logging.getLogger("service.monitoring.heap")
IDLE_CHECK = 1.0   # seconds between two looks at the config while trimming is off
OVER_BUDGET_STREAK = 3
FAR_OVER = 5.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(lib, "malloc_trim"):
        return None
    lib.malloc_trim.argtypes = [ctypes.c_size_t]
    if hasattr(lib, "mallinfo2"):
        lib.mallinfo2.restype = _MallInfo2
    return lib


_LIBC = _libc()


def trim() -> bool:
    """malloc_trim(0): True when some memory went back to the OS."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False


def mallinfo() -> dict | None:
    """The main heap's bytes: obtained from the OS, in use, free inside it, mmapped apart (glibc >= 2.33)."""
    if _LIBC is None or not hasattr(_LIBC, "mallinfo2"):
        return None
    m = _LIBC.mallinfo2()
    return {"heap_bytes": m.arena, "in_use_bytes": m.uordblks, "free_bytes": m.fordblks, "mmapped_bytes": m.hblkhd}


class HeapTrimmer:
    """Runs trim() every monitoring.heap_trim_seconds (0: never), both fields read live each round."""

    def __init__(self, store):
        self.store = store
        self.available = _LIBC is not None
        self.paused: tuple | None = None   # the (interval, budget) under which the trims went over budget
        self.over_budget = 0               # trims in a row over budget
        self.runs = 0
        self.released_bytes = 0     # RSS given back, summed over the runs
        self.seconds = 0.0          # time spent in malloc_trim, summed
        self.max_seconds = 0.0
        self.last_run: float | None = None
        self.malloc: dict | None = None   # mallinfo() read right after the last trim

    def interval(self) -> float:
        return self.store.get("monitoring")["heap_trim_seconds"]

    def _settings(self) -> tuple:
        cfg = self.store.get("monitoring")
        return cfg["heap_trim_seconds"], cfg["heap_trim_max_ms"]

    def due(self) -> bool:
        """Trimming is on and not paused by an over-budget trim under these same settings."""
        settings = self._settings()
        if self.paused is not None and self.paused != settings:
            self.paused, self.over_budget = None, 0   # either field changed: trimming resumes
        return settings[0] > 0 and self.paused is None

    def run_once(self) -> int:
        """One trim; returns the RSS bytes it gave back."""
        before = process.rss()
        t = time.perf_counter()
        trim()
        # glibc's figures walk every free chunk too (11-15 ms for 200,000 scattered values): read here, under
        # the trim's budget, rather than in memory-analysis
        self.malloc = mallinfo()
        took = time.perf_counter() - t
        released = max(0, before - process.rss())
        self.runs += 1
        self.released_bytes += released
        self.seconds += took
        self.max_seconds = max(self.max_seconds, took)
        self.last_run = time.time()
        settings = self._settings()
        self.over_budget = self.over_budget + 1 if took * 1000 > settings[1] else 0
        if self.over_budget >= OVER_BUDGET_STREAK or took * 1000 > FAR_OVER * settings[1]:
            self.paused = settings
            log.warning("heap trim paused: malloc_trim held the event loop longer than monitoring.heap_trim_max_ms",
                        extra={"trim_ms": round(took * 1000, 3), "max_ms": settings[1]})
        return released

    async def loop(self) -> None:
        if not self.available:
            return
        while True:
            every = self.interval()
            await asyncio.sleep(every if self.due() else IDLE_CHECK)
            if self.due():
                try:
                    self.run_once()
                except Exception:   # never let the loop die quietly
                    log.exception("heap trim failed")

    def stats(self) -> dict:
        return {"trim_available": self.available, "trim_interval_seconds": self.interval(),
                "trim_paused_over_budget": self.paused is not None, "trims": self.runs,
                "released_bytes": self.released_bytes, "trim_seconds_total": round(self.seconds, 6),
                "trim_max_ms": round(self.max_seconds * 1000, 3), "last_trim": self.last_run,
                "malloc": self.malloc, "malloc_read_at": "last_trim"}
