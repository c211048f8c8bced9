"""Generate the Grafana dashboard JSON from the KPI and SLO catalogs with grafanalib.

    python -m dashboards.generate           write dashboards/json/*.json
    python -m dashboards.generate --check   exit 1 when the committed JSON is stale

Compose mounts dashboards/json at /etc/llmapi/grafana/dashboards, where the
provisioning file deploy/grafana/provisioning/dashboards/llmapi.yml points Grafana.

One overview dashboard: the six KPI stat panels coloured at the catalog's
thresholds, the KPI trends with threshold lines (the catalog's, drawn, and
the live llmapi_kpi_threshold series that configure-alerts moves), then a row
each for HTTP (RED), the AI service, cache, resilience, middleware,
monitoring (admission, background tasks, emergency mode), process/runtime
and Redis.  Every metric of exporter/metrics.py appears in some panel
(tests/dashboards checks it).  Template variables: datasource, job,
instance.  Every rate uses $__rate_interval; the KPI stats and trends and the
SLO row read the recording rules, so they show the alerts' own window
(documented exceptions of the linter rules in tests/dashboards: those panels
select by job alone where a record has no instance label, and the ALERTS panel
also shows alerts without a job).  Stats use the last value (never the last
non-null one) and say "no traffic" when nothing was measured; threshold steps
agree with the catalog at the exact edges.  `editable: false`; annotations
mark config-version changes and firing alerts.

Rare-event counters (outages, rejections, pressure responses) have no series
until the first event; their panels add `or on() vector(0)` so they read 0,
not "No data", on a healthy service.
"""
from __future__ import annotations

import json
import math
import os
import sys

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (REFRESH_ON_TIME_RANGE_CHANGE, Annotations, Dashboard, GridPos, RowPanel, Stat, Target, Template,
                             Templating, Time, TimeSeries)

from dashboards import remediation
from exporter import genfiles, kpis, mixin, slos
from exporter.kpis import API_ROUTE_MATCHER, KPIS, LOWER, KPI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "dashboards", "json")
OVERVIEW_PATH = os.path.join(OUT_DIR, "llmapi-overview.json")
SCHEMA_VERSION = 39      # Grafana 10.3+ / 11 native schema: no migration on load
UID = "llmapi-overview"

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job",instance=~"$instance"'
RI = "$__rate_interval"

GREEN, YELLOW, ORANGE, RED = "green", "#EAB839", "orange", "red"


def _s(*matchers: str) -> str:
    return kpis.sel(SEL, *matchers)


def rate(metric: str, by: str = "", *matchers: str, agg: str = "sum") -> str:
    """`sum by (by) (rate(metric{job,instance,matchers}[$__rate_interval]))`."""
    grouping = f" by ({by}) " if by else ""
    return f"{agg}{grouping}(rate({metric}{_s(*matchers)}[{RI}]))"


def p95(metric: str, by: str = "", *matchers: str) -> str:
    """P95 of a histogram over $__rate_interval, per `by`."""
    return f"histogram_quantile(0.95, {rate(metric + '_bucket', ', '.join([*filter(None, [by]), 'le']), *matchers)})"


ZERO_FALLBACK = " or on() vector(0)"


def or_zero(expr: str) -> str:
    """A rare-event series: 0 until the first event instead of no data."""
    return expr + ZERO_FALLBACK


def _above(v: float) -> float:
    """The next float above v: a Grafana step applies from its value up (a value at it takes its colour),
    so a step whose threshold keeps its edge value on the side below starts just above it."""
    return math.nextafter(v, math.inf)


def steps(k: KPI) -> list[dict]:
    """Grafana threshold steps agreeing with the catalog at the exact edges: a value exactly at the
    target or the needs-attention threshold is on the good side (kpis.KPI.status)."""
    if k.direction == LOWER:   # good: < good; warning: > target; critical: > critical
        return [{"color": GREEN, "value": None}, {"color": YELLOW, "value": k.good},
                {"color": ORANGE, "value": _above(k.target)}, {"color": RED, "value": _above(k.critical)}]
    # higher is better: critical: < critical; warning: < target; good: > good
    return [{"color": RED, "value": None}, {"color": ORANGE, "value": k.critical},
            {"color": YELLOW, "value": k.target}, {"color": GREEN, "value": _above(k.good)}]


STATUS_COLOURS = {"good": GREEN, "target": YELLOW, "warning": ORANGE, "critical": RED}


def step_colour(steps_: list[dict], v: float) -> str:
    """The colour Grafana gives v: the last step whose value is <= v."""
    colour = steps_[0]["color"]
    for st in steps_[1:]:
        if v >= st["value"]:
            colour = st["color"]
    return colour


def runbook_link(title: str, anchor: str) -> dict:
    return {"title": f"Runbook: {title}", "url": kpis.runbook_url(anchor), "targetBlank": True}


