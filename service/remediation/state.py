"""Where the remediation loop keeps what must hold across workers and replicas.

Two implementations with one interface: `RedisState` (REDIS_URL set: every
process sharing the Redis sees the same claims, limits, active actions and
history) and `MemoryState` (this process only).  Every Redis key carries the
`{llmapi}` hash tag, so the Lua admission script's keys share one Cluster slot.

* claim(key, ttl): SET NX EX -- the first caller wins (fingerprint dedupe,
  one revert per resolve, one verification per action).
* admit(...): cooldown, per-entry and global hourly caps checked -- and, when
  `consume`, the run recorded -- in one atomic step.
* active records: one per (entry, fingerprint); `pop` is atomic, so exactly
  one process reverts.
"""
from __future__ import annotations

import json
import time
from collections import deque

PREFIX = "{llmapi}:remediation"
HISTORY_LIMIT = 500
HOUR = 3600.0

# KEYS: global runs zset, entry runs zset, last-run hash.  ARGV: now, entry, cooldown, entry cap, global cap,
# member, consume (1/0).  Returns '' (admitted) or the reason.
ADMIT_SCRIPT = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 3600)
local last = redis.call('HGET', KEYS[3], ARGV[2])
if last and now - tonumber(last) < tonumber(ARGV[3]) then return 'cooldown' end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 'entry_cap' end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then return 'global_cap' end
if ARGV[7] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  redis.call('ZADD', KEYS[2], now, ARGV[6])
  redis.call('HSET', KEYS[3], ARGV[2], now)
  redis.call('EXPIRE', KEYS[1], 7200)
  redis.call('EXPIRE', KEYS[2], 7200)
end
return ''
"""
UPDATE_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1 end
return 0
"""


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


class MemoryState:
    shared = False

    def __init__(self):
        self.claims: dict[str, float] = {}
        self.runs: deque[tuple[float, str]] = deque()   # (time, entry), the last hour
        self.last: dict[str, float] = {}
        self.active: dict[str, dict] = {}
        self.hist: deque[dict] = deque(maxlen=HISTORY_LIMIT)

    async def claim(self, key: str, ttl: float) -> bool:
        now = time.time()
        if self.claims.get(key, 0) > now:
            return False
        if len(self.claims) > 10_000:  # bounded: drop the expired
            self.claims = {k: v for k, v in self.claims.items() if v > now}
        self.claims[key] = now + ttl
        return True

    async def release(self, key: str) -> None:
        self.claims.pop(key, None)

    async def admit(self, entry: str, now: float, cooldown: float, entry_cap: int, global_cap: int,
                    consume: bool) -> str:
        while self.runs and self.runs[0][0] <= now - HOUR:
            self.runs.popleft()
        if entry in self.last and now - self.last[entry] < cooldown:
            return "cooldown"
        if sum(1 for _, e in self.runs if e == entry) >= entry_cap:
            return "entry_cap"
        if len(self.runs) >= global_cap:
            return "global_cap"
        if consume:
            self.runs.append((now, entry))
            self.last[entry] = now
        return ""

    async def counts(self, now: float) -> dict:
        recent = [(t, e) for t, e in self.runs if t > now - HOUR]
        per: dict[str, int] = {}
        for _, e in recent:
            per[e] = per.get(e, 0) + 1
        return {"total": len(recent), "per_entry": per, "last_run": dict(self.last)}

    async def put(self, key: str, record: dict) -> None:
        self.active[key] = record

    async def update(self, key: str, record: dict) -> bool:
        """Replace a record only if it is still active (a resolve may have popped it meanwhile)."""
        if key not in self.active:
            return False
        self.active[key] = record
        return True

    async def pop(self, key: str) -> dict | None:
        return self.active.pop(key, None)

    async def all_active(self) -> dict[str, dict]:
        return dict(self.active)

    async def add_history(self, item: dict) -> None:
        self.hist.append(item)

    async def history(self, limit: int) -> list[dict]:
        return list(self.hist)[-limit:][::-1]


class RedisState:
    shared = True

    def __init__(self, redis):
        self.r = redis
        self._admit = redis.register_script(ADMIT_SCRIPT)
        self._update = redis.register_script(UPDATE_SCRIPT)

    async def claim(self, key: str, ttl: float) -> bool:
        return bool(await self.r.set(f"{PREFIX}:claim:{key}", "1", nx=True, px=max(1, int(ttl * 1000))))

    async def release(self, key: str) -> None:
        await self.r.delete(f"{PREFIX}:claim:{key}")

    async def admit(self, entry: str, now: float, cooldown: float, entry_cap: int, global_cap: int,
                    consume: bool) -> str:
        member = f"{entry}:{now!r}:{id(self)}"
        out = await self._admit(keys=[f"{PREFIX}:runs", f"{PREFIX}:runs:{entry}", f"{PREFIX}:last"],
                                args=[repr(now), entry, repr(cooldown), entry_cap, global_cap, member,
                                      "1" if consume else "0"])
        return _s(out) or ""

    async def counts(self, now: float) -> dict:
        total = await self.r.zcount(f"{PREFIX}:runs", now - HOUR, "+inf")
        last = {_s(k): float(v) for k, v in (await self.r.hgetall(f"{PREFIX}:last")).items()}
        per = {}
        for e in last:
            n = await self.r.zcount(f"{PREFIX}:runs:{e}", now - HOUR, "+inf")
            if n:
                per[e] = int(n)
        return {"total": int(total), "per_entry": per, "last_run": last}

    async def put(self, key: str, record: dict) -> None:
        await self.r.hset(f"{PREFIX}:active", key, json.dumps(record))

    async def update(self, key: str, record: dict) -> bool:
        return bool(await self._update(keys=[f"{PREFIX}:active"], args=[key, json.dumps(record)]))

    async def pop(self, key: str) -> dict | None:
        raw = await self.r.hget(f"{PREFIX}:active", key)
        if raw is None:
            return None
        if not await self.r.hdel(f"{PREFIX}:active", key):
            return None  # another process took it first
        return json.loads(raw)

    async def all_active(self) -> dict[str, dict]:
        raw = await self.r.hgetall(f"{PREFIX}:active")
        return {_s(k): json.loads(v) for k, v in raw.items()}

    async def add_history(self, item: dict) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.lpush(f"{PREFIX}:history", json.dumps(item, default=str))
        pipe.ltrim(f"{PREFIX}:history", 0, HISTORY_LIMIT - 1)
        await pipe.execute()

    async def history(self, limit: int) -> list[dict]:
        return [json.loads(h) for h in await self.r.lrange(f"{PREFIX}:history", 0, limit - 1)]
