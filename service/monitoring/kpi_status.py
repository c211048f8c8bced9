"""The service's own view of the KPI table, computed from its in-process metrics.

Every SAMPLE_INTERVAL seconds a snapshot of the cumulative counters that the
KPIs derive from is taken (API request histogram, 5xx count, AI histogram,
cache hits/misses, process CPU seconds).  A KPI's current value is the
difference between now and the snapshot WINDOW seconds ago, the same 5-minute
window the Prometheus rules use; percentiles are interpolated inside the
histogram buckets the way PromQL's histogram_quantile does.  Memory is RSS
over the memory limit (cgroup or host), CPU is CPU seconds over wall seconds
over the CPU limit.

Every TREND_INTERVAL seconds the difference to the previous minute is kept as
a trend point (bounded: TREND_KEEP points), which answers time-window queries
exactly (histograms of a window are the sum of the minutes' histograms).

With WORKERS > 1 the counters are read through prometheus_client's
multiprocess collector, so the values cover every worker.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field, fields

from exporter import kpis
from exporter.read import samples
from exporter.metrics import (AI_BUCKETS, AI_DURATION, API_ROUTE_PREFIX, CACHE_HITS, CACHE_MISSES, CPU_LIMIT, HTTP_BUCKETS,
                              HTTP_DURATION, HTTP_REQUESTS, MEMORY_LIMIT, PROCESS_CPU, PROCESS_RSS)

log = logging.getLogger("service.monitoring.kpi")

SAMPLE_INTERVAL = 5.0
WINDOW = 300.0             # seconds, as kpis.WINDOW
TREND_INTERVAL = 60.0
TREND_KEEP = 24 * 60       # one day of minutes
MIN_CPU_SECONDS = 1.0       # CPU share over a shorter interval is noise

_HTTP_LE = tuple(HTTP_BUCKETS) + (float("inf"),)
_AI_LE = tuple(AI_BUCKETS) + (float("inf"),)


@dataclass
class Counters:
    """Cumulative values at one moment (or, after `minus`, a difference)."""
    t: float = 0.0                     # monotonic
    wall: float = 0.0                  # epoch seconds
    http_buckets: list = field(default_factory=lambda: [0.0] * len(_HTTP_LE))
    http_count: float = 0.0
    http_sum: float = 0.0
    http_5xx: float = 0.0
    http_4xx: float = 0.0
    ai_buckets: list = field(default_factory=lambda: [0.0] * len(_AI_LE))
    ai_count: float = 0.0
    ai_sum: float = 0.0
    cache_hits: float = 0.0
    cache_misses: float = 0.0
    cpu_seconds: float = 0.0
    rss: float = 0.0                   # gauges: the value at the later moment
    cpu_limit: float = 1.0
    memory_limit: float = 1.0

    def _zip(self, other: "Counters", fn) -> dict:
        """fn applied field by field (lists element-wise) to the counted fields."""
        out = {}
        for f in fields(Counters):
            if f.name in _NOT_COUNTED:
                continue
            x, y = getattr(self, f.name), getattr(other, f.name)
            out[f.name] = [fn(a, b) for a, b in zip(x, y)] if isinstance(x, list) else fn(x, y)
        return out

    def minus(self, old: "Counters") -> "Counters":
        """The difference since `old` (never negative: a restarted worker only loses counts)."""
        return Counters(t=self.t - old.t, wall=self.wall, rss=self.rss, cpu_limit=self.cpu_limit,
                        memory_limit=self.memory_limit, **self._zip(old, lambda a, b: max(0.0, a - b)))

    def plus(self, o: "Counters") -> "Counters":
        return Counters(t=self.t + o.t, wall=max(self.wall, o.wall), rss=max(self.rss, o.rss),
                        cpu_limit=o.cpu_limit, memory_limit=o.memory_limit,
                        **self._zip(o, lambda a, b: a + b))


_NOT_COUNTED = frozenset(("t", "wall", "rss", "cpu_limit", "memory_limit"))


def bucket_quantile(q: float, les: tuple, cumulative: list) -> float | None:
    """PromQL histogram_quantile over cumulative bucket counts (None without observations)."""
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return None
    rank = q * total
    for i, c in enumerate(cumulative):
        if c >= rank:
            if i == len(les) - 1:  # +Inf bucket: the highest finite bound
                return les[-2]
            start = les[i - 1] if i > 0 else 0.0
            below = cumulative[i - 1] if i > 0 else 0.0
            count = c - below
            return les[i] if count <= 0 else start + (les[i] - start) * ((rank - below) / count)
    return les[-2]


def read_counters() -> Counters:
    from exporter import collectors
    collectors.sample_process()
    c = Counters(t=time.monotonic(), wall=time.time())
    http_idx = {le: i for i, le in enumerate(_HTTP_LE)}
    ai_idx = {le: i for i, le in enumerate(_AI_LE)}
    hb, ab = c.http_buckets, c.ai_buckets
    for s in samples((HTTP_DURATION, HTTP_REQUESTS, AI_DURATION, CACHE_HITS, CACHE_MISSES, PROCESS_CPU,
                       PROCESS_RSS, CPU_LIMIT, MEMORY_LIMIT)):
        name, labels, v = s.name, s.labels, s.value
        if name.startswith(("llmapi_http_request", "llmapi_http_requests")):
            if not kpis.is_api_route(labels.get("route", "")):
                continue
            if name == "llmapi_http_request_duration_seconds_bucket":
                i = http_idx.get(float(labels["le"]))
                if i is not None:
                    hb[i] += v
            elif name == "llmapi_http_request_duration_seconds_count":
                c.http_count += v
            elif name == "llmapi_http_request_duration_seconds_sum":
                c.http_sum += v
            elif name == "llmapi_http_requests_total":
                if not labels.get("route", "").startswith(API_ROUTE_PREFIX):
                    continue  # as the duration histogram (API routes only): the error rate's two sides agree
                st = labels.get("status", "")
                c.http_5xx += v if st.startswith("5") else 0.0
                c.http_4xx += v if st.startswith("4") else 0.0
        elif name == "llmapi_ai_request_duration_seconds_bucket":
            i = ai_idx.get(float(labels["le"]))
            if i is not None:
                ab[i] += v
        elif name == "llmapi_ai_request_duration_seconds_count":
            c.ai_count += v
        elif name == "llmapi_ai_request_duration_seconds_sum":
            c.ai_sum += v
        elif name == "llmapi_cache_hits_total":
            c.cache_hits += v
        elif name == "llmapi_cache_misses_total":
            c.cache_misses += v
        elif name == "llmapi_process_cpu_seconds_total":
            c.cpu_seconds += v
        elif name == "llmapi_process_resident_memory_bytes":
            c.rss += v
        elif name == "llmapi_cpu_limit_cores" and v > 0:
            c.cpu_limit = v
        elif name == "llmapi_memory_limit_bytes" and v > 0:
            c.memory_limit = v
    return c


def kpi_values(d: Counters) -> dict[str, float | None]:
    """Each KPI's value (base units) from a difference of counters; None when unmeasured."""
    lookups = d.cache_hits + d.cache_misses
    return {
        "api_response_time_p95": bucket_quantile(0.95, _HTTP_LE, d.http_buckets),
        "cache_hit_ratio": d.cache_hits / lookups if lookups > 0 else None,
        "memory_usage": d.rss / d.memory_limit if d.memory_limit > 0 and d.rss > 0 else None,
        "cpu_usage": (d.cpu_seconds / d.t / d.cpu_limit) if d.t >= MIN_CPU_SECONDS and d.cpu_limit > 0 else None,
        "error_rate": d.http_5xx / d.http_count if d.http_count > 0 else None,
        "ai_response_time_p95": bucket_quantile(0.95, _AI_LE, d.ai_buckets),
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 3)


