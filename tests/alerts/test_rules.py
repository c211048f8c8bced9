"""The generated Prometheus rules, their promtool unit tests and the Alertmanager config,
checked with the real promtool and amtool."""
from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from alerts import generate
from exporter import alert_catalog as AC
from exporter import kpis, mixin, slos
from tests.helpers import PYTHON

ROOT = generate.ROOT
AM_CONFIG = os.path.join(ROOT, "deploy", "alertmanager.yml")
AM_ENTRYPOINT = os.path.join(ROOT, "deploy", "alertmanager-entrypoint.sh")


def run(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)


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


@pytest.mark.parametrize("path", generate.TEST_FILES, ids=os.path.basename)
def test_promtool_unit_tests_pass(path):
    r = run("promtool", "test", "rules", path)
    assert r.returncode == 0, r.stdout + r.stderr


def unit_tests_on(tmp_path, rules: str, only: str, tests_path: str = generate.TESTS_PATH) -> subprocess.CompletedProcess:
    """The committed promtool unit tests whose group name starts with `only`, run against other rules."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "llmapi.rules.yml").write_text(rules)
    tests = load(tests_path)
    tests["rule_files"] = ["rules/llmapi.rules.yml"]
    tests["tests"] = [g for g in tests["tests"] if g["name"].startswith(only)]
    assert tests["tests"]
    (tmp_path / "t.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    return run("promtool", "test", "rules", str(tmp_path / "t.yml"))


@pytest.mark.parametrize("moved", ["0.0199", "0.0211"])
def test_unit_tests_fail_when_a_threshold_moves(tmp_path, moved):
    """The unit tests pin the edges: a default lowered by a hair fires the at-the-edge case,
    one raised past the next step silences the just-past case."""
    text = open(generate.RULES_PATH).read()
    edited = text.replace("(llmapi:kpi_error_rate:ratio) * 0.02)", f"(llmapi:kpi_error_rate:ratio) * {moved})")
    assert edited != text
    r = unit_tests_on(tmp_path, edited, only="error_rate:")
    assert r.returncode != 0
    assert "LlmapiErrorRateNeedsAttention" in r.stdout + r.stderr


def test_per_job_cases_fail_when_thresholds_are_taken_over_every_job(tmp_path):
    """The multi-job cases are honest: with yesterday's max() over every job (on() matching),
    one job's thresholds move the other's alert and the cases fail."""
    text = open(generate.MULTI_JOB_RULES_PATH).read()
    k = kpis.BY_KEY["error_rate"]
    r = next(r for r in load(generate.MULTI_JOB_RULES_PATH)["groups"][3]["rules"]
             if r.get("alert") == "LlmapiErrorRateTargetMissed")
    sel_ = re.search(r"llmapi_kpi_threshold\{[^}]*\}", r["expr"]).group(0)
    old = f"{k.record} > on() group_left() (max({sel_}) or vector({k.target!r}))"
    edited = text.replace(r["expr"], old)
    assert edited != text
    res = unit_tests_on(tmp_path, edited, only="per job:", tests_path=generate.MULTI_JOB_TESTS_PATH)
    assert res.returncode != 0, res.stdout
    assert "LlmapiErrorRateTargetMissed" in res.stdout + res.stderr


@pytest.mark.parametrize("a", AC.RATIO_ALERTS, ids=lambda a: a.alert)
@pytest.mark.parametrize("direction", ["down", "up"])
def test_ratio_alerts_come_from_the_catalog_and_their_edges_are_pinned(tmp_path, a, direction):
    """Ratio alerts: expression, for and severity from exporter/alert_catalog.py; a threshold
    moved a hair down fires the at-the-threshold case, one moved past the next step silences the just-past one."""
    r = next(r for r in all_rules() if r.get("alert") == a.alert)
    assert (r["expr"], r["for"], r["labels"]["severity"]) == (a.expr(), a.for_, a.severity)
    assert r["annotations"]["runbook_url"] == mixin.DEFAULT.runbook_url(a.key)
    th = a.threshold * 0.99 if direction == "down" else round(a.threshold + generate.RATIO_STEP * 1.5, 6)
    moved = a.expr().replace(f"> {a.threshold!r}", f"> {th!r}")
    assert moved != a.expr()
    res = unit_tests_on(tmp_path, open(generate.RULES_PATH).read().replace(a.expr(), moved), only=f"{a.alert}:")
    assert res.returncode != 0
    assert a.alert in res.stdout + res.stderr


ALWAYS_FIRING = {"Watchdog": "fires by design: a dead man's switch notices when it stops"}


def test_every_alert_has_a_firing_and_a_quiet_case():
    firing, quiet = set(), set()
    for path in generate.TEST_FILES:
        for g in load(path)["tests"]:
            for t in g.get("alert_rule_test", []):
                (firing if t["exp_alerts"] else quiet).add(t["alertname"])
    names = set(generate.alert_names())
    assert names - firing == set()
    assert names - quiet == set(ALWAYS_FIRING)


def test_every_burn_rate_pair_has_a_firing_and_a_quiet_case():
    tests = load(generate.BURN_TESTS_PATH)["tests"]
    for slo in slos.SLOS:
        for _, long_w, short_w, factor, _ in mixin.DEFAULT.burn_rates:
            prefix = f"{slo.alert} {long_w}/{short_w} x{factor:g}:"
            cases = [t for g in tests if g["name"].startswith(prefix) for t in g["alert_rule_test"]]
            assert any(t["exp_alerts"] for t in cases) and any(not t["exp_alerts"] for t in cases), prefix


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


def test_kpi_alerts_compare_each_job_with_its_own_threshold():
    by_name = {r.get("alert"): r for r in all_rules()}
    for k in kpis.KPIS:
        agg = "min" if k.direction == kpis.LOWER else "max"
        for sev, level, default in (("TargetMissed", "target", k.target), ("NeedsAttention", "critical", k.critical)):
            r = by_name[f"Llmapi{k.alert_name}{sev}"]
            assert r["expr"].startswith(f"{k.record} ")
            assert " on(job) group_left() " in r["expr"] and "on()" not in r["expr"]
            assert (f'{agg} by (job) (llmapi_kpi_threshold{{job="llmapi",kpi="{k.key}",level="{level}"}}) '
                    f"or on(job) group by (job) ({k.record}) * {default!r}") in r["expr"]
            assert re.fullmatch(r"\d+[smh]", r["for"])
            assert {"summary", "description", "runbook_url"} <= set(r["annotations"])
            assert r["annotations"]["runbook_url"].endswith("#" + k.key.replace("_", "-"))
            assert r["labels"]["kpi"] == k.key


def test_thresholds_changed_is_one_warning_per_threshold_never_a_page():
    rules = [r for r in all_rules() if r.get("alert") == "LlmapiAlertThresholdsChanged"]
    assert {(r["labels"]["threshold_kpi"], r["labels"]["threshold_level"]) for r in rules} == {
        (k.key, lv) for k in kpis.KPIS for lv in ("target", "critical")}
    assert {r["labels"]["severity"] for r in rules} == {"warning"}
    for r in rules:
        k = kpis.BY_KEY[r["labels"]["threshold_kpi"]]
        assert r["expr"].endswith(f"!= {k.thresholds[r['labels']['threshold_level']]!r}")
        assert "kpi" not in r["labels"]  # a critical KPI alert must not inhibit it (kpi-equal inhibit rule)
    res = run("amtool", "config", "routes", "test", f"--config.file={AM_CONFIG}",
              "alertname=LlmapiAlertThresholdsChanged", "severity=warning", "threshold_kpi=error_rate")
    assert res.stdout.strip() == "warning"


def test_slo_records_and_burn_rate_pairs():
    records = {(r["record"], r.get("labels", {}).get("slo")): r["expr"] for r in all_rules() if "record" in r}
    for k in kpis.KPIS:
        assert records[(k.record, None)] == k.expr(mixin.DEFAULT.kpi_window, mixin.DEFAULT.selector,
                                                   mixin.DEFAULT.by(k.per_instance))
    pairs = {(lw, sw, f) for _, lw, sw, f, _ in mixin.DEFAULT.burn_rates}
    assert pairs == {("1h", "5m", 14.4), ("6h", "30m", 6.0), ("1d", "2h", 3.0), ("3d", "6h", 1.0)}
    for slo in slos.SLOS:
        assert (slos.error_ratio_record("30d"), slo.name) in records
        for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
            assert (slos.error_ratio_record(w), slo.name) in records
            assert (slos.requests_record(w), slo.name) in records
            assert records[(slos.burn_rate_record(w), slo.name)].endswith(f"/ {slo.budget!r}")
        assert (slos.BUDGET_REMAINING_RECORD, slo.name) in records
        burns = [r for r in all_rules() if r.get("alert") == slo.alert]
        assert {(r["labels"]["long_window"], r["labels"]["severity"]) for r in burns} == {
            ("1h", "critical"), ("6h", "critical"), ("1d", "warning"), ("3d", "warning")}
        for r in burns:
            assert r["expr"].count("\nand on(job) ") == 2 and ">= 100.0" in r["expr"]  # min-traffic guard
    groups = {g["name"]: g for g in load(generate.RULES_PATH)["groups"]}
    assert groups["llmapi-slo-sli-long"]["interval"] == "5m"   # windows of 6 h and more
    assert "interval" not in groups["llmapi-slo-sli"]


def test_slis_count_only_api_traffic():
    for slo in slos.SLOS:
        for sel_ in re.findall(r"llmapi_http_[a-z_]+\{([^}]*)\}", slo.error_ratio()):
            assert 'route=~"/v1/text/.+"' in sel_ and 'job="llmapi"' in sel_, sel_
    assert 'le="2.0"' in slos.BY_NAME["latency"].error_ratio()


def test_no_rule_hard_codes_the_job():
    """Every selector of the service comes from the mixin config: another selector, no trace of the default."""
    other = mixin.Config(selector='job="llmapi-prod",namespace="ai"')
    text = generate.rules_yaml(other)
    assert 'job="llmapi"' not in text
    assert text.count('job="llmapi-prod",namespace="ai"') > 100
    by_name = {r.get("alert"): r for g in generate.rules(other)["groups"] for r in g["rules"]}
    assert by_name["LlmapiServiceDown"]["expr"] == 'up{job="llmapi-prod",namespace="ai"} == 0'
    assert by_name["LlmapiServiceAbsent"]["expr"] == 'absent(up{job="llmapi-prod",namespace="ai"})'


def test_runbook_has_a_section_for_every_runbook_url():
    text = open(generate.RUNBOOK_PATH).read()
    anchors = {m.lower() for m in re.findall(r"^## (\S+)", text, re.M)}
    for r in all_rules():
        url = r.get("annotations", {}).get("runbook_url")
        if url:
            assert url.split("#", 1)[1] in anchors


def test_the_test_profile_keeps_the_structure_with_short_windows(tmp_path):
    """`python -m alerts.generate --profile test --out DIR`: the same rules, seconds instead of hours."""
    r = run(PYTHON, "-m", "alerts.generate", "--profile", "test", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    short = load(str(tmp_path / "llmapi.rules.yml"))
    full = generate.rules()
    assert [x.get("alert", x.get("record")) for g in short["groups"] for x in g["rules"]] == \
        [x.get("alert", x.get("record")) for g in full["groups"] for x in g["rules"]]
    assert all(x["for"] == "1s" for g in short["groups"] for x in g["rules"] if "alert" in x)
    assert all(g["interval"] == "1s" for g in short["groups"])
    windows = set(re.findall(r"\[(\w+)\]", open(tmp_path / "llmapi.rules.yml").read()))
    assert all(w.endswith("s") or w in ("1m", "2m", "5m") for w in windows), windows
    chk = run("promtool", "check", "rules", str(tmp_path / "llmapi.rules.yml"))
    assert chk.returncode == 0, chk.stdout + chk.stderr


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
    urls = {w["url"] for rcv in cfg["receivers"] for w in rcv.get("webhook_configs", [])
            if rcv["name"] != "llmapi-remediation"}  # the service's own webhook (tests/remediation)
    assert urls == {url}
    assert run("amtool", "check-config", path).returncode == 0


def test_entrypoint_refuses_without_the_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ALERT_WEBHOOK_URL"}
    env.update(ALERTMANAGER_CONFIG=AM_CONFIG, ALERTMANAGER_RENDERED=str(tmp_path / "x.yml"), ALERTMANAGER_BIN="/bin/true")
    r = run("sh", AM_ENTRYPOINT, env=env)
    assert r.returncode != 0 and "ALERT_WEBHOOK_URL" in r.stderr


@pytest.mark.parametrize("labels,receiver", [
    (["severity=critical", "alertname=LlmapiErrorRateNeedsAttention", "kpi=error_rate"],
     "llmapi-remediation,critical"),  # a playbook alert: the service's webhook too (exporter/playbook.py)
    (["severity=critical", "alertname=LlmapiRedisDown"], "critical"),
    (["severity=warning", "alertname=LlmapiErrorRateTargetMissed", "kpi=error_rate"], "warning"),
    (["alertname=Other"], "default"),
])
def test_routes_by_severity(labels, receiver):
    r = run("amtool", "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == receiver


def test_redis_down_inhibits_the_cache_hit_alerts_of_its_job():
    rule = next(r for r in load(AM_CONFIG)["inhibit_rules"] if r["source_matchers"] == ['alertname="LlmapiRedisDown"'])
    assert rule["target_matchers"] == ['kpi="cache_hit_ratio"'] and rule["equal"] == ["job"]
    redis = next(r for r in all_rules() if r.get("alert") == "LlmapiRedisDown")
    assert redis["labels"]["severity"] == "warning"  # the service keeps serving
    assert {r["alert"] for r in all_rules() if r.get("labels", {}).get("kpi") == "cache_hit_ratio"} == {
        "LlmapiCacheHitRatioTargetMissed", "LlmapiCacheHitRatioNeedsAttention"}


def test_critical_inhibits_warning_of_the_same_kpi_and_groups():
    cfg = load(AM_CONFIG)
    assert cfg["route"]["group_by"] == ["alertname", "job", "kpi", "slo"]
    rule = cfg["inhibit_rules"][0]
    assert 'severity="critical"' in rule["source_matchers"] and 'severity="warning"' in rule["target_matchers"]
    assert "kpi" in rule["equal"]
    # alerts without a kpi label (Redis down, breaker open) are neither source nor target
    assert 'kpi=~".+"' in rule["source_matchers"] and 'kpi=~".+"' in rule["target_matchers"]
    assert all(w.get("send_resolved") for rcv in cfg["receivers"] for w in rcv["webhook_configs"])
