"""Decisions from measured data: the auto-optimize plans and the stack's recommendations.

Each plan function reads the measurements of one middleware and its live
config and returns (changes, applied, reason): `changes` is what to give
ctx.store.update(), `applied` the list the endpoint reports ({field, from,
to, why}).  No data, no change: every plan refuses to act on fewer samples
than it needs and says so in `reason`.
"""
from __future__ import annotations

KiB = 1024


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def _change(changes: dict, applied: list, field: str, old, new, why: str) -> None:
    changes[field] = new
    applied.append({"field": field, "from": old, "to": new, "why": why})


# ---- compression ------------------------------------------------------------------
MIN_COMPRESSION_SAMPLES = 20


def plan_compression(stats: dict, cfg: dict) -> tuple[dict, list, str]:
    n = stats["responses_attempted"]
    if n < MIN_COMPRESSION_SAMPLES:
        sk = stats["skipped"]
        return {}, [], (f"not enough data: {n} responses were compressed since {int(stats['since'])} "
                        f"(need {MIN_COMPRESSION_SAMPLES}); skipped: {sk['too_small']} below minimum_size, "
                        f"{sk['not_acceptable']} without an accepted encoding")
    changes: dict = {}
    applied: list = []
    cpu = stats["cpu_overhead_percentage"]
    level = cfg["level"]
    if cpu > 10 and level > 1:
        new = max(1, level - (3 if cpu > 25 else 2))
        _change(changes, applied, "level", level, new,
                f"compression used {cpu}% of the process's CPU (above 10%)")
    elif cpu < 1 and level < 6 and stats["average_compression_ratio"] > 0.3:
        _change(changes, applied, "level", level, 6,
                f"compression used only {cpu}% of the process's CPU; level 6 compresses better")
    # the smallest size band that barely compresses: raise the minimum past it
    for band in stats["by_size"]:
        edge = band["below_bytes"]
        if edge is None or band["responses"] < 10 or band["ratio"] is None:
            continue
        if band["ratio"] > 0.9 and edge > cfg["minimum_size"]:
            _change(changes, applied, "minimum_size", cfg["minimum_size"], edge,
                    f"responses below {edge} bytes shrank only to {band['ratio']:.0%} of their size")
        break
    if not applied:
        return {}, [], (f"current settings fit the measurements: ratio {stats['average_compression_ratio']}, "
                        f"CPU {cpu}% over {n} responses")
    return changes, applied, "; ".join(a["why"] for a in applied)


# ---- rate limiting ------------------------------------------------------------------
MIN_RATE_LIMIT_DECISIONS = 100


def plan_rate_limit(stats: dict, cfg: dict, redis_timeout_ms: float = 250.0) -> tuple[dict, list, str]:
    """Changes of the rate_limit section, and of redis.rate_limit_timeout_ms under the key "redis"."""
    n = stats["decisions"]["total"]
    if n < MIN_RATE_LIMIT_DECISIONS:
        return {}, [], f"not enough data: {n} rate-limit decisions (need {MIN_RATE_LIMIT_DECISIONS})"
    changes: dict = {}
    applied: list = []
    lc = stats["local_cache_stats"]
    if lc["evictions"] > 0 and cfg["local_cache_size"] < 10_000_000:
        new = min(10_000_000, cfg["local_cache_size"] * 2)
        _change(changes, applied, "local_cache_size", cfg["local_cache_size"], new,
                f"{lc['evictions']} clients were evicted from the local cache")
    if stats["mode"] == "redis" and lc["hit_ratio"] < 0.9 and cfg["lease_window_ms"] < 1000:
        new = min(1000.0, max(25.0, cfg["lease_window_ms"] * 2))
        _change(changes, applied, "lease_window_ms", cfg["lease_window_ms"], new,
                f"only {lc['hit_ratio']:.0%} of decisions were served from local leases")
    if stats["redis_calls"] >= 20 and stats["redis_p95_latency"] > redis_timeout_ms / 2 and redis_timeout_ms < 2000:
        new = min(2000.0, redis_timeout_ms * 2)
        timeout: dict = {}
        _change(timeout, applied, "rate_limit_timeout_ms", redis_timeout_ms, new,
                f"Redis p95 {stats['redis_p95_latency']} ms is over half the timeout")
        applied[-1]["section"] = "redis"
        changes["redis"] = timeout
    if not applied:
        why = "Redis is down, limits are local until it answers; " if stats["mode"] == "fallback" else ""
        return {}, [], (f"{why}current settings fit the measurements: {lc['hit_ratio']:.0%} of {n} decisions "
                        f"without a Redis round trip, Redis average {stats['redis_average_latency']} ms")
    return changes, applied, "; ".join(a["why"] for a in applied)


