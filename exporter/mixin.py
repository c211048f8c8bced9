"""The monitoring mixin's `_config`: everything the generated rules and dashboards
may vary per deployment, in one place (the kubernetes-mixin / Sloth convention).

    selector         label matchers every raw series of the service is selected with
                     (a ServiceMonitor under another job name: 'job="llmapi-prod"');
                     nothing in rules or dashboards writes a job name itself
    job_label        the label jobs are told apart by; thresholds are compared per value of it
    instance_label   the label instances are told apart by
    kpi_window       rate window of the KPI records and alerts
    slo_period       the SLO window (error budgets are spent over it)
    sli_windows      windows of the SLI recording rules (the burn-rate pairs use them)
    burn_rates       (severity, long window, short window, factor, for) per alert
    runbook_base     where runbook_url annotations and dashboard links point

Two profiles: DEFAULT (what ships) and TEST (`python -m alerts.generate --profile
test --out DIR`): the same rules with every window, `for:` and group interval
scaled to seconds, for end-to-end tests against a real Prometheus.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

DEFAULT_RUNBOOK_BASE_URL = "https://github.com/llmapi/llmapi/blob/main/alerts/RUNBOOK.md"

# Google SRE workbook, ch. 5: (severity, long window, short window, burn-rate factor, for)
BURN_RATES: tuple[tuple[str, str, str, float, str], ...] = (
    ("critical", "1h", "5m", 14.4, "2m"),   # 2 % of a 30-day budget in 1 h: page
    ("critical", "6h", "30m", 6.0, "15m"),  # 5 % in 6 h: page
    ("warning", "1d", "2h", 3.0, "1h"),     # 10 % in 1 day: ticket
    ("warning", "3d", "6h", 1.0, "3h"),     # 10 % in 3 days: ticket
)
SLI_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclass(frozen=True)
class Config:
    selector: str = 'job="llmapi"'
    job_label: str = "job"
    instance_label: str = "instance"
    kpi_window: str = "5m"
    slo_period: str = "30d"
    sli_windows: tuple[str, ...] = SLI_WINDOWS
    burn_rates: tuple[tuple[str, str, str, float, str], ...] = BURN_RATES
    runbook_base: str = ""                 # "": RUNBOOK_BASE_URL, else DEFAULT_RUNBOOK_BASE_URL
    # evaluation: None = Prometheus' global evaluation_interval
    interval: str | None = None
    long_interval: str = "5m"              # groups over windows of 6 h and more (and the SLO period)
    for_override: str | None = None        # every alert's `for:` (the test profile)
    min_events: float = 100.0              # a burn-rate alert needs this many requests in its long window
    window_map: dict = field(default_factory=dict)  # nominal window -> actual (the test profile)

    def w(self, nominal: str) -> str:
        """The actual window of a nominal one (identity outside the test profile)."""
        return self.window_map.get(nominal, nominal)

    def for_(self, nominal: str) -> str:
        return self.for_override or nominal

    @property
    def runbook_base_url(self) -> str:
        return self.runbook_base or os.environ.get("RUNBOOK_BASE_URL", DEFAULT_RUNBOOK_BASE_URL)

    def runbook_url(self, anchor: str) -> str:
        return f"{self.runbook_base_url}#{anchor.replace('_', '-')}"

    def by(self, per_instance: bool) -> str:
        return f"{self.job_label}, {self.instance_label}" if per_instance else self.job_label


DEFAULT = Config()

# Seconds instead of hours: the fast-burn pair (1h/5m) becomes 30s/10s, so an
# injected error burst fires it within seconds and it resolves ~10 s after.
TEST = replace(
    DEFAULT, kpi_window="15s", interval="1s", long_interval="1s", for_override="1s", min_events=10.0,
    window_map={"5m": "10s", "30m": "20s", "1h": "30s", "2h": "40s", "6h": "1m", "1d": "90s", "3d": "2m",
                "30d": "5m"},
)

PROFILES = {"default": DEFAULT, "test": TEST}


def seconds(window: str) -> float:
    n, unit = float(window[:-1]), window[-1]
    return n * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
