"""What the cache measures about itself, and what it concludes from it.

Counters are plain ints updated on the request path (a hit adds one to a
dict slot and one to the current minute).  The analysis endpoints and the
optimization recommendations are computed from these measurements only.
"""
from __future__ import annotations

import time
from collections import OrderedDict, defaultdict, deque

MB = 1024 * 1024
MIN_SAMPLES = 20       # lookups before a recommendation is made from ratios


OUTCOMES = ("memory", "redis", "miss")  # the slots of a count cell


class Analytics:
    def __init__(self, ghost_keys: int = 4096):
        self.started = time.time()
        self.ghost_keys = ghost_keys       # cache.ghost_keys: recently evicted keys remembered
        # (operation, text-size tier) -> [memory hits, redis hits, misses]: a cached entry keeps its own
        self.cells: dict[tuple, list] = {}
        self.minutes: deque[list] = deque(maxlen=1440)  # [minute, hits, misses], last 24 h
        self.cur = [int(time.time() // 60), 0, 0]
        self.cur_end = (self.cur[0] + 1) * 60.0  # when the current minute ends
        self.minutes.append(self.cur)
        self.expired_misses = 0            # the key was cached but had expired
        self.popular_expired_misses = 0    # ... and it was a popular key (warming would have helped)
        self.capacity_misses = 0           # the key had been evicted for room (a bigger cache would have hit)
        self.normalization_misses = 0      # the same text under full normalization was cached under another key
        self.compute: dict[str, list] = defaultdict(lambda: [0, 0.0])  # op -> [computes, seconds]
        self.sets = 0
        self.set_bytes = 0                 # ready-to-send bytes stored
        self.stored_bytes = 0              # bytes after compression
        self.compressed_sets = 0
        self.single_flight_joins = 0
        self.stale_served = {"memory": 0, "redis": 0}
        self.evictions: dict[str, int] = defaultdict(int)
        self.ghosts: OrderedDict[str, None] = OrderedDict()
        self.pressure: dict[str, dict] = {}
        self.cleanups = {"runs": 0, "last_run": None, "last_removed": 0, "removed_total": 0}
        self.warming = {"refreshed": 0, "failed": 0, "deferred": 0, "scans": 0}

    # ---- request path ---------------------------------------------------------
    def cell(self, op: str, size_tier: str) -> list:
        """(operation, text-size tier)'s counts: [memory hits, redis hits, misses]."""
        c = self.cells.get((op, size_tier))
        if c is None:
            c = self.cells[(op, size_tier)] = [0, 0, 0]
        return c

    @property
    def counts(self) -> dict[tuple, int]:
        """(operation, text-size tier, outcome) -> count; outcome: memory | redis | miss."""
        return {(op, t, outcome): c[i] for (op, t), c in self.cells.items() for i, outcome in enumerate(OUTCOMES)
                if c[i]}

    def minute(self, now: float) -> list:
        """`now`'s [minute, hits, misses] (a new one when it is not the current one's).  The cache's hit path
        adds to the current one without asking while `now` is before cur_end."""
        m = int(now // 60)
        cur = self.cur
        if cur[0] != m:
            cur = self.cur = [m, 0, 0]
            self.minutes.append(cur)
            self.cur_end = (m + 1) * 60.0
        return cur

    def hit(self, op: str, size_tier: str, tier: str, now: float) -> None:
        self.cell(op, size_tier)[0 if tier == "memory" else 1] += 1
        self.minute(now)[1] += 1

    def miss(self, op: str, size_tier: str, now: float) -> None:
        self.cell(op, size_tier)[2] += 1
        self.minute(now)[2] += 1

    def evicted(self, key: str, reason: str) -> None:
        self.evictions[reason] += 1
        if reason in ("capacity", "resize", "pressure", "emergency"):
            g = self.ghosts
            g[key] = None
            while len(g) > self.ghost_keys:
                g.popitem(last=False)

    # ---- totals ---------------------------------------------------------------
    def totals(self) -> dict:
        t = {"memory": 0, "redis": 0, "miss": 0}
        for (_, _, outcome), n in self.counts.items():
            t[outcome] += n
        hits = t["memory"] + t["redis"]
        lookups = hits + t["miss"]
        return {"hits": hits, "misses": t["miss"], "memory_hits": t["memory"], "redis_hits": t["redis"],
                "lookups": lookups, "hit_ratio": round(hits / lookups, 6) if lookups else 0.0}

    def breakdown(self, index: int) -> dict:
        """Hits/misses grouped by operation (index 0) or text-size tier (index 1)."""
        groups: dict[str, dict] = {}
        for key, n in self.counts.items():
            g = groups.setdefault(key[index], {"hits": 0, "memory_hits": 0, "redis_hits": 0, "misses": 0})
            if key[2] == "miss":
                g["misses"] += n
            else:
                g["hits"] += n
                g[f"{key[2]}_hits"] += n
        for g in groups.values():
            n = g["hits"] + g["misses"]
            g["lookups"] = n
            g["hit_ratio"] = round(g["hits"] / n, 6) if n else 0.0
        return dict(sorted(groups.items()))

    def series(self, minutes: int = 60) -> list[dict]:
        now_m = int(time.time() // 60)
        by_m = {m: (h, s) for m, h, s in self.minutes}
        out = []
        for m in range(now_m - minutes + 1, now_m + 1):
            h, s = by_m.get(m, (0, 0))
            out.append({"minute": m * 60, "hits": h, "misses": s,
                        "hit_ratio": round(h / (h + s), 6) if h + s else None})
        return out

    def hourly(self) -> list[dict]:
        hours: dict[int, list] = {}
        for m, h, s in self.minutes:
            hr = time.gmtime(m * 60).tm_hour
            acc = hours.setdefault(hr, [0, 0])
            acc[0] += h
            acc[1] += s
        return [{"hour_utc": hr, "hits": v[0], "misses": v[1],
                 "hit_ratio": round(v[0] / (v[0] + v[1]), 6) if v[0] + v[1] else None}
                for hr, v in sorted(hours.items())]

    def avg_compute_seconds(self) -> dict:
        return {op: round(t / n, 6) for op, (n, t) in self.compute.items() if n}


def sample(cache) -> tuple[list, dict]:
    """Entries to analyse (all of them up to analysis_sample_size, else that many at random) and how they were drawn."""
    entries = cache.l1.sample(cache.store.get("cache")["analysis_sample_size"])
    total = len(cache.l1)
    return entries, {"sampled": len(entries) < total, "sample_size": len(entries), "entries": total}


def expired_estimate(entries: list, total: int, now: float) -> int:
    """Expired entries in the tier, from a sample of it (exact when the sample is the whole tier)."""
    if not entries:
        return 0
    n = sum(1 for e in entries if e.expires_at <= now)
    return n if len(entries) == total else round(n * total / len(entries))


def recommendations(cache) -> list[dict]:
    """Each: {id, category, priority, reason, evidence, action: {endpoint, body, changes} | None}."""
    cfg = cache.store.get("cache")
    stats = cache.stats
    tot = stats.totals()
    misses = tot["misses"]
    out: list[dict] = []
    max_bytes = cfg["max_memory_mb"] * MB
    mem_util = cache.l1.bytes / max_bytes if max_bytes else 0.0
    entry_util = len(cache.l1) / cfg["max_entries"]
    enough = tot["lookups"] >= MIN_SAMPLES

    def add(id_, category, priority, reason, evidence, endpoint=None, body=None, changes=None):
        action = None
        if endpoint:  # body: what to POST; changes: what it sets in the "cache" config section
            action = {"endpoint": endpoint, "body": body, "changes": dict(body if changes is None else changes)}
        out.append({"id": id_, "category": category, "priority": priority, "reason": reason,
                    "evidence": evidence, "action": action})

    # 1. the cache is too small: misses on keys evicted for room
    cap_share = stats.capacity_misses / misses if misses else 0.0
    cap_evictions = stats.evictions.get("capacity", 0)
    if enough and misses and (cap_share >= 0.1 or (cap_evictions and mem_util >= 0.9 and cap_evictions >= 0.2 * max(1, stats.sets))):
        body = {}
        if entry_util >= 0.9:
            body["max_entries"] = min(10_000_000, int(cfg["max_entries"] * 1.5) + 1)
        if mem_util >= 0.9 or not body:
            body["max_memory_mb"] = round(min(1_000_000.0, cfg["max_memory_mb"] * 1.5), 3)
        add("increase_size", "size", "high",
            f"{cap_share:.0%} of misses were keys evicted for room; a larger cache would have answered them",
            {"capacity_misses": stats.capacity_misses, "misses": misses, "capacity_evictions": cap_evictions,
             "memory_utilization": round(mem_util, 4), "entry_utilization": round(entry_util, 4)},
            "/internal/cache/configure-size", body)

    # 2. entries expire while still wanted
    exp_share = stats.expired_misses / misses if misses else 0.0
    if enough and misses and exp_share >= 0.2:
        base = cfg["base_ttl_seconds"]
        new_base = min(30 * 86400, base * 2)
        body = {"base_ttl_seconds": new_base, "adaptive_ttl": True,
                "max_ttl_seconds": max(cfg["max_ttl_seconds"], int(new_base * cfg["popularity_factor"]))}
        add("extend_ttl", "ttl", "high" if exp_share >= 0.4 else "medium",
            f"{exp_share:.0%} of misses were keys that had expired; longer TTLs would have answered them",
            {"expired_misses": stats.expired_misses, "misses": misses, "base_ttl_seconds": base},
            "/internal/cache/configure-ttl", body)

    # 3. popular keys expire: warm them
    if stats.popular_expired_misses >= 3 and not cfg["enable_background_warming"]:
        add("enable_warming", "warming", "medium",
            f"{stats.popular_expired_misses} misses were popular keys that had expired; warming refreshes them first",
            {"popular_expired_misses": stats.popular_expired_misses},
            "/internal/cache/enable-warming",
            {"enable_background_warming": True, "warming_threshold": cfg["warming_threshold"],
             "max_warming_operations": cfg["max_warming_operations"]})

    # 4. keys that normalization would merge
    norm_share = stats.normalization_misses / misses if misses else 0.0
    dup = cache.duplicate_entries()
    if enough and (norm_share >= 0.05 or (len(cache.l1) and dup / len(cache.l1) >= 0.05)):
        if not cfg["enable_normalization"]:
            body = {"enable_normalization": True}
        elif not cfg["normalize_whitespace"] or not cfg["normalize_unicode"]:
            body = {"normalize_whitespace": True, "normalize_unicode": True}
        else:
            body = {"normalize_case": True}
        add("normalize_keys", "keys", "medium",
            f"{norm_share:.0%} of misses (and {dup} cached entries) differ from a cached text only by "
            "whitespace, case or Unicode form",
            {"normalization_misses": stats.normalization_misses, "duplicate_entries": dup, "misses": misses},
            "/internal/cache/optimize-keys", body)

    # 5. values worth compressing
    if stats.sets >= MIN_SAMPLES:
        avg = stats.set_bytes / stats.sets
        thr = cfg["compression_threshold_mb"] * MB
        if avg >= 4096 and thr > avg and mem_util >= 0.5:
            add("compress_values", "memory", "low",
                f"stored answers average {avg:.0f} bytes, below the {thr:.0f}-byte compression threshold",
                {"avg_value_bytes": round(avg), "compression_threshold_bytes": thr},
                "/internal/cache/optimize-memory", {"compression_threshold_mb": round(avg / 2 / MB, 6)})

    # 6. memory reserved but unused
    if tot["lookups"] >= 1000 and not cap_evictions and mem_util < 0.25 and entry_util < 0.25 \
            and cfg["max_memory_mb"] > 16 and time.time() - stats.started > 3600:
        new = round(max(16.0, cache.l1.bytes * 2 / MB), 3)
        add("reduce_size", "size", "low",
            f"the cache uses {mem_util:.0%} of its memory after {tot['lookups']} lookups and never evicted for room",
            {"memory_utilization": round(mem_util, 4), "entry_utilization": round(entry_util, 4)},
            "/internal/cache/configure-size", {"max_memory_mb": new})

    # 7. stale entries occupy memory without auto cleanup (counted in a random sample of a large tier)
    entries, sampling = sample(cache)
    expired_now = expired_estimate(entries, len(cache.l1), time.time())
    if len(cache.l1) and expired_now / len(cache.l1) >= 0.25 and not cfg["auto_cleanup"]:
        add("enable_auto_cleanup", "memory", "low",
            f"{'about ' if sampling['sampled'] else ''}{expired_now} of {len(cache.l1)} entries have expired "
            "and wait for eviction",
            {"expired_entries": expired_now, "entries": len(cache.l1), "sampling": sampling},
            "/internal/cache/enable-auto-cleanup", None, {"auto_cleanup": True})

    # 8. Redis outages (no automatic action)
    l2 = cache.l2
    if l2.configured and l2.outages:
        add("check_redis", "availability", "high" if not l2.up else "medium",
            f"Redis L2 had {l2.outages} outage(s); the cache served from memory meanwhile",
            {"outages": l2.outages, "recoveries": l2.recoveries, "state": "up" if l2.up else "down",
             "last_error": l2.last_error})

    # 9. nothing to gain: traffic is unique
    if enough and tot["hit_ratio"] < 0.5 and not out:
        add("traffic_unique", "traffic", "info",
            "most misses are first-time requests: no cache setting would answer them",
            {"hit_ratio": tot["hit_ratio"], "misses": misses})
    return out
