"""L1: the in-memory tier, bounded by entries and by bytes.

An OrderedDict in recency order (least recently used first).  Values are the
ready-to-send body prefixes (zlib-compressed above the threshold).  Expired
entries stay until evicted or cleaned up: they are the stale copies that
resilience fallbacks may serve.

Eviction always takes expired entries first, then by policy:
  lru  the least recently used;
  lfu  the fewest hits among the SAMPLE least recently used (sampled LFU);
  ttl  the soonest to expire among the SAMPLE least recently used.
Each entry's `size` estimates the bytes it really holds (value, key, entry
object, dict slot, attached request text); tests check the estimate against
tracemalloc.
"""
from __future__ import annotations

import itertools
import sys
from collections import OrderedDict
from typing import Callable, Iterable

SAMPLE = 16
# bytes of one entry besides value, key and attached text: the Entry object
# with its floats, the dict + linked-list node in the OrderedDict, the
# fingerprint and its index slot.  Calibrated with tracemalloc (tests/cache/test_memory.py).
ENTRY_OVERHEAD = 420
_BYTES_HDR = sys.getsizeof(b"")
_STR_HDR = sys.getsizeof("")


class Entry:
    __slots__ = ("key", "value", "compressed", "size", "op", "tier", "stored_at", "expires_at", "ttl",
                 "hits", "recent", "fp", "req", "popular", "warming")

    def __init__(self, key: str, value: bytes, compressed: bool, op: str, tier: str, stored_at: float,
                 ttl: float, fp: bytes | None = None):
        self.key = key
        self.value = value
        self.compressed = compressed
        self.op = op
        self.tier = tier
        self.stored_at = stored_at
        self.ttl = ttl
        self.expires_at = stored_at + ttl
        self.hits = 0       # hits since stored (kept across warming refreshes)
        self.recent = 0     # hits since the last (re)store: warming only refreshes keys still in use
        self.fp = fp
        self.req = None     # the request, attached once the key is popular (warming recomputes it)
        self.popular = False
        self.warming = False
        self.size = entry_size(key, value)

    def attach(self, req) -> int:
        """Keep the request (for warming); returns the bytes this adds."""
        if self.req is not None:
            return 0
        self.req = req
        extra = _STR_HDR + len(req.text) + (_STR_HDR + len(req.question) if req.question else 0)
        self.size += extra
        return extra


def entry_size(key: str, value: bytes) -> int:
    return _BYTES_HDR + len(value) + _STR_HDR + len(key) + ENTRY_OVERHEAD


RemoveHook = Callable[[Entry, str], None]


class MemoryTier:
    def __init__(self, on_remove: RemoveHook):
        self.data: OrderedDict[str, Entry] = OrderedDict()
        self.bytes = 0
        self.on_remove = on_remove

    def __len__(self) -> int:
        return len(self.data)

    # ---- storing ---------------------------------------------------------
    def put(self, e: Entry) -> None:
        old = self.data.pop(e.key, None)
        if old is not None:
            self.bytes -= old.size
            self.on_remove(old, "replaced")
        self.data[e.key] = e
        self.bytes += e.size

    def grow(self, e: Entry, extra: int) -> None:
        if self.data.get(e.key) is e:
            self.bytes += extra

    def remove(self, key: str, reason: str) -> Entry | None:
        e = self.data.pop(key, None)
        if e is not None:
            self.bytes -= e.size
            self.on_remove(e, reason)
        return e

    # ---- eviction --------------------------------------------------------
    def victim(self, policy: str, now: float, protect: Entry | None = None) -> Entry | None:
        window = [e for e in itertools.islice(self.data.values(), SAMPLE + 1) if e is not protect][:SAMPLE]
        if not window:
            return None
        expired = [e for e in window if e.expires_at <= now]
        if expired:
            return min(expired, key=lambda e: e.expires_at)
        if policy == "lfu":
            return min(window, key=lambda e: e.hits)  # min keeps the first (least recent) on ties
        if policy == "ttl":
            return min(window, key=lambda e: e.expires_at)
        return window[0]

    def evict_while(self, over: Callable[[], bool], policy: str, now: float, reason: str,
                    protect: Entry | None = None) -> tuple[int, int]:
        """Evict by policy while over() holds (never `protect`); returns (entries, bytes) evicted."""
        n = freed = 0
        while self.data and over():
            e = self.victim(policy, now, protect)
            if e is None:
                break
            self.remove(e.key, "expired" if e.expires_at <= now else reason)
            n += 1
            freed += e.size
        return n, freed

    def enforce(self, max_entries: int, max_bytes: int, policy: str, now: float, reason: str,
                protect: Entry | None = None) -> tuple[int, int]:
        return self.evict_while(lambda: len(self.data) > max_entries or self.bytes > max_bytes, policy, now, reason,
                                protect)

    def remove_where(self, pred: Callable[[Entry], bool], reason: str) -> tuple[int, int]:
        doomed = [e for e in self.data.values() if pred(e)]
        for e in doomed:
            self.remove(e.key, reason)
        return len(doomed), sum(e.size for e in doomed)

    def clear_expired(self, now: float, grace: float = 0.0) -> tuple[int, int]:
        """Drop entries expired more than `grace` seconds ago."""
        cutoff = now - grace
        return self.remove_where(lambda e: e.expires_at <= cutoff, "expired")

    def clear(self, reason: str) -> tuple[int, int]:
        return self.remove_where(lambda e: True, reason)

    # ---- views -----------------------------------------------------------
    def entries(self) -> Iterable[Entry]:
        return self.data.values()
