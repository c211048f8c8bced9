"""Fast validation mode: remember which raw bodies were already validated.

With monitoring.validation_mode = "fast" (the default), a body seen before
(same route, same Content-Type, same bytes) skips JSON decoding, validation
and the cache-key hash: the memo hands back its TextRequest and cache key.
That is exact, not lenient: validation and the key are pure functions of the
bytes and the config, and the memo is cleared whenever a section they read
changes (text limits, cache key strategy, AI model), so a tightened limit
applies to the next request.  "strict" decodes and validates every body.

The memo holds at most monitoring.validation_memo_max_bytes (oldest out
first; 0 keeps nothing), counting for each entry its body, the parsed text
and question, the Content-Type and cache key strings and a fixed overhead for
the objects and dict slot; it keeps only bodies up to MAX_BODY.
"""
from __future__ import annotations

import sys

MAX_BODY = 16 * 1024  # larger bodies are rare repeats; not worth keeping
SECTIONS = ("text", "monitoring", "cache", "ai")  # what validation and the cache key read
# per entry besides the strings: the key tuple, the (TextRequest, key) tuple, the request object with its
# options dict, the dict slot.  Checked against tracemalloc (tests/service/test_text_api.py).
ENTRY_OVERHEAD = 480
_STR = sys.getsizeof("")
_BYTES = sys.getsizeof(b"")


def entry_size(route: tuple, raw: bytes, parsed: tuple) -> int:
    req, key = parsed
    return (_BYTES + len(raw) + _STR + len(route[1] or "") + 2 * _STR + len(req.text) + len(req.question or "")
            + _STR + len(key) + ENTRY_OVERHEAD)


class ValidationMemo:
    def __init__(self, store):
        self._store = store
        self._memo: dict[tuple, tuple] = {}   # (route, raw) -> (parsed, size)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        cfg = store.get("monitoring")
        self.enabled = cfg["validation_mode"] == "fast"
        self.max_bytes = cfg["validation_memo_max_bytes"]
        store.subscribe(self._on_change)

    def _on_change(self, section: str, new: dict, old: dict) -> None:
        if section in SECTIONS:
            self._memo.clear()
            self.bytes = 0
        if section == "monitoring":
            self.enabled = new["validation_mode"] == "fast"
            self.max_bytes = new["validation_memo_max_bytes"]

    def get(self, route: tuple, raw: bytes) -> tuple | None:
        """(TextRequest, cache key) of a body validated before, or None."""
        if not self.enabled:
            return None
        hit = self._memo.get((route, raw))
        if hit is None:
            self.misses += 1
            return None
        self.hits += 1
        return hit[0]

    def put(self, route: tuple, raw: bytes, parsed: tuple) -> None:
        if not self.enabled or len(raw) > MAX_BODY:
            return
        size = entry_size(route, raw, parsed)
        if size > self.max_bytes:
            return
        memo = self._memo
        old = memo.pop((route, raw), None)
        if old is not None:
            self.bytes -= old[1]
        while memo and self.bytes + size > self.max_bytes:
            self.bytes -= memo.pop(next(iter(memo)))[1]
            self.evictions += 1
        memo[(route, raw)] = (parsed, size)
        self.bytes += size

    def stats(self) -> dict:
        return {"enabled": self.enabled, "entries": len(self._memo), "hits": self.hits, "misses": self.misses}

    def memory_stats(self) -> dict:
        """What memory-analysis reports for the memo."""
        return {"entries": len(self._memo), "memory_bytes": self.bytes, "max_bytes": self.max_bytes,
                "evictions": self.evictions}