class Layout:
    """Places panels left to right, top to bottom, on Grafana's 24-column grid."""

    def __init__(self):
        self.x = self.y = self.row_h = 0
        self.panels: list = []

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append(RowPanel(title=title, gridPos=GridPos(h=1, w=24, x=0, y=self.y)))
        self.y += 1

    def newline(self) -> None:
        if self.x:
            self.y += self.row_h
        self.x = self.row_h = 0

    def add(self, panel, w: int, h: int):
        if self.x + w > 24:
            self.newline()
        panel.gridPos = GridPos(h=h, w=w, x=self.x, y=self.y)
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel


def targets(*queries: tuple[str, str]) -> list[Target]:
    return [Target(expr=q, legendFormat=legend, refId=chr(ord("A") + i), datasource=DS)
            for i, (q, legend) in enumerate(queries)]


def ts(title: str, queries: list[tuple[str, str]], unit: str, description: str, k: KPI | None = None,
       links: list | None = None, stack: bool = False, min0: bool = True) -> TimeSeries:
    return TimeSeries(
        title=title, description=description, dataSource=DS, targets=targets(*queries), unit=unit,
        thresholds=steps(k) if k else [{"color": GREEN, "value": None}],
        thresholdsStyleMode="line+area" if k else "off",
        links=links or ([runbook_link(k.title, k.key)] if k else []),
        stacking={"mode": "normal", "group": "A"} if stack else {},
        fillOpacity=10, showPoints="never", lineWidth=1, legendDisplayMode="list",
        valueMin=0 if min0 else None, tooltipMode="multi", maxDataPoints=500,
    )


# ---- KPI panels --------------------------------------------------------------------
# Panels reading recording rules select by job (and instance where the record has one): the records
# carry the alerts' own window, so a line crosses its threshold when, and only when, the alert does.
JOB_SEL = 'job=~"$job"'


def record_sel(per_instance: bool) -> str:
    return SEL if per_instance else JOB_SEL


def kpi_stat(k: KPI) -> Stat:
    worst = "max" if k.direction == LOWER else "min"
    traffic = not k.per_instance
    return Stat(
        title=k.title,
        description=(f"{k.description}. Target {k.table_bound('target')}, good {k.table_bound('good')}, "
                     f"needs attention {k.table_bound('critical')} (colours; a value exactly at a threshold is on "
                     f"its good side). The alert rules' record ({k.record}, {kpis.WINDOW} window); the worst "
                     f"matching job{'/instance' if k.per_instance else ''}; "
                     + ("'no traffic' when nothing was measured (never an old value)." if traffic
                        else "'no data' when the instance reports nothing.")),
        dataSource=DS, targets=targets((f"{worst}({k.record}{{{record_sel(k.per_instance)}}}) >= 0", k.title)),
        format=k.grafana_unit, decimals=1 if k.unit == "ratio" else 2, reduceCalc="last",
        colorMode="background", graphMode="area", thresholds=steps(k),
        noValue="no traffic" if traffic else "no data", color={"mode": "thresholds"},
        links=[runbook_link(k.title, k.key)],
    )


def kpi_trend(k: KPI) -> TimeSeries:
    legend = "{{job}} {{instance}}" if k.per_instance else "{{job}}"
    matchers = _s(f'kpi="{k.key}"', 'level=~"target|critical"')
    live = f"max by (level) (llmapi_kpi_threshold{matchers})"
    return ts(f"{k.title} (lines: good / target / needs attention)",
              [(f"{k.record}{{{record_sel(k.per_instance)}}}", legend), (live, "alerting at ({{level}})")],
              k.grafana_unit, f"{k.description}. Coloured lines: the catalog's thresholds; 'alerting at' series: "
                              "the live thresholds the alert rules use (moved by POST "
                              "/internal/monitoring/configure-alerts).", k=k)


def kpi(key: str) -> KPI:
    return kpis.BY_KEY[key]


# ---- SLOs and alerts ---------------------------------------------------------------
BURN_WINDOWS = ("5m", "1h", "6h", "1d", "3d")


