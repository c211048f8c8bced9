"""/internal/monitoring: analysis, memory, admission, benchmarks, reports, emergency mode.

Thin handlers over service/monitoring.  (performance, metrics, alerts and
configure-alerts live in service/internal/kpi.py; ai-performance,
compression-metrics, rate-limiting-performance, middleware-performance and
enable-throttling belong to their subsystems.)
"""
from __future__ import annotations

import asyncio
import tracemalloc

import psutil

from aiohttp import web

from exporter.metrics import HTTP_IN_FLIGHT
from service.context import CTX
from service.config.sections import SECTIONS
from service.errors import ApiError, validation_error
from service.http import json_response, only, query_number, read_object
from service.internal.audit import actor
from service.monitoring import emergency, memory, process, report
from service.monitoring import snapshot as S
from service.monitoring.monitor import Monitor

P = "/internal/monitoring"
MAX_HOURS = 24 * 400
INTERNAL_FIELDS = tuple(k for k, f in SECTIONS["monitoring"].fields.items() if f.internal)
OPTIMIZE_FIELDS = ("validation_mode", "enable_caching")


def _mon(request: web.Request) -> Monitor:
    return request.app[CTX].monitoring


def _hours(request: web.Request, default: float) -> float:
    return query_number(request, "hours", default, 0.001, MAX_HOURS)


def _sample_every(store) -> int:
    """1 in how many requests the middleware stack's timing samples (middleware section, when present)."""
    return store.get("middleware").get("sample_every", 1) if "middleware" in store.sections else 1


