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

The analysis views never walk every entry (there may be ten million): the
tier keeps a few counts as entries come and go (per operation, per key
length) and a random-access list of its entries (`slot` is each entry's index,
removal swaps the last one in), so `sample(n)` draws n entries at random in
O(n) whatever the size.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import sys
from collections import OrderedDict
from typing import Callable, Iterable, Iterator

SAMPLE = 16
CHUNK = 4096  # entries an admin-sized removal handles between two yields to the event loop
# bytes of one entry besides value, key and attached text: the Entry object
# with its floats, the dict + linked-list node in the OrderedDict, the
# fingerprint and its index slot, the sampling list's pointer and the entry's index
# in it.  Calibrated with tracemalloc (tests/cache/test_core.py).
ENTRY_OVERHEAD = 464
_BYTES_HDR = sys.getsizeof(b"")
_STR_HDR = sys.getsizeof("")


class Entry:
    __slots__ = ("key", "value", "compressed", "size", "op", "tier", "stored_at", "expires_at", "ttl",
                 "hits", "recent", "fp", "req", "popular", "warming", "slot", "usage", "cells")

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
        self.slot = -1      # index in MemoryTier.slots while stored
        self.usage = None   # the Usage of the call that computed it (what a hit saves)
        self.cells = None   # the hit counts a memory hit adds to (service/cache/core.py: lookup)
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


async def run_steps(steps: Iterator[tuple[int, int, bool]]) -> tuple[int, int]:
    """Run the steps of removing/evicting to the end, yielding to the event loop between two; (entries, bytes)."""
    n = freed = 0
    for n, freed, more in steps:
        if more:
            await asyncio.sleep(0)
    return n, freed


class MemoryTier:
    def __init__(self, on_remove: RemoveHook):
        self.data: OrderedDict[str, Entry] = OrderedDict()
        self.bytes = 0
        self.on_remove = on_remove
        self.slots: list[Entry] = []               # the same entries, randomly accessible (sampling)
        self.by_op: dict[str, int] = {}            # operation -> entries
        self.key_lengths: dict[int, int] = {}      # key length -> entries

    def __len__(self) -> int:
        return len(self.data)

    # ---- storing ---------------------------------------------------------
    def put(self, e: Entry) -> None:
        old = self.data.pop(e.key, None)
        if old is not None:
            self.bytes -= old.size
            self._unindex(old)
            self.on_remove(old, "replaced")
        self.data[e.key] = e
        self.bytes += e.size
        e.slot = len(self.slots)
        self.slots.append(e)
        self.by_op[e.op] = self.by_op.get(e.op, 0) + 1
        n = len(e.key)
        self.key_lengths[n] = self.key_lengths.get(n, 0) + 1

    def _unindex(self, e: Entry) -> None:
        slots = self.slots
        last = slots.pop()
        if last is not e:
            slots[e.slot] = last
            last.slot = e.slot
        e.slot = -1
        for counts, k in ((self.by_op, e.op), (self.key_lengths, len(e.key))):
            left = counts[k] - 1
            if left:
                counts[k] = left
            else:
                del counts[k]

    def grow(self, e: Entry, extra: int) -> None:
        if self.data.get(e.key) is e:
            self.bytes += extra

    def remove(self, key: str, reason: str) -> Entry | None:
        e = self.data.pop(key, None)
        if e is not None:
            self.bytes -= e.size
            self._unindex(e)
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
                    protect: Entry | None = None, limit: int | None = None) -> tuple[int, int]:
        """Evict by policy while over() holds (never `protect`; at most `limit`); returns (entries, bytes) evicted."""
        n = freed = 0
        while self.data and over() and (limit is None or n < limit):
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

    def removing(self, pred: Callable[[Entry], bool], reason: str, chunk: int = CHUNK) -> Iterator[tuple[int, int, bool]]:
        """remove_where in steps of `chunk` entries looked at: yields (entries, bytes) removed so far and whether
        entries are left to look at.  Entries stored meanwhile are not looked at (the scan runs down the
        sampling list, and new ones are appended)."""
        n = freed = 0
        i = len(self.slots) - 1
        while True:
            stop = i - chunk
            while i > stop and i >= 0:
                if i < len(self.slots):
                    e = self.slots[i]
                    if pred(e):
                        self.remove(e.key, reason)
                        n += 1
                        freed += e.size
                i -= 1
            yield n, freed, i >= 0
            if i < 0:
                return
            i = min(i, len(self.slots) - 1)  # others may have removed entries meanwhile

    def evicting(self, over: Callable[[], bool], policy: str, now: float, reason: str,
                 chunk: int = CHUNK) -> Iterator[tuple[int, int, bool]]:
        """evict_while in steps of `chunk` evictions: yields (entries, bytes) evicted so far and whether it goes on."""
        n = freed = 0
        while True:
            k, b = self.evict_while(over, policy, now, reason, limit=chunk)
            n, freed = n + k, freed + b
            yield n, freed, k == chunk
            if k < chunk:
                return

    async def remove_matching(self, pred: Callable[[Entry], bool], reason: str, chunk: int = CHUNK) -> tuple[int, int]:
        """remove_where for calls that may meet the whole tier (admin commands, background cleanup):
        `chunk` entries at a time, yielding to the event loop in between."""
        return await run_steps(self.removing(pred, reason, chunk))

    async def evict_down(self, over: Callable[[], bool], policy: str, now: float, reason: str,
                         chunk: int = CHUNK) -> tuple[int, int]:
        """evict_while, yielding to the event loop every `chunk` evictions."""
        return await run_steps(self.evicting(over, policy, now, reason, chunk))

    async def drop_expired(self, now: float, grace: float = 0.0) -> tuple[int, int]:
        """clear_expired in chunks (see remove_matching)."""
        cutoff = now - grace
        return await self.remove_matching(lambda e: e.expires_at <= cutoff, "expired")

    def clear(self, reason: str) -> tuple[int, int]:
        return self.remove_where(lambda e: True, reason)

    # ---- views -----------------------------------------------------------
    def entries(self) -> Iterable[Entry]:
        return self.data.values()

    def sample(self, n: int) -> list[Entry]:
        """n entries drawn at random, with replacement (all of them when there are no more than n): O(n)
        whatever the tier's size (random.sample would copy a population of up to ~4n)."""
        if len(self.slots) <= n:
            return list(self.slots)
        return random.choices(self.slots, k=n)
