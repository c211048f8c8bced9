"""Fast validation mode: remember which raw bodies were already validated.

With monitoring.validation_mode = "fast", a body seen before (same route,
same bytes) skips JSON decoding and validation and reuses its TextRequest.
"strict" validates every request.  The memo is bounded and is cleared when
the text limits change, so a tightened limit applies at once.
"""
from __future__ import annotations

from service.providers.base import TextRequest

MAX_ENTRIES = 4096
MAX_BODY = 16 * 1024  # larger bodies are rare repeats; not worth keeping


class ValidationMemo:
    def __init__(self, store):
        self._store = store
        self._memo: dict[tuple, TextRequest] = {}
        self.hits = 0
        self.misses = 0
        store.subscribe(self._on_change)

    def _on_change(self, section: str, new: dict, old: dict) -> None:
        if section in ("text", "monitoring"):
            self._memo.clear()

    @property
    def enabled(self) -> bool:
        return self._store.get("monitoring")["validation_mode"] == "fast"

    def get(self, route: tuple, raw: bytes) -> TextRequest | None:
        req = self._memo.get((route, raw))
        if req is None:
            self.misses += 1
        else:
            self.hits += 1
        return req

    def put(self, route: tuple, raw: bytes, req: TextRequest) -> None:
        if len(raw) > MAX_BODY:
            return
        if len(self._memo) >= MAX_ENTRIES:
            self._memo.pop(next(iter(self._memo)))
        self._memo[(route, raw)] = req

    def stats(self) -> dict:
        return {"enabled": self.enabled, "entries": len(self._memo), "hits": self.hits, "misses": self.misses}