def _bool_query(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ApiError(422, "VALIDATION_ERROR", f"{name} must be true or false", field=name)


async def _service_window(request: web.Request, mon: Monitor, seconds: float, live: dict | None = None):
    """?instances=all (default): every instance sharing Redis; this: the instance that answers.  `live`: the
    current interval, when the caller needs it too (built once: it reads every counter).  The loop is given
    back before the caller builds its answer from the window."""
    which = request.query.get("instances", "all")
    if which not in ("all", "this"):
        raise ApiError(422, "VALIDATION_ERROR", "instances must be 'all' or 'this'", field="instances")
    if which == "this":
        agg, snaps, resolution = mon.window(seconds, live)
        out = agg, snaps, resolution, {"scope": "this instance", "this": mon.history.instance,
                                       "included": [mon.history.instance]}
    else:
        out = await mon.service_window(seconds, live)
    await asyncio.sleep(0)
    return out


async def _window(request: web.Request, default_hours: float, live: dict | None = None):
    hours = _hours(request, default_hours)
    mon = _mon(request)
    agg, snaps, resolution, instances = await _service_window(request, mon, hours * 3600, live)
    return hours, agg, snaps, resolution, mon, instances


# ---- analysis ------------------------------------------------------------------
async def slow_endpoints(request: web.Request) -> web.Response:
    hours, agg, _, res, mon, instances = await _window(request, 1)
    limit = query_number(request, "limit", 10, 1, 1000, integer=True)
    min_req = query_number(request, "min_requests", 1, 1, 10 ** 9, integer=True)
    scope = request.query.get("scope", "all")
    if scope not in ("all", "api"):
        raise ApiError(422, "VALIDATION_ERROR", "scope must be 'all' or 'api'", field="scope")
    out = report.slow_endpoints(agg, report.thresholds(mon.store), limit, scope, min_req)
    return json_response({"window_hours": hours, "coverage": report.coverage(agg, hours * 3600, res),
                          "instances": instances, **out})


async def request_patterns(request: web.Request) -> web.Response:
    live = _mon(request).live()
    hours, agg, snaps, res, mon, instances = await _window(request, 24, live)
    out = report.request_patterns(agg, snaps, live)
    return json_response({"window_hours": hours, "coverage": report.coverage(agg, hours * 3600, res),
                          "instances": instances, **out})


async def bottlenecks(request: web.Request) -> web.Response:
    hours, agg, _, res, mon, instances = await _window(request, 1)
    out = report.bottlenecks(agg, report.thresholds(mon.store), _sample_every(mon.store))
    return json_response({"window_hours": hours, "coverage": report.coverage(agg, hours * 3600, res),
                          "instances": instances, **out})


async def system_load(request: web.Request) -> web.Response:
    mon = _mon(request)
    th = report.thresholds(mon.store)
    agg, _, _ = mon.window(60)
    t = S.totals(agg)
    mem = process.memory_info()
    cpu_short = mon.short_cpu_percent()
    cores = process.cpu_limit()
    load = process.load_average()
    adm = mon.admission.status()
    tasks = mon.tasks.status()
    reasons = []
    level = 0

    def raise_to(lvl, why):
        nonlocal level
        level = max(level, lvl)
        reasons.append(why)

    cpu = cpu_short if cpu_short is not None else t["cpu_percent"]
    if cpu is not None:
        if cpu > th["cpu_usage"]["critical"] * 100:
            raise_to(3, f"CPU {cpu}% above the {th['cpu_usage']['critical'] * 100:g}% critical line")
        elif cpu > th["cpu_usage"]["target"] * 100:
            raise_to(2, f"CPU {cpu}% above the {th['cpu_usage']['target'] * 100:g}% target")
    mp = mem["percent_of_limit"] or 0
    if mp > th["memory_usage"]["critical"] * 100:
        raise_to(3, f"memory {mp}% of the limit")
    elif mp > th["memory_usage"]["target"] * 100:
        raise_to(2, f"memory {mp}% of the limit")
    if t["shed"]:
        raise_to(2, f"{t['shed']} requests shed in the last minute")
    if adm["queued"]:
        raise_to(1, f"{adm['queued']} requests queued for a slot")
    if mon.lag_max > 0.5:
        raise_to(2, f"event loop lag {round(mon.lag_max * 1000)} ms")
    elif mon.lag_max > 0.1:
        raise_to(1, f"event loop lag {round(mon.lag_max * 1000)} ms")
    if tasks["queued"] > 0.8 * tasks["task_queue_size"]:
        raise_to(1, "background task queue over 80% full")
    status = ("normal", "elevated", "high", "critical")[level]
    rec = []
    if level >= 2:
        rec.append('POST /internal/monitoring/emergency-mode {"enabled": true} to shed load and tighten timeouts')
    if t["shed"]:
        rec.append("raise max_concurrent_requests or add workers if CPU allows")
    return json_response({
        "status": status, "reasons": reasons, "emergency_mode": mon.cfg["emergency_mode"],
        "cpu": {"process_percent": cpu, "process_percent_last_minute": t["cpu_percent"], "cores_available": cores,
                "system_percent": psutil.cpu_percent(None), "load_average": load,
                "load_per_core": round(load[0] / cores, 3) if load and cores else None},
        "memory": {"rss_bytes": mem["rss_bytes"], "rss_mb": round(mem["rss_bytes"] / 2 ** 20, 3),
                   "limit_bytes": mem["limit_bytes"], "percent_of_limit": mem["percent_of_limit"]},
        "requests": {"in_flight": int(S.gauge_total(HTTP_IN_FLIGHT)), "last_minute": t["requests"],
                     "requests_per_second": t["requests_per_second"], "p95_ms": t["p95_ms"],
                     "error_rate": t["error_rate"]},
        "admission": adm, "background_tasks": tasks,
        "event_loop": {"lag_ms": round(mon.lag_last * 1000, 3), "lag_max_ms": round(mon.lag_max * 1000, 3)},
        "recommendations": rec})


async def loop_holds(request: web.Request) -> web.Response:
    """The longest task steps of this process, by kind and label (monitoring.loop_hold_timing switches it)."""
    return json_response(_mon(request).holds.view())


async def loop_holds_reset(request: web.Request) -> web.Response:
    holds = _mon(request).holds
    holds.reset()
    return json_response(holds.view())


# ---- memory --------------------------------------------------------------------
async def memory_analysis(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    return json_response(await memory.analysis(ctx, ctx.monitoring))


_HOTSPOTS_LOCK = asyncio.Lock()


async def memory_hotspots(request: web.Request) -> web.Response:
    """Read-only: tracing is switched by POST (memory_hotspots_post); a GET that asks with ?enable= is
    answered with the current state and how to switch it."""
    mon = _mon(request)
    enable = _bool_query(request, "enable")
    limit = query_number(request, "limit", 20, 1, 500, integer=True)
    group = request.query.get("group_by", "lineno")
    if group not in ("lineno", "filename", "traceback"):
        raise ApiError(422, "VALIDATION_ERROR", "group_by must be lineno, filename or traceback", field="group_by")
    # tracemalloc's snapshot and grouping take seconds on a big heap: in a thread, so the loop keeps
    # serving (it gets the interpreter back at every switch interval); one computation at a time
    async with _HOTSPOTS_LOCK:
        out = await asyncio.get_running_loop().run_in_executor(None, memory.hotspots, mon, limit, group)
    if enable is not None and enable != out["tracing"]:
        out["enable"] = {"applied": False, "requested": enable,
                         "message": "a GET does not change state: POST /internal/monitoring/memory-hotspots "
                                    f'{{"enabled": {str(enable).lower()}}} switches memory tracing'}
    return json_response(out)


async def memory_hotspots_post(request: web.Request) -> web.Response:
    mon = _mon(request)
    body = await read_object(request)
    only(body, ("enabled", "frames"))
    enabled = body.get("enabled", True)
    changes = {"memory_tracing": enabled}
    if "frames" in body:
        changes["tracing_frames"] = body["frames"]
    entry = await mon.store.update("monitoring", changes, source="api:/internal/monitoring/memory-hotspots",
                                   **actor(request))
    await mon.history.add_event("memory_tracing", {"enabled": mon.cfg["memory_tracing"]})
    return json_response({"tracing": tracemalloc.is_tracing(), "frames": mon.cfg["tracing_frames"],
                          "changes": entry["changes"], "version": mon.store.version})


async def memory_trends(request: web.Request) -> web.Response:
    hours = _hours(request, 24)
    mon = _mon(request)
    live = mon.live()
    agg, snaps, res = mon.window(hours * 3600, live)  # a leak is one process's: this instance's memory only
    await asyncio.sleep(0)
    out = report.memory_trends(snaps, hours, live)
    return json_response({"coverage": report.coverage(agg, hours * 3600, res), **out})


async def run_gc(request: web.Request) -> web.Response:
    mon = _mon(request)
    body = await read_object(request)
    only(body, ("generation", "trim"))
    gen = body.get("generation", 2)
    if isinstance(gen, bool) or not isinstance(gen, int) or not 0 <= gen <= 2:
        raise validation_error("generation", "must be 0, 1 or 2")
    trim = body.get("trim", True)
    if not isinstance(trim, bool):
        raise validation_error("trim", "must be a boolean")
    out = memory.collect(gen, trim)
    await mon.history.add_event("gc", {k: out[k] for k in ("objects_freed", "rss_freed_bytes", "duration_ms")})
    return json_response(out)


# ---- tuning --------------------------------------------------------------------
async def optimize(request: web.Request) -> web.Response:
    mon = _mon(request)
    store = mon.store
    body = await read_object(request, allow_empty=False)
    only(body, OPTIMIZE_FIELDS)
    # validation_mode is read by the text handlers, enable_caching by the cache: both live here only
    entries = await store.update_many({"monitoring": dict(body)}, source="api:/internal/monitoring/optimize",
                                      **actor(request))
    applied = {f"{e['section']}.{k}": v for e in entries for k, v in e["changes"].items()}
    if entries:
        await mon.history.add_event("optimize", {"applied": applied})
    return json_response({"optimization_applied": applied or False,
                          "reason": "applied" if applied else "already in effect",
                          "configuration": {k: store.get("monitoring")[k] for k in OPTIMIZE_FIELDS},
                          "validation_memo": request.app[CTX].text.memo.stats(),  # measured: reuse so far
                          "version": store.version})


def _public(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in INTERNAL_FIELDS}


async def get_configuration(request: web.Request) -> web.Response:
    mon = _mon(request)
    return json_response({"configuration": _public(mon.cfg), "version": mon.store.version,
                          "admission": mon.admission.status(), "background_tasks": mon.tasks.status(),
                          "history": mon.history.stats()})


async def configure(request: web.Request) -> web.Response:
    mon = _mon(request)
    body = await read_object(request, allow_empty=False)
    mon.store.refuse_internal("monitoring", body)  # emergency_mode, emergency_saved: POST .../emergency-mode
    entry = await mon.store.update("monitoring", body, source="api:/internal/monitoring/configure",
                                   **actor(request))
    if entry["changes"]:
        await mon.history.add_event("configure", {"changes": entry["changes"], "previous": entry["previous"]})
    return json_response({"configuration": _public(mon.cfg), "changes": entry["changes"],
                          "previous": entry["previous"], "version": mon.store.version,
                          "admission": mon.admission.status(), "history": mon.history.stats()})


# ---- benchmarks ----------------------------------------------------------------
def _base_url(request: web.Request) -> str:
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if not sock:
        raise ApiError(503, "NO_LISTENING_SOCKET", "cannot tell which address this service listens on")
    host, port = sock[0], sock[1]
    if host in ("0.0.0.0", "", None):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def benchmark(request: web.Request) -> web.Response:
    mon = _mon(request)
    body = await read_object(request)
    job = await mon.benchmarks.start(body, _base_url(request))
    return json_response({"job_id": job["id"], "status": job["status"], "progress": job["progress"],
                          "config": job["config"], "results_url": f"{P}/benchmark/results?id={job['id']}"},
                         status=202)


async def benchmark_results(request: web.Request) -> web.Response:
    return json_response(await _mon(request).benchmarks.results(request.query.get("id")))


async def benchmark_cancel(request: web.Request) -> web.Response:
    job = await _mon(request).benchmarks.cancel()
    return json_response({"job_id": job["id"], "status": job["status"]})


async def save_baseline(request: web.Request) -> web.Response:
    body = await read_object(request)
    only(body, ("job_id",))
    if "job_id" in body and not isinstance(body["job_id"], str):
        raise validation_error("job_id", "must be a string")
    baseline = await _mon(request).benchmarks.save_baseline(body.get("job_id"))
    return json_response({"saved": True, "baseline": baseline})


async def get_baseline(request: web.Request) -> web.Response:
    b = await _mon(request).benchmarks.load_baseline()
    return json_response({"baseline": b, "status": "saved" if b else "no_baseline"})


async def compare_baseline(request: web.Request) -> web.Response:
    threshold = query_number(request, "threshold_percent", None, 1, 1000) if "threshold_percent" in request.query \
        else None
    return json_response(await _mon(request).benchmarks.compare(request.query.get("id"), threshold))


# ---- reports -------------------------------------------------------------------
async def performance_report(request: web.Request) -> web.Response:
    mon = _mon(request)
    days = query_number(request, "days", 7, 0.001, 400)
    seconds = days * 86400
    live = mon.live()
    agg, snaps, res, instances = await _service_window(request, mon, seconds, live)
    th = report.thresholds(mon.store)
    trend_src = snaps + ([live] if live.get("seconds") else [])
    mem = report.memory_trends(snaps, days * 24, live)
    events = [e for e in mon.history.events if e["ts"] >= agg["start"] - 1] if agg["start"] else list(mon.history.events)
    return json_response({
        "days": days, "generated_at": report.now_iso(), "coverage": report.coverage(agg, seconds, res),
        "instances": instances,
        "summary": S.totals(agg), "kpis": report.kpi_summary(agg, th),
        "performance_trends": report.performance_trends(trend_src, days),
        "bottlenecks": report.bottlenecks(agg, th, _sample_every(mon.store)),
        "optimization_opportunities": report.opportunities(agg, th, mon.store, mem, mon.history.stats(),
                                                           _sample_every(mon.store)),
        "slow_endpoints": report.slow_endpoints(agg, th, 5, "api", 1)["endpoints"],
        "memory_trend": {k: mem[k] for k in ("trend", "leak_suspected", "growth_mb", "verdict")},
        "events": events[-100:]})


async def history_view(request: web.Request) -> web.Response:
    hours, agg, snaps, res, mon, instances = await _window(request, 1)
    points = []
    for s in snaps:
        t = S.totals(s)
        points.append({"start": s["start"], "ts": s["ts"], "seconds": s["seconds"], **t})
    return json_response({"window_hours": hours, "coverage": report.coverage(agg, hours * 3600, res),
                          "instances": instances, "stats": mon.history.stats(), "snapshots": points})


async def take_snapshot(request: web.Request) -> web.Response:
    mon = _mon(request)
    snap = await mon.take_snapshot()
    return json_response({"snapshot": {"start": snap["start"], "ts": snap["ts"], **S.totals(snap)},
                          "stats": mon.history.stats()})


async def events(request: web.Request) -> web.Response:
    mon = _mon(request)
    limit = query_number(request, "limit", 100, 1, 100_000, integer=True)
    kind = request.query.get("kind")
    evs = [e for e in mon.history.events if kind is None or e["kind"] == kind]
    return json_response({"events": evs[-limit:][::-1], "total": len(evs)})


async def background_tasks(request: web.Request) -> web.Response:
    mon = _mon(request)
    return json_response({**mon.tasks.status(), "recent": [r.to_dict() for r in list(mon.tasks.recent)[::-1]]})


# ---- emergency mode --------------------------------------------------------------
async def emergency_get(request: web.Request) -> web.Response:
    return json_response(emergency.status(_mon(request).store))


async def emergency_post(request: web.Request) -> web.Response:
    mon = _mon(request)
    body = await read_object(request)
    only(body, ("enabled", "reason"))
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise validation_error("enabled", "must be a boolean")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise validation_error("reason", "must be a string of at most 500 characters")
    if enabled:
        changed, saved, entries = await emergency.enable(mon.store, reason, **actor(request))
    else:
        changed, saved, entries = await emergency.disable(mon.store, **actor(request))
    applied = {}
    for e in entries:
        for k, v in e["changes"].items():
            if k not in INTERNAL_FIELDS:
                applied.setdefault(e["section"], {})[k] = v
    if changed:
        await mon.history.add_event("emergency_mode", {"enabled": enabled, "reason": reason, "applied": applied,
                                                       "previous": saved})
    return json_response({"emergency_mode": mon.cfg["emergency_mode"], "changed": changed,
                          "message": ("emergency mode on" if enabled else "emergency mode off: previous config restored")
                          if changed else f"emergency mode was already {'on' if enabled else 'off'}",
                          "applied": applied, ("saved" if enabled else "restored"): saved,
                          "version": mon.store.version, "admission": mon.admission.status()})


def register(app: web.Application, ctx) -> None:
    if ctx.monitoring is None:
        ctx.monitoring = Monitor(ctx)  # started and stopped by service/app.py:lifecycle
    r = app.router
    r.add_get(f"{P}/slow-endpoints", slow_endpoints)
    r.add_get(f"{P}/request-patterns", request_patterns)
    r.add_get(f"{P}/bottlenecks", bottlenecks)
    r.add_get(f"{P}/system-load", system_load)
    r.add_get(f"{P}/loop-holds", loop_holds)
    r.add_post(f"{P}/loop-holds/reset", loop_holds_reset)
    r.add_get(f"{P}/memory-analysis", memory_analysis)
    r.add_get(f"{P}/memory-hotspots", memory_hotspots)
    r.add_post(f"{P}/memory-hotspots", memory_hotspots_post)
    r.add_get(f"{P}/memory-trends", memory_trends)
    r.add_post(f"{P}/gc", run_gc)
    r.add_post(f"{P}/optimize", optimize)
    r.add_get(f"{P}/configure", get_configuration)
    r.add_post(f"{P}/configure", configure)
    r.add_post(f"{P}/benchmark", benchmark)
    r.add_post(f"{P}/benchmark/cancel", benchmark_cancel)
    r.add_get(f"{P}/benchmark/results", benchmark_results)
    r.add_get(f"{P}/benchmark/baseline", get_baseline)
    r.add_post(f"{P}/benchmark/baseline", save_baseline)
    r.add_get(f"{P}/compare-baseline", compare_baseline)
    r.add_get(f"{P}/performance-report", performance_report)
    r.add_get(f"{P}/emergency-mode", emergency_get)
    r.add_post(f"{P}/emergency-mode", emergency_post)
    r.add_get(f"{P}/history", history_view)
    r.add_post(f"{P}/snapshot", take_snapshot)
    r.add_get(f"{P}/events", events)
    r.add_get(f"{P}/tasks", background_tasks)
