"""Generate the Prometheus rules, their promtool unit tests and the runbook from the catalogs.

    python -m alerts.generate                         write the committed files below
    python -m alerts.generate --check                 exit 1 when a committed file differs from a regeneration
    python -m alerts.generate --profile test --out D  write D/llmapi.rules.yml with the short-window test
                                                      profile (exporter/mixin.py TEST), for end-to-end tests

Outputs (committed):
    alerts/rules/llmapi.rules.yml        recording + alerting rules (compose mounts alerts/rules at
                                         /etc/llmapi/rules, where deploy/prometheus.yml loads them)
    alerts/tests/llmapi.rules.test.yml   `promtool test rules` cases: firing and quiet, threshold edges
    alerts/RUNBOOK.md                    the runbook every alert's runbook_url points into
    alerts/tests/slo_burn.rules.test.yml the SLO burn-rate pairs (evaluated every 5m: `for:` up to 3h)
    alerts/tests/spikes.rules.test.yml   the token/cost spike cases (a day of samples, evaluated every 5m)
    alerts/tests/multi_job.rules*.yml    rules with a selector matching two jobs, and the promtool cases
                                         proving each job is compared with its own thresholds

Split by job: alerts/rules.py (the rule groups), alerts/rule_tests.py (their
promtool cases), alerts/runbook.py (the runbook), alerts/render.py (shared).
"""
from __future__ import annotations

import argparse
import os
import sys

from alerts import rule_tests
from alerts.render import HEADER, dump, humanize_percentage  # noqa: F401  (re-exported for tests)
from alerts.rules import alert_names, rules  # noqa: F401
from alerts.runbook import runbook_md
from exporter import genfiles, mixin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES_PATH = os.path.join(ROOT, "alerts", "rules", "llmapi.rules.yml")
TESTS_PATH = os.path.join(ROOT, "alerts", "tests", "llmapi.rules.test.yml")
RUNBOOK_PATH = os.path.join(ROOT, "alerts", "RUNBOOK.md")
# per-job thresholds need a selector matching two jobs: their own rules file, tests only (not deployed)
MULTI_JOB_RULES_PATH = os.path.join(ROOT, "alerts", "tests", "multi_job.rules.yml")
MULTI_JOB_TESTS_PATH = os.path.join(ROOT, "alerts", "tests", "multi_job.rules.test.yml")
SPIKE_TESTS_PATH = os.path.join(ROOT, "alerts", "tests", "spikes.rules.test.yml")
BURN_TESTS_PATH = os.path.join(ROOT, "alerts", "tests", "slo_burn.rules.test.yml")
TEST_FILES = (TESTS_PATH, BURN_TESTS_PATH, SPIKE_TESTS_PATH, MULTI_JOB_TESTS_PATH)
JOB = rule_tests.JOB
RATIO_STEP = rule_tests.RATIO_STEP


def rules_yaml(cfg: mixin.Config = mixin.DEFAULT) -> str:
    return HEADER + dump(rules(cfg))


def outputs() -> dict[str, str]:
    rel = os.path.relpath(RULES_PATH, os.path.dirname(TESTS_PATH))
    return {
        RULES_PATH: rules_yaml(),
        TESTS_PATH: HEADER + dump(rule_tests.unit_tests(rel)),
        BURN_TESTS_PATH: HEADER + dump(rule_tests.burn_unit_tests(rel)),
        SPIKE_TESTS_PATH: HEADER + dump(rule_tests.spike_unit_tests(rel)),
        RUNBOOK_PATH: runbook_md(),
        MULTI_JOB_RULES_PATH: rules_yaml(rule_tests.MULTI_JOB),
        MULTI_JOB_TESTS_PATH: HEADER + dump(rule_tests.multi_job_tests(os.path.basename(MULTI_JOB_RULES_PATH))),
    }


def stale() -> list[str]:
    return genfiles.stale(outputs())


def write_profile(profile: str, out_dir: str) -> str:
    """Write the rules of a profile into out_dir/llmapi.rules.yml; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, os.path.basename(RULES_PATH))
    with open(path, "w") as fh:
        fh.write(rules_yaml(mixin.PROFILES[profile]))
    return path


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--profile" in argv or "--out" in argv:
        ap = argparse.ArgumentParser(description="write the rules of a mixin profile")
        ap.add_argument("--profile", choices=sorted(mixin.PROFILES), default="default")
        ap.add_argument("--out", required=True, help="directory to write llmapi.rules.yml into")
        args = ap.parse_args(argv)
        print(f"wrote {write_profile(args.profile, args.out)}")
        return 0
    return genfiles.main(outputs, "alerts", "generate the Prometheus rules, their unit tests and the runbook", argv)


if __name__ == "__main__":
    sys.exit(main())
