"""The Prometheus rule groups, generated from the catalogs with a mixin `_config`.

KPI alerts compare each job's value with that job's own thresholds: the
exported gauge llmapi_kpi_threshold{kpi,level} (moved live by POST
/internal/monitoring/configure-alerts), the strictest over the job's
instances, else the catalog default:

    <kpi record> > on(job) group_left() (
        min by (job) (llmapi_kpi_threshold{<selector>,kpi="k",level="target"})
      or on(job) group by (job) (<kpi record>) * <default>)

LlmapiAlertThresholdsChanged (a warning, never a page) fires while any
exported threshold differs from its generated default.
"""
from __future__ import annotations

from exporter import alert_catalog as AC
from exporter import slos as S
from exporter.kpis import KPIS, LOWER, KPI, sel
from exporter.mixin import DEFAULT, Config, seconds

from alerts import remediation
from alerts.render import humanize_percentage

LEVEL_OF = {"warning": "target", "critical": "critical"}
THRESHOLDS_CHANGED = "LlmapiAlertThresholdsChanged"


# ---- KPI alerts ---------------------------------------------------------------------
def humanize_fn(k: KPI) -> str:
    return "humanizeDuration" if k.unit == "seconds" else "humanizePercentage"


def who(k: KPI) -> str:
    return "{{ $labels.job }}/{{ $labels.instance }}" if k.per_instance else "{{ $labels.job }}"


def kpi_alert_names(k: KPI) -> dict[str, str]:
    return {"warning": f"Llmapi{k.alert_name}TargetMissed", "critical": f"Llmapi{k.alert_name}NeedsAttention"}


def summary(k: KPI, severity: str) -> str:
    return f"{k.title} misses its target" if severity == "warning" else f"{k.title} needs attention"


def _strictest(k: KPI) -> str:
    return "min" if k.direction == LOWER else "max"


def threshold_selector(k: KPI, level: str, cfg: Config = DEFAULT) -> str:
    return f'llmapi_kpi_threshold{sel(cfg.selector, f"kpi={chr(34)}{k.key}{chr(34)}", f"level={chr(34)}{level}{chr(34)}")}'


def threshold_expr(k: KPI, level: str, cfg: Config = DEFAULT) -> str:
    """Each job's threshold: its exported gauge (the strictest instance), else the catalog default."""
    j = cfg.job_label
    return (f"({_strictest(k)} by ({j}) ({threshold_selector(k, level, cfg)}) "
            f"or on({j}) group by ({j}) ({k.record}) * {k.thresholds[level]!r})")


def description(k: KPI, severity: str) -> str:
    level = LEVEL_OF[severity]
    side = "above" if k.direction == LOWER else "below"
    what = "target" if severity == "warning" else "needs-attention threshold"
    fn = humanize_fn(k)
    q = f'{_strictest(k)}(llmapi_kpi_threshold{{job="%s",kpi="{k.key}",level="{level}"}})'
    live = (f"{{{{ with printf `{q}` $labels.job | query }}}}{{{{ . | first | value | {fn} }}}}"
            f"{{{{ else }}}}{_humanize(k, k.thresholds[level])}{{{{ end }}}}")
    return f"{who(k)}: {k.title} is {{{{ $value | {fn} }}}}, {side} the {what} of {live}."


def _humanize(k: KPI, v: float) -> str:
    from alerts.render import humanize_duration
    return humanize_duration(v) if k.unit == "seconds" else humanize_percentage(v)


def kpi_alert(k: KPI, severity: str, cfg: Config = DEFAULT) -> dict:
    level = LEVEL_OF[severity]
    op = ">" if k.direction == LOWER else "<"
    return {
        "alert": kpi_alert_names(k)[severity],
        "expr": f"{k.record} {op} on({cfg.job_label}) group_left() {threshold_expr(k, level, cfg)}",
        "for": cfg.for_(k.for_warning if severity == "warning" else k.for_critical),
        "labels": {"severity": severity, "kpi": k.key},
        "annotations": {"summary": summary(k, severity), "description": description(k, severity),
                        "runbook_url": cfg.runbook_url(k.key)},
    }


