"""The generated Grafana dashboard: current, derived from the catalog, well formed."""
from __future__ import annotations

import json
import re

import pytest

from dashboards import generate
from exporter import kpis


@pytest.fixture(scope="module")
def doc() -> dict:
    with open(generate.OVERVIEW_PATH) as fh:
        return json.load(fh)


def leaf_panels(doc: dict) -> list[dict]:
    return [p for p in doc["panels"] if p["type"] != "row"]


def test_committed_json_is_current():
    """Fails when the catalog or generator changed and `make dashboards` was not run."""
    assert generate.stale() == [], "run `make dashboards` and commit the result"


def test_schema_version_and_identity(doc):
    assert doc["schemaVersion"] == 39
    assert doc["uid"] == "llmapi-overview"
    assert doc["title"]


def edge_values(k) -> list[float]:
    out = []
    for v in (k.good, k.target, k.critical):
        out += [v, v * 0.999, v * 1.001]
    return out


def assert_colours_agree(k, steps):
    """Grafana's colour of each threshold value, and values just either side, is the catalog's status colour."""
    for v in edge_values(k):
        assert generate.step_colour(steps, v) == generate.STATUS_COLOURS[k.status(v)], (k.key, v)


def test_six_kpi_stat_panels_coloured_as_the_catalog_at_the_exact_edges(doc):
    stats = {p["title"]: p for p in doc["panels"] if p["type"] == "stat"}
    for k in kpis.KPIS:
        p = stats[k.title]
        steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["value"] is None
        assert_colours_agree(k, steps)
        assert p["fieldConfig"]["defaults"]["unit"] == k.grafana_unit
        assert p["options"]["colorMode"] == "background"
        assert any(link["url"] == k.runbook_url for link in p["links"])
    kpi_stats = [p for p in doc["panels"] if p["type"] == "stat" and p["title"] in {k.title for k in kpis.KPIS}]
    assert len(kpi_stats) == 6
    assert {p["gridPos"]["y"] for p in kpi_stats} == {1}  # one line at the top


def test_the_colour_check_catches_grafanas_default_edge():
    """Steps placed at the catalog values themselves (Grafana's convention) colour a value at the target
    as missed: the check above would fail on them."""
    k = kpis.BY_KEY["api_response_time_p95"]
    naive = [{"color": "green", "value": None}, {"color": "#EAB839", "value": k.good},
             {"color": "orange", "value": k.target}, {"color": "red", "value": k.critical}]
    with pytest.raises(AssertionError):
        assert_colours_agree(k, naive)


def test_kpi_panels_read_the_alert_records_and_stats_never_show_a_stale_value(doc):
    stats = {p["title"]: p for p in doc["panels"] if p["type"] == "stat"}
    for k in kpis.KPIS:
        p = stats[k.title]
        assert p["targets"][0]["expr"].startswith(("max(" + k.record, "min(" + k.record))
        assert p["targets"][0]["expr"].endswith(">= 0")   # NaN (0/0: no requests) is no value, not a stale one
        assert p["options"]["reduceOptions"]["calcs"] == ["last"]
        assert p["fieldConfig"]["defaults"]["noValue"] in ("no traffic", "no data")
        trend = next(t for t in doc["panels"] if t["type"] == "timeseries" and t["title"].startswith(k.title))
        assert trend["targets"][0]["expr"].startswith(k.record + "{")


def test_rows(doc):
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    for want in ("HTTP (RED)", "AI service", "Cache", "Resilience", "Middleware", "Process / runtime", "Redis"):
        assert want in rows
    assert any(r.startswith("Monitoring") for r in rows)


def test_template_variables(doc):
    t = {v["name"]: v for v in doc["templating"]["list"]}
    assert t["datasource"]["type"] == "datasource" and t["datasource"]["query"] == "prometheus"
    assert "label_values" in t["job"]["query"] and t["job"]["datasource"]["uid"] == "${datasource}"
    assert "$job" in t["instance"]["query"]


PER_JOB_RECORD = re.compile(r'llmapi:[\w:]+\{job=~"\$job"[,}]')


def test_every_query_uses_the_datasource_variable_and_selectors(doc):
    """Linter rule: datasource, job and instance variables.  Documented exceptions: a query on a recording
    rule computed per job (no instance label) selects by job; the ALERTS panel also shows job-less alerts."""
    for p in leaf_panels(doc):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert '$job' in t["expr"], (p["title"], t["expr"])
            if not (PER_JOB_RECORD.search(t["expr"]) or t["expr"].startswith("sum by (alertname, severity) (ALERTS")):
                assert '$instance' in t["expr"], (p["title"], t["expr"])


def test_every_panel_has_a_unit_and_a_description_and_the_dashboard_is_read_only(doc):
    for p in leaf_panels(doc):
        assert p.get("description"), p["title"]
        assert p["fieldConfig"]["defaults"].get("unit"), p["title"]
    assert doc["editable"] is False


def test_annotations_mark_config_changes_and_firing_alerts(doc):
    ann = {a["name"]: a for a in doc["annotations"]["list"]}
    assert "llmapi_config_version" in ann["Config changes"]["expr"]
    assert 'ALERTS{alertstate="firing"' in ann["Firing alerts"]["expr"]
    assert all(a["datasource"]["uid"] == "${datasource}" for a in ann.values())


