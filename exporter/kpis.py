"""The KPI catalog: the spec's KPI table, written once, as data.

| KPI                       | target    | good      | needs attention |
|---------------------------|-----------|-----------|-----------------|
| API response time P95     | < 2000 ms | < 1000 ms | > 3000 ms       |
| cache hit ratio           | > 70 %    | > 85 %    | < 50 %          |
| memory usage              | < 70 %    | < 50 %    | > 85 %          |
| CPU usage                 | < 80 %    | < 60 %    | > 90 %          |
| error rate (5xx share)    | < 1 %     | < 0.1 %   | > 2 %           |
| AI service response P95   | < 30 s    | < 15 s    | > 45 s          |

Everything else derives from this module: the recording and alerting rules
(alerts/rules.py), the dashboards (dashboards/generate.py), the exported
llmapi_kpi_threshold gauge (exporter/collectors.py), the "alerts" config
section (service/config/sections.py), the service's own KPI view
(service/monitoring/kpi_status.py) and the runbook (alerts/RUNBOOK.md).

Values are in base units (seconds, ratios 0..1).  Comparison semantics, used
by alerts, dashboards and the service alike:

* lower-is-better KPI: the target is missed (warning) when value > target,
  it needs attention (critical) when value > critical, it is good when
  value < good.  A value exactly at a threshold is on the good side.
* higher-is-better KPI: the same with the comparisons mirrored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from exporter import mixin

LOWER = "lower"    # lower is better
HIGHER = "higher"  # higher is better

LEVELS = ("good", "target", "critical")  # label values of llmapi_kpi_threshold{level}
STATUSES = ("good", "target", "warning", "critical")  # the service's status words

# ---- one definition of API traffic -------------------------------------------
# API traffic is the text API: the /v1/text routes (by route template; an
# unknown path is route="unmatched").  Everything else keeps its own panels:
# self traffic (scrapes, health probes, the OpenAPI document), admin traffic
# (/internal) and unmatched paths.  The KPIs, SLOs, /internal/monitoring
# analyses and admission control all read this one definition.
API_ROUTE_PREFIX = "/v1/text/"
API_ROUTE_MATCHER = 'route=~"' + API_ROUTE_PREFIX + '.+"'
SELF_ROUTES = ("/metrics", "/v1/health", "/v1/health/live", "/v1/health/ready", "/openapi.json")
SELF_ROUTE_MATCHER = 'route=~"' + "|".join(SELF_ROUTES) + '"'
ADMIN_ROUTE_PREFIX = "/internal/"
ADMIN_ROUTE_MATCHER = 'route=~"' + ADMIN_ROUTE_PREFIX + '.+"'
UNMATCHED_ROUTE = "unmatched"


def is_api_route(route: str) -> bool:
    """True for API traffic: a route template (or a request path) under /v1/text/."""
    return route.startswith(API_ROUTE_PREFIX)


def traffic_kind(route: str) -> str:
    """api, admin, self or unmatched."""
    if is_api_route(route):
        return "api"
    if route.startswith(ADMIN_ROUTE_PREFIX):
        return "admin"
    if route in SELF_ROUTES:
        return "self"
    return "unmatched" if route == UNMATCHED_ROUTE else "self"


WINDOW = mixin.DEFAULT.kpi_window  # evaluation window of every rate in the shipped KPI expressions
DEFAULT_RUNBOOK_BASE_URL = mixin.DEFAULT_RUNBOOK_BASE_URL


def runbook_base_url() -> str:
    return mixin.DEFAULT.runbook_base_url


def runbook_url(anchor: str) -> str:
    return mixin.DEFAULT.runbook_url(anchor)


def sel(*matchers: str) -> str:
    """A label-matcher block from non-empty matchers: sel('a="b"', '') -> '{a="b"}'."""
    ms = [m for m in matchers if m]
    return "{" + ",".join(ms) + "}" if ms else ""


ExprFn = Callable[[str, str, str], str]  # (window, extra matchers, grouping labels) -> PromQL


def _p95(metric: str, route_filter: bool) -> ExprFn:
    def expr(window: str = WINDOW, matchers: str = "", by: str = "job") -> str:
        s = sel(API_ROUTE_MATCHER if route_filter else "", matchers)
        return (f"histogram_quantile(0.95, sum by ({by}, le) "
                f"(rate({metric}_bucket{s}[{window}])))")
    return expr


def _cache_ratio(window: str = WINDOW, matchers: str = "", by: str = "job") -> str:
    s = sel(matchers)
    hits = f"sum by ({by}) (rate(llmapi_cache_hits_total{s}[{window}]))"
    misses = f"sum by ({by}) (rate(llmapi_cache_misses_total{s}[{window}]))"
    # "or 0 * other": a side with no series yet counts as zero instead of
    # making the whole ratio vanish (all misses -> 0 %, not "no data")
    h = f"({hits} or 0 * {misses})"
    m = f"({misses} or 0 * {hits})"
    return f"{h} / ({h} + {m})"


def _memory(window: str = WINDOW, matchers: str = "", by: str = "job, instance") -> str:
    s = sel(matchers)
    return (f"sum by ({by}) (llmapi_process_resident_memory_bytes{s}) "
            f"/ max by ({by}) (llmapi_memory_limit_bytes{s})")


def _cpu(window: str = WINDOW, matchers: str = "", by: str = "job, instance") -> str:
    s = sel(matchers)
    return (f"sum by ({by}) (rate(llmapi_process_cpu_seconds_total{s}[{window}])) "
            f"/ max by ({by}) (llmapi_cpu_limit_cores{s})")


def error_ratio(window: str = WINDOW, matchers: str = "", by: str = "job") -> str:
    """Share of API requests answered 5xx over `window`."""
    five_xx = sel(API_ROUTE_MATCHER, 'status=~"5.."', matchers)
    every = sel(API_ROUTE_MATCHER, matchers)
    errors = f"sum by ({by}) (rate(llmapi_http_requests_total{five_xx}[{window}]))"
    total = f"sum by ({by}) (rate(llmapi_http_requests_total{every}[{window}]))"
    return f"({errors} or 0 * {total}) / {total}"


@dataclass(frozen=True)
class KPI:
    key: str                   # label value of llmapi_kpi_threshold{kpi=...} and alert label kpi
    title: str
    description: str
    unit: str                  # base unit of the value: "seconds" or "ratio"
    grafana_unit: str          # Grafana unit id: "s" or "percentunit"
    direction: str             # LOWER or HIGHER (which way is better)
    good: float
    target: float
    critical: float            # "needs attention"
    expr: ExprFn               # PromQL of the value
    by: str                    # labels the KPI is computed per
    alert_name: str            # CamelCase stem of the alert names
    config_field: str          # "alerts" config field holding the target (warning) threshold
    config_critical_field: str  # "alerts" config field holding the critical threshold
    config_per_unit: float     # config value / config_per_unit = base-unit value (ms: 1000)
    config_unit: str           # unit of the config fields
    runbook: str               # what it means, what to check, what to do (markdown)
    config_bounds: tuple[float, float] = (0.0, 1.0)  # allowed range of both config fields (config units)
    bounds_reason: str = ""    # why the bounds keep the alerts able to fire
    for_warning: str = "10m"
    for_critical: str = "5m"
    extra: dict = field(default_factory=dict)

    @property
    def per_instance(self) -> bool:
        return "instance" in self.by

    @property
    def record(self) -> str:
        """Recording-rule name holding the KPI's current value."""
        return f"llmapi:kpi_{self.key}:{self.unit}"

    @property
    def thresholds(self) -> dict[str, float]:
        return {"good": self.good, "target": self.target, "critical": self.critical}

    @property
    def runbook_url(self) -> str:
        return runbook_url(self.key)

    def missed(self, value: float, threshold: float) -> bool:
        """True when value is on the bad side of threshold (strictly)."""
        return value > threshold if self.direction == LOWER else value < threshold

    def status(self, value: float | None, target: float | None = None, critical: float | None = None) -> str | None:
        """good / target / warning / critical for a value (None when unknown)."""
        if value is None or value != value:  # None or NaN
            return None
        target = self.target if target is None else target
        critical = self.critical if critical is None else critical
        if self.missed(value, critical):
            return "critical"
        if self.missed(value, target):
            return "warning"
        good = value < self.good if self.direction == LOWER else value > self.good
        return "good" if good else "target"

    def fmt(self, value: float) -> str:
        if self.unit == "seconds":
            return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
        return f"{value * 100:.2f} %"

    def table_bound(self, level: str) -> str:
        """The spec-table wording of a level, e.g. '< 2000 ms'."""
        v = self.thresholds[level]
        if level == "critical":
            op = ">" if self.direction == LOWER else "<"
        else:
            op = "<" if self.direction == LOWER else ">"
        return f"{op} {self.fmt(v)}"