def _r(v: float | None, n: int = 6) -> float | None:
    return None if v is None else round(v, n)


class KpiStatus:
    def __init__(self, ctx, reader=read_counters):
        self.ctx = ctx
        self.read = reader  # () -> Counters; tests inject synthetic ones
        self.started = time.time()
        first = self.read()
        self.samples: deque[Counters] = deque([first], maxlen=int(WINDOW / SAMPLE_INTERVAL) + 2)
        self.trend_base = first
        self.trends: deque[Counters] = deque(maxlen=TREND_KEEP)
        self.since: dict[str, tuple[str, float]] = {}  # kpi -> (status, epoch it began)

    # ---- sampling ----------------------------------------------------------
    def tick(self) -> None:
        now = self.read()
        self.samples.append(now)
        if now.t - self.trend_base.t >= TREND_INTERVAL:
            self.trend_tick(now)
        self.evaluate(now)

    def trend_tick(self, now: Counters | None = None) -> None:
        now = now or self.read()
        self.trends.append(now.minus(self.trend_base))
        self.trend_base = now

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            try:
                self.tick()
            except Exception:
                log.exception("kpi sampler failed")

    def start(self) -> asyncio.Task:
        return asyncio.create_task(self._loop(), name="collector:kpi-status")

    # ---- values ---------------------------------------------------------------
    def thresholds(self) -> dict[str, dict[str, float]]:
        store = self.ctx.store
        return kpis.thresholds_from_config(store.get("alerts") if "alerts" in store.sections else {})

    def window_delta(self, now: Counters | None = None) -> Counters:
        now = now or self.read()
        base = self.samples[0]
        for s in self.samples:  # oldest first: the newest one at least WINDOW old
            if now.t - s.t >= WINDOW:
                base = s
            else:
                break
        return now.minus(base)

    def evaluate(self, now: Counters | None = None) -> dict:
        """Each KPI's value and status now; tracks since when each status holds."""
        d = self.window_delta(now)
        values = kpi_values(d)
        th = self.thresholds()
        wall = time.time()
        out = {}
        for k in kpis.KPIS:
            v = values[k.key]
            t = th[k.key]
            status = k.status(v, t["target"], t["critical"])
            prev = self.since.get(k.key)
            if prev is None or prev[0] != status:
                self.since[k.key] = (status, wall)
            out[k.key] = {"title": k.title, "value": _r(v), "unit": k.unit,
                          "display": k.fmt(v) if v is not None else None, "status": status,
                          "direction": k.direction, "thresholds": t, "status_since": self.since[k.key][1],
                          "record": k.record, "runbook_url": k.runbook_url}
        return {"delta": d, "kpis": out}

    def performance(self) -> dict:
        now = self.read()
        ev = self.evaluate(now)
        d: Counters = ev["delta"]
        table = ev["kpis"]
        avg = d.http_sum / d.http_count if d.http_count else 0.0
        counts = {s: 0 for s in kpis.STATUSES}
        counts["unknown"] = 0
        for e in table.values():
            counts[e["status"] or "unknown"] += 1
        worst = next((s for s in ("critical", "warning", "target", "good") if counts[s]), "unknown")
        attention = [f"{e['title']} {e['display']} ({e['status']})" for e in table.values()
                     if e["status"] in ("warning", "critical")]
        summary = {
            "status": worst,
            "healthy": counts["critical"] == 0 and counts["warning"] == 0,
            "kpi_status_counts": counts,
            "requests": int(d.http_count),
            "window_seconds": round(d.t, 1),
            "message": ("performance: all KPIs within target" if not attention
                        else "performance: " + "; ".join(attention)),
        }
        val = lambda key: table[key]["value"]  # noqa: E731
        return {
            "timestamp": now.wall,
            "window_seconds": round(d.t, 1),
            "avg_response_time_ms": round(avg * 1000.0, 3),
            "p95_response_time_ms": _ms(val("api_response_time_p95")) or 0.0,
            "cache_hit_ratio": val("cache_hit_ratio") or 0.0,
            "memory_usage_percent": round((val("memory_usage") or 0.0) * 100.0, 3),
            "cpu_usage_percent": round((val("cpu_usage") or 0.0) * 100.0, 3),
            "error_rate": val("error_rate") or 0.0,
            "ai_p95_response_time_ms": _ms(val("ai_response_time_p95")) or 0.0,
            "requests": int(d.http_count),
            "requests_per_second": round(d.http_count / d.t, 3) if d.t > 0 else 0.0,
            "limits": {"cpu_cores": now.cpu_limit, "memory_bytes": now.memory_limit},
            "kpis": table,
            "summary": summary,
        }

    def alerts(self) -> list[dict]:
        table = self.evaluate()["kpis"]
        out = []
        for k in kpis.KPIS:
            e = table[k.key]
            if e["status"] not in ("warning", "critical"):
                continue
            level = "critical" if e["status"] == "critical" else "target"
            th = e["thresholds"][level]
            side = "above" if k.direction == kpis.LOWER else "below"
            what = "needs-attention threshold" if level == "critical" else "target"
            out.append({
                "name": f"Llmapi{k.alert_name}{'NeedsAttention' if level == 'critical' else 'TargetMissed'}",
                "kpi": k.key,
                "severity": "critical" if level == "critical" else "warning",
                "message": f"performance: {k.title} is {e['display']}, {side} the {what} {k.fmt(th)}",
                "value": e["value"],
                "threshold": th,
                "since": e["status_since"],
                "runbook_url": k.runbook_url,
            })
        return out

    # ---- time windows ----------------------------------------------------------
    def window(self, hours: float) -> tuple[Counters, list[Counters]]:
        """The summed difference over the last `hours` (minutes kept + the current partial one)."""
        now = self.read()
        partial = now.minus(self.trend_base)
        cutoff = now.wall - hours * 3600.0
        points = [p for p in self.trends if p.wall > cutoff]
        total = Counters(memory_limit=now.memory_limit, cpu_limit=now.cpu_limit)
        for p in points:
            total = total.plus(p)
        total = total.plus(partial)
        return total, points + ([partial] if partial.t > 0 else [])

    def request_metrics(self, hours: float) -> dict:
        total, points = self.window(hours)
        n = total.http_count
        by_route = []
        for s in samples((HTTP_REQUESTS,)):
            if s.name == "llmapi_http_requests_total":
                by_route.append({"route": s.labels["route"], "method": s.labels["method"],
                                 "status": s.labels["status"], "requests": int(s.value)})
        by_route.sort(key=lambda r: -r["requests"])
        return {
            "request_metrics": {
                "window_hours": hours,
                "covered_seconds": round(total.t, 1),
                "total_requests": int(n),
                "requests_per_second": round(n / total.t, 4) if total.t > 0 else 0.0,
                "error_count": int(total.http_5xx),
                "client_error_count": int(total.http_4xx),
                "error_rate": round(total.http_5xx / n, 6) if n else 0.0,
                "avg_response_time_ms": round(total.http_sum / n * 1000.0, 3) if n else 0.0,
                "p50_response_time_ms": _ms(bucket_quantile(0.50, _HTTP_LE, total.http_buckets)) or 0.0,
                "p95_response_time_ms": _ms(bucket_quantile(0.95, _HTTP_LE, total.http_buckets)) or 0.0,
                "p99_response_time_ms": _ms(bucket_quantile(0.99, _HTTP_LE, total.http_buckets)) or 0.0,
                "cache_hit_ratio": round(total.cache_hits / (total.cache_hits + total.cache_misses), 6)
                if total.cache_hits + total.cache_misses else 0.0,
                "ai_calls": int(total.ai_count),
                "ai_p95_response_time_ms": _ms(bucket_quantile(0.95, _AI_LE, total.ai_buckets)) or 0.0,
                "by_route_status_since_start": by_route[:100],
                "api_routes": kpis.API_ROUTE_PREFIX + "*",
            },
            "performance_trends": [self._trend_point(p) for p in points],
        }

    @staticmethod
    def _trend_point(p: Counters) -> dict:
        v = kpi_values(p)
        n = p.http_count
        return {
            "timestamp": p.wall,
            "seconds": round(p.t, 1),
            "requests": int(n),
            "requests_per_second": round(n / p.t, 4) if p.t > 0 else 0.0,
            "avg_response_time_ms": round(p.http_sum / n * 1000.0, 3) if n else None,
            "p95_response_time_ms": _ms(v["api_response_time_p95"]),
            "error_rate": _r(v["error_rate"]),
            "cache_hit_ratio": _r(v["cache_hit_ratio"]),
            "memory_usage_percent": _r(v["memory_usage"] * 100.0 if v["memory_usage"] is not None else None, 3),
            "cpu_usage_percent": _r(v["cpu_usage"] * 100.0 if v["cpu_usage"] is not None else None, 3),
            "ai_p95_response_time_ms": _ms(v["ai_response_time_p95"]),
        }


def get(ctx) -> KpiStatus:
    """The process's KpiStatus for this context (created on first use)."""
    ks = ctx.extras.get("kpi_status")
    if ks is None:
        ks = ctx.extras["kpi_status"] = KpiStatus(ctx)
    return ks


def start_sampler(ctx) -> asyncio.Task:
    """The sampling task (registered with exporter/collectors.py, which starts it)."""
    return get(ctx).start()
