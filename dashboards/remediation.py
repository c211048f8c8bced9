"""The remediation loop on the overview dashboard: one row, and an annotation for every action it took.

Self-contained: dashboards/generate.py calls `row(L, ...)` and adds `annotation()`.
The data is llmapi_remediation_actions_total{entry,action,mode,outcome} and
llmapi_remediation_active{entry} (service/remediation; playbook exporter/playbook.py).
"""
from __future__ import annotations

ACTIONS = "llmapi_remediation_actions_total"
ACTIVE = "llmapi_remediation_active"
# what the annotations mark: an action run (or planned, in dry run), its revert, escalation, expiry
MARKED = "applied|dry_run|reverted|revert_skipped|escalated|expired|ineffective"


def annotation(ds: dict, sel: str) -> dict:
    """A Grafana annotation query: a marker each minute with a playbook action, titled entry: outcome.

    A counter's series appears at its first count (value 1), which changes() cannot see: a series
    that did not exist a minute ago (and counts) is a change too."""
    m = f'{ACTIONS}{{{sel},outcome=~"{MARKED}"}}'
    return {
        "datasource": ds, "enable": True, "hide": False, "iconColor": "purple", "name": "Remediation actions",
        "expr": f"sum by (entry, action, mode, outcome) ((changes({m}[1m]) > 0) or ({m} > 0 unless {m} offset 1m))",
        "step": "60s", "titleFormat": "{{entry}}: {{outcome}}", "textFormat": "{{action}} ({{mode}})",
        "tagKeys": "entry,outcome,mode", "useValueForTime": False,
    }


def row(L, ts, or_zero, s, runbook_link, ri: str) -> None:
    """Adds the row to a dashboards.generate.Layout, with that module's panel helpers."""
    enforced = s('mode="enforce"')
    dry = s('mode="dry_run"', 'outcome="dry_run"')
    L.row("Remediation: Alertmanager-driven remedies (playbook: exporter/playbook.py)")
    L.add(ts("Playbook actions by entry and outcome", [
        (or_zero(f"sum by (entry, outcome) (increase({ACTIONS}{enforced}[{ri}]))"),
         "{{entry}} {{outcome}}")],
        "short", "Enforced playbook actions and what became of them (applied, reverted, revert_skipped, "
                 "ineffective, escalated, expired, cooldown, entry_cap, global_cap) per rate interval.",
        links=[runbook_link("Remediation", "remediation")]), 8, 8)
    L.add(ts("Dry runs (would have acted)", [
        (or_zero(f"sum by (entry, action) (increase({ACTIONS}{dry}[{ri}]))"),
         "{{entry}} {{action}}")],
        "short", "Entries in dry_run that would have run (or reverted) their remedy. Switch one to enforce with "
                 "POST /internal/remediation/<entry> {\"mode\": \"enforce\"}.",
        links=[runbook_link("Remediation", "remediation")]), 8, 8)
    L.add(ts("Remedies applied now", [(f"max by (entry) ({ACTIVE}{s()})", "{{entry}}")],
             "short", "Enforced actions applied and not yet reverted (reverted on resolve or after their "
                      "longest applied time)."), 8, 8)