# ---- request size ---------------------------------------------------------------------
MIN_SIZE_SAMPLES = 100
FIELDS = {"json": "max_json_size", "form": "max_form_size", "file": "max_request_size",
          "streaming": "max_streaming_size"}


def plan_request_size(rs, cfg: dict) -> tuple[dict, list, str]:
    changes: dict = {}
    applied: list = []
    seen = 0
    for cls, field in FIELDS.items():
        accepted, rejected = rs.accepted[cls], rs.rejected[cls]
        seen += accepted + rejected
        limit = cfg[field]
        if field in changes:
            continue
        near = [s for s in rs.rejected_sizes[cls] if s <= 2 * limit]
        if rejected >= 5 and len(near) >= 5 and rejected >= 0.01 * (accepted + rejected):
            new = min(2 * limit, _next_pow2(max(near)))
            _change(changes, applied, field, limit, new,
                    f"{len(near)} {cls} requests were refused within 2x of the {limit}-byte limit")
            continue
        biggest = rs.max_seen[cls]
        if accepted >= MIN_SIZE_SAMPLES and biggest and limit > 16 * biggest:
            new = max(64 * KiB, _next_pow2(4 * biggest))
            if new < limit:
                _change(changes, applied, field, limit, new,
                        f"the largest of {accepted} {cls} bodies was {biggest} bytes; "
                        f"a limit of {new} keeps 4x headroom")
    if not applied:
        if seen < MIN_SIZE_SAMPLES:
            return {}, [], f"not enough data: {seen} requests with a body (need {MIN_SIZE_SAMPLES} of one type)"
        return {}, [], "current limits fit the measured body sizes"
    return changes, applied, "; ".join(a["why"] for a in applied)


# ---- versioning -------------------------------------------------------------------------
MIN_VERSION_SAMPLES = 50


def plan_versioning(stats: dict, cfg: dict) -> tuple[dict, list, str]:
    n = stats["requests"]
    if n < MIN_VERSION_SAMPLES:
        return {}, [], f"not enough data: {n} versioned requests (need {MIN_VERSION_SAMPLES})"
    changes: dict = {}
    applied: list = []
    named = {s: c for s, c in stats["by_source"].items() if s != "default"}
    total_named = sum(named.values())
    if total_named:
        src, cnt = max(named.items(), key=lambda kv: kv[1])
        strategy = cfg["detection_strategy"]
        if cnt / total_named >= 0.9 and strategy.endswith("_first") and strategy != f"{src}_first":
            _change(changes, applied, "detection_strategy", strategy, f"{src}_first",
                    f"{cnt / total_named:.0%} of versioned requests name their version by {src}")
    cache = stats["cache"]
    lookups = cache["hits"] + cache["misses"]
    if cfg["enable_caching"] and lookups >= 100:
        if cache["evictions"] > 0 and (cache["hit_ratio"] or 0) < 0.9 and cfg["cache_size"] < 1_000_000:
            _change(changes, applied, "cache_size", cfg["cache_size"], min(1_000_000, cfg["cache_size"] * 2),
                    f"the detection cache evicted {cache['evictions']} entries at a hit ratio of "
                    f"{cache['hit_ratio']:.0%}")
    fast = list(cfg["fast_path_versions"])
    path_versions = [v for v in stats.get("path_versions", []) if v in cfg["supported_versions"] and v not in fast]
    if path_versions:
        _change(changes, applied, "fast_path_versions", fast, fast + sorted(path_versions),
                f"versions {sorted(path_versions)} arrive by path and can skip the cache")
    if not applied:
        return {}, [], (f"current settings fit the measurements: {n} requests, sources {stats['by_source']}, "
                        f"cache hit ratio {cache['hit_ratio']}")
    return changes, applied, "; ".join(a["why"] for a in applied)


