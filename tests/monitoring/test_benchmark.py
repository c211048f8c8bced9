"""Self-benchmark jobs, baselines and regression comparison."""
from __future__ import annotations

import asyncio

from service.monitoring.benchmark import compare

M = "/internal/monitoring"


async def wait_done(c, job_id, timeout=60):
    for _ in range(int(timeout * 4)):
        d = await (await c.get(f"{M}/benchmark/results?id={job_id}")).json()
        if d["status"] not in ("queued", "running"):
            return d
        await asyncio.sleep(0.25)
    raise AssertionError(f"benchmark {job_id} did not finish: {d}")


async def test_benchmark_runs_with_progress_and_baseline(mon_client):
    c = await mon_client()
    d = await (await c.get(f"{M}/benchmark/results")).json()
    assert d["status"] == "none"
    r = await c.post(f"{M}/benchmark", json={"include_cache": True, "include_ai_service": True,
                                             "include_resilience": False, "duration_seconds": 3, "concurrency": 4})
    assert r.status == 202, await r.text()
    job = (await r.json())["job_id"]
    r2 = await c.post(f"{M}/benchmark", json={"duration_seconds": 2})
    assert r2.status == 409 and (await r2.json())["details"]["job_id"] == job
    seen = set()
    for _ in range(40):
        d = await (await c.get(f"{M}/benchmark/results")).json()
        seen.add(d["progress"])
        if d["status"] == "completed":
            break
        await asyncio.sleep(0.25)
    d = await wait_done(c, job)
    assert d["status"] == "completed" and d["progress"] == 1.0
    assert any(0 < p < 1 for p in seen)  # progress moved while it ran
    sc = {s["name"]: s for s in d["results"]["scenarios"]}
    assert set(sc) == {"http_baseline", "cache_hit", "ai_service"}
    for s in sc.values():
        assert s["requests"] > 0 and s["error_rate"] == 0.0 and s["p95_ms"] > 0 and s["requests_per_second"] > 0
    side = d["results"]["service_side"]
    assert side["ai_calls"] >= sc["ai_service"]["requests"]  # every unique text reached the provider
    # the service saw that traffic too
    pat = await (await c.get(f"{M}/request-patterns?hours=1")).json()
    routes = {x["endpoint"]: x["requests"] for x in pat["routes"]}
    assert routes["GET /v1/text/operations"] >= sc["http_baseline"]["requests"]
    cmp = await (await c.get(f"{M}/compare-baseline")).json()
    assert cmp["status"] == "no_baseline" and cmp["regression"] is False
    r = await c.post(f"{M}/benchmark/baseline", json={"job_id": job})
    assert r.status == 200 and (await r.json())["baseline"]["job_id"] == job
    cmp = await (await c.get(f"{M}/compare-baseline?threshold_percent=1000")).json()
    assert cmp["status"] == "ok" and cmp["regression"] is False
    assert {s["scenario"] for s in cmp["scenarios"]} == set(sc)
    assert all(s["deltas"]["p95_ms"]["change"] == 0 for s in cmp["scenarios"])  # itself


async def test_benchmark_bad_bodies(mon_client):
    c = await mon_client()
    for body, field in (({"duration_seconds": 0}, "duration_seconds"), ({"duration_seconds": 10_000}, "duration_seconds"),
                        ({"include_cache": "yes"}, "include_cache"), ({"endpoints": []}, "endpoints"),
                        ({"concurrency": 0}, "concurrency")):
        r = await c.post(f"{M}/benchmark", json=body)
        assert r.status == 422 and (await r.json())["details"]["field"] == field, body
    r = await c.post(f"{M}/benchmark/baseline")
    assert r.status == 409
    r = await c.get(f"{M}/benchmark/results?id=nope")
    assert r.status == 404


def _run(**scen):
    return {"scenarios": [{"name": n, **v} for n, v in scen.items()]}


def test_compare_flags_regressions_and_ignores_noise():
    base = _run(a={"p50_ms": 5, "p95_ms": 10, "p99_ms": 12, "requests_per_second": 1000, "error_rate": 0.0},
                b={"p50_ms": 0.2, "p95_ms": 0.4, "p99_ms": 0.5, "requests_per_second": 5000, "error_rate": 0.0})
    same = compare(base, base, 20)
    assert same["regression"] is False and same["regressions"] == []
    worse = _run(a={"p50_ms": 6, "p95_ms": 15, "p99_ms": 20, "requests_per_second": 700, "error_rate": 0.05},
                 b={"p50_ms": 0.3, "p95_ms": 0.7, "p99_ms": 0.9, "requests_per_second": 4900, "error_rate": 0.0})
    out = compare(base, worse, 20)
    a = next(s for s in out["scenarios"] if s["scenario"] == "a")
    b = next(s for s in out["scenarios"] if s["scenario"] == "b")
    assert out["regression"] is True and a["regression"] is True and len(a["flags"]) == 3
    assert a["deltas"]["p95_ms"]["change_percent"] == 50.0
    assert b["regression"] is False  # +0.3 ms p95 is +75 % but under 1 ms: noise
    assert compare(base, worse, 60)["scenarios"][0]["flags"] == [
        "error rate up 5.0 points"]


async def test_the_benchmark_load_is_exempt_from_rate_limits_and_needs_no_client_key(mon_client):
    """The load generator holds no API key: its X-Benchmark token (from the deployment secret) authenticates it
    and exempts it from a per-client limit a client could not get past."""
    c = await mon_client(RATE_LIMIT_ENABLED="true", RATE_LIMIT_REQUESTS_PER_MINUTE="1", RATE_LIMIT_BURST_SIZE="0")
    statuses = [(await c.get("/v1/text/operations")).status for _ in range(3)]
    assert 429 in statuses                                     # a client is limited
    r = await c.post(f"{M}/benchmark", json={"include_cache": False, "include_ai_service": False,
                                             "duration_seconds": 1, "concurrency": 2})
    assert r.status == 202, await r.text()
    d = await wait_done(c, (await r.json())["job_id"])
    assert d["status"] == "completed", d
    (sc,) = d["results"]["scenarios"]
    assert sc["requests"] > 5 and sc["status"] == {"200": sc["requests"]}, sc
