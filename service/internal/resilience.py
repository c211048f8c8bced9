"""/internal/resilience: presets, breakers, analysis, optimisations, benchmark.

Thin handlers: every change goes through the config store (validated, all or
nothing, 422 naming the field); the numbers come from service/resilience.
"""
from __future__ import annotations

import time

from aiohttp import web

from service.context import CTX
from service.config.schema import ConfigValidationError
from service.errors import ApiError
from service.http import json_response, only, read_object
from service.internal.audit import actor
from service.providers.base import OPERATIONS
from service.resilience import analysis
from service.resilience.benchmark import validate_request
from service.resilience.strategies import PRESETS, STRATEGIES

P = "/internal/resilience"


def _res(request: web.Request):
    return request.app[CTX].resilience


def _changes(entries: list[dict]) -> dict:
    return {e["section"]: e["changes"] for e in entries}


def current_config(res) -> dict:
    store = res.ctx.store
    rc = store.get("resilience")
    ai = store.get("ai")
    return {
        "preset": rc["preset"], "preset_description": PRESETS[rc["preset"]]["description"],
        "operations": {op: res.effective(op).as_dict() for op in OPERATIONS},
        "settings": {"resilience": dict(rc), "ai": {k: ai[k] for k in ("timeout_seconds", "max_retries",
                                                                        "batch_processing", "provider")},
                     "batching": dict(store.get("batching"))},
        "strategies": {n: vars(s) for n, s in STRATEGIES.items()},
        "presets": {n: p for n, p in PRESETS.items()},
        "config_version": store.version,
    }


# ---- config ----------------------------------------------------------------------------
async def apply_preset(request: web.Request) -> web.Response:
    """Switch the resilience preset (operation -> strategy) live."""
    res = _res(request)
    body = await read_object(request, allow_empty=False)
    only(body, ("preset",))
    if "preset" not in body:
        raise ApiError(422, "VALIDATION_ERROR", "preset: required; one of " + ", ".join(PRESETS), field="preset")
    previous = res.ctx.store.get("resilience")["preset"]
    entry = await res.ctx.store.update("resilience", {"preset": body["preset"]},
                                       source=f"api:{P}/config/apply-preset", **actor(request))
    return json_response({"status": "applied", "preset": body["preset"], "previous_preset": previous,
                          "changes": entry["changes"], "config": current_config(res)})


async def get_current(request: web.Request) -> web.Response:
    """Effective resilience config per operation (strategy, retries, deadline, breaker)."""
    return json_response(current_config(_res(request)))


async def optimize_config(request: web.Request) -> web.Response:
    """Tune for speed: performance mode, deadline ceiling, breaker threshold."""
    res = _res(request)
    body = await read_object(request, allow_empty=False)
    only(body, ("prioritize_speed", "max_timeout_seconds", "circuit_breaker_threshold"))
    ch: dict[str, dict] = {"ai": {}, "resilience": {}}
    if "prioritize_speed" in body:
        if not isinstance(body["prioritize_speed"], bool):
            raise ApiError(422, "VALIDATION_ERROR", "prioritize_speed: must be a boolean", field="prioritize_speed")
        ch["resilience"]["performance_mode"] = body["prioritize_speed"]
    if "max_timeout_seconds" in body:
        ch["ai"]["timeout_seconds"] = body["max_timeout_seconds"]
    if "circuit_breaker_threshold" in body:
        ch["resilience"]["failure_threshold"] = body["circuit_breaker_threshold"]
    try:
        entries = await res.ctx.store.update_many({k: v for k, v in ch.items() if v},
                                                  source=f"api:{P}/config/optimize-performance", **actor(request))
    except ConfigValidationError as e:
        raise e.renamed({"timeout_seconds": "max_timeout_seconds",
                         "failure_threshold": "circuit_breaker_threshold"}) from None
    return json_response({"status": "applied", "changes": _changes(entries),
                          "mapping": {"prioritize_speed": "resilience.performance_mode",
                                      "max_timeout_seconds": "ai.timeout_seconds (deadline of every AI call)",
                                      "circuit_breaker_threshold": "resilience.failure_threshold"},
                          "config": current_config(res)})


# ---- circuit breakers ----------------------------------------------------------------------
async def configure_breakers(request: web.Request) -> web.Response:
    """Set breaker failure threshold, recovery timeout, half-open probes, performance mode."""
    res = _res(request)
    body = await read_object(request, allow_empty=False)
    fields = ("failure_threshold", "recovery_timeout", "half_open_max_calls", "performance_mode")
    only(body, fields)
    entry = await res.ctx.store.update("resilience", body, source=f"api:{P}/circuit-breakers/configure",
                                       **actor(request))
    return json_response({"status": "applied", "changes": entry["changes"],
                          "settings": {k: res.ctx.store.get("resilience")[k] for k in fields},
                          "note": "thresholds and recovery timeouts are scaled per operation by its strategy",
                          "circuit_breakers": [res.breaker_view(b) for b in res.breakers.values()]})


async def list_breakers(request: web.Request) -> web.Response:
    """Every circuit breaker with its state, counts and effective settings."""
    res = _res(request)
    views = [res.breaker_view(b) for b in res.breakers.values()]
    counts = {"closed": 0, "open": 0, "half-open": 0}
    for v in views:
        counts[v["state"]] = counts.get(v["state"], 0) + 1
    return json_response({"circuit_breakers": {v["name"]: v for v in views}, "summary": counts,
                          "shared_state": res.shared.info(),
                          "settings": dict(res.ctx.store.get("resilience")), "timestamp": time.time()})