def thresholds_changed_alerts(cfg: Config = DEFAULT) -> list[dict]:
    """One rule per exported threshold: fires while it differs from the generated default."""
    out = []
    for k in KPIS:
        for level in ("target", "critical"):
            d = k.thresholds[level]
            field_ = k.config_field if level == "target" else k.config_critical_field
            out.append({
                "alert": THRESHOLDS_CHANGED,
                "expr": f"{threshold_selector(k, level, cfg)} != {d!r}",
                "for": cfg.for_("1m"),
                "labels": {"severity": "warning", "threshold_kpi": k.key, "threshold_level": level},
                "annotations": {
                    "summary": "An alert threshold differs from its generated default",
                    "description": (f"{{{{ $labels.job }}}}/{{{{ $labels.instance }}}}: the {k.title} {level} "
                                    f"threshold (alerts.{field_}) is {{{{ $value | {humanize_fn(k)} }}}}, "
                                    f"the generated default is {_humanize(k, d)}. "
                                    "GET /internal/config/history says who changed it."),
                    "runbook_url": cfg.runbook_url("thresholds_changed"),
                },
            })
    return out


# ---- SLOs ---------------------------------------------------------------------------------
LONG = 6 * 3600  # windows of 6 h and more are evaluated in the long-interval group


def slo_records(slo: S.SLO, cfg: Config, windows) -> list[dict]:
    out = []
    for w in windows:
        aw = cfg.w(w)
        lab = {"slo": slo.name}
        out += [
            {"record": S.requests_record(w), "expr": slo.total(cfg, aw), "labels": lab},
            {"record": S.error_ratio_record(w), "expr": slo.error_ratio(cfg, aw), "labels": lab},
            {"record": S.burn_rate_record(w),
             "expr": f'{S.error_ratio_record(w)}{{slo="{slo.name}"}} / {slo.budget!r}', "labels": lab},
        ]
    return out


def slo_budget_records(slo: S.SLO, cfg: Config) -> list[dict]:
    p = cfg.slo_period
    j = cfg.job_label
    return [
        {"record": S.error_ratio_record(p), "expr": slo.error_ratio(cfg, cfg.w(p)), "labels": {"slo": slo.name}},
        {"record": S.OBJECTIVE_RECORD, "expr": f'group by ({j}) ({S.requests_record("5m")}{{slo="{slo.name}"}}) '
                                               f'* {slo.objective!r}', "labels": {"slo": slo.name}},
        {"record": S.BUDGET_REMAINING_RECORD,
         "expr": f'1 - {S.error_ratio_record(p)}{{slo="{slo.name}"}} / {slo.budget!r}', "labels": {"slo": slo.name}},
    ]


def burn_description(slo: S.SLO, long_w: str, short_w: str, factor: float, cfg: Config) -> str:
    days = seconds(cfg.slo_period) / 86400 / factor
    return (f"{{{{ $labels.job }}}}: the {slo.title} SLO ({humanize_percentage(slo.objective)} over "
            f"{cfg.slo_period}) burns its error budget {{{{ $value | humanize }}}}x as fast as it may, over the last "
            f"{long_w} and {short_w} (alert at {factor:g}x: the budget would last {days:.3g} days).")


def slo_alerts(slo: S.SLO, cfg: Config = DEFAULT) -> list[dict]:
    j = cfg.job_label
    out = []
    for severity, long_w, short_w, factor, for_ in cfg.burn_rates:
        sl = f'{{slo="{slo.name}"}}'
        expr = (f"{S.burn_rate_record(long_w)}{sl} > {factor!r}\n"
                f"and on({j}) {S.burn_rate_record(short_w)}{sl} > {factor!r}\n"
                f"and on({j}) {S.requests_record(long_w)}{sl} * {seconds(cfg.w(long_w))!r} >= {cfg.min_events!r}")
        out.append({
            "alert": slo.alert, "expr": expr, "for": cfg.for_(for_),
            "labels": {"severity": severity, "slo": slo.name, "long_window": long_w, "short_window": short_w},
            "annotations": {
                "summary": f"{slo.title} SLO: error budget burning {factor:g}x ({long_w}/{short_w})",
                "description": burn_description(slo, long_w, short_w, factor, cfg),
                "runbook_url": cfg.runbook_url(slo.key),
            },
        })
    return out


