"""Alerts that are not KPIs of the spec table nor SLOs: their data and runbooks.

Three shapes, all rendered with the mixin `_config` (exporter/mixin.py), so no
rule names a job itself:

* RatioAlert: events over their whole, per job, above a share
  (load shedding, 429s, AI errors, degraded answers);
* SpikeAlert: a rate over the last hour against the last day's (tokens, cost);
* StateAlert: a PromQL condition (Watchdog, event-loop lag, Redis down,
  local rate limiting, Prometheus and Alertmanager self-checks).

Each carries the input series its promtool cases use (alerts/rule_tests.py), a
firing and a quiet case per alert, and a runbook entry (RUNBOOKS).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from exporter.kpis import API_ROUTE_MATCHER, sel
from exporter.mixin import DEFAULT, Config


@dataclass(frozen=True)
class RatioAlert:
    """Fires when events make up more than `threshold` of their whole, sustained for `for_`:
    sum by (job) (rate(numerator[w])) / sum by (job) (rate(denominator[w])) > threshold.
    numerator/denominator: (metric, extra matchers); the mixin selector is added."""
    alert: str
    key: str            # runbook anchor (RUNBOOKS key)
    summary: str
    events: str         # description wording: "<value> of <events> over ..."
    numerator: tuple[str, str]
    denominator: tuple[str, str]
    threshold: float    # ratio; a value exactly at it is quiet
    for_: str = "10m"
    severity: str = "warning"
    labels: dict = field(default_factory=dict)

    def side(self, part: tuple[str, str], cfg: Config = DEFAULT) -> str:
        metric, matchers = part
        return f"sum by ({cfg.job_label}) (rate({metric}{sel(cfg.selector, matchers)}[{cfg.kpi_window}]))"

    def expr(self, cfg: Config = DEFAULT) -> str:
        return f"{self.side(self.numerator, cfg)} / {self.side(self.denominator, cfg)} > {self.threshold!r}"


RATIO_ALERTS: tuple[RatioAlert, ...] = (
    RatioAlert(
        alert="LlmapiLoadShedding", key="load_shedding", summary="Admission control is shedding requests",
        events="API requests were shed by admission control (503)",
        numerator=("llmapi_admission_shed_total", ""),
        denominator=("llmapi_http_requests_total", API_ROUTE_MATCHER),
        threshold=0.01,
    ),
    RatioAlert(
        alert="LlmapiRateLimitRejections", key="rate_limit_rejections",
        summary="Many requests are rate limited",
        events="rate-limit decisions denied the request (429)",
        numerator=("llmapi_rate_limit_decisions_total", 'decision="denied"'),
        denominator=("llmapi_rate_limit_decisions_total", ""),
        threshold=0.10,
    ),
    RatioAlert(
        alert="LlmapiAiErrors", key="ai_errors", summary="Many AI provider calls fail",
        events="AI provider call attempts failed",
        numerator=("llmapi_ai_request_duration_seconds_count", 'outcome!="success"'),
        denominator=("llmapi_ai_request_duration_seconds_count", ""),
        threshold=0.10,
    ),
    RatioAlert(
        alert="LlmapiDegradedAnswers", key="degraded_answers", summary="Many answers are degraded",
        events="successful API answers were degraded (a stale cached copy served as a fallback)",
        numerator=("llmapi_text_degraded_responses_total", ""),
        denominator=("llmapi_http_requests_total", sel(API_ROUTE_MATCHER, 'status=~"2.."')[1:-1]),
        threshold=0.05,
    ),
)


@dataclass(frozen=True)
class SpikeAlert:
    """Fires when a rate over `recent` is more than `factor` times its rate over `baseline`
    (and above `min_rate`, so a quiet service's first calls are no spike)."""
    alert: str
    key: str
    summary: str
    what: str           # description wording
    metric: str
    factor: float
    min_rate: float     # per second
    humanize: str = "humanize"
    recent: str = "1h"
    baseline: str = "1d"
    for_: str = "15m"
    severity: str = "warning"

    def rate(self, cfg: Config, window: str) -> str:
        return f"sum by ({cfg.job_label}) (rate({self.metric}{sel(cfg.selector)}[{cfg.w(window)}]))"

    def expr(self, cfg: Config = DEFAULT) -> str:
        now = self.rate(cfg, self.recent)
        return (f"{now} > {self.factor!r} * {self.rate(cfg, self.baseline)}\n"
                f"and\n{now} > {self.min_rate!r}")


SPIKE_ALERTS: tuple[SpikeAlert, ...] = (
    SpikeAlert(alert="LlmapiTokenSpike", key="token_spike", summary="Token use spikes",
               what="tokens per second", metric="gen_ai_client_token_usage_sum", factor=3.0, min_rate=10.0),
    SpikeAlert(alert="LlmapiCostSpike", key="cost_spike", summary="AI cost spikes",
               what="USD per second", metric="llmapi_ai_cost_usd_total", factor=3.0, min_rate=0.0001),
)


@dataclass(frozen=True)
class StateAlert:
    """A PromQL condition.  `fire` / `quiet`: promtool input series {series: values} of a firing and a
    quiet case; `exp_labels` the labels the firing case's alert carries (besides severity and labels)."""
    alert: str
    key: str
    summary: str
    description: str
    expr_fn: Callable[[Config], str]
    fire: dict
    quiet: dict
    exp_labels: dict
    for_: str = "5m"
    severity: str = "warning"
    labels: dict = field(default_factory=dict)

    def expr(self, cfg: Config = DEFAULT) -> str:
        return self.expr_fn(cfg)


def _svc(cfg: Config, metric: str, matchers: str = "") -> str:
    return f"{metric}{sel(cfg.selector, matchers)}"


PROMETHEUS_SELECTOR = 'job="prometheus"'
ALERTMANAGER_SELECTOR = 'job="alertmanager"'
_WHO = "{{ $labels.job }}/{{ $labels.instance }}"
_I = 'job="llmapi",instance="llmapi:8000"'
_P = 'job="prometheus",instance="localhost:9090"'
_A = 'job="alertmanager",instance="alertmanager:9093"'

STATE_ALERTS: tuple[StateAlert, ...] = (
    StateAlert(
        alert="Watchdog", key="watchdog", severity="none", for_="0m",
        summary="The alerting pipeline works (always firing)",
        description="Always firing: route it to a dead man's switch, which pages when it stops arriving.",
        expr_fn=lambda cfg: "vector(1)",
        fire={}, quiet=None, exp_labels={},
    ),
    StateAlert(
        alert="LlmapiEventLoopLag", key="event_loop_lag", for_="10m",
        summary="The event loop is saturated",
        description=_WHO + ": the event loop wakes up {{ $value | humanizeDuration }} late.",
        expr_fn=lambda cfg: f"max by ({cfg.by(True)}) ({_svc(cfg, 'llmapi_event_loop_lag_seconds')}) > 0.1",
        fire={f"llmapi_event_loop_lag_seconds{{{_I}}}": "0.25+0x30"},
        quiet={f"llmapi_event_loop_lag_seconds{{{_I}}}": "0.1+0x30"},
        exp_labels={"job": "llmapi", "instance": "llmapi:8000"},
    ),
    StateAlert(
        alert="LlmapiRedisDown", key="redis_down", for_="1m",
        summary="Redis unreachable (the service keeps serving)",
        description=_WHO + " is configured with Redis but cannot reach it: cache L2, shared rate limits "
                           "and config propagation are off.",
        expr_fn=lambda cfg: (f"{_svc(cfg, 'llmapi_redis_up')} == 0 and on({cfg.by(True)}) "
                             f"{_svc(cfg, 'llmapi_redis_configured')} == 1"),
        fire={f"llmapi_redis_up{{{_I}}}": "0+0x20", f"llmapi_redis_configured{{{_I}}}": "1+0x20"},
        quiet={f"llmapi_redis_up{{{_I}}}": "0+0x20", f"llmapi_redis_configured{{{_I}}}": "0+0x20"},
        exp_labels={"job": "llmapi", "instance": "llmapi:8000"},
    ),
    StateAlert(
        alert="LlmapiRateLimitLocalFallback", key="rate_limit_fallback", for_="5m",
        summary="Rate limits are per process (Redis failed)",
        description=_WHO + ": rate limiting runs on its local fallback, so each process allows the full limit.",
        expr_fn=lambda cfg: f"max by ({cfg.by(True)}) ({_svc(cfg, 'llmapi_rate_limit_fallback_active')}) == 1",
        fire={f"llmapi_rate_limit_fallback_active{{{_I}}}": "1+0x20"},
        quiet={f"llmapi_rate_limit_fallback_active{{{_I}}}": "0+0x20"},
        exp_labels={"job": "llmapi", "instance": "llmapi:8000"},
    ),
    StateAlert(
        alert="LlmapiCircuitBreakerOpen", key="breaker_open", for_="1m",
        summary="Circuit breaker open",
        description=_WHO + ": breaker {{ $labels.breaker }} is open; AI calls fail fast and fallbacks answer.",
        expr_fn=lambda cfg: _svc(cfg, "llmapi_circuit_breaker_state", 'state="open"') + " == 1",
        fire={f'llmapi_circuit_breaker_state{{{_I},breaker="openai:summarize",state="open"}}': "1+0x20",
              f'llmapi_circuit_breaker_state{{{_I},breaker="openai:summarize",state="half-open"}}': "0+0x20"},
        quiet={f'llmapi_circuit_breaker_state{{{_I},breaker="openai:summarize",state="open"}}': "0+0x20",
               f'llmapi_circuit_breaker_state{{{_I},breaker="openai:summarize",state="half-open"}}': "1+0x20"},
        exp_labels={"job": "llmapi", "instance": "llmapi:8000", "breaker": "openai:summarize", "state": "open"},
    ),
    StateAlert(
        alert="LlmapiAiPoolSaturated", key="ai_pool_saturation", for_="10m",
        summary="The upstream connection pool is nearly full",
        description=_WHO + ": {{ $value | humanizePercentage }} of the {{ $labels.provider }} connection pool is in "
                           "use; AI calls start waiting for a connection.",
        expr_fn=lambda cfg: (f"sum by ({cfg.by(True)}, provider) ({_svc(cfg, 'llmapi_ai_pool_connections_in_use')}) "
                             f"/ sum by ({cfg.by(True)}, provider) ({_svc(cfg, 'llmapi_ai_pool_max_connections')}) "
                             "> 0.9"),
        fire={f'llmapi_ai_pool_connections_in_use{{{_I},provider="openai"}}': "48+0x20",
              f'llmapi_ai_pool_max_connections{{{_I},provider="openai"}}': "50+0x20"},
        quiet={f'llmapi_ai_pool_connections_in_use{{{_I},provider="openai"}}': "45+0x20",
               f'llmapi_ai_pool_max_connections{{{_I},provider="openai"}}': "50+0x20"},
        exp_labels={"job": "llmapi", "instance": "llmapi:8000", "provider": "openai"},
    ),
    StateAlert(
        alert="PrometheusRuleEvaluationFailures", key="prometheus_self", for_="5m",
        summary="Prometheus fails to evaluate rules",
        description=_WHO + ": rule group evaluations failed over the last 5m; alerts may be missing.",
        expr_fn=lambda cfg: (f"sum by (job, instance) (increase(prometheus_rule_evaluation_failures_total"
                             f"{{{PROMETHEUS_SELECTOR}}}[5m])) > 0"),
        fire={f"prometheus_rule_evaluation_failures_total{{{_P},rule_group=\"g\"}}": "0+1x20"},
        quiet={f"prometheus_rule_evaluation_failures_total{{{_P},rule_group=\"g\"}}": "3+0x20"},
        exp_labels={"job": "prometheus", "instance": "localhost:9090"},
    ),
    StateAlert(
        alert="PrometheusConfigReloadFailed", key="prometheus_self", for_="10m",
        summary="Prometheus config reload failed",
        description=_WHO + ": the last config reload failed; Prometheus runs an old config.",
        expr_fn=lambda cfg: f"max by (job, instance) (prometheus_config_last_reload_successful{{{PROMETHEUS_SELECTOR}}}) == 0",
        fire={f"prometheus_config_last_reload_successful{{{_P}}}": "0+0x20"},
        quiet={f"prometheus_config_last_reload_successful{{{_P}}}": "1+0x20"},
        exp_labels={"job": "prometheus", "instance": "localhost:9090"},
    ),
    StateAlert(
        alert="PrometheusNotificationsFailing", key="prometheus_self", for_="5m",
        summary="Prometheus cannot send alerts to Alertmanager",
        description=_WHO + ": {{ $value | humanizePercentage }} of alert notifications to Alertmanager failed.",
        expr_fn=lambda cfg: (f"sum by (job, instance) (rate(prometheus_notifications_errors_total{{{PROMETHEUS_SELECTOR}}}[5m]))"
                             f" / sum by (job, instance) (rate(prometheus_notifications_sent_total"
                             f"{{{PROMETHEUS_SELECTOR}}}[5m])) > 0.01"),
        fire={f"prometheus_notifications_errors_total{{{_P},alertmanager=\"am\"}}": "0+6x20",
              f"prometheus_notifications_sent_total{{{_P},alertmanager=\"am\"}}": "0+60x20"},
        quiet={f"prometheus_notifications_errors_total{{{_P},alertmanager=\"am\"}}": "0+0x20",
               f"prometheus_notifications_sent_total{{{_P},alertmanager=\"am\"}}": "0+60x20"},
        exp_labels={"job": "prometheus", "instance": "localhost:9090"},
    ),
    StateAlert(
        alert="AlertmanagerConfigReloadFailed", key="alertmanager_self", for_="10m",
        summary="Alertmanager config reload failed",
        description=_WHO + ": the last config reload failed; Alertmanager runs an old config.",
        expr_fn=lambda cfg: (f"max by (job, instance) (alertmanager_config_last_reload_successful"
                             f"{{{ALERTMANAGER_SELECTOR}}}) == 0"),
        fire={f"alertmanager_config_last_reload_successful{{{_A}}}": "0+0x20"},
        quiet={f"alertmanager_config_last_reload_successful{{{_A}}}": "1+0x20"},
        exp_labels={"job": "alertmanager", "instance": "alertmanager:9093"},
    ),
    StateAlert(
        alert="AlertmanagerNotificationsFailing", key="alertmanager_self", for_="5m",
        summary="Alertmanager cannot deliver notifications",
        description=_WHO + ": notifications to {{ $labels.integration }} failed over the last 5m.",
        expr_fn=lambda cfg: (f"sum by (job, instance, integration) (increase(alertmanager_notifications_failed_total"
                             f"{{{ALERTMANAGER_SELECTOR}}}[5m])) > 0"),
        fire={f"alertmanager_notifications_failed_total{{{_A},integration=\"webhook\"}}": "0+1x20"},
        quiet={f"alertmanager_notifications_failed_total{{{_A},integration=\"webhook\"}}": "2+0x20"},
        exp_labels={"job": "alertmanager", "instance": "alertmanager:9093", "integration": "webhook"},
    ),
)


# ---- runbooks of these alerts and of service availability ----------------------------
RUNBOOKS: dict[str, tuple[str, str]] = {
    "ai_errors": ("AI errors", """\
**Meaning.** More than 10 % of the calls to the AI provider fail (timeouts, rate limits, server errors), retries
included. Answers still arrive while retries and the cache absorb it; past that the SLOs burn.

**Check.** AI row: errors by kind and provider; Resilience row: retries, breaker state. The provider's status page
and quota (LLM row: upstream quota left).

**Act.** Rate limited: lower the call rate (cache, batching) or raise the quota. Timeouts: raise
`ai.timeout_seconds` only if the provider is slow but healthy. Failing: switch provider or model
(`POST /internal/config/ai`).
"""),
    "degraded_answers": ("Degraded answers", """\
**Meaning.** More than 5 % of successful API answers are degraded: the AI service could not answer and a stale
cached copy was served instead (`"fallback": true` in the answer). Users get old answers; the quality SLO burns.

**Check.** Resilience row: fallbacks by kind, breaker state; AI row: errors by kind.

**Act.** As for AI errors: the provider is failing. Degraded answers stop when it recovers.
"""),
    "token_spike": ("Token spike", """\
**Meaning.** Tokens per second over the last hour are more than 3x the last day's rate: a new client, a retry
loop, longer texts, or a cache that stopped hitting. Tokens are what the provider bills.

**Check.** LLM row: tokens per operation and model; Cache row: hit ratio (a cold cache sends every call upstream);
usage per key name.

**Act.** Contact or rate-limit the client (`POST /internal/config/rate_limit`); fix the cache; lower
`max_length` style options.
"""),
    "cost_spike": ("Cost spike", """\
**Meaning.** AI cost per second over the last hour is more than 3x the last day's rate (the price table of the
`ai` config section times the tokens used).

**Check and act.** As for a token spike; also the model mix (LLM row): did traffic move to a pricier model?
"""),
    "ai_pool_saturation": ("Upstream connection pool saturated", """\
**Meaning.** More than 90 % of the upstream connections (`ai.max_connections`) are busy for 10 minutes: new AI
calls soon wait for a connection (`llmapi_ai_pool_waiting_requests`), which adds latency before the upstream is
even asked.

**Check.** AI row: pool in use, waiting, wait P95; upstream latency (a slow upstream holds connections longer).

**Act.** Raise `ai.max_connections` (`POST /internal/config/ai`) if the upstream allows it; lower
`ai.timeout_seconds`; more cache hits mean fewer calls.
"""),
    "event_loop_lag": ("Event-loop lag", """\
**Meaning.** The event loop wakes up more than 100 ms late: the process is saturated or something blocks it.
Every request on that process waits as long.

**Check.** Process row: CPU per instance, lag per instance; `GET /internal/monitoring/bottlenecks`.

**Act.** Add workers or replicas; find the blocking call (`/internal/monitoring/memory-hotspots`, profiles).
"""),
    "rate_limit_fallback": ("Rate limiting on its local fallback", """\
**Meaning.** Redis failed for the rate limiter, which now counts per process: each worker and replica allows the
full limit, so a client gets N times its limit.

**Check.** Redis row: Redis up, lease errors. Usually LlmapiRedisDown fires too.

**Act.** Restore Redis; the limiter returns to shared limits by itself.
"""),
    "watchdog": ("Watchdog", """\
**Meaning.** Always firing, on purpose. Route it to a dead man's switch (e.g. a heartbeat monitor) that pages
when the notification stops arriving: then Prometheus, Alertmanager or the route between them is broken.

**Act.** Nothing while it arrives. When it stops: check Prometheus (`/-/ready`, rule evaluation) and Alertmanager.
"""),
    "prometheus_self": ("Prometheus self-checks", """\
**Meaning.** Prometheus itself is unwell: rule evaluations fail (alerts may never fire), its last config reload
failed (it runs an old config), or it cannot deliver alerts to Alertmanager.

**Check.** Prometheus' log; `/rules` and `/targets` pages; `promtool check config` on its config.

**Act.** Fix the config or rules and reload (`curl -X POST :9090/-/reload`); restore the path to Alertmanager.
"""),
    "alertmanager_self": ("Alertmanager self-checks", """\
**Meaning.** Alertmanager's last config reload failed, or it cannot deliver notifications to a receiver:
alerts fire but nobody hears them.

**Check.** Alertmanager's log; `amtool check-config`; the receiver (webhook) is reachable.

**Act.** Fix the config and reload (`curl -X POST :9093/-/reload`); restore the receiver.
"""),
    "thresholds_changed": ("Alert thresholds changed", """\
**Meaning.** A KPI alert threshold differs from its generated default (`POST /internal/monitoring/configure-alerts`
or `POST /internal/config/alerts`). Never a page: it makes a moved threshold visible, so nobody blinds an alert
silently. The labels say which KPI and level; the description gives both values.

**Check.** `GET /internal/config/history`: who changed it (the audit names the key), when, from what.

**Act.** If intended, leave it (or change the catalog default in exporter/kpis.py and regenerate). Otherwise
set it back (`POST /internal/config/rollback`).
"""),
    "redis_down": ("Redis down", """\
**Meaning.** The service is configured with Redis (`REDIS_URL`) but cannot reach it. It keeps serving, so this
is a warning: the cache falls back to its in-memory tier, rate limits to per-process counters, config changes stop
propagating between workers. While it fires, Alertmanager inhibits the cache-hit-ratio alerts of the same job
(a cold L2 lowers the hit ratio; that is this outage, not a second problem).

**Check.** Redis row: `llmapi_redis_up`, command latency. `redis-cli -u $REDIS_URL ping`. The Redis logs.

**Act.** Restart or fail over Redis. The service reconnects by itself; nothing to do on the service side.
"""),
    "breaker_open": ("Circuit breaker open", """\
**Meaning.** The circuit breaker in front of the AI provider is open: calls fail fast and fallbacks answer.

**Check.** AI row: errors by kind; Resilience row: transitions, fallbacks. The provider's status.

**Act.** Fix or switch the provider (`POST /internal/config/ai`). The breaker half-opens on its own after its
recovery timeout; `/internal/resilience` shows and tunes it.
"""),
    "load_shedding": ("Load shedding", """\
**Meaning.** Admission control answers more than 1 % of API requests with 503 (shed): the in-flight limit and
its queue are full, or queued requests waited past the queue timeout. Shed requests also count as 5xx errors.

**Check.** Monitoring row: shed by reason, active and queued requests, queue wait P95. Process row: CPU and
event-loop lag (saturated, or a slow upstream holding slots?). `GET /internal/monitoring/system-load`.

**Act.** Add capacity (`WORKERS`, replicas), or raise `monitoring.max_concurrent_requests` / `queue_size`
(`POST /internal/config/monitoring`) if the process has headroom; speed up the upstream or lower
`ai.timeout_seconds` so slots free sooner.
"""),
    "rate_limit_rejections": ("Rate-limit rejections", """\
**Meaning.** More than 10 % of rate-limit decisions deny the request (429): clients exceed their limits.

**Check.** Middleware row: decisions by tier and outcome, Redis token leases. Is it one client (a retry loop,
a batch job) or everyone (a limit set too low after a config change: `GET /internal/config/history`)?

**Act.** Contact or block the abusive client; raise `rate_limit.requests_per_minute` / `burst_size` or the
client's tier if the traffic is legitimate (`POST /internal/config/rate_limit`).
"""),
    "service_down": ("Service down", """\
**Meaning.** Prometheus cannot scrape the service (`up == 0`), or no target of the job exists at all.

**Check.** The process or container is running; `curl http://HOST:PORT/v1/health`; `/metrics` answers; the
Prometheus target page for the scrape error.

**Act.** Restart the service; look at its last logs for the cause (a refused config exits with status 2).
"""),
}


