"""Monitoring across instances: every worker or replica sharing Redis counts in /internal/monitoring."""
import json
import urllib.error
import urllib.request

from service.monitoring import snapshot as S
from service.monitoring.history import INSTANCES
from tests.helpers import API_KEY, sync_redis

TEXT = "Prometheus scrapes metrics from instrumented jobs and evaluates alerting rules over them every minute."


def _snap(start: float, seconds: float, requests: int, rss: int, busy: float) -> dict:
    s = S.empty()
    s.update(start=start, ts=start + seconds, seconds=seconds, count=1)
    s["routes"] = {"POST /v1/text/summarize": {"n": requests, "sum": 0.01 * requests, "max": 0.01,
                                               "lat": {"50": requests}, "status": {"200": requests}}}
    s["mem"].update(rss=rss, rss_max=rss, rss_sum=rss, samples=1, limit=8 << 30)
    s["cpu"].update(busy=busy, seconds=seconds, cores=2, percent_max=busy / seconds / 2 * 100)
    s["cache"].update(hits=requests, entries=10, memory_bytes=1000)
    return s


def test_combine_adds_side_by_side_and_keeps_one_period():
    a, b = _snap(100.0, 60.0, 30, 100 << 20, 6.0), _snap(101.0, 59.0, 90, 50 << 20, 12.0)
    c = S.combine([a, b])
    t = S.totals(c)
    assert t["requests"] == 120 and c["seconds"] == 60.0 and c["start"] == 100.0
    assert t["requests_per_second"] == 2.0  # 120 in one minute, not in two
    assert c["mem"]["rss"] == 150 << 20 and t["rss_avg_bytes"] == 150 << 20
    assert c["cpu"]["busy"] == 18.0 and c["cpu"]["cores"] == 2 and t["cpu_percent"] == 15.0
    assert c["cache"]["entries"] == 20 and c["cache"]["hits"] == 120
    # periods end to end, then side by side: the same as the other way round
    later = S.combine([_snap(160.0, 60.0, 3, 100 << 20, 1.0), _snap(161.0, 59.0, 9, 50 << 20, 2.0)])
    assert S.totals(S.merge([c, later]))["requests"] == 132
    assert S.merge([c, later])["seconds"] == 120.0


def _call(url: str, method: str = "GET", body: dict | None = None) -> dict:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=15) as r:
        return json.loads(r.read())


def _summarize_count(doc: dict) -> int:
    return sum(e["requests"] for e in doc["endpoints"] if e["endpoint"] == "POST /v1/text/summarize")


def test_instances_sharing_redis_are_counted_together(service_factory, any_redis_url):
    redis_url = any_redis_url
    env = dict(REDIS_URL=redis_url, MONITORING_SNAPSHOT_INTERVAL="3600")
    a, b = service_factory(**env), service_factory(**env)
    for svc, n in ((a, 3), (b, 5)):
        for _ in range(n):
            _call(f"{svc.url}/v1/text/summarize", "POST", {"text": TEXT})
    _call(f"{b.url}/internal/monitoring/snapshot", "POST", {})  # b's requests reach Redis
    r = sync_redis(redis_url)
    r.hset(INSTANCES, "gone:1:0", "1.0")  # an instance last seen in 1970: forgotten, not counted
    # a counts its own live interval and b's last snapshot
    both = _call(f"{a.url}/internal/monitoring/slow-endpoints")
    assert _summarize_count(both) == 8
    assert len(both["instances"]["included"]) == 2 and both["instances"]["scope"] == "service"
    assert not r.hexists(INSTANCES, "gone:1:0")
    assert _summarize_count(_call(f"{a.url}/internal/monitoring/slow-endpoints?instances=this")) == 3
    patterns = _call(f"{a.url}/internal/monitoring/request-patterns")
    assert {o["operation"]: o["requests"] for o in patterns["operations"]}["summarize"] == 8
    report = _call(f"{a.url}/internal/monitoring/performance-report?days=1")
    assert report["summary"]["requests"] >= 8 and len(report["instances"]["included"]) == 2
    # b has no snapshot of a yet: it sees only itself until a takes one
    assert _summarize_count(_call(f"{b.url}/internal/monitoring/slow-endpoints")) == 5
    _call(f"{a.url}/internal/monitoring/snapshot", "POST", {})
    assert _summarize_count(_call(f"{b.url}/internal/monitoring/slow-endpoints")) == 8


def test_without_redis_an_instance_reports_itself(service_factory):
    svc = service_factory()
    _call(f"{svc.url}/v1/text/summarize", "POST", {"text": TEXT})
    doc = _call(f"{svc.url}/internal/monitoring/slow-endpoints")
    assert doc["instances"]["scope"] == "this instance" and len(doc["instances"]["included"]) == 1
    assert _summarize_count(doc) == 1
    req = urllib.request.Request(f"{svc.url}/internal/monitoring/slow-endpoints?instances=both",
                                 headers={"X-API-Key": API_KEY})
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("expected 422")
    except urllib.error.HTTPError as e:
        assert e.code == 422 and json.loads(e.read())["details"]["field"] == "instances"


async def test_peers_give_hour_rollups_for_long_windows(any_redis_url):
    redis_url = any_redis_url
    import time

    from service.config.sections import SECTIONS
    from service.config.store import ConfigStore
    from service.monitoring.history import History
    from service.redis_client import make_redis

    store = ConfigStore(SECTIONS, env={})
    client = make_redis(redis_url)
    mine, theirs = History(store, client, "a:1:0"), History(store, client, "b:1:0")
    now = time.time()
    hour = now // 3600 * 3600
    snaps = [_snap(hour - 3600 + 10, 60.0, 4, 1 << 20, 1.0), _snap(hour - 3600 + 70, 60.0, 6, 1 << 20, 1.0),
             _snap(hour + 1, 60.0, 5, 1 << 20, 1.0)]  # the last hour twice, this hour once
    for snap in snaps:
        await theirs.add(snap)
    assert await mine.peers(now - 3 * 3600, hourly=False) == {"b:1:0": snaps}
    hours = (await mine.peers(now - 3 * 3600, hourly=True))["b:1:0"]
    assert [S.totals(h)["requests"] for h in hours] == [10, 5]  # the finished hour, then the open one
    assert await theirs.peers(now - 3 * 3600, hourly=True) == {}  # an instance is not its own peer
    await client.aclose()


async def test_peers_read_a_long_minutes_list_back_to_the_window(any_redis_url):
    redis_url = any_redis_url
    import time

    from service.config.sections import SECTIONS
    from service.config.store import ConfigStore
    from service.monitoring.history import History
    from service.redis_client import make_redis

    store = ConfigStore(SECTIONS, env={})
    client = make_redis(redis_url)
    mine, theirs = History(store, client, "a:2:0"), History(store, client, "b:2:0")
    now = time.time()
    for i in range(200):  # one a second: more per minute than the 60 s interval suggests (manual snapshots)
        await theirs.add(_snap(now - 200 + i, 1.0, 1, 1 << 20, 0.1))
    got = (await mine.peers(now - 150.5, hourly=False))["b:2:0"]
    # ts = start + 1 s: those that end after now - 150.5, read back over three pages of 64
    assert [s["start"] for s in got] == [now - 200 + i for i in range(49, 200)]
    await client.aclose()
