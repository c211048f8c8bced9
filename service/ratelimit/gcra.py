"""GCRA (generic cell rate algorithm): the Redis lease script and a local twin.

A limit of R requests per minute is one request every T = 60/R seconds; a
bucket of C = burst + 1 requests may be spent at once.  The state is one
number, the theoretical arrival time (TAT).  k requests fit now when
max(TAT, now) + k*T <= now + C*T.

The Redis script grants up to `want` tokens at once (a lease) against the
Redis clock, atomically, so however many processes lease from one key the
grants never exceed what the limit allows: C + elapsed/T.
"""
from __future__ import annotations

import math
from time import monotonic

# KEYS[1]: TAT in microseconds of the Redis clock.
# ARGV: interval_us, capacity, want.
# Returns {granted, remaining, wait_us (until one token is free when none was granted), reset_us (until full)}.
LEASE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = now
local v = redis.call('GET', KEYS[1])
if v then
  tat = tonumber(v)
  if tat < now then tat = now end
end
local avail = math.floor((now + cap * interval - tat) / interval)
if avail < 0 then avail = 0 end
local grant = want
if grant > avail then grant = avail end
if grant > 0 then
  tat = tat + grant * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local wait = 0
if grant == 0 then
  wait = math.ceil(tat - (now + (cap - 1) * interval))
  if wait < 1 then wait = 1 end
end
return {grant, avail - grant, wait, math.ceil(tat - now)}
"""


def capacity(limit_per_minute: int, burst: int, lease_window_s: float) -> int:
    """Tokens one bucket may hold: the burst, or lease_window worth of the rate when that is more
    (a process leases ahead up to that much traffic; see RateLimiter)."""
    return max(burst + 1, math.ceil(limit_per_minute / 60.0 * lease_window_s))


class LocalGCRA:
    """In-process GCRA per key, bounded: the oldest-touched keys are dropped beyond max_keys."""

    def __init__(self, max_keys: int):
        self.max_keys = max_keys
        self.tat: dict[str, float] = {}
        self.evictions = 0

    def decide(self, key: str, limit_per_minute: int, burst: int, now: float | None = None):
        """(allowed, remaining, reset_s, retry_after_s)"""
        if now is None:
            now = monotonic()
        interval = 60.0 / limit_per_minute
        window = (burst + 1) * interval
        table = self.tat
        tat = table.get(key)
        if tat is None or tat < now:
            tat = now
        if tat + interval - now <= window + 1e-9:
            tat += interval
            allowed = True
            retry = 0.0
        else:
            allowed = False
            retry = tat + interval - now - window
        if len(table) < self.max_keys:
            table[key] = tat
        else:  # full: keep the recently used keys, drop the least recently used
            table.pop(key, None)
            table[key] = tat
            while len(table) > self.max_keys:
                table.pop(next(iter(table)))
                self.evictions += 1
        return allowed, int((now + window - tat) / interval + 1e-9), tat - now, retry

    def __len__(self) -> int:
        return len(self.tat)
