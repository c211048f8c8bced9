"""promtool unit tests of the generated rules: a firing and a quiet case for every alert,
the threshold edges exactly, per-job thresholds, the SLO burn-rate pairs and SLI records.

Only the DEFAULT profile is tested here (the test profile differs in windows and `for:`
alone; tests/alerts checks that and tests/e2e runs it against a real Prometheus).
"""
from __future__ import annotations

import math
from dataclasses import replace

from prometheus_client.utils import floatToGoString

from alerts import remediation
from alerts import rules as R
from alerts.render import humanize, humanize_duration, humanize_percentage, render
from exporter import alert_catalog as AC
from exporter import slos as S
from exporter.kpis import KPIS, LOWER, KPI
from exporter.metrics import AI_BUCKETS, HTTP_BUCKETS
from exporter.mixin import DEFAULT, seconds

JOB = "llmapi"           # the job of the default selector (exporter/mixin.py)
OTHER_JOB = "llmapi-canary"
LABELS = {"job": JOB, "instance": "llmapi:8000"}
EVAL = "30m"             # rates are steady from 1m on; every KPI `for:` is <= 15m
SAMPLES = 40             # one sample a minute
# traffic that is not API traffic (exporter/kpis.py): (route, status)
NOT_API = (("/metrics", "200"), ("/internal/monitoring/benchmark", "500"), ("unmatched", "404"))


def humanize_kpi(k: KPI, v: float) -> str:
    return humanize_duration(v) if k.unit == "seconds" else humanize_percentage(v)


def render_kpi_description(k: KPI, severity: str, labels: dict, value: float, live: float | None) -> str:
    """What Prometheus renders from rules.description."""
    level = R.LEVEL_OF[severity]
    side = "above" if k.direction == LOWER else "below"
    what = "target" if severity == "warning" else "needs-attention threshold"
    who = f"{labels['job']}/{labels['instance']}" if k.per_instance else labels["job"]
    th = humanize_kpi(k, k.thresholds[level] if live is None else live)
    return f"{who}: {k.title} is {humanize_kpi(k, value)}, {side} the {what} of {th}."


def _series(name: str, labels: dict, per_minute: float, n: int = SAMPLES) -> dict:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": f"0+{per_minute!r}x{n}"}


def _gauge(name: str, labels: dict, value: float, n: int = SAMPLES) -> dict:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": f"{value!r}+0x{n}"}


def _histogram_series(metric: str, les: tuple, q: float, labels: dict) -> list[dict]:
    """Bucket series whose P95 (histogram_quantile over rate) is exactly q.

    100 observations a second; 95 % of them at or below the bucket that
    holds q, placed so the linear interpolation inside it lands on q.
    """
    bounds = list(les)
    j = next(i for i, b in enumerate(bounds) if q <= b)
    lo = bounds[j - 1] if j > 0 else 0.0
    hi = bounds[j]
    f = (q - lo) / (hi - lo)
    in_bucket = 5.0
    below = 95.0 - in_bucket * f     # cumulative rate at lo
    out = []
    for i, b in enumerate(bounds + [math.inf]):
        if i < j - 1 or (i == j - 1 and j == 0):
            rate = 0.0
        elif i == j - 1:
            rate = below
        elif i == j:
            rate = below + in_bucket
        else:
            rate = 100.0
        out.append(_series(f"{metric}_bucket", {**labels, "le": floatToGoString(b)}, rate * 60))
    return out


def _go_rate(per_minute: float, window_s: float = 300.0) -> float:
    """PromQL rate() of a steady counter sampled each minute, computed as Prometheus 2.x does:
    increase * (extrapolated interval / sampled interval / range) -- the last factor is
    inexact (1/300), so a ratio of rates is not always the ratio of the increments."""
    increase = per_minute * (window_s / 60.0)
    factor = (window_s / window_s) / window_s
    return increase * factor


def _exact_error_rates(v: float) -> tuple[float, float]:
    """(5xx, total) requests a second whose PromQL error ratio is exactly the double v.

    Scales the smallest integer pair with that ratio until Prometheus' own float
    arithmetic gives back v to the last bit (so the edge tests test the edge).
    """
    from fractions import Fraction
    fr = Fraction(str(v)).limit_denominator(1_000_000)
    for scale in range(1, 5000):
        e, t = fr.numerator * scale, fr.denominator * scale
        er, okr = _go_rate(e * 60.0), _go_rate((t - e) * 60.0)
        if e == 0 or er / (okr + er) == v:
            return float(e), float(t)
    return float(fr.numerator), float(fr.denominator)


