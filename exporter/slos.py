"""The SLO catalog: service-level objectives as data, beside the KPIs.

Each SLO has an objective over the mixin's SLO period (30 days), an SLI as
bad events over all events of API traffic (exporter/kpis.py: the /v1/text
routes), and runbook text.  alerts/rules.py generates from each, in the
style of Sloth and Pyrra:

* SLI recording rules per window (5m .. 3d, and the period):
  llmapi:slo_requests:rate<w>, llmapi:slo_errors:ratio_rate<w>,
  llmapi:slo_burn_rate:ratio_rate<w> (error ratio / error budget), label slo;
* llmapi:slo_objective:ratio and llmapi:slo_error_budget_remaining:ratio;
* multiwindow multi-burn-rate alerts Llmapi<Name>BudgetBurn: 14.4x over 1h and
  5m, 6x over 6h and 30m page (critical); 3x over 1d and 2h, 1x over 3d and 6h
  open a ticket (warning); each needs `min_events` requests in its long window
  (a few slow requests at night page nobody).

The budgets are fixed here, not runtime config: an SLO is a promise, and a
POST cannot move it (the runtime KPI thresholds are watched by
LlmapiAlertThresholdsChanged instead).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from prometheus_client.utils import floatToGoString

from exporter.kpis import API_ROUTE_MATCHER, BY_KEY, sel
from exporter.mixin import DEFAULT, Config

HTTP_REQUESTS = "llmapi_http_requests_total"
HTTP_DURATION = "llmapi_http_request_duration_seconds"
DEGRADED = "llmapi_text_degraded_responses_total"

RateFn = Callable[[Config, str], str]   # (config, actual window) -> PromQL per job


def _rate(cfg: Config, window: str, metric: str, *matchers: str) -> str:
    return f"sum by ({cfg.job_label}) (rate({metric}{sel(cfg.selector, API_ROUTE_MATCHER, *matchers)}[{window}]))"


def _or_zero(part: str, whole: str) -> str:
    """A part with no series yet (no error so far) counts as 0 instead of making the ratio vanish."""
    return f"({part} or 0 * {whole})"


def _requests(cfg: Config, w: str) -> str:
    return _rate(cfg, w, HTTP_REQUESTS)


def _server_errors(cfg: Config, w: str) -> str:
    return _or_zero(_rate(cfg, w, HTTP_REQUESTS, 'status=~"5.."'), _requests(cfg, w))


def _degraded(cfg: Config, w: str) -> str:
    m = f"{DEGRADED}{sel(cfg.selector)}"
    return _or_zero(f"sum by ({cfg.job_label}) (rate({m}[{w}]))", _requests(cfg, w))


def _bad_quality(cfg: Config, w: str) -> str:
    return f"{_server_errors(cfg, w)} + {_degraded(cfg, w)}"


LATENCY_KPI = BY_KEY["api_response_time_p95"]
LATENCY_THRESHOLD = LATENCY_KPI.target          # 2 s: an exact bucket edge of the HTTP histogram
LATENCY_LE = floatToGoString(LATENCY_THRESHOLD)  # "2.0", as prometheus_client exposes it


def _timed(cfg: Config, w: str) -> str:
    return _rate(cfg, w, f"{HTTP_DURATION}_count")


def _slow(cfg: Config, w: str) -> str:
    fast = _rate(cfg, w, f"{HTTP_DURATION}_bucket", f'le="{LATENCY_LE}"')
    return f"clamp_min({_timed(cfg, w)} - {fast}, 0)"


@dataclass(frozen=True)
class SLO:
    name: str           # label value slo=..., runbook anchor slo_<name>
    title: str
    objective: float    # share of good events, e.g. 0.99
    description: str    # what counts as bad
    bad: RateFn
    total: RateFn
    runbook: str

    @property
    def budget(self) -> float:
        """The error budget: the share of events allowed to be bad."""
        return round(1.0 - self.objective, 10)

    @property
    def alert(self) -> str:
        return f"Llmapi{self.title.replace(' ', '')}BudgetBurn"

    @property
    def key(self) -> str:
        return f"slo_{self.name}"

    def error_ratio(self, cfg: Config = DEFAULT, window: str | None = None) -> str:
        w = window or cfg.w("5m")
        return f"({self.bad(cfg, w)}) / {self.total(cfg, w)}"


_CHECK_ACT = """
**Check.**
- SLO row of the dashboard: SLI and burn rate per window, budget remaining; the burn-rate pair in the alert's
  labels (`long_window`, `short_window`) says how fast: 14.4x spends 2 % of the month's budget in an hour.
- HTTP row: 5xx by route and status; Resilience row: breaker, fallbacks; AI row: errors by kind.
- `GET /internal/config/history`: a config change just before the burn started.

**Act.**
- A page (critical) means the budget goes within days: act now (roll back the last change:
  `POST /internal/config/rollback`, or fix the upstream). A ticket (warning) can wait for working hours.
- The short window makes the alert resolve a few minutes after the cause is gone.
"""

SLOS: tuple[SLO, ...] = (
    SLO(
        name="availability", title="Availability", objective=round(1.0 - BY_KEY["error_rate"].target, 10),
        description="API requests answered with a 5xx status count as bad (objective: 1 - the error-rate KPI target)",
        bad=_server_errors, total=_requests,
        runbook="**Meaning.** API requests fail with server errors (5xx, shed requests included) faster than the "
                "budget allows." + _CHECK_ACT,
    ),
    SLO(
        name="quality", title="Quality", objective=0.98,
        description="5xx answers and degraded answers (a stale cached copy served because the AI service failed, "
                    "marked `fallback: true`) count as bad",
        bad=_bad_quality, total=_requests,
        runbook="**Meaning.** Users get errors or degraded answers (stale cached copies served as fallbacks) "
                "faster than the budget allows: the AI service is failing even where the answers are 200." + _CHECK_ACT,
    ),
    SLO(
        name="latency", title="Latency", objective=0.95,  # the KPI is a P95: 95 % under the target
        description=f"API requests slower than {LATENCY_THRESHOLD:g} s (the API P95 KPI target, an exact bucket edge) "
                    "count as bad; 95 % must be faster, as the P95 target says",
        bad=_slow, total=_timed,
        runbook="**Meaning.** More API requests than budgeted take longer than the P95 target (2 s)." + _CHECK_ACT
                + "\n- Slow upstream: lower `ai.timeout_seconds`; cold cache: see the cache hit ratio runbook; "
                  "saturation: add `WORKERS` or replicas.\n",
    ),
)

BY_NAME: dict[str, SLO] = {s.name: s for s in SLOS}


# ---- recording-rule names ------------------------------------------------------------
def requests_record(window: str) -> str:
    return f"llmapi:slo_requests:rate{window}"


def error_ratio_record(window: str) -> str:
    return f"llmapi:slo_errors:ratio_rate{window}"


def burn_rate_record(window: str) -> str:
    return f"llmapi:slo_burn_rate:ratio_rate{window}"


OBJECTIVE_RECORD = "llmapi:slo_objective:ratio"
BUDGET_REMAINING_RECORD = "llmapi:slo_error_budget_remaining:ratio"