async def reset_breaker(request: web.Request) -> web.Response:
    """Close a circuit breaker (or 'all') and clear its failure count."""
    res = _res(request)
    name = request.match_info["name"]
    if name != "all" and name not in res.breakers:
        raise ApiError(404, "BREAKER_NOT_FOUND", f"no circuit breaker {name!r}; known: "
                       f"{', '.join(sorted(res.breakers)) or 'none'} (or 'all')", field="name")
    return json_response({"status": "reset", "reset": res.reset_breaker(name)})


# ---- analysis ------------------------------------------------------------------------------
async def performance_metrics(request: web.Request) -> web.Response:
    """Measured AI-call outcomes, retries, rejections and latency per operation."""
    return json_response(analysis.performance_metrics(_res(request)))


async def performance_impact(request: web.Request) -> web.Response:
    """Latency added by retries and breaker decisions, and time saved by failing fast (measured)."""
    return json_response(analysis.performance_impact(_res(request)))


async def config_analysis(request: web.Request) -> web.Response:
    """The effective config against measured latency and errors, with recommendations."""
    return json_response(analysis.config_analysis(_res(request)))


async def apply_optimizations(request: web.Request) -> web.Response:
    """Apply the measured recommendations (or dry_run) and record what changed."""
    res = _res(request)
    body = await read_object(request, allow_empty=True)
    only(body, ("dry_run",))
    dry = body.get("dry_run", False)
    if not isinstance(dry, bool):
        raise ApiError(422, "VALIDATION_ERROR", "dry_run: must be a boolean", field="dry_run")
    found = analysis.config_analysis(res)
    recs = found["recommendations"]
    changes: dict[str, dict] = {}
    for r in recs:
        changes.setdefault(r["section"], {})[r["field"]] = r["suggested"]
    entries = [] if dry or not changes else await res.ctx.store.update_many(
        changes, source=f"api:{P}/apply-performance-optimizations", **actor(request))
    record = {"time": time.time(), "dry_run": dry, "applied": [] if dry else recs,
              "changes": _changes(entries), "config_version": res.ctx.store.version,
              "measured": found["summary"],
              "message": ("no change: " + ("not enough measurements yet (needs "
                                             f"{analysis.MIN_SAMPLES} attempts)" if not found["data_sufficient"]
                                             else "the measured behaviour fits the current config"))
              if not recs else f"{len(recs)} change(s) {'proposed' if dry else 'applied'}"}
    if not dry:
        res.optimizations.append(record)
    return json_response({**record, "recommendations": recs, "history": list(res.optimizations)[-10:]})


# ---- benchmark -------------------------------------------------------------------------------
async def start_benchmark(request: web.Request) -> web.Response:
    """Start a bounded background load through the resilience layer; returns the job."""
    res = _res(request)
    body = await read_object(request, allow_empty=True)
    duration, conc, ops = validate_request(body)
    job = res.benchmarks.start(duration, conc, ops)
    return json_response({**job, "status_url": f"{P}/benchmark/{job['id']}"}, status=202,
                         headers={"Location": f"{P}/benchmark/{job['id']}"})


async def get_benchmark(request: web.Request) -> web.Response:
    """A benchmark job's status, progress and results (the latest without an id)."""
    res = _res(request)
    job_id = request.match_info.get("id")
    job = res.benchmarks.get(job_id) if job_id else res.benchmarks.latest()
    if job is None:
        raise ApiError(404, "BENCHMARK_NOT_FOUND", f"no benchmark {job_id!r}" if job_id else "no benchmark has run",
                       field="benchmark_id")
    return json_response(job)


async def list_benchmarks(request: web.Request) -> web.Response:
    """Recent benchmark jobs."""
    b = _res(request).benchmarks
    return json_response({"benchmarks": [b.get(i) for i in reversed(b.order)],
                          "running": (b.running() or {}).get("id")})


async def cancel_benchmark(request: web.Request) -> web.Response:
    """Stop a running benchmark job."""
    job = _res(request).benchmarks.cancel(request.match_info["id"])
    return json_response({"id": job["id"], "status": job["status"], "cancel_requested": job["status"] == "running"})


def register(app: web.Application, ctx) -> None:
    r = app.router
    r.add_post(f"{P}/config/apply-preset", apply_preset)
    r.add_get(f"{P}/config/current", get_current)
    r.add_post(f"{P}/config/optimize-performance", optimize_config)
    r.add_post(f"{P}/circuit-breakers/configure", configure_breakers)
    r.add_get(f"{P}/circuit-breakers", list_breakers)
    r.add_post(f"{P}/circuit-breakers/{{name}}/reset", reset_breaker)
    r.add_get(f"{P}/performance-metrics", performance_metrics)
    r.add_get(f"{P}/performance-impact", performance_impact)
    r.add_get(f"{P}/config-performance-analysis", config_analysis)
    r.add_post(f"{P}/apply-performance-optimizations", apply_optimizations)
    r.add_post(f"{P}/benchmark", start_benchmark)
    r.add_get(f"{P}/benchmark", get_benchmark)
    r.add_get(f"{P}/benchmarks", list_benchmarks)
    r.add_get(f"{P}/benchmark/{{id}}", get_benchmark)
    r.add_post(f"{P}/benchmark/{{id}}/cancel", cancel_benchmark)