KPIS: tuple[KPI, ...] = (
    KPI(
        key="api_response_time_p95",
        title="API response time P95",
        description="95th percentile of API request duration (health checks and scrapes excluded)",
        unit="seconds", grafana_unit="s", direction=LOWER,
        good=1.0, target=2.0, critical=3.0,
        expr=_p95("llmapi_http_request_duration_seconds", route_filter=True), by="job",
        alert_name="ApiResponseTimeP95",
        config_field="response_time_threshold_ms", config_critical_field="response_time_critical_ms",
        config_per_unit=1000.0, config_unit="ms",
        config_bounds=(1.0, 10_000.0),
        bounds_reason="P95 is estimated from the HTTP histogram, whose top finite bucket is 30 s: up to 10 s a slow service still crosses it",
        runbook="""\
**Meaning.** One request in twenty takes longer than the threshold.

**Check.**
- `GET /internal/monitoring/slow-endpoints` ranks routes by P95; the dashboard's HTTP row shows P95 per route.
- AI row: is the AI provider slow (AI P95 up with it)? Cache row: did the hit ratio drop (more calls go upstream)?
- Process row: CPU near its limit, or event-loop lag above a few milliseconds, means the process is saturated.

**Act.**
- Upstream slow: lower `ai.timeout_seconds`, let the breaker and fallbacks answer (`/internal/resilience`).
- Cache cold or thrashing: see the cache hit ratio runbook.
- Saturated: add `WORKERS` or replicas, or enable admission control (`POST /internal/monitoring/configure`).
""",
    ),
    KPI(
        key="cache_hit_ratio",
        title="Cache hit ratio",
        description="Share of cache lookups answered from the cache (any tier)",
        unit="ratio", grafana_unit="percentunit", direction=HIGHER,
        good=0.85, target=0.70, critical=0.50,
        expr=_cache_ratio, by="job",
        alert_name="CacheHitRatio",
        config_field="cache_hit_ratio_threshold", config_critical_field="cache_hit_ratio_critical",
        config_per_unit=1.0, config_unit="ratio",
        for_warning="15m", for_critical="10m",
        config_bounds=(0.01, 0.99),
        bounds_reason="a ratio is never below 0 nor above 1: a threshold of 0 could never fire, one of 1 always would",
        runbook="""\
**Meaning.** Too many requests miss the cache and go to the AI provider: slower and costlier.

**Check.**
- `GET /internal/cache/stats` and `GET /internal/cache/performance-analysis`: hit ratio per operation and tier.
- Cache row: evictions by reason (memory pressure or size limit evicting live entries), entries, memory bytes.
- Redis row: is Redis up? With Redis down only the in-memory tier answers.

**Act.**
- Evictions for size: raise the memory tier's size or memory limit.
- Short TTLs: raise the TTL of the operations with low hit ratio.
- New traffic pattern (many unique texts): expected; the ratio recovers as the cache warms.
""",
    ),
    KPI(
        key="memory_usage",
        title="Memory usage",
        description="Resident memory of the service's processes over the memory limit (cgroup limit, else host memory)",
        unit="ratio", grafana_unit="percentunit", direction=LOWER,
        good=0.50, target=0.70, critical=0.85,
        expr=_memory, by="job, instance",
        alert_name="MemoryUsage",
        config_field="memory_usage_threshold", config_critical_field="memory_usage_critical",
        config_per_unit=1.0, config_unit="ratio",
        config_bounds=(0.0, 0.99),
        bounds_reason="usage cannot pass the limit (the kernel kills the process first): a threshold at 100 % could never fire",
        runbook="""\
**Meaning.** The processes use a large share of the memory they may use; past the limit the kernel kills them.

**Check.**
- `GET /internal/monitoring/memory-analysis`: RSS, GC, and the size of each subsystem (cache, history, rate-limit tables).
- Cache row: cache memory bytes and entries growing without bound?
- Process row: RSS per instance against `llmapi_memory_limit_bytes`.

**Act.**
- Shrink the in-memory cache tier (`/internal/cache` config) or monitoring retention (`POST /internal/monitoring/configure`).
- `POST /internal/monitoring/gc` to see how much is garbage; `memory-hotspots` to find the allocation sites.
- Raise the container memory limit if the working set is legitimate.
""",
    ),
    KPI(
        key="cpu_usage",
        title="CPU usage",
        description="CPU time used by the service's processes over the CPU limit (cgroup quota, else host cores)",
        unit="ratio", grafana_unit="percentunit", direction=LOWER,
        good=0.60, target=0.80, critical=0.90,
        expr=_cpu, by="job, instance",
        alert_name="CpuUsage",
        config_field="cpu_usage_threshold", config_critical_field="cpu_usage_critical",
        config_per_unit=1.0, config_unit="ratio",
        for_warning="15m", for_critical="10m",
        config_bounds=(0.0, 0.99),
        bounds_reason="usage cannot pass the CPU limit (the quota throttles it): a threshold at 100 % could never fire",
        runbook="""\
**Meaning.** The processes use most of the CPU they are allowed; latency rises and requests queue.

**Check.**
- Process row: CPU usage per instance, event-loop lag (lag in tens of ms means a saturated loop).
- HTTP row: did the request rate rise? Middleware row: compression bytes (compression costs CPU).
- `GET /internal/monitoring/bottlenecks`: where request time goes.

**Act.**
- More capacity: `WORKERS` (one per core) or replicas, or a higher CPU limit.
- Less work: raise the compression minimum size or level down; enable caching; enable load shedding.
""",
    ),
    KPI(
        key="error_rate",
        title="Error rate",
        description="Share of API requests answered with a 5xx status",
        unit="ratio", grafana_unit="percentunit", direction=LOWER,
        good=0.001, target=0.01, critical=0.02,
        expr=error_ratio, by="job",
        alert_name="ErrorRate",
        config_field="error_rate_threshold", config_critical_field="error_rate_critical",
        config_per_unit=1.0, config_unit="ratio",
        config_bounds=(0.0, 0.25),
        bounds_reason="a 5xx share of 100 % is not a threshold; above 25 % the service is down for a quarter of its users",
        runbook="""\
**Meaning.** More than the budgeted share of API requests fail with a server error. The availability SLO's
burn-rate alerts (LlmapiAvailabilityBudgetBurn, SLO = 1 - this target) tell how fast the monthly budget goes.

**Check.**
- HTTP row: 5xx by route and status. 503 with load shedding is admission control; 502/504 point upstream.
- AI row: AI errors by kind (timeout, rate limit, server error); Resilience row: breaker open, fallbacks.
- Service logs carry the `request_id` of every 500 with its traceback.

**Act.**
- Upstream failing: the breaker should open and fallbacks answer; check `/internal/resilience` settings.
- Overload (503 shed): add capacity or raise the admission queue.
- A bug (500): roll back the last deploy or config change (`POST /internal/config/rollback`).
""",
    ),
    KPI(
        key="ai_response_time_p95",
        title="AI service response P95",
        description="95th percentile of AI provider call duration",
        unit="seconds", grafana_unit="s", direction=LOWER,
        good=15.0, target=30.0, critical=45.0,
        expr=_p95("llmapi_ai_request_duration_seconds", route_filter=False), by="job",
        alert_name="AiResponseTimeP95",
        config_field="ai_response_time_threshold_ms", config_critical_field="ai_response_time_critical_ms",
        config_per_unit=1000.0, config_unit="ms",
        config_bounds=(1.0, 60_000.0),
        bounds_reason="P95 is estimated from the AI histogram, whose top finite bucket is 120 s: up to 60 s a slow provider still crosses it",
        runbook="""\
**Meaning.** The AI provider answers slowly; API latency follows unless the cache absorbs it.

**Check.**
- AI row: P95 per operation and provider, tokens per second (longer outputs take longer), errors by kind.
- `GET /internal/monitoring/ai-performance`.
- The provider's own status page or metrics (vLLM, Ollama, OpenAI).

**Act.**
- Lower `ai.timeout_seconds` so slow calls fail fast into fallbacks; reduce `max_length` style options.
- Raise the upstream connection pool (`MAX_CONNECTIONS`) if calls queue for a connection.
- Switch provider or model (`POST /internal/config/ai`).
""",
    ),
)