def kpi_inputs(k: KPI, v: float, labels: dict | None = None) -> list[dict]:
    """Raw input series making KPI k equal v (to the last bit at the threshold edges), plus API-traffic
    look-alikes the KPI must leave out (scrapes, /internal, unmatched)."""
    labels = labels or LABELS
    api = {**labels, "route": "/v1/text/summarize", "method": "POST"}
    if k.key == "api_response_time_p95":
        # plus a slow self route that must not count (the KPI excludes /metrics)
        return (_histogram_series("llmapi_http_request_duration_seconds", HTTP_BUCKETS, v, api)
                + _histogram_series("llmapi_http_request_duration_seconds", HTTP_BUCKETS, HTTP_BUCKETS[-1],
                                    {**labels, "route": "/metrics", "method": "GET"})
                + _histogram_series("llmapi_http_request_duration_seconds", HTTP_BUCKETS, HTTP_BUCKETS[-1],
                                    {**labels, "route": "/internal/monitoring/benchmark", "method": "POST"}))
    if k.key == "ai_response_time_p95":
        return _histogram_series("llmapi_ai_request_duration_seconds", AI_BUCKETS, v,
                                 {**labels, "operation": "summarize", "provider": "openai"})
    if k.key == "error_rate":
        errors, total = _exact_error_rates(v)  # per second
        out = [_series("llmapi_http_requests_total", {**api, "status": "200"}, (total - errors) * 60)]
        if errors:
            out.append(_series("llmapi_http_requests_total", {**api, "status": "500"}, errors * 60))
        # scrapes, admin calls and scanners' 404s answered must not dilute the ratio
        out += [_series("llmapi_http_requests_total", {**labels, "route": r, "method": "GET", "status": st},
                        5000 * 60) for r, st in NOT_API]
        return out
    if k.key == "cache_hit_ratio":
        hits = round(v * 100, 6)
        out = []
        if hits:
            out.append(_series("llmapi_cache_hits_total", {**labels, "tier": "memory", "operation": "summarize"},
                               hits * 60))
        if 100 - hits:
            out.append(_series("llmapi_cache_misses_total", {**labels, "operation": "summarize"},
                               (100 - hits) * 60))
        return out
    if k.key == "memory_usage":
        limit = 1_000_000_000
        return [_gauge("llmapi_memory_limit_bytes", labels, float(limit)),
                _gauge("llmapi_process_resident_memory_bytes", labels, float(round(v * limit)))]
    if k.key == "cpu_usage":
        cores = 2.0
        return [_gauge("llmapi_cpu_limit_cores", labels, cores),
                _series("llmapi_process_cpu_seconds_total", labels, round(v * cores * 60, 6))]
    raise KeyError(k.key)


def _edge_values(k: KPI) -> dict[str, float]:
    """The values tests use: each threshold exactly, and one step past it."""
    if k.unit == "seconds":
        les = list(HTTP_BUCKETS if k.key == "api_response_time_p95" else AI_BUCKETS)

        def past(t):  # a tenth into the next bucket
            i = les.index(t)
            return t + (les[i + 1] - t) * 0.1
    else:
        step = 0.001 if k.key == "error_rate" else 0.01

        def past(t):
            return round(t + step if k.direction == LOWER else t - step, 6)
    return {"target": k.target, "past_target": past(k.target),
            "critical": k.critical, "past_critical": past(k.critical)}


def _alert_case(k: KPI, severity: str, fires: bool, value: float, live: float | None,
                base: dict | None = None) -> dict:
    base = base or LABELS
    labels = {"job": base["job"], **({"instance": base["instance"]} if k.per_instance else {})}
    exp = []
    if fires:
        exp.append({"exp_labels": {"severity": severity, "kpi": k.key, **labels},
                    "exp_annotations": {"summary": R.summary(k, severity),
                                        "description": render_kpi_description(k, severity, labels, value, live),
                                        "runbook_url": k.runbook_url}})
    return {"eval_time": EVAL, "alertname": R.kpi_alert_names(k)[severity], "exp_alerts": exp}


