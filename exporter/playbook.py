"""The remediation playbook: the guide's remedies keyed to the alerts that call for them, as data.

Each entry says: when this alert fires (alertname plus optional label
matchers), run this existing /internal remedy with this body; at most once per
cooldown and `max_runs_per_hour` times an hour; revert it when the alert
resolves (restoring exactly the config the action replaced) or after
`max_applied_seconds` at the latest; `verify_after_seconds` after the action,
check that the entry's KPI recovered, else record `ineffective` and, with
`escalate`, run the entry's next action.

What derives from it: the `remediation` config section (one mode field per
entry, `off` | `dry_run` | `enforce`, shipped `dry_run`;
service/config/sections.py), the receiver and operator endpoints
(service/remediation, service/internal/remediation.py), the Alertmanager
route to the service's webhook (deploy/alertmanager.py), the runbook section
and alerts on the loop (alerts/remediation.py) and its dashboard row
(dashboards/remediation.py).

An action names the remedy by its /internal path (without the prefix).  Remedies
that change config are reverted; emergency-cleanup evicts cache entries and has
nothing to revert.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("off", "dry_run", "enforce")
DEFAULT_MODE = "dry_run"

# the remedies an action may name: /internal path -> what it does (the service maps each to domain code)
REMEDIES: dict[str, str] = {
    "resilience/config/apply-preset": "switch the resilience preset (body: {preset})",
    "cache/emergency-cleanup": "evict expired entries, then down to emergency_cleanup_target of the memory cap",
    "cache/optimize-memory": "cache memory cap, compression and cleanup settings (body: cache fields)",
    "monitoring/enable-throttling": "one request-rate limit over all clients (body: {max_requests_per_minute})",
    "monitoring/emergency-mode": "cap AI timeouts and retries, aggressive preset, small admission queue, short TTLs",
}


@dataclass(frozen=True)
class Action:
    remedy: str                       # a key of REMEDIES
    body: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"POST /internal/{self.remedy}" + (f" {self.body}" if self.body else "")


@dataclass(frozen=True)
class Entry:
    name: str                         # config field remediation.<name>_mode, metric label entry
    alertname: str
    actions: tuple[Action, ...]       # the first runs; the next ones are escalations
    kpi: str | None                   # exporter/kpis.py key checked at verification (None: the resolve decides)
    summary: str
    matchers: dict = field(default_factory=dict)   # more label equality matchers on the alert
    cooldown_seconds: float = 900.0
    max_runs_per_hour: int = 2
    revert_on_resolve: bool = True
    max_applied_seconds: float = 4 * 3600.0
    verify_after_seconds: float = 600.0
    escalate: bool = False

    @property
    def mode_field(self) -> str:
        return f"{self.name}_mode"

    def label_matchers(self) -> dict[str, str]:
        return {"alertname": self.alertname, **self.matchers}

    def matches(self, labels: dict) -> bool:
        return all(labels.get(k) == v for k, v in self.label_matchers().items())


PLAYBOOK: tuple[Entry, ...] = (
    Entry(
        name="error_rate",
        alertname="LlmapiErrorRateNeedsAttention", matchers={"severity": "critical"}, kpi="error_rate",
        summary="Many 5xx, usually a failing AI upstream: the aggressive preset fails fast and opens breakers "
                "sooner, so fallbacks answer instead of slow failures.",
        actions=(Action("resilience/config/apply-preset", {"preset": "aggressive"}),),
    ),
    Entry(
        name="slow_ai",
        alertname="LlmapiAiResponseTimeP95NeedsAttention", matchers={"severity": "critical"},
        kpi="ai_response_time_p95",
        summary="The AI provider is slow: the aggressive preset shortens deadlines and retries.",
        actions=(Action("resilience/config/apply-preset", {"preset": "aggressive"}),),
    ),
    Entry(
        name="memory_pressure",
        alertname="LlmapiMemoryUsageNeedsAttention", matchers={"severity": "critical"}, kpi="memory_usage",
        summary="Memory near its limit: emergency cache cleanup; if memory stays high, a smaller cache cap "
                "with frequent cleanups.",
        actions=(Action("cache/emergency-cleanup"),
                 Action("cache/optimize-memory", {"max_memory_mb": 50, "cleanup_interval_minutes": 5})),
        escalate=True,
    ),
    Entry(
        name="high_load",
        alertname="LlmapiCpuUsageNeedsAttention", matchers={"severity": "critical"}, kpi="cpu_usage",
        summary="CPU saturated: throttle all clients together; if that is not enough, emergency mode.",
        actions=(Action("monitoring/enable-throttling", {"max_requests_per_minute": 1000}),
                 Action("monitoring/emergency-mode")),
        escalate=True,
    ),
    Entry(
        name="slow_api",
        alertname="LlmapiApiResponseTimeP95NeedsAttention", matchers={"severity": "critical"},
        kpi="api_response_time_p95",
        summary="The API is slow for everyone: emergency mode trades quality for survival.",
        actions=(Action("monitoring/emergency-mode"),),
        max_runs_per_hour=1,
    ),
)

BY_NAME: dict[str, Entry] = {e.name: e for e in PLAYBOOK}

# the remediation loop's own alerts (alerts/remediation.py) and the outcomes they watch
OUTCOMES = ("applied", "dry_run", "duplicate", "off", "disabled", "cooldown", "entry_cap", "global_cap",
            "emergency_by_person", "failed", "reverted", "revert_skipped", "revert_failed", "expired",
            "effective", "ineffective", "escalated")
CAP_OUTCOMES = ("entry_cap", "global_cap")


def check() -> None:
    """Catalog consistency (run by the tests): remedies known, names unique, limits sane."""
    names = [e.name for e in PLAYBOOK]
    assert len(names) == len(set(names)), "entry names must be unique"
    for e in PLAYBOOK:
        assert e.name.isidentifier() and e.name == e.name.lower(), e.name
        assert e.actions, f"{e.name}: at least one action"
        for a in e.actions:
            assert a.remedy in REMEDIES, f"{e.name}: unknown remedy {a.remedy}"
        assert e.cooldown_seconds >= 0 and e.max_runs_per_hour >= 1
        assert e.verify_after_seconds > 0 and e.max_applied_seconds > 0
