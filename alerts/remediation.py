"""The remediation loop's own alerts, their promtool tests and its runbook section.

Kept apart from the KPI rules (alerts/generate.py pulls these in): the data is
the playbook (exporter/playbook.py) and the outcomes the service counts in
llmapi_remediation_actions_total.  The service initialises the series these
alerts watch at 0 (service/remediation), so the first increase is seen.
"""
from __future__ import annotations

from exporter.mixin import DEFAULT, Config
from exporter.playbook import CAP_OUTCOMES, PLAYBOOK

ANCHOR = "remediation"
METRIC = "llmapi_remediation_actions_total"
WINDOW = "1h"


def _alert(name: str, outcomes: str, summary: str, description: str, cfg: Config) -> dict:
    sel = f'{cfg.selector},outcome=~"{outcomes}"'
    return {
        "alert": name,
        "expr": f"sum by ({cfg.job_label}, entry) (increase({METRIC}{{{sel}}}[{cfg.w(WINDOW)}])) > 0",
        "for": cfg.for_("0s"),
        "labels": {"severity": "warning"},
        "annotations": {"summary": summary, "description": description,
                        "runbook_url": cfg.runbook_url(ANCHOR)},
    }


def rules(cfg: Config = DEFAULT) -> list[dict]:
    return [
        _alert("LlmapiRemediationIneffective", "ineffective",
               "An automatic remedy did not bring its KPI back",
               "{{ $labels.job }}: playbook entry {{ $labels.entry }} ran a remedy that left its KPI unrecovered after "
               f"the verification window, in the last {WINDOW}.", cfg),
        _alert("LlmapiRemediationCapReached", "|".join(CAP_OUTCOMES),
               "Automatic remedies were held back by their hourly cap",
               "{{ $labels.job }}: playbook entry {{ $labels.entry }} wanted to act but its runs-per-hour cap or "
               f"remediation.max_actions_per_hour stopped it, in the last {WINDOW}.", cfg),
    ]


def tests(job: str, instance: str) -> list[dict]:
    """promtool cases: an outcome counted once fires (for that entry); other outcomes, or none, stay quiet."""
    out = []
    entry = PLAYBOOK[0].name
    base = {"job": job, "instance": instance, "entry": entry, "action": PLAYBOOK[0].actions[0].remedy,
            "mode": "enforce"}

    def series(outcome: str, values: str) -> dict:
        labels = ",".join(f'{k}="{v}"' for k, v in {**base, "outcome": outcome}.items())
        return {"series": f"{METRIC}{{{labels}}}", "values": values}

    for r in rules():
        outcome = "ineffective" if r["alert"] == "LlmapiRemediationIneffective" else CAP_OUTCOMES[-1]
        fired = {"exp_labels": {"severity": "warning", "job": job, "entry": entry},
                 "exp_annotations": {**r["annotations"], "description": r["annotations"]["description"]
                                     .replace("{{ $labels.job }}", job).replace("{{ $labels.entry }}", entry)}}
        cases = [
            ("counted once: fires", [series(outcome, "0x10 1x20")], [fired]),
            ("counted long ago: quiet", [series(outcome, "0x5 1x80")], []),
            ("other outcomes only: quiet", [series("applied", "0x10 1x20"), series(outcome, "0x30")], []),
        ]
        for name, inputs, exp in cases:
            eval_time = "75m" if "long ago" in name else "20m"
            out.append({"name": f"{r['alert']}: {name}", "interval": "1m", "input_series": inputs,
                        "alert_rule_test": [{"eval_time": eval_time, "alertname": r["alert"], "exp_alerts": exp}]})
    return out


def _playbook_table() -> list[str]:
    lines = ["| entry | alert | action (escalation) | cooldown | runs/h | verify after | revert |", "|---|---|---|---|---|---|---|"]
    for e in PLAYBOOK:
        acts = " → ".join(f"`{a.describe()}`" for a in e.actions)
        lines.append(f"| `{e.name}` | `{e.alertname}` | {acts} | {e.cooldown_seconds:g}s | {e.max_runs_per_hour} | "
                     f"{e.verify_after_seconds:g}s | {'on resolve' if e.revert_on_resolve else 'no'}, at most "
                     f"{e.max_applied_seconds:g}s |")
    return lines


RUNBOOK_TEXT = """\
**Meaning.** The service runs the guide's remedies itself when Alertmanager posts a playbook alert to
`POST /internal/alerts/webhook` (`exporter/playbook.py`, routes generated into `deploy/alertmanager.yml`).
`LlmapiRemediationIneffective`: a remedy ran and, after its verification window, its KPI had not recovered
(the entry escalates to its next action where it has one). `LlmapiRemediationCapReached`: a remedy was due but
the entry's runs-per-hour cap or `remediation.max_actions_per_hour` held it back: the problem keeps coming back.

**Check.** `GET /internal/remediation` (entries, modes, pending reverts, last runs) and
`GET /internal/remediation/history`; the dashboard's Remediation row (annotations mark every action);
`GET /internal/config/history` shows each change with actor `alertmanager:<alertname>`.

**Enable it, one entry at a time.** Every entry ships in `dry_run`: it records what it would do and changes nothing.
1. Give Alertmanager its credential: a random secret of 16+ characters in `ALERT_WEBHOOK_TOKEN`, for the service
   and for Alertmanager (`docker compose` passes it to both; the Alertmanager entrypoint writes it to the
   `credentials_file` its config names, so no key is in `alertmanager.yml`). The service can read it from a file
   instead (`ALERT_WEBHOOK_TOKEN_FILE`). It is valid for the webhook only. An admin key works too; a client key
   gets 403.
2. Watch the dry runs: `GET /internal/remediation/history` shows `dry_run` outcomes with `would_change`;
   `POST /internal/remediation/<entry> {"dry_run": true}` plans one now.
3. Switch one entry: `POST /internal/remediation/<entry> {"mode": "enforce"}` (or
   `POST /internal/config/remediation {"<entry>_mode": "enforce"}`); `off` ignores its alert.
4. Limits: each entry's cooldown and runs per hour (table below); `remediation.max_actions_per_hour` over all.

**Act.** Stop everything at once: `POST /internal/config/remediation {"enabled": false}` (kill switch). Nothing runs
while a person has emergency mode on. A resolve restores exactly the config the action replaced, unless someone
changed those fields since (then the revert is skipped and recorded: the person's change stays). An action is
reverted after its longest applied time even without a resolve. Ineffective remedies: fix the cause by hand and
consider `off` for that entry.
"""


def runbooks() -> dict[str, tuple[str, str]]:
    """Runbook sections by anchor key, as kpis.OTHER_RUNBOOKS."""
    return {ANCHOR: ("Remediation: automatic remedies from Alertmanager",
                     RUNBOOK_TEXT + "\n" + "\n".join(_playbook_table()) + "\n")}