def kpi_tests(k: KPI) -> list[dict]:
    e = _edge_values(k)
    labels = {"job": LABELS["job"], **({"instance": LABELS["instance"]} if k.per_instance else {})}
    record_labels = ",".join(f'{a}="{b}"' for a, b in labels.items())
    th_labels = {**LABELS}
    cases = [
        # (name, value, warning fires, critical fires, live thresholds {level: value} or {}, check record value)
        ("at the target: on the good side", e["target"], False, False, {}, True),
        ("one step past the target: warning", e["past_target"], True, False, {}, False),
        ("at the needs-attention threshold: warning only", e["critical"], True, False, {}, True),
        ("one step past needs-attention: warning and critical", e["past_critical"], True, True, {}, False),
        ("threshold gauge raised past the value: quiet", e["past_target"], False, False,
         {"target": e["past_critical"], "critical": e["past_critical"]}, False),
        ("threshold gauge lowered below the value: both fire", e["target"], True, True,
         {"target": k.good, "critical": k.good}, False),
    ]
    out = []
    for name, v, warn, crit, live, check in cases:
        inputs = kpi_inputs(k, v)
        for level, tv in live.items():
            inputs.append(_gauge("llmapi_kpi_threshold", {**th_labels, "kpi": k.key, "level": level}, tv))
        group = {
            "name": f"{k.key}: {name} ({humanize_kpi(k, v)})",
            "interval": "1m",
            "input_series": inputs,
            "alert_rule_test": [_alert_case(k, "warning", warn, v, live.get("target")),
                                _alert_case(k, "critical", crit, v, live.get("critical"))],
        }
        if check:
            group["promql_expr_test"] = [{"expr": k.record, "eval_time": EVAL,
                                          "exp_samples": [{"labels": f"{k.record}{{{record_labels}}}",
                                                           "value": v}]}]
        out.append(group)
    # no traffic at all: no value, no alert
    out.append({"name": f"{k.key}: no data: quiet", "interval": "1m",
                "input_series": [_gauge("up", LABELS, 1.0)],
                "alert_rule_test": [_alert_case(k, "warning", False, 0, None),
                                    _alert_case(k, "critical", False, 0, None)]})
    return out



# ---- ratio alerts -----------------------------------------------------------------------
def ratio_inputs(a: AC.RatioAlert, v: float) -> list[dict]:
    """Raw series making alert a's ratio exactly v (plus series its selectors must leave out)."""
    events, total = _exact_error_rates(v)  # per second
    api = {**LABELS, "route": "/v1/text/summarize", "method": "POST"}
    if a.alert == "LlmapiLoadShedding":
        out = [_series("llmapi_http_requests_total", {**api, "status": "200"}, (total - events) * 60),
               _series("llmapi_http_requests_total", {**LABELS, "route": "/metrics", "method": "GET",
                                                      "status": "200"}, 5000 * 60)]
        if events:
            out += [_series("llmapi_http_requests_total", {**api, "status": "503"}, events * 60),
                    _series("llmapi_admission_shed_total", {**LABELS, "reason": "queue_full"}, events * 60)]
        return out
    if a.alert == "LlmapiRateLimitRejections":
        out = [_series("llmapi_rate_limit_decisions_total", {**LABELS, "decision": "allowed", "tier": "default"},
                       (total - events) * 60)]
        if events:
            out.append(_series("llmapi_rate_limit_decisions_total",
                               {**LABELS, "decision": "denied", "tier": "default"}, events * 60))
        return out
    if a.alert == "LlmapiAiErrors":
        ai = {**LABELS, "provider": "openai", "model": "gpt-4o-mini"}  # attempts by outcome
        out = [_series("llmapi_ai_request_duration_seconds_count", {**ai, "outcome": "success"},
                       (total - events) * 60)]
        if events:
            out.append(_series("llmapi_ai_request_duration_seconds_count", {**ai, "outcome": "timeout"},
                               events * 60))
        return out
    if a.alert == "LlmapiDegradedAnswers":
        # 5xx answers are not in the whole (they are errors, not degraded answers); /internal is not API traffic
        out = [_series("llmapi_http_requests_total", {**api, "status": "200"}, total * 60),
               _series("llmapi_http_requests_total", {**api, "status": "503"}, 700 * 60),
               _series("llmapi_http_requests_total", {**LABELS, "route": "/internal/config", "method": "GET",
                                                      "status": "200"}, 5000 * 60)]
        if events:
            out.append(_series("llmapi_text_degraded_responses_total",
                               {**LABELS, "operation": "summarize", "reason": "stale_cache"}, events * 60))
        return out
    raise KeyError(a.alert)