# ---- the stack ----------------------------------------------------------------------------
def status(total_ms: float, samples: int, mcfg: dict) -> str:
    if samples == 0:
        return "no_data"
    if total_ms <= mcfg["overhead_target_ms"]:
        return "optimal"
    if total_ms <= mcfg["overhead_warning_ms"]:
        return "acceptable"
    return "degraded"


def recommendations(ctx, snap: dict) -> list[dict]:
    store = ctx.store
    mcfg = store.get("middleware")
    out: list[dict] = []
    if snap["samples"] < 20:
        out.append({"middleware": "stack", "severity": "info",
                    "issue": f"only {snap['samples']} timed samples so far (one request in {snap['sample_every']})",
                    "action": "let traffic run, or lower middleware.sample_every",
                    "endpoint": "POST /internal/config/middleware",
                    "body": {"sample_every": max(1, snap["sample_every"] // 4)}})
    for name, v in sorted(snap["breakdown"].items(), key=lambda kv: -kv[1]["avg_ms"]):
        if v["avg_ms"] > mcfg["middleware_warning_ms"]:
            out.append({"middleware": name, "severity": "warning",
                        "issue": f"{name} costs {v['avg_ms']} ms per request (above {mcfg['middleware_warning_ms']} ms)",
                        "action": _ACTIONS.get(name, "review its configuration"),
                        "endpoint": _ENDPOINTS.get(name, "GET /internal/middleware")})
    comp = ctx.extras.get("compression")
    if comp is not None:
        st = comp.stats()
        if st["cpu_overhead_percentage"] > 10:
            out.append({"middleware": "compression", "severity": "warning",
                        "issue": f"compression uses {st['cpu_overhead_percentage']}% of the process's CPU",
                        "action": "lower the level or raise minimum_size",
                        "endpoint": "POST /internal/middleware/compression/auto-optimize"})
    rl = ctx.ratelimiter
    if rl is not None and store.get("rate_limit")["enabled"]:
        st = rl.stats()
        if st["mode"] == "fallback":
            out.append({"middleware": "rate_limit", "severity": "critical",
                        "issue": "Redis is unavailable: each process enforces the limits on its own",
                        "action": "restore Redis; limits become global again by themselves",
                        "endpoint": "GET /internal/middleware/rate-limiting/performance"})
        elif st["decisions"]["total"] >= 100 and st["local_cache_stats"]["hit_ratio"] < 0.9 and st["mode"] == "redis":
            out.append({"middleware": "rate_limit", "severity": "info",
                        "issue": f"{st['local_cache_stats']['hit_ratio']:.0%} of decisions were local",
                        "action": "raise rate_limit.lease_window_ms",
                        "endpoint": "POST /internal/middleware/rate-limiting/auto-optimize"})
    ver = ctx.extras.get("versioning")
    if ver is not None:
        c = ver.stats()["cache"]
        if c["hits"] + c["misses"] >= 100 and (c["hit_ratio"] or 0) < 0.5:
            out.append({"middleware": "versioning", "severity": "info",
                        "issue": f"version detection cache hit ratio {c['hit_ratio']}",
                        "action": "raise versioning.cache_size or detect by header",
                        "endpoint": "POST /internal/middleware/versioning/auto-optimize"})
    return out


_ACTIONS = {
    "compression": "raise minimum_size or lower the level",
    "rate_limit": "raise lease_window_ms so fewer requests wait for Redis",
    "versioning": "enable the detection cache or use fast_path_versions",
    "request_size": "set check_async true (no pre-read)",
    "security": "drop CORS or optional headers you do not need",
}
_ENDPOINTS = {
    "compression": "POST /internal/middleware/compression/auto-optimize",
    "rate_limit": "POST /internal/middleware/rate-limiting/auto-optimize",
    "versioning": "POST /internal/middleware/versioning/auto-optimize",
    "request_size": "POST /internal/middleware/request-size/auto-optimize",
}
