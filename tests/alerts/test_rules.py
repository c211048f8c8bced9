"""The generated Prometheus rules, their promtool unit tests and the Alertmanager config,
checked with the real promtool and amtool."""
from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from alerts import generate
from exporter import kpis

ROOT = generate.ROOT
AM_CONFIG = os.path.join(ROOT, "deploy", "alertmanager.yml")
AM_ENTRYPOINT = os.path.join(ROOT, "deploy", "alertmanager-entrypoint.sh")


def run(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def load(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def all_rules() -> list[dict]:
    return [r for g in load(generate.RULES_PATH)["groups"] for r in g["rules"]]


def test_committed_outputs_are_current():
    """Fails when the catalog or generator changed and `make alerts` was not run."""
    assert generate.stale() == [], "run `make alerts` and commit the result"


def test_promtool_check_rules_is_clean():
    r = run("promtool", "check", "rules", generate.RULES_PATH)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "WARNING" not in (r.stdout + r.stderr).upper()


def test_promtool_unit_tests_pass():
    r = run("promtool", "test", "rules", generate.TESTS_PATH)
    assert r.returncode == 0, r.stdout + r.stderr


def unit_tests_on(tmp_path, rules: str, only: str) -> subprocess.CompletedProcess:
    """The committed promtool unit tests whose group name starts with `only`, run against other rules."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "llmapi.rules.yml").write_text(rules)
    tests = load(generate.TESTS_PATH)
    tests["rule_files"] = ["rules/llmapi.rules.yml"]
    tests["tests"] = [g for g in tests["tests"] if g["name"].startswith(only)]
    assert tests["tests"]
    (tmp_path / "t.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    return run("promtool", "test", "rules", str(tmp_path / "t.yml"))


@pytest.mark.parametrize("moved", ["0.0199", "0.0211"])
def test_unit_tests_fail_when_a_threshold_moves(tmp_path, moved):
    """The unit tests pin the edges: a default lowered by a hair fires the at-the-edge case,
    one raised past the next step silences the just-past case."""
    r = unit_tests_on(tmp_path, open(generate.RULES_PATH).read().replace("vector(0.02)", f"vector({moved})"),
                      only="error_rate:")
    assert r.returncode != 0
    assert "LlmapiErrorRateNeedsAttention" in r.stdout + r.stderr


@pytest.mark.parametrize("a", kpis.RATIO_ALERTS, ids=lambda a: a.alert)
@pytest.mark.parametrize("direction", ["down", "up"])
def test_ratio_alerts_come_from_the_catalog_and_their_edges_are_pinned(tmp_path, a, direction):
    """Load-shedding and rate-limit alerts: expression, for and severity from exporter/kpis.py; a threshold
    moved a hair down fires the at-the-threshold case, one moved past the next step silences the just-past one."""
    r = next(r for r in all_rules() if r.get("alert") == a.alert)
    assert (r["expr"], r["for"], r["labels"]["severity"]) == (a.expr(), a.for_, a.severity)
    assert r["annotations"]["runbook_url"] == a.runbook_url
    th = a.threshold * 0.99 if direction == "down" else round(a.threshold + generate.RATIO_STEP * 1.5, 6)
    moved = a.expr().replace(f"> {a.threshold!r}", f"> {th!r}")
    assert moved != a.expr()
    res = unit_tests_on(tmp_path, open(generate.RULES_PATH).read().replace(a.expr(), moved), only=f"{a.alert}:")
    assert res.returncode != 0
    assert a.alert in res.stdout + res.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    tests = load(generate.TESTS_PATH)["tests"]
    firing, quiet = set(), set()
    for g in tests:
        for t in g.get("alert_rule_test", []):
            (firing if t["exp_alerts"] else quiet).add(t["alertname"])
    names = set(generate.alert_names())
    assert names - firing == set()
    assert names - quiet == set()


def test_threshold_edges_are_tested_exactly():
    """For every KPI, a case sits exactly on the target and on the needs-attention threshold,
    proven by an expression test on the recorded value, and both are quiet/warning-only."""
    tests = load(generate.TESTS_PATH)["tests"]
    for k in kpis.KPIS:
        exact = {s["value"] for g in tests for t in g.get("promql_expr_test", []) if t["expr"] == k.record
                 for s in t["exp_samples"]}
        assert {k.target, k.critical} <= exact, k.key
        at_target = next(g for g in tests if g["name"].startswith(f"{k.key}: at the target"))
        assert all(not t["exp_alerts"] for t in at_target["alert_rule_test"])
        at_critical = next(g for g in tests if g["name"].startswith(f"{k.key}: at the needs-attention"))
        fired = {t["alertname"] for t in at_critical["alert_rule_test"] if t["exp_alerts"]}
        assert fired == {f"Llmapi{k.alert_name}TargetMissed"}


def test_kpi_alerts_read_the_threshold_gauge_with_catalog_default():
    by_name = {r.get("alert"): r for r in all_rules()}
    for k in kpis.KPIS:
        for sev, level, default in (("TargetMissed", "target", k.target), ("NeedsAttention", "critical", k.critical)):
            r = by_name[f"Llmapi{k.alert_name}{sev}"]
            assert f'max(llmapi_kpi_threshold{{kpi="{k.key}",level="{level}"}}) or vector({default!r})' in r["expr"]
            assert r["expr"].startswith(k.record)
            assert re.fullmatch(r"\d+[smh]", r["for"])
            assert {"summary", "description", "runbook_url"} <= set(r["annotations"])
            assert r["annotations"]["runbook_url"].endswith("#" + k.key.replace("_", "-"))
            assert r["labels"]["kpi"] == k.key


def test_recording_rule_per_kpi_and_burn_windows():
    records = {r["record"]: r["expr"] for r in all_rules() if "record" in r}
    for k in kpis.KPIS:
        assert records[k.record] == k.expr()
    # Google SRE workbook multiwindow, multi-burn-rate pairs
    pairs = {(lw, sw, f) for _, lw, sw, f, _ in kpis.BURN_RATE_WINDOWS}
    assert pairs == {("1h", "5m", 14.4), ("6h", "30m", 6.0), ("1d", "2h", 3.0), ("3d", "6h", 1.0)}
    for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        assert kpis.error_ratio_record(w) in records
    burns = [r for r in all_rules() if r.get("alert") == "LlmapiErrorBudgetBurn"]
    assert {(r["labels"]["long_window"], r["labels"]["severity"]) for r in burns} == {
        ("1h", "critical"), ("6h", "critical"), ("1d", "warning"), ("3d", "warning")}
    for r in burns:
        assert "and" in r["expr"] and 'llmapi_kpi_threshold{kpi="error_rate",level="target"}' in r["expr"]


def test_availability_alerts_exist():
    by_name = {r.get("alert"): r for r in all_rules()}
    assert by_name["LlmapiServiceDown"]["expr"] == 'up{job="llmapi"} == 0'
    assert by_name["LlmapiServiceAbsent"]["expr"] == 'absent(up{job="llmapi"})'
    assert "llmapi_redis_configured" in by_name["LlmapiRedisDown"]["expr"]
    assert by_name["LlmapiCircuitBreakerOpen"]["expr"] == "llmapi_circuit_breaker_state == 2"


def test_runbook_has_a_section_for_every_runbook_url():
    text = open(generate.RUNBOOK_PATH).read()
    anchors = {m.lower() for m in re.findall(r"^## (\S+)", text, re.M)}
    for r in all_rules():
        url = r.get("annotations", {}).get("runbook_url")
        if url:
            assert url.split("#", 1)[1] in anchors


def test_overrides_for_end_to_end_keep_the_structure():
    short = generate.rules(window="20s", for_="2s")
    full = generate.rules()
    assert [r.get("alert", r.get("record")) for g in short["groups"] for r in g["rules"]] == \
        [r.get("alert", r.get("record")) for g in full["groups"] for r in g["rules"]]
    assert all(r["for"] == "2s" for g in short["groups"] for r in g["rules"] if "alert" in r)
    assert "[20s]" in short["groups"][0]["rules"][0]["expr"]


# ---- Alertmanager -----------------------------------------------------------------
def test_amtool_check_config_passes_on_the_committed_file():
    r = run("amtool", "check-config", AM_CONFIG)
    assert r.returncode == 0, r.stdout + r.stderr


def render_am(tmp_path, url: str) -> str:
    out = tmp_path / "am.yml"
    env = dict(os.environ, ALERT_WEBHOOK_URL=url, ALERTMANAGER_CONFIG=AM_CONFIG,
               ALERTMANAGER_RENDERED=str(out), ALERTMANAGER_BIN="/bin/true")
    r = run("sh", AM_ENTRYPOINT, env=env)
    assert r.returncode == 0, r.stderr
    return str(out)


def test_entrypoint_renders_the_webhook_url_from_env(tmp_path):
    url = "http://hooks.example:5001/alerts?token=a&b=c|d"
    path = render_am(tmp_path, url)
    cfg = load(path)
    urls = {w["url"] for rcv in cfg["receivers"] for w in rcv.get("webhook_configs", [])}
    assert urls == {url}
    assert run("amtool", "check-config", path).returncode == 0


def test_entrypoint_refuses_without_the_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ALERT_WEBHOOK_URL"}
    env.update(ALERTMANAGER_CONFIG=AM_CONFIG, ALERTMANAGER_RENDERED=str(tmp_path / "x.yml"), ALERTMANAGER_BIN="/bin/true")
    r = run("sh", AM_ENTRYPOINT, env=env)
    assert r.returncode != 0 and "ALERT_WEBHOOK_URL" in r.stderr


@pytest.mark.parametrize("labels,receiver", [
    (["severity=critical", "alertname=LlmapiErrorRateNeedsAttention", "kpi=error_rate"], "critical"),
    (["severity=warning", "alertname=LlmapiErrorRateTargetMissed", "kpi=error_rate"], "warning"),
    (["alertname=Other"], "default"),
])
def test_routes_by_severity(labels, receiver):
    r = run("amtool", "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == receiver


def test_critical_inhibits_warning_of_the_same_kpi_and_groups():
    cfg = load(AM_CONFIG)
    assert cfg["route"]["group_by"] == ["alertname", "job", "kpi"]
    rule = cfg["inhibit_rules"][0]
    assert 'severity="critical"' in rule["source_matchers"] and 'severity="warning"' in rule["target_matchers"]
    assert "kpi" in rule["equal"]
    # alerts without a kpi label (Redis down, breaker open) are neither source nor target
    assert 'kpi=~".+"' in rule["source_matchers"] and 'kpi=~".+"' in rule["target_matchers"]
    assert all(w.get("send_resolved") for rcv in cfg["receivers"] for w in rcv["webhook_configs"])