def test_slo_row_shows_sli_budget_and_burn_rate_per_window(doc):
    from exporter import slos
    exprs = [t["expr"] for p in leaf_panels(doc) for t in p["targets"]]
    for s in slos.SLOS:
        tag = f'slo="{s.name}"'
        assert any(slos.BUDGET_REMAINING_RECORD in e and tag in e for e in exprs), s.name
        assert any(slos.error_ratio_record("30d") in e and tag in e for e in exprs), s.name
        for w in ("5m", "1h", "6h", "1d", "3d"):
            assert any(slos.burn_rate_record(w) in e and tag in e for e in exprs), (s.name, w)
    assert any("ALERTS{" in e for e in exprs)


def test_rates_use_rate_interval_except_kpi_stats(doc):
    kpi_titles = {k.title for k in kpis.KPIS}
    for p in leaf_panels(doc):
        for t in p["targets"]:
            windows = re.findall(r"\[(\d+[smhdw]|\$__\w+)\]", t["expr"])
            assert set(windows) <= {"$__rate_interval"}, (p["title"], windows)  # records carry the alerts' window


def test_kpi_trends_draw_threshold_lines_and_link_runbooks(doc):
    for k in kpis.KPIS:
        p = next(p for p in doc["panels"] if p["type"] == "timeseries" and p["title"].startswith(k.title))
        assert p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"].startswith("line")
        assert_colours_agree(k, p["fieldConfig"]["defaults"]["thresholds"]["steps"])
        assert p["links"][0]["url"] == k.runbook_url


def test_grid_has_no_overlaps(doc):
    cells = set()
    ids = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        assert p["id"] not in ids
        ids.add(p["id"])
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_panel_queries_lists_every_target(doc):
    n = sum(len(p["targets"]) for p in leaf_panels(doc))
    assert len(generate.panel_queries(doc)) == n


# ---- every metric on a panel, every panel metric real ---------------------------------
# Metric families of exporter/metrics.py deliberately on no panel (none today; name each with its reason).
NOT_ON_A_PANEL: dict[str, str] = {}

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum", ""),
            "gauge": ("",), "info": ("_info",), "stateset": ("",), "unknown": ("",)}


def exposed_names() -> dict[str, set[str]]:
    """Family name -> the sample names it is exposed (and queried) under."""
    from exporter.metrics import REGISTRY
    return {m.name: {m.name + s for s in SUFFIXES[m.type]} for m in REGISTRY.collect()}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"(?<![\w:])(llmapi_[a-z0-9_]+|gen_ai_client_[a-z0-9_]+)", expr))


def pending_names() -> set[str]:
    """Sample names of the LLM metrics still to come (dashboards.generate.PENDING_METRICS), while absent."""
    families = exposed_names()
    out = set()
    for m in generate.PENDING_METRICS:
        if m not in families:
            out |= {m + s for s in ("", "_total", "_bucket", "_count", "_sum")}
    return out



def recording_rules() -> set[str]:
    from alerts import generate as alerts_generate
    return {r["record"] for g in alerts_generate.rules()["groups"] for r in g["rules"] if "record" in r}


def test_every_metric_family_appears_on_a_panel(doc):
    used = set()
    for _, expr in generate.panel_queries(doc):
        used |= metric_names(expr)
    for t in doc["templating"]["list"]:
        if t["type"] == "query":
            used |= metric_names(t["query"])
    families = exposed_names()
    assert families, "exporter.metrics.REGISTRY is empty"
    missing = sorted(f for f, names in families.items() if not names & used and f not in NOT_ON_A_PANEL)
    assert not missing, f"metrics on no dashboard panel (add a panel in dashboards/generate.py): {missing}"
    assert set(NOT_ON_A_PANEL) <= set(families), "an exception names a metric that no longer exists"


def test_every_metric_a_panel_queries_exists(doc):
    """A misspelt name would only show as an empty panel: every llmapi_ name a query uses is exported."""
    from exporter.metrics import SCRAPE_SERIES  # (the handler adds it to each scrape)
    known = set().union(*exposed_names().values(), {SCRAPE_SERIES}) | pending_names()
    for title, expr in generate.panel_queries(doc):
        unknown = metric_names(expr) - known
        assert not unknown, (title, unknown)
    for title, expr in generate.panel_queries(doc):
        for rec in re.findall(r"(?<![\w:])(llmapi:[\w:]+)", expr):
            assert rec in recording_rules(), (title, rec)


def test_rare_event_panels_read_zero_without_events(doc):
    """Panels of counters that have no series before the first event fall back to 0, and only as a suffix
    (the end-to-end test strips it to check the metric itself)."""
    for title, expr in generate.panel_queries(doc):
        if generate.ZERO_FALLBACK in expr:
            assert expr.endswith(generate.ZERO_FALLBACK) and expr.count(generate.ZERO_FALLBACK) == 1, title


def test_kpi_trends_show_the_live_thresholds(doc):
    for k in kpis.KPIS:
        p = next(p for p in doc["panels"] if p["type"] == "timeseries" and p["title"].startswith(k.title))
        assert any(f'llmapi_kpi_threshold{{job=~"$job",instance=~"$instance",kpi="{k.key}"' in t["expr"]
                   for t in p["targets"]), k.key