RATIO_STEP = 0.001       # "one step past the threshold" of the ratio alerts' tests


def ratio_tests() -> list[dict]:
    out = []
    for a in AC.RATIO_ALERTS:
        r = R.ratio_alert(a)
        past = round(a.threshold + RATIO_STEP, 6)
        cases = [("well above: fires", round(a.threshold * 5, 6), True),
                 ("one step past the threshold: fires", past, True),
                 ("at the threshold: quiet", a.threshold, False),
                 ("below: quiet", round(a.threshold / 2, 6), False),
                 ("none: quiet", 0.0, False)]
        for name, v, fires in cases:
            exp = []
            if fires:
                exp.append({"exp_labels": {**r["labels"], "job": JOB},
                            "exp_annotations": {**r["annotations"], "description": r["annotations"]["description"]
                                                .replace("{{ $labels.job }}", JOB)
                                                .replace("{{ $value | humanizePercentage }}",
                                                         humanize_percentage(v))}})
            out.append({"name": f"{a.alert}: {name} ({humanize_percentage(v)})", "interval": "1m",
                        "input_series": ratio_inputs(a, v),
                        "alert_rule_test": [{"eval_time": EVAL, "alertname": a.alert, "exp_alerts": exp}]})
    return out




# ---- availability, state and spike alerts ----------------------------------------------------
def _case(name: str, series: list[dict], alert: str, exp: list[dict], eval_time: str = "15m") -> dict:
    return {"name": name, "interval": "1m", "input_series": series,
            "alert_rule_test": [{"eval_time": eval_time, "alertname": alert, "exp_alerts": exp}]}


def availability_tests() -> list[dict]:
    down, absent = R.availability_alerts()
    up0 = [_gauge("up", LABELS, 0.0, 20)]
    up1 = [_gauge("up", LABELS, 1.0, 20)]
    other = [_gauge("up", {"job": "node", "instance": "n:9100"}, 0.0, 20)]
    fired_down = [{"exp_labels": {"severity": "critical", **LABELS},
                   "exp_annotations": {**down["annotations"], "description": render(down["annotations"]["description"],
                                                                                   LABELS)}}]
    return [
        _case("service: up == 0 fires", up0, "LlmapiServiceDown", fired_down, "10m"),
        _case("service: up == 1 quiet", up1, "LlmapiServiceDown", [], "10m"),
        _case("service: another job down is not ours: quiet", other, "LlmapiServiceDown", [], "10m"),
        _case("service: no target at all fires", other, "LlmapiServiceAbsent",
              [{"exp_labels": {"severity": "critical", "job": JOB}, "exp_annotations": absent["annotations"]}], "10m"),
        _case("service: target present quiet", up0, "LlmapiServiceAbsent", [], "10m"),
    ]


def _input(series: dict) -> list[dict]:
    return [{"series": k, "values": v} for k, v in series.items()]


def state_tests() -> list[dict]:
    out = []
    for a in AC.STATE_ALERTS:
        r = R.state_alert(a)
        labels = {**a.exp_labels, "severity": a.severity, **a.labels}
        value = _state_value(a)
        exp = [{"exp_labels": labels,
                "exp_annotations": {**r["annotations"], "description": render(a.description, labels, value)}}]
        out.append(_case(f"{a.alert}: fires", _input(a.fire), a.alert, exp))
        if a.quiet is not None:
            out.append(_case(f"{a.alert}: quiet", _input(a.quiet), a.alert, []))
    return out


def _state_value(a: AC.StateAlert) -> float | None:
    """The alert's value in its firing case, for descriptions that print it."""
    if "$value" not in a.description:
        return None
    if a.alert == "LlmapiEventLoopLag":
        return 0.25
    if a.alert == "PrometheusNotificationsFailing":
        return 0.1
    if a.alert == "LlmapiAiPoolSaturated":
        return 48 / 50
    raise KeyError(a.alert)