BY_KEY: dict[str, KPI] = {k.key: k for k in KPIS}


# ---- the "alerts" config section ------------------------------------------
def config_fields() -> dict[str, tuple[float, float, float, str]]:
    """Fields of the "alerts" config section: name -> (default, min, max, help).

    Defaults come from the catalog; service/config/sections.py wraps them in
    typed Field objects.  ms fields are converted with config_per_unit.  The
    bounds (KPI.config_bounds) keep every alert able to fire: a threshold the
    value can never cross would blind its alert (issue 12).
    """
    out: dict[str, tuple[float, float, float, str]] = {}
    for k in KPIS:
        lo, hi = k.config_bounds
        out[k.config_field] = (_to_config(k, k.target), lo, hi,
                               f"{k.title}: warning (target missed) threshold, {k.config_unit}")
        out[k.config_critical_field] = (_to_config(k, k.critical), lo, hi,
                                        f"{k.title}: critical (needs attention) threshold, {k.config_unit}")
    return out


def _to_config(k: KPI, value: float) -> float:
    return value * k.config_per_unit


def from_config(k: KPI, value: float) -> float:
    return float(value) / k.config_per_unit


def thresholds_from_config(values: dict) -> dict[str, dict[str, float]]:
    """kpi key -> {good, target, critical} in base units, from the "alerts" section values."""
    out = {}
    for k in KPIS:
        out[k.key] = {
            "good": k.good,
            "target": from_config(k, values.get(k.config_field, _to_config(k, k.target))),
            "critical": from_config(k, values.get(k.config_critical_field, _to_config(k, k.critical))),
        }
    return out


def check_order(values: dict) -> tuple[str, str] | None:
    """(field, message) when a warning threshold lies beyond its critical one, else None."""
    for k in KPIS:
        t, c = values.get(k.config_field), values.get(k.config_critical_field)
        if t is None or c is None:
            continue
        if k.direction == LOWER and t > c:
            return k.config_field, f"must not exceed {k.config_critical_field} ({c})"
        if k.direction == HIGHER and t < c:
            return k.config_field, f"must not be below {k.config_critical_field} ({c})"
    return None
