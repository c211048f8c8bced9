"""Fill a response cache's memory tier with synthetic entries, fast (no compute, no keys hashed).

Used by the analysis-lag scenario (bench/lag.py) and by the tests of the
bounded analysis views.  Entries look like the real ones: "<operation>:<digest>"
keys, a small ready-to-send value, a fingerprint (every `dup_every`-th
repeats the one before, as normalization duplicates do), hits spread over a
long tail, and `expired_share` of them already expired.
"""
from __future__ import annotations

import random
import time

from service.cache.memory import Entry
from service.providers.base import OPERATIONS

VALUE = b'{"operation":"summarize","success":true,"summary":"a short synthetic answer"'


def fill(cache, n: int, expired_share: float = 0.0, dup_every: int = 10, seed: int = 7) -> None:
    rnd = random.Random(seed)
    cfg = cache.store.get("cache")
    now = time.time()
    ops = list(OPERATIONS)
    for i in range(n):
        op = ops[i % len(ops)]
        expired = rnd.random() < expired_share
        stored = now - 7200 if expired else now
        e = Entry(f"{op}:{i:032x}", VALUE, False, op, "small", stored, 3600.0,
                  (i - 1 if dup_every and i % dup_every == 0 and i else i).to_bytes(12, "big"))
        e.hits = int(rnd.paretovariate(1.2)) - 1
        cache._put(e, cfg, now)