SPIKE_STEP = "5m"


def spike_tests() -> list[dict]:
    """A steady day at twice the minimum rate, then the last hour at `burst` times that: fires past the factor,
    quiet below it, and quiet when even the burst stays under the minimum rate."""
    out = []
    for a in AC.SPIKE_ALERTS:
        r = R.spike_alert(a)
        labels = {**LABELS, **({"gen_ai_token_type": "input"} if a.metric.startswith("gen_ai") else
                               {"model": "gpt-4o-mini", "operation": "summarize"})}
        step_s = seconds(SPIKE_STEP)
        day, hour = int(seconds(a.baseline) // step_s), int(seconds(a.recent) // step_s)   # in samples
        for name, base, burst, fires in (("the last hour at 5x: fires", a.min_rate * 2, 5.0, True),
                                         ("the last hour at 2x: quiet", a.min_rate * 2, 2.0, False),
                                         ("5x but under the minimum rate: quiet", a.min_rate / 20, 5.0, False)):
            step, hot = base * step_s, base * step_s * burst     # per sample
            values = f"0+{step!r}x{day - hour} {step * (day - hour) + hot!r}+{hot!r}x{hour - 1}"
            series = [{"series": _series(a.metric, labels, 0)["series"], "values": values}]
            exp = []
            if fires:
                exp.append({"exp_labels": {"severity": a.severity, "job": JOB},
                            "exp_annotations": {**r["annotations"], "description": render(
                                r["annotations"]["description"], {"job": JOB}, _spike_value(base, burst,
                                                                                           seconds(a.recent)))}})
            case = _case(f"{a.alert}: {name}", series, a.alert, exp, a.baseline)
            case["interval"] = SPIKE_STEP
            out.append(case)
    return out


def _spike_value(base: float, burst: float, window_s: float) -> float:
    """rate() over the recent window of the burst, as Prometheus computes it (minute samples, no extrapolation
    past the window's samples)."""
    per_min = base * 60 * burst
    n = window_s / 60
    return per_min * n / window_s


# ---- thresholds: per job, and changes made visible -------------------------------------------
MULTI_JOB = replace(DEFAULT, selector=f'job=~"{JOB}|{OTHER_JOB}"')  # a mixin selector matching two jobs


def multi_job_tests(rule_file: str) -> dict:
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": per_job_tests()}


def per_job_tests() -> list[dict]:
    """Two jobs (rules generated with MULTI_JOB), one of them with moved thresholds: each job is
    compared with its own.

    (With max() over every job, the canary's raised threshold would silence the main job.)"""
    k = next(k for k in KPIS if k.key == "error_rate")
    e = _edge_values(k)
    canary = {"job": OTHER_JOB, "instance": "canary:8000"}
    out = []
    for name, main_v, canary_v, canary_th, fires in (
            ("the canary raised its thresholds: the main job still fires, the canary is quiet",
             e["past_target"], e["past_target"], e["past_critical"], {JOB}),
            ("the canary lowered its thresholds: only the canary fires",
             e["target"], e["target"], k.good, {OTHER_JOB})):
        inputs = kpi_inputs(k, main_v) + kpi_inputs(k, canary_v, canary)
        inputs += [_gauge("llmapi_kpi_threshold", {**canary, "kpi": k.key, "level": lv}, canary_th)
                   for lv in ("target", "critical")]
        exp = []
        for job in sorted(fires):
            base = LABELS if job == JOB else canary
            live = None if job == JOB else canary_th
            exp += _alert_case(k, "warning", True, main_v if job == JOB else canary_v, live, base)["exp_alerts"]
        out.append({"name": f"per job: {name}", "interval": "1m", "input_series": inputs,
                    "alert_rule_test": [{"eval_time": EVAL, "alertname": R.kpi_alert_names(k)["warning"],
                                         "exp_alerts": exp}]})
    return out


def thresholds_changed_tests() -> list[dict]:
    out = []
    rules = {(r["labels"]["threshold_kpi"], r["labels"]["threshold_level"]): r for r in R.thresholds_changed_alerts()}
    for k in KPIS:
        for level in ("target", "critical"):
            r = rules[(k.key, level)]
            moved = k.thresholds[level] * (1.5 if k.direction == LOWER else 0.5)
            defaults = [_gauge("llmapi_kpi_threshold", {**LABELS, "kpi": kk.key, "level": lv}, kk.thresholds[lv], 20)
                        for kk in KPIS for lv in ("target", "critical")]
            changed = [g if not (f'kpi="{k.key}"' in g["series"] and f'level="{level}"' in g["series"]) else
                       _gauge("llmapi_kpi_threshold", {**LABELS, "kpi": k.key, "level": level}, moved, 20)
                       for g in defaults]
            labels = {**LABELS, **r["labels"], "kpi": k.key, "level": level}
            exp = [{"exp_labels": labels,
                    "exp_annotations": {**r["annotations"],
                                        "description": render(r["annotations"]["description"], labels, moved)}}]
            out.append(_case(f"thresholds changed: {k.key} {level} moved: fires", changed, R.THRESHOLDS_CHANGED, exp))
    defaults_only = [_gauge("llmapi_kpi_threshold", {**LABELS, "kpi": kk.key, "level": lv}, kk.thresholds[lv], 20)
                     for kk in KPIS for lv in ("good", "target", "critical")]
    out.append(_case("thresholds changed: every threshold at its default: quiet", defaults_only,
                     R.THRESHOLDS_CHANGED, []))
    return out


# ---- SLOs ----------------------------------------------------------------------------------
def slo_burn_tests() -> list[dict]:
    """Each SLO and window pair on its own: the burn-rate and request records are given directly
    (no raw series, so the recording rules produce nothing and the given values stand; the
    records' expressions are checked against raw series in slo_record_tests)."""
    out = []
    for slo in S.SLOS:
        for severity, long_w, short_w, factor, for_ in DEFAULT.burn_rates:
            minutes = -(-(int(seconds(for_) // 60) + 10) // 5) * 5   # past `for:`, on the 5m evaluation grid
            r = next(r for r in R.slo_alerts(slo) if r["labels"]["long_window"] == long_w)
            enough = DEFAULT.min_events / seconds(long_w) * 2   # requests per second: twice the guard

            def case(name, long_v, short_v, fires, rate=enough):
                lab = {"job": JOB, "slo": slo.name}
                series = [_gauge(S.burn_rate_record(long_w), lab, long_v, minutes),
                          _gauge(S.burn_rate_record(short_w), lab, short_v, minutes),
                          _gauge(S.requests_record(long_w), lab, rate, minutes)]
                exp = []
                if fires:
                    labels = {**r["labels"], "job": JOB}
                    exp.append({"exp_labels": labels,
                                "exp_annotations": {**r["annotations"], "description": render(
                                    r["annotations"]["description"], labels, long_v)}})
                return {"name": f"{slo.alert} {long_w}/{short_w} x{factor:g}: {name}", "interval": "1m",
                        "input_series": series,
                        "alert_rule_test": [{"eval_time": f"{minutes}m", "alertname": slo.alert, "exp_alerts": exp}]}

            hot, under, over = factor * 1.25, round(factor * 0.99, 6), round(factor * 1.01, 6)
            if slo is not S.SLOS[0]:  # the same template: its edges are pinned on the first SLO
                out += [case("both windows burning: fires", hot, hot, True),
                        case("the cause is gone, the short window is clean: quiet", hot, 0.0, False)]
                continue
            out += [
                case("both windows burning: fires", hot, hot, True),
                case("both windows 1 % over the burn rate: fires", over, over, True),
                case("both windows 1 % under the burn rate: quiet", under, under, False),
                case("the cause is gone, the short window is clean: quiet", hot, 0.0, False),
                case("a short spike only, the long window is fine: quiet", under, hot, False),
                case("too little traffic for the guard: quiet", hot, hot, False,
                     rate=DEFAULT.min_events / seconds(long_w) / 2),
            ]
    return out


def _api_series(labels: dict, status: str, per_second: float) -> dict:
    return _series("llmapi_http_requests_total", {**labels, "route": "/v1/text/summarize", "method": "POST",
                                                  "status": status}, per_second * 60)


def slo_record_tests() -> list[dict]:
    """SLI records from raw series: 100 API requests a second, 2 answered 5xx, 3 degraded 200s,
    10 slower than 2 s; and traffic that is not API traffic, which must not count."""
    lab = LABELS
    api = {**lab, "route": "/v1/text/summarize", "method": "POST"}
    le = {b: 0.0 for b in HTTP_BUCKETS}
    inputs = [_api_series(lab, "200", 98.0), _api_series(lab, "500", 2.0),
              _series(S.DEGRADED, {**lab, "operation": "summarize", "reason": "stale_cache"}, 3.0 * 60)]
    inputs += [_series("llmapi_http_requests_total", {**lab, "route": r, "method": "GET", "status": st}, 5000 * 60)
               for r, st in NOT_API]
    for b in HTTP_BUCKETS:
        le[b] = 90.0 if b <= S.LATENCY_THRESHOLD and b >= 1.0 else (0.0 if b < 1.0 else 100.0)
    for b, v in le.items():
        inputs.append(_series("llmapi_http_request_duration_seconds_bucket", {**api, "le": floatToGoString(b)}, v * 60))
    inputs += [_series("llmapi_http_request_duration_seconds_bucket", {**api, "le": "+Inf"}, 100.0 * 60),
               _series("llmapi_http_request_duration_seconds_count", api, 100.0 * 60)]
    slow = {"route": "/internal/monitoring/benchmark", "method": "POST"}
    inputs += [_series("llmapi_http_request_duration_seconds_bucket", {**lab, **slow, "le": floatToGoString(b)}, 0.0)
               for b in HTTP_BUCKETS]
    inputs += [_series("llmapi_http_request_duration_seconds_count", {**lab, **slow}, 5000 * 60)]
    want = {"availability": 0.02, "quality": 0.05, "latency": 0.10}
    tests = []
    for slo in S.SLOS:
        for w in ("5m", "30m"):
            tests.append({"expr": f'{S.error_ratio_record(w)}{{slo="{slo.name}"}}', "eval_time": "40m",
                          "exp_samples": [{"labels": f'{S.error_ratio_record(w)}{{job="{JOB}",slo="{slo.name}"}}',
                                           "value": want[slo.name]}]})
        tests.append({"expr": f'{S.requests_record("5m")}{{slo="{slo.name}"}}', "eval_time": "40m",
                      "exp_samples": [{"labels": f'{S.requests_record("5m")}{{job="{JOB}",slo="{slo.name}"}}',
                                       "value": 100.0}]})
    return [{"name": "SLI records from raw series: API traffic only", "interval": "1m", "input_series": inputs,
             "promql_expr_test": tests}]


def slo_budget_tests() -> list[dict]:
    """Budget remaining and burn rate from a given error ratio over the period: half the budget spent."""
    out = []
    for slo in S.SLOS:
        p = DEFAULT.slo_period
        lab = {"job": JOB, "slo": slo.name}
        half = slo.budget / 2
        series = [_gauge(S.error_ratio_record(p), lab, half, 20)]
        out.append({"name": f"{slo.name}: budget remaining from the period's error ratio", "interval": "1m",
                    "input_series": series,
                    "promql_expr_test": [{"expr": f'{S.BUDGET_REMAINING_RECORD}{{slo="{slo.name}"}}',
                                          "eval_time": "10m",
                                          "exp_samples": [{"labels": f'{S.BUDGET_REMAINING_RECORD}{{job="{JOB}",'
                                                                     f'slo="{slo.name}"}}',
                                                           "value": 1 - half / slo.budget}]}]})
    return out


def unit_tests(rule_file: str) -> dict:
    groups = ([g for k in KPIS for g in kpi_tests(k)] + thresholds_changed_tests()
              + slo_record_tests() + slo_budget_tests() + availability_tests()
              + ratio_tests() + state_tests() + remediation.tests(JOB, LABELS["instance"]))
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": groups}


def burn_unit_tests(rule_file: str) -> dict:
    """The burn-rate pairs hold for up to 3 h before they fire: evaluated every 5 minutes
    (their own file; every rule evaluated each minute for 3 h per case is slow)."""
    return {"rule_files": [rule_file], "evaluation_interval": "5m", "tests": slo_burn_tests()}


def spike_unit_tests(rule_file: str) -> dict:
    """The spike alerts compare an hour with a day: a day of samples, evaluated every 5 minutes
    (their own file: at 1m every rule would be evaluated 1440 times per case)."""
    return {"rule_files": [rule_file], "evaluation_interval": SPIKE_STEP, "tests": spike_tests()}