def slo_row(L: Layout) -> None:
    L.row(f"SLOs ({mixin.DEFAULT.slo_period}; API traffic: the /v1/text routes)")
    p = mixin.DEFAULT.slo_period
    for slo in slos.SLOS:
        s_ = f'{{{JOB_SEL},slo="{slo.name}"}}'
        link = [runbook_link(f"{slo.title} SLO", slo.key)]
        sli_steps = [{"color": RED, "value": None}, {"color": GREEN, "value": slo.objective}]
        L.add(Stat(title=f"{slo.title} SLI ({p})", dataSource=DS,
                   description=f"Share of good API requests over {p}: {slo.description}. Green at or above the "
                               f"objective ({slo.objective * 100:g} %); 'no traffic' without requests.",
                   targets=targets((f"min(1 - {slos.error_ratio_record(p)}{s_}) >= 0", "SLI")),
                   format="percentunit", decimals=3, reduceCalc="last", colorMode="background", graphMode="none",
                   thresholds=sli_steps, noValue="no traffic", color={"mode": "thresholds"}, links=link), 4, 6)
        budget_steps = [{"color": RED, "value": None}, {"color": ORANGE, "value": 0.0},
                        {"color": YELLOW, "value": 0.25}, {"color": GREEN, "value": 0.5}]
        L.add(Stat(title=f"{slo.title}: error budget left", dataSource=DS,
                   description=f"1 - (bad share over {p}) / budget ({slo.budget * 100:g} %); below 0: spent.",
                   targets=targets((f"min({slos.BUDGET_REMAINING_RECORD}{s_})", "budget left")),
                   format="percentunit", decimals=1, reduceCalc="last", colorMode="background", graphMode="area",
                   thresholds=budget_steps, noValue="no traffic", color={"mode": "thresholds"}, links=link), 4, 6)
        burn_steps = [{"color": GREEN, "value": None}, {"color": YELLOW, "value": _above(1.0)},
                      {"color": ORANGE, "value": _above(6.0)}, {"color": RED, "value": _above(14.4)}]
        L.add(TimeSeries(
            title=f"{slo.title}: burn rate per window", dataSource=DS,
            description="Error ratio over the window / error budget: 1 spends the budget in exactly the SLO period. "
                        "The alerts page at 14.4x (1h and 5m) and 6x (6h and 30m), open a ticket at 3x (1d, 2h) "
                        "and 1x (3d, 6h).",
            targets=targets(*[(f"max({slos.burn_rate_record(w)}{s_})", w) for w in BURN_WINDOWS]),
            unit="short", thresholds=burn_steps, thresholdsStyleMode="line", links=link, fillOpacity=0,
            showPoints="never", lineWidth=1, legendDisplayMode="list", valueMin=0, tooltipMode="multi",
            maxDataPoints=500), 16, 6)


UNMATCHED = f'route="{kpis.UNMATCHED_ROUTE}"'

# Metrics the LLM row reads that the `llm-metrics` work exports (issue 14 item 5). Until they are in
# exporter/metrics.py their panels read nothing; tests/dashboards tolerates them only while absent.
PENDING_METRICS = frozenset({
    "gen_ai_client_token_usage", "gen_ai_client_operation_duration_seconds", "llmapi_ai_cost_usd",
    "llmapi_cache_saved_tokens", "llmapi_cache_saved_cost_usd", "llmapi_ai_upstream_remaining",
})


def alerts_row(L: Layout) -> None:
    L.row("Alerts")
    L.add(ts("Firing alerts", [
        (f'sum by (alertname, severity) (ALERTS{{alertstate="firing",job=~"$job|"}})', "{{severity}} {{alertname}}")],
        "short", "Alerts firing now, from Prometheus' ALERTS series: those of the selected jobs and those without a "
                 "job (Watchdog). The annotations mark when each started.", stack=True), 12, 8)
    L.add(ts("API, admin, self and unmatched traffic", [
        (f"sum(rate(llmapi_http_requests_total{_s(API_ROUTE_MATCHER)}[{RI}]))", "api (/v1/text)"),
        (f"sum(rate(llmapi_http_requests_total{_s(kpis.ADMIN_ROUTE_MATCHER)}[{RI}]))", "admin (/internal)"),
        (f"sum(rate(llmapi_http_requests_total{_s(kpis.SELF_ROUTE_MATCHER)}[{RI}]))", "self (metrics, health)"),
        (or_zero(f"sum(rate(llmapi_http_requests_total{_s(UNMATCHED)}[{RI}]))"), "unmatched")],
        "reqps", "Requests per second by kind. Only API traffic counts in the KPIs and SLOs; scrapes, health "
                 "probes, admin calls and unknown paths (scanners) have their own lines."), 12, 8)


# ---- LLM ----------------------------------------------------------------------------
def llm_row(L: Layout) -> None:
    L.row("LLM: tokens, cost, cache savings, models, upstream quota")
    tok = "gen_ai_client_token_usage"
    L.add(ts("Tokens per second by operation, model and type", [
        (f"sum by (gen_ai_operation_name, gen_ai_request_model, gen_ai_token_type) (rate({tok}_sum{_s()}[{RI}]))",
         "{{gen_ai_operation_name}} {{gen_ai_request_model}} {{gen_ai_token_type}}")],
        "short", "Tokens the AI provider used (OTel GenAI gen_ai.client.token.usage), per second.",
        links=[runbook_link("Token spike", "token_spike")]), 8, 8)
    L.add(ts("Tokens per call P95 by operation", [
        (f"histogram_quantile(0.95, sum by (gen_ai_operation_name, le) (rate({tok}_bucket{_s()}[{RI}])))",
         "{{gen_ai_operation_name}}")], "short", "95th percentile of the tokens one AI call uses."), 8, 8)
    L.add(ts("Cost (USD per hour) by model", [
        (f"3600 * sum by (model) (rate(llmapi_ai_cost_usd_total{_s()}[{RI}]))", "{{model}}")],
        "currencyUSD", "What the AI calls cost, from the price table of the config (the local provider: 0).",
        links=[runbook_link("Cost spike", "cost_spike")]), 8, 8)
    L.add(ts("Cache savings (per hour)", [
        (f"3600 * sum(rate(llmapi_cache_saved_tokens_total{_s()}[{RI}]))", "tokens"),
        (f"3600 * sum(rate(llmapi_cache_saved_cost_usd_total{_s()}[{RI}]))", "USD")],
        "short", "Tokens and USD the cache hits did not spend again (what the original calls cost)."), 8, 8)
    L.add(ts("Model mix (calls per second)", [
        (f"sum by (gen_ai_request_model) (rate(gen_ai_client_operation_duration_seconds_count{_s()}[{RI}]))",
         "{{gen_ai_request_model}}")], "reqps", "AI calls per second by requested model.", stack=True), 8, 8)
    L.add(ts("Upstream quota left", [
        (f"min by (kind, model) (llmapi_ai_upstream_remaining{_s()})", "{{kind}} {{model}}")],
        "short", "Requests and tokens the upstream says are left (x-ratelimit-remaining-* headers)."), 8, 8)