# ---- the other alerts ----------------------------------------------------------------------
def availability_alerts(cfg: Config = DEFAULT) -> list[dict]:
    up = f"up{sel(cfg.selector)}"
    return [
        {"alert": "LlmapiServiceDown", "expr": f"{up} == 0", "for": cfg.for_("1m"),
         "labels": {"severity": "critical"},
         "annotations": {"summary": "Service instance down",
                         "description": "Prometheus cannot scrape {{ $labels.job }} at {{ $labels.instance }}.",
                         "runbook_url": cfg.runbook_url("service_down")}},
        {"alert": "LlmapiServiceAbsent", "expr": f"absent({up})", "for": cfg.for_("5m"),
         "labels": {"severity": "critical"},
         "annotations": {"summary": "No service instance is scraped",
                         "description": f"Prometheus has no target matching {cfg.selector}: the service is not "
                                        "deployed or service discovery lost it.",
                         "runbook_url": cfg.runbook_url("service_down")}},
    ]


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str, key: str,
           cfg: Config) -> dict:
    return {"alert": name, "expr": expr, "for": cfg.for_(for_), "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description, "runbook_url": cfg.runbook_url(key)}}


def ratio_alert(a: AC.RatioAlert, cfg: Config = DEFAULT) -> dict:
    return _alert(a.alert, a.expr(cfg), a.for_, a.severity, a.summary,
                  f"{{{{ $labels.job }}}}: {{{{ $value | humanizePercentage }}}} of {a.events} over the "
                  f"last {cfg.kpi_window}, above {humanize_percentage(a.threshold)}.", a.key, cfg)


def spike_alert(a: AC.SpikeAlert, cfg: Config = DEFAULT) -> dict:
    return _alert(a.alert, a.expr(cfg), a.for_, a.severity, a.summary,
                  f"{{{{ $labels.job }}}}: {{{{ $value | {a.humanize} }}}} {a.what} over the last {a.recent}, "
                  f"more than {a.factor:g}x the rate of the last {a.baseline}.", a.key, cfg)


def state_alert(a: AC.StateAlert, cfg: Config = DEFAULT) -> dict:
    return {"alert": a.alert, "expr": a.expr(cfg), "for": cfg.for_(a.for_),
            "labels": {"severity": a.severity, **a.labels},
            "annotations": {"summary": a.summary, "description": a.description,
                            "runbook_url": cfg.runbook_url(a.key)}}


def _group(name: str, rules: list[dict], interval: str | None) -> dict:
    g = {"name": name}
    if interval:
        g["interval"] = interval
    g["rules"] = rules
    return g


def rules(cfg: Config = DEFAULT) -> dict:
    """Every rule group, for one mixin config (DEFAULT ships; TEST is the short-window profile)."""
    kpi_records = [{"record": k.record, "expr": k.expr(cfg.kpi_window, cfg.selector, cfg.by(k.per_instance))}
                   for k in KPIS]
    short = [w for w in cfg.sli_windows if seconds(w) < LONG]
    long_ = [w for w in cfg.sli_windows if seconds(w) >= LONG]
    sli_short = [r for s in S.SLOS for r in slo_records(s, cfg, short)]
    sli_long = [r for s in S.SLOS for r in slo_records(s, cfg, long_) + slo_budget_records(s, cfg)]
    kpi_alerts = [kpi_alert(k, sev, cfg) for k in KPIS for sev in ("warning", "critical")]
    long_interval = cfg.long_interval if cfg.interval is None else cfg.interval
    return {"groups": [
        _group("llmapi-kpi-records", kpi_records, cfg.interval),
        _group("llmapi-slo-sli", sli_short, cfg.interval),
        _group("llmapi-slo-sli-long", sli_long, long_interval),
        _group("llmapi-kpi-alerts", kpi_alerts + thresholds_changed_alerts(cfg), cfg.interval),
        _group("llmapi-slo-burn-rate", [r for s in S.SLOS for r in slo_alerts(s, cfg)], cfg.interval),
        _group("llmapi-availability", availability_alerts(cfg), cfg.interval),
        _group("llmapi-load-and-ai", [ratio_alert(a, cfg) for a in AC.RATIO_ALERTS]
               + [spike_alert(a, cfg) for a in AC.SPIKE_ALERTS], cfg.interval),
        _group("llmapi-state", [state_alert(a, cfg) for a in AC.STATE_ALERTS], cfg.interval),
        _group("llmapi-remediation", remediation.rules(cfg), cfg.interval),  # alerts/remediation.py
    ]}


def alert_names(cfg: Config = DEFAULT) -> list[str]:
    return sorted({r["alert"] for g in rules(cfg)["groups"] for r in g["rules"] if "alert" in r})
