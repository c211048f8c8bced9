"""Fast validation mode: remember which raw bodies were already validated.

With monitoring.validation_mode = "fast" (the default), a body seen before
(same route, same Content-Type, same bytes) skips JSON decoding, validation
and the cache-key hash: the memo hands back its TextRequest and cache key.
That is exact, not lenient: validation and the key are pure functions of the
bytes and the config, and the memo is cleared whenever a section they read
changes (text limits, cache key strategy, AI model), so a tightened limit
applies to the next request.  "strict" decodes and validates every body.
The memo is bounded (oldest out first) and keeps only small bodies.
"""
from __future__ import annotations

MAX_ENTRIES = 4096
MAX_BODY = 16 * 1024  # larger bodies are rare repeats; not worth keeping
SECTIONS = ("text", "monitoring", "cache", "ai")  # what validation and the cache key read


class ValidationMemo:
    def __init__(self, store):
        self._store = store
        self._memo: dict[tuple, tuple] = {}
        self.hits = 0
        self.misses = 0
        self.enabled = store.get("monitoring")["validation_mode"] == "fast"
        store.subscribe(self._on_change)

    def _on_change(self, section: str, new: dict, old: dict) -> None:
        if section in SECTIONS:
            self._memo.clear()
        if section == "monitoring":
            self.enabled = new["validation_mode"] == "fast"

    def get(self, route: tuple, raw: bytes) -> tuple | None:
        """(TextRequest, cache key) of a body validated before, or None."""
        if not self.enabled:
            return None
        parsed = self._memo.get((route, raw))
        if parsed is None:
            self.misses += 1
        else:
            self.hits += 1
        return parsed

    def put(self, route: tuple, raw: bytes, parsed: tuple) -> None:
        if not self.enabled or len(raw) > MAX_BODY:
            return
        if len(self._memo) >= MAX_ENTRIES:
            self._memo.pop(next(iter(self._memo)))
        self._memo[(route, raw)] = parsed

    def stats(self) -> dict:
        return {"enabled": self.enabled, "entries": len(self._memo), "hits": self.hits, "misses": self.misses}