# ---- rows --------------------------------------------------------------------------
def http_row(L: Layout) -> None:
    L.row("HTTP (RED)")
    b = "llmapi_http_request_duration_seconds_bucket"
    errors = _s('status=~"[45].."')
    L.add(ts("Request rate by route", [(f"sum by (route) (rate(llmapi_http_requests_total{_s()}[{RI}]))", "{{route}}")],
             "reqps", "Requests per second by route template (unknown routes: unmatched)."), 8, 8)
    L.add(ts("Responses by status", [(f"sum by (status) (rate(llmapi_http_requests_total{_s()}[{RI}]))", "{{status}}")],
             "reqps", "Responses per second by status code.", stack=True), 8, 8)
    L.add(ts("Errors (4xx, 5xx) by route", [
        (f"sum by (route, status) (rate(llmapi_http_requests_total{errors}[{RI}]))", "{{route}} {{status}}")],
        "reqps", "Client and server errors per second by route and status."), 8, 8)
    L.add(ts("API latency P50 / P95 / P99", [
        (f"histogram_quantile({q}, sum by (le) (rate({b}{_s(API_ROUTE_MATCHER)}[{RI}])))", f"p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)], "s",
        "API request duration quantiles (scrapes and health checks excluded).", k=kpi("api_response_time_p95")), 8, 8)
    L.add(ts("P95 latency by route", [
        (f"histogram_quantile(0.95, sum by (route, le) (rate({b}{_s()}[{RI}])))", "{{route}}")], "s",
        "95th percentile duration per route template."), 8, 8)
    L.add(ts("In-flight requests", [(f"sum by (instance) (llmapi_http_requests_in_flight{_s()})", "{{instance}}")],
             "short", "Requests being served right now."), 8, 8)
    L.add(ts("Latency P95 outside the API (admin, self, unmatched)", [
        (p95("llmapi_http_other_request_duration_seconds", "group"), "{{group}}")], "s",
        "95th percentile duration of /internal (internal), /metrics, /v1/health, /openapi.json (self) and unknown "
        "paths (unmatched), from one coarse histogram shared by them (the series budget)."), 8, 8)


def ai_row(L: Layout) -> None:
    L.row("AI service")
    h = "llmapi_ai_request_duration_seconds"
    g = "gen_ai_client_operation_duration_seconds"
    L.add(ts("AI calls by operation, attempts by outcome", [
        (rate(f"{g}_count", "gen_ai_operation_name"), "calls {{gen_ai_operation_name}}"),
        (rate(f"{h}_count", "provider, outcome"), "attempts {{provider}} {{outcome}}")],
        "reqps", "AI calls per second by operation, and provider attempts per second by outcome (each retry is "
                 "one attempt)."), 8, 8)
    L.add(ts("AI P95: attempts, and calls by operation", [
        (p95(h, "model"), "attempt {{model}}"),
        (p95(g, "gen_ai_operation_name"), "call {{gen_ai_operation_name}}")],
        "s", "95th percentile of one provider attempt (the KPI), and of a whole call per operation (retries "
             "and backoff included).", k=kpi("ai_response_time_p95")), 8, 8)
    L.add(ts("Tokens per second", [
        (rate("gen_ai_client_token_usage_sum", "gen_ai_provider_name, gen_ai_token_type"),
         "{{gen_ai_provider_name}} {{gen_ai_token_type}}")],
        "short", "Tokens used by the AI provider, by type (input, output): gen_ai_client_token_usage."), 8, 8)
    L.add(ts("AI attempt errors by kind", [
        (or_zero(rate(f"{h}_count", "provider, outcome", 'outcome!="success"')), "{{provider}} {{outcome}}")],
        "reqps", "Failed AI provider attempts per second by error kind."), 8, 8)
    L.add(ts("Micro-batches per second", [(rate("llmapi_ai_batches_total"), "batches")],
             "ops", "Batches sent to the AI provider per second (0 while micro-batching is off)."), 8, 8)
    L.add(ts("Requests per micro-batch (mean, P95)", [
        (f"{rate('llmapi_ai_batch_size_sum')} / {rate('llmapi_ai_batch_size_count')}", "mean"),
        (p95("llmapi_ai_batch_size"), "p95")],
        "short", "How many requests share one provider call."), 8, 8)


def upstream_row(L: Layout) -> None:
    L.row("AI calls, upstream connection pool, clients")
    g = "gen_ai_client_operation_duration_seconds"
    L.add(ts("AI call duration P95 (retries included) and failed calls", [
        (p95(g, "gen_ai_operation_name"), "p95 {{gen_ai_operation_name}}"),
        (or_zero(rate(f"{g}_count", "error_type", 'error_type!=""')), "failed/s {{error_type}}")],
        "s", "Per call, retries and backoff included (gen_ai_client_operation_duration_seconds); failed calls per "
             "second by error_type."), 6, 8)
    L.add(ts("Upstream connection pool", [
        (f"sum by (instance) (llmapi_ai_pool_connections_in_use{_s()})", "in use {{instance}}"),
        (f"sum by (instance) (llmapi_ai_pool_max_connections{_s()})", "size {{instance}}"),
        (f"sum by (instance) (llmapi_ai_pool_waiting_requests{_s()})", "waiting {{instance}}")],
        "short", "Upstream connections in use against the pool size (ai.max_connections), and AI requests "
                 "waiting for a connection: waiting > 0 means the pool is the bottleneck."), 6, 8)
    L.add(ts("Pool wait P95", [(p95("llmapi_ai_pool_wait_seconds"), "p95")],
             "s", "95th percentile of the time AI requests waited for an upstream connection."), 6, 8)
    L.add(ts("Requests by key name", [
        (rate("llmapi_client_requests_total", "key_name, operation"), "{{key_name}} {{operation}}")],
        "reqps", "Text API requests per second by API key name and operation."), 6, 8)


def cache_row(L: Layout) -> None:
    L.row("Cache")
    L.add(ts("Hits by tier, misses", [
        (f"sum by (tier) (rate(llmapi_cache_hits_total{_s()}[{RI}]))", "hit {{tier}}"),
        (f"sum(rate(llmapi_cache_misses_total{_s()}[{RI}]))", "miss")],
        "ops", "Cache lookups per second."), 6, 8)
    L.add(ts("Evictions by reason", [
        (f"sum by (reason) (rate(llmapi_cache_evictions_total{_s()}[{RI}]))", "{{reason}}")],
        "ops", "Entries evicted per second by reason."), 6, 8)
    L.add(ts("Entries by tier", [(f"sum by (tier) (llmapi_cache_entries{_s()})", "{{tier}}")],
             "short", "Entries held in each cache tier."), 6, 8)
    L.add(ts("Memory tier bytes and cap", [
        (f"sum by (instance) (llmapi_cache_memory_bytes{_s()})", "held {{instance}}"),
        (f"sum by (instance) (llmapi_cache_max_memory_bytes{_s()})", "cap {{instance}}")],
        "bytes", "Bytes held by the in-memory cache tier, and its memory cap (all workers)."), 6, 8)
    L.add(ts("L2 (Redis) outages and failed commands", [
        (or_zero(rate("llmapi_cache_l2_transitions_total", "state")), "went {{state}}"),
        (or_zero(rate("llmapi_cache_l2_errors_total", "command")), "failed {{command}}")],
        "ops", "Cache L2 availability changes (down: outage, up: recovery) and failed Redis commands per second. "
               "The Redis row shows whether L2 is in use."), 6, 8)
    L.add(ts("Warming, single-flight, stale answers", [
        (or_zero(rate("llmapi_cache_warming_refreshes_total", "result")), "warming {{result}}"),
        (rate("llmapi_cache_single_flight_joins_total"), "single-flight joins"),
        (or_zero(rate("llmapi_cache_stale_served_total", "tier")), "stale served {{tier}}")],
        "ops", "Background warming refreshes by result; misses that waited on an identical miss in flight; "
               "expired answers served as fallbacks."), 6, 8)
    L.add(ts("Memory-pressure responses", [
        (or_zero(rate("llmapi_cache_pressure_events_total", "level, response")), "{{level}}: {{response}}")],
        "ops", "How the cache responded to memory pressure (per second), by pressure level."), 6, 8)


def resilience_row(L: Layout) -> None:
    L.row("Resilience")
    L.add(ts("Circuit breakers not closed", [
        ("max by (breaker, state) (llmapi_circuit_breaker_state" + _s('state!="closed"') + ")",
         "{{breaker}} {{state}}")],
        "short", "Breakers open or half-open (1); one 0/1 series per breaker and state.",
        links=[runbook_link("Circuit breaker open", "breaker_open")]),
        6, 8)
    L.add(ts("Breaker transitions", [
        (f"sum by (breaker, state) (rate(llmapi_circuit_breaker_transitions_total{_s()}[{RI}]))",
         "{{breaker}} -> {{state}}")], "ops", "Breaker state changes per second."), 6, 8)
    L.add(ts("Breaker rejections (failed fast)", [
        (or_zero(rate("llmapi_circuit_breaker_rejections_total", "breaker")), "{{breaker}}")],
        "ops", "Calls an open (or full half-open) breaker refused without calling the provider, per second."), 6, 8)
    L.add(ts("Retries by operation", [
        (f"sum by (operation) (rate(llmapi_resilience_retries_total{_s()}[{RI}]))", "{{operation}}")],
        "ops", "Retried AI calls per second."), 9, 8)
    L.add(ts("Fallbacks by kind", [
        (f"sum by (operation, kind) (rate(llmapi_resilience_fallbacks_total{_s()}[{RI}]))",
         "{{operation}} {{kind}}")], "ops", "Fallback answers per second."), 9, 8)
    L.add(ts("Degraded responses (quality SLO bad events besides 5xx)", [
        (rate("llmapi_text_degraded_responses_total", "operation, reason"), "{{operation}} {{reason}}")],
        "reqps", "API responses per second that carried a degraded answer (a stale cached copy served because the "
                 "AI service failed), once per response.", links=[runbook_link("Degraded answers", "degraded_answers")]),
        24, 6)


def middleware_row(L: Layout) -> None:
    L.row("Middleware")
    L.add(ts("Rate-limit decisions", [
        (f"sum by (decision, tier) (rate(llmapi_rate_limit_decisions_total{_s()}[{RI}]))", "{{tier}} {{decision}}")],
        "ops", "Rate-limit decisions per second.",
        links=[runbook_link("Rate-limit rejections", "rate_limit_rejections")]), 8, 8)
    L.add(ts("Rate-limit token leases from Redis", [
        (or_zero(rate("llmapi_rate_limit_leases_total", "result")), "{{result}}")],
        "ops", "Token leases asked of Redis per second by result (granted, partial, empty, error). "
               "The Redis row shows when limits fall back to local counters."), 8, 8)
    L.add(ts("Size rejections (413)", [
        (or_zero(f"sum by (content_type) (rate(llmapi_request_size_rejections_total{_s()}[{RI}]))"),
         "body {{content_type}}"),
        (or_zero(rate("llmapi_decompression_rejections_total", "encoding")), "decoded {{encoding}}")],
        "reqps", "Requests rejected for their size, and compressed bodies stopped at the decoded-size cap."), 8, 8)
    L.add(ts("Compression ratio (out / in)", [
        (f"sum by (algorithm) (rate(llmapi_compression_output_bytes_total{_s()}[{RI}])) / "
         f"sum by (algorithm) (rate(llmapi_compression_input_bytes_total{_s()}[{RI}]))", "{{algorithm}}")],
        "percentunit", "Compressed size over original size by algorithm (lower is better)."), 8, 8)
    L.add(ts("Compression bytes in / out", [
        (f"sum(rate(llmapi_compression_input_bytes_total{_s()}[{RI}]))", "in"),
        (f"sum(rate(llmapi_compression_output_bytes_total{_s()}[{RI}]))", "out")],
        "Bps", "Bytes per second before and after response compression."), 8, 8)
    L.add(ts("Compression CPU (cores busy)", [(rate("llmapi_compression_seconds_total", "algorithm"), "{{algorithm}}")],
             "short", "Seconds spent compressing per second: the share of a core compression costs."), 8, 8)
    L.add(ts("API version use", [
        (f"sum by (version, source) (rate(llmapi_api_version_requests_total{_s()}[{RI}]))",
         "{{version}} ({{source}})")], "reqps", "Requests by detected API version and where it was found."), 12, 8)
    L.add(ts("Middleware own time, mean (sampled requests)", [
        (f"{rate('llmapi_middleware_overhead_seconds_sum', 'middleware')} / "
         f"{rate('llmapi_middleware_overhead_seconds_count', 'middleware')}", "{{middleware}}")],
        "s", "Mean own time of each middleware in the requests the stack profiler samples, as the service "
             "judges it (middleware.middleware_warning_ms); GET /internal/middleware/stack/performance has the "
             "stack's P95."), 12, 8)
    L.add(ts("API key rejections (401 / 403)", [
        (or_zero(rate("llmapi_auth_rejections_total", "reason, scope")), "{{reason}} ({{scope}})")],
        "reqps", "Requests refused by API-key auth: missing or unknown key (401), or a valid key without the "
                 "scope the route needs (403: forbidden). A rise of invalid is someone guessing keys; forbidden, a "
                 "client key used on /internal or a key given the wrong scopes."), 24, 6)


def monitoring_row(L: Layout) -> None:
    L.row("Monitoring: admission, background tasks, emergency mode")
    L.add(ts("Admission: shed, active, queued", [
        (or_zero(f"sum by (reason) (rate(llmapi_admission_shed_total{_s()}[{RI}]))"), "shed {{reason}}"),
        (f"sum(llmapi_admission_active_requests{_s()})", "active"),
        (f"sum(llmapi_admission_queue_depth{_s()})", "queued")],
        "short", "Load shedding per second (503) and admission slots in use.",
        links=[runbook_link("Load shedding", "load_shedding")]), 8, 8)
    L.add(ts("Admission queue wait P95", [(p95("llmapi_admission_wait_seconds"), "p95")],
             "s", "95th percentile of the time queued requests waited for an admission slot."), 8, 8)
    L.add(ts("Emergency mode (1 = on)", [(f"max by (instance) (llmapi_emergency_mode{_s()})", "{{instance}}")],
             "short", "1 while emergency mode sheds optional work (POST /internal/monitoring/emergency-mode)."), 8, 8)
    L.add(ts("Background tasks by result", [
        (or_zero(rate("llmapi_background_tasks_total", "kind, result")), "{{kind}} {{result}}")],
        "ops", "Background tasks finished per second by kind and result."), 8, 8)
    L.add(ts("Background queue depth", [(f"sum by (instance) (llmapi_background_queue_depth{_s()})", "{{instance}}")],
             "short", "Background tasks waiting for a worker."), 8, 8)
    L.add(ts("Monitoring history snapshots", [
        (f"max by (instance) (llmapi_monitoring_history_snapshots{_s()})", "{{instance}}")],
        "short", "Minute snapshots held in the monitoring history (bounded by its retention)."), 8, 8)
    L.add(ts("Config changes by section and actor", [
        (or_zero(f"sum by (section, actor) (increase(llmapi_config_changes_total{_s()}[{RI}]))"),
         "{{section}} by {{actor}}")],
        "short", "Runtime config changes (who: a key name, rollback, alertmanager; other); "
                 "GET /internal/config/history says what changed."), 8, 8)
    L.add(ts("Config version", [(f"max by (instance) (llmapi_config_version{_s()})", "{{instance}}")],
             "short", "Version of the runtime config each instance runs; instances sharing Redis agree."), 8, 8)


def process_row(L: Layout) -> None:
    L.row("Process / runtime")
    L.add(ts("RSS and memory limit", [
        (f"sum by (instance) (llmapi_process_resident_memory_bytes{_s()})", "rss {{instance}}"),
        (f"max by (instance) (llmapi_memory_limit_bytes{_s()})", "limit {{instance}}")],
        "bytes", "Resident memory of all worker processes and the memory limit (cgroup or host)."), 8, 8)
    L.add(ts("CPU cores used and limit", [
        (f"sum by (instance) (rate(llmapi_process_cpu_seconds_total{_s()}[{RI}]))", "used {{instance}}"),
        (f"max by (instance) (llmapi_cpu_limit_cores{_s()})", "limit {{instance}}")],
        "short", "CPU seconds per second of all worker processes and the CPU limit (cgroup quota or host)."), 8, 8)
    L.add(ts("Event-loop lag (worst worker)", [
        (f"max by (instance) (llmapi_event_loop_lag_seconds{_s()})", "{{instance}}")],
        "s", "How late the event loop wakes up: tens of milliseconds mean a saturated process."), 8, 8)
    L.add(ts("Workers alive", [(f"sum by (instance) (llmapi_process_workers{_s()})", "{{instance}}")],
             "short", "Worker processes reporting metrics."), 8, 8)
    L.add(ts("Scrape: duration and series", [
        (f"max by (instance) (scrape_duration_seconds{_s()})", "duration {{instance}}"),
        (f"max by (instance) (scrape_samples_scraped{_s()}) / 1000", "thousand series {{instance}}"),
        (f"max by (instance) (llmapi_scrape_series{_s()}) / 1000", "thousand series, self-reported {{instance}}")],
        "short", "Cost of one /metrics scrape: seconds, and series returned (in thousands; the service's own "
                 "count, llmapi_scrape_series, is the series budget's measure)."), 8, 8)
    L.add(Stat(title="Build", description="Version and Python of the running build.", dataSource=DS,
               targets=targets((f"max by (version, python) (llmapi_build_info{_s()})", "{{version}} / py{{python}}")),
               textMode="name", colorMode="none", graphMode="none", reduceCalc="lastNotNull", color={"mode": "thresholds"},
               thresholds=[{"color": GREEN, "value": None}]), 8, 8)


def redis_row(L: Layout) -> None:
    L.row("Redis")
    L.add(ts("Redis up (configured instances)", [
        (f"min by (instance) (llmapi_redis_up{_s()}) and on (instance) "
         f"max by (instance) (llmapi_redis_configured{_s()}) == 1", "{{instance}}")],
        "short", "1 when Redis answers the service's pings, 0 when it does not.",
        links=[runbook_link("Redis down", "redis_down")]), 8, 8)
    L.add(ts("Redis command latency P95", [
        (f"histogram_quantile(0.95, sum by (command, le) "
         f"(rate(llmapi_redis_command_duration_seconds_bucket{_s()}[{RI}])))", "{{command}}")],
        "s", "95th percentile latency of Redis commands as the service sees it."), 8, 8)
    L.add(ts("Redis commands per second", [
        (f"sum by (command) (rate(llmapi_redis_command_duration_seconds_count{_s()}[{RI}]))", "{{command}}")],
        "ops", "Redis commands per second by command."), 8, 8)
    L.add(ts("Running without Redis: cache L2, rate limits", [
        (f"min by (instance) (llmapi_cache_l2_up{_s()})", "cache L2 in use {{instance}}"),
        (f"max by (instance) (llmapi_rate_limit_fallback_active{_s()})", "rate limits local {{instance}}")],
        "short", "1 = cache uses Redis as its L2 tier (0: outage, or no Redis); 1 = rate limits fell back to "
                 "per-process counters because Redis failed.", links=[runbook_link("Redis down", "redis_down")]), 24, 6)


ANNOTATIONS = [
    {"name": "Config changes", "enable": True, "iconColor": "blue", "datasource": DS,
     "expr": f"changes(max by (job, instance) (llmapi_config_version{{{SEL}}})[2m:15s]) > 0",
     "step": "30s", "titleFormat": "config changed", "textFormat": "{{instance}}: config version changed",
     "useValueForTime": False},
    {"name": "Firing alerts", "enable": True, "iconColor": "red", "datasource": DS,
     "expr": 'ALERTS{alertstate="firing",job=~"$job"}', "step": "30s",
     "titleFormat": "{{alertname}}", "textFormat": "{{severity}} {{job}} {{instance}} {{slo}} {{kpi}}",
     "useValueForTime": False},
]


def overview() -> Dashboard:
    L = Layout()
    L.row("KPIs (spec thresholds; stat colours: green good, yellow target met, orange target missed, red needs attention)")
    for k in KPIS:
        L.add(kpi_stat(k), 4, 5)
    slo_row(L)
    alerts_row(L)
    L.row("KPI trends (the alert rules' records and window)")
    for k in KPIS:
        L.add(kpi_trend(k), 8, 8)
    for build in (http_row, ai_row, llm_row, upstream_row, cache_row, resilience_row, middleware_row, monitoring_row,
                  process_row, redis_row):
        build(L)
    remediation.row(L, ts, or_zero, _s, runbook_link, RI)  # dashboards/remediation.py
    templating = Templating(list=[
        Template(name="datasource", label="Data source", query="prometheus", type="datasource",
                 default="Prometheus"),
        Template(name="job", label="Job", query="label_values(llmapi_build_info, job)", dataSource=DS,
                 default="llmapi", includeAll=True, multi=True, allValue=".+",
                 refresh=REFRESH_ON_TIME_RANGE_CHANGE),
        Template(name="instance", label="Instance", query='label_values(llmapi_build_info{job=~"$job"}, instance)',
                 dataSource=DS, default="$__all", includeAll=True, multi=True, allValue=".+",
                 refresh=REFRESH_ON_TIME_RANGE_CHANGE),
    ])
    return Dashboard(
        title="LLM API overview", uid=UID, tags=["llmapi", "generated"],
        description="KPIs at the spec's thresholds and the service's RED, AI, cache, resilience, middleware, "
                    "monitoring, process and Redis metrics. Generated by dashboards/generate.py from exporter/kpis.py.",
        panels=L.panels, templating=templating, annotations=Annotations(list=ANNOTATIONS + [remediation.annotation(DS, SEL)]), editable=False, time=Time("now-1h", "now"), refresh="30s",
        schemaVersion=SCHEMA_VERSION, timezone="browser", graphTooltip=1,
        links=[{"title": "Runbook", "type": "link", "url": kpis.runbook_base_url(), "targetBlank": True,
                "icon": "doc", "tooltip": "alerts/RUNBOOK.md"}],
    ).auto_panel_ids()


DASHBOARDS = {OVERVIEW_PATH: overview}


def render(d: Dashboard) -> str:
    return json.dumps(d.to_json_data(), cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def outputs() -> dict[str, str]:
    return {path: render(fn()) for path, fn in DASHBOARDS.items()}


def panel_queries(doc: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target in a dashboard JSON document."""
    out = []
    for p in doc.get("panels", []):
        for sub in [p] + list(p.get("panels", [])):
            for t in sub.get("targets", []) or []:
                if t.get("expr"):
                    out.append((sub.get("title", ""), t["expr"]))
    return out


def stale() -> list[str]:
    return genfiles.stale(outputs())


def main(argv=None) -> int:
    return genfiles.main(outputs, "dashboards", "generate the Grafana dashboards", argv)


if __name__ == "__main__":
    sys.exit(main())
