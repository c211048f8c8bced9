"""Request analytics and snapshot arithmetic: quantiles, merging, hourly roll-ups."""
from __future__ import annotations

import random
import time

from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.monitoring import snapshot as S
from service.monitoring.analytics import RequestAnalytics, merge_route, quantile, route_summary
from service.monitoring.history import History, decode, encode


def exact_q(vals, q):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(q * len(vals)))]


def test_quantiles_within_bucket_error():
    rnd = random.Random(7)
    vals = [rnd.lognormvariate(-4, 1.2) for _ in range(20000)]  # ~18 ms median, long tail
    a = RequestAnalytics()
    for v in vals:
        a.record("/x", "GET", 200, v, 100, 1000)
    routes, _ = a.swap()
    r = routes["GET /x"]
    for q in (0.5, 0.95, 0.99):
        est = quantile(r["lat"], q, r["max"])
        assert abs(est - exact_q(vals, q)) / exact_q(vals, q) < 0.05
    assert r["n"] == 20000 and abs(r["sum"] - sum(vals)) < 1e-6
    assert a.routes == {}  # swapped out


def test_merge_equals_single_pass():
    rnd = random.Random(1)
    vals = [rnd.uniform(0.001, 0.5) for _ in range(3000)]
    whole, parts = RequestAnalytics(), []
    for i, v in enumerate(vals):
        whole.record("/r", "POST", 200 if i % 10 else 503, v, i, 2 * i)
    for chunk in (vals[:1000], vals[1000:2500], vals[2500:]):
        a = RequestAnalytics()
        for v in chunk:
            a.record("/r", "POST", 200, v, 10, 20)
        parts.append(a.swap()[0]["POST /r"])
    merged = {}
    for p in parts:
        merge_route(merged, p)
    w = whole.swap()[0]["POST /r"]
    assert merged["lat"] == w["lat"] and merged["n"] == w["n"]
    s = route_summary(w)
    assert s["error_rate"] == 0.1 and s["status"] == {"200": 2700, "503": 300}


def test_payload_sizes_and_operations():
    a = RequestAnalytics()
    a.record("/v1/text/process", "POST", 200, 0.01, 300, 5000, "sentiment")
    a.record("/v1/text/process", "POST", 200, 0.01, None, 70, "qa")
    routes, ops = a.swap()
    r = routes["POST /v1/text/process"]
    assert r["req_n"] == 1 and r["req_sum"] == 300 and r["resp_n"] == 2 and r["resp_sum"] == 5070
    assert ops == {"sentiment": 1, "qa": 1}


def _snap(start: float, seconds: float, n: int, rss: int) -> dict:
    a = RequestAnalytics()
    for _ in range(n):
        a.record("/r", "GET", 200, 0.01, None, 10)
    routes, ops = a.swap()
    s = S.empty()
    s.pop("count")
    s.update(start=start, ts=start + seconds, seconds=seconds, routes=routes, ops=ops)
    s["mem"] = {"rss": rss, "rss_max": rss, "rss_sum": rss, "samples": 1, "limit": 10 * rss, "tracemalloc": None}
    return s


async def test_history_windows_use_hourly_rollups_beyond_minute_retention():
    store = ConfigStore(SECTIONS, env={})
    await store.update("monitoring", {"retention_hours": 0.5, "snapshot_interval_seconds": 60})
    h = History(store)
    now = time.time()
    start = (now // 3600 - 3) * 3600  # three whole hours ago
    t = start
    while t + 60 <= now:
        await h.add(_snap(t, 60, 2, 100))
        t += 60
    assert len(h.minutes) <= 31  # pruned to 30 minutes
    total = sum(1 for _ in range(int((t - start) // 60))) * 2
    agg, snaps, res = h.window(4 * 3600)
    assert res == "hour"
    assert agg["routes"]["GET /r"]["n"] == total  # nothing lost to the minute retention
    agg, _, res = h.window(600)
    assert res == "minute" and agg["routes"]["GET /r"]["n"] == 20


async def test_max_events_and_compression():
    store = ConfigStore(SECTIONS, env={})
    await store.update("monitoring", {"max_events": 10, "enable_compression": True})
    h = History(store)
    now = time.time()
    for i in range(25):
        await h.add(_snap(now - 100 + i, 1, 1, 100))
    assert len(h.minutes) == 10
    assert all(isinstance(b, bytes) and b[:1] == b"z" for _, b in h.minutes)
    assert h.window(3600)[0]["routes"]["GET /r"]["n"] == 10
    await store.update("monitoring", {"enable_compression": False})
    h.recompress()
    assert all(isinstance(b, dict) for _, b in h.minutes)
    s = _snap(now, 1, 3, 5)
    assert decode(encode(s, True)) == decode(encode(s, False))


def test_a_histogram_bucket_read_through_the_latency_bucket_is_the_bisected_one():
    # the metrics layer finds a request's Prometheus bucket from its analytics bucket (one bisect, not two)
    import random
    from bisect import bisect_left

    from exporter.metrics import HTTP_BUCKETS, OTHER_HTTP_BUCKETS
    from service.monitoring.analytics import LAT_EDGES, bucket_map
    rng = random.Random(7)
    for bounds in ((*HTTP_BUCKETS, float("inf")), (*OTHER_HTTP_BUCKETS, float("inf")), (0.0012345, float("inf"))):
        table = bucket_map(bounds)
        assert len(table) == len(LAT_EDGES) + 1 and -1 in table  # (some bound splits a bucket: bisected then)
        xs = [*bounds[:-1], *LAT_EDGES, 0.0, 1e-9, 500.0, 1e6] + [10 ** rng.uniform(-6, 3) for _ in range(20_000)]
        for x in xs:
            j = table[bisect_left(LAT_EDGES, x)]
            assert j == -1 or j == bisect_left(bounds, x), (bounds, x)


def test_the_request_counts_are_the_histograms_sums():
    from service.monitoring.analytics import RouteAcc, add
    acc = RouteAcc()
    add(acc, 200, 0.001, 100, None)
    add(acc, 404, 0.5, None, 30)
    add(acc, 200, 0.002, 5000, 70)
    d = acc.to_dict()
    assert (d["n"], d["req_n"], d["resp_n"], d["status"]) == (3, 2, 2, {"200": 2, "404": 1})
    assert (d["req_sum"], d["resp_sum"], d["max"]) == (5100, 100, 0.5)
