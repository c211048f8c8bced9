"""End to end with the real binaries: redis-server, the service, the fake upstream,
Prometheus (/usr/bin/prometheus) and Alertmanager (/usr/bin/prometheus-alertmanager)
on free loopback ports, started by the one launcher `make stack` uses
(deploy/stack.py, demo profile) from the files docker-compose.yml mounts
(deploy/prometheus.yml, deploy/alertmanager.yml through its entrypoint,
deploy/llmapi.yml); the dashboards come from the tree Grafana's compose
service mounts (tests/e2e/layout.py), where its provisioning file points.

Test overrides (and only these): the demo profile (Prometheus scrapes and
evaluates every second, Alertmanager groups with short waits), the rules of the
generator's test profile (`python -m alerts.generate --profile test`: KPI window
15s, SLO windows in seconds, every `for:` 1s), the service config below, and
loopback ports.

Scenario: good traffic -> upstream errors injected (POST /_control) -> the
critical error-rate alert and the quality SLO's fast-burn page (14.4x over
"1h"/"5m", here 30s/10s) reach the webhook sink through Alertmanager, with the
warning of the same KPI inhibited -> errors stop -> both resolved notifications
arrive.  Then every dashboard panel query must be valid PromQL
and return data from that Prometheus.  Rare-event panels read 0 without
events (`or on() vector(0)`); their metric must still have data on its own,
except the events listed in NOT_CAUSED, which this scenario does not cause.

Select with `-m e2e`; it runs in `make test` too.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import os
import time

import aiohttp
import pytest
import yaml

from alerts import generate
from exporter import mixin
from dashboards.generate import PENDING_METRICS, ZERO_FALLBACK, panel_queries
from tests.e2e.layout import CONTAINER_ROOT, Tree
from deploy import stack as launcher
from tests.helpers import API_KEY

pytestmark = pytest.mark.e2e

ETC = CONTAINER_ROOT     # /etc/llmapi, as in the containers
JOB = generate.JOB
RATE_INTERVAL = "30s"    # what Grafana's $__rate_interval becomes here
CRITICAL = "LlmapiErrorRateNeedsAttention"
FAST_BURN = "LlmapiQualityBudgetBurn"   # with long_window="1h": the fast-burn page
WARNING = "LlmapiErrorRateTargetMissed"

SERVICE_CONFIG = {
    "ai": {"max_retries": 1, "timeout_seconds": 5.0},
    "resilience": {"recovery_timeout": 1.0, "failure_threshold": 3},
    "cache": {"max_entries": 20},
    "rate_limit": {"enabled": True, "requests_per_minute": 1_000_000, "burst_size": 100_000},
    "request_size": {"max_json_size": 65536},
    "compression": {"max_decompressed_size": 32768},
}

# Rare-event counters the scenario does not cause (their panels read 0; tests elsewhere cause them).
NOT_CAUSED = {
    "llmapi_cache_l2_transitions_total": "a Redis outage (tests/cache)",
    "llmapi_cache_l2_errors_total": "a Redis outage (tests/cache)",
    "llmapi_cache_pressure_events_total": "memory pressure on the cache (tests/cache)",
    "llmapi_cache_warming_refreshes_total": "entries near expiry with warming on (tests/cache)",
    "llmapi_cache_stale_served_total": "an upstream failure over an expired entry (tests/cache)",
}


def _load(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


class Stack(launcher.Stack):
    """The stack `make stack` runs (deploy/stack.py, demo profile), on free ports, with the test's
    service config and the rules regenerated with the test's window and for:."""

    def __init__(self, tmp):
        super().__init__(str(tmp / "stack"), profile="demo", usual_ports=False, api_key=API_KEY,
                         service_config=SERVICE_CONFIG,
                         rules_text=generate.rules_yaml(mixin.TEST))
        # Grafana is not run: its dashboards are read from the tree its compose service mounts
        self.grafana_tree = Tree(tmp / "grafana", "grafana")

    svc = property(lambda self: self["llmapi"])
    upstream = property(lambda self: self["upstream"])
    sink = property(lambda self: self["sink"])
    prom = property(lambda self: self["prometheus"])
    am = property(lambda self: self["alertmanager"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("e2e"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


# ---- helpers -----------------------------------------------------------------------------
async def wait_for(pred, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await pred()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def prom_query(session, stack, q: str) -> dict:
    async with session.get(f"{stack.prom.url}/api/v1/query", params={"query": q}) as r:
        return await r.json()


async def sink_alerts(session, stack, name: str, status: str) -> list:
    async with session.get(f"{stack.sink.url}/alerts") as r:
        notes = (await r.json())["notifications"]
    return [{**a, "receiver": n["receiver"]} for n in notes for a in n["alerts"]
            if a["labels"].get("alertname") == name and a["status"] == status]


async def fast_burn(session, stack, status: str) -> list:
    return [a for a in await sink_alerts(session, stack, FAST_BURN, status) if a["labels"]["long_window"] == "1h"]


class Traffic:
    """Background API traffic: a few workers, unique texts (cache misses reach the upstream)
    or repeated ones (cache hits)."""

    def __init__(self, session, url: str, workers: int = 3, pause: float = 0.05):
        self.session, self.url, self.workers, self.pause = session, url, workers, pause
        self.n = 0
        self.statuses: dict[int, int] = {}
        self.tasks: list[asyncio.Task] = []
        self.repeat_share = 0.5

    def start(self):
        self.tasks = [asyncio.create_task(self._worker(i)) for i in range(self.workers)]

    async def stop(self):
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _worker(self, i: int):
        while True:
            self.n += 1
            n = self.n
            repeat = (n % 100) < self.repeat_share * 100
            text = (f"Prometheus scrapes metrics from instrumented jobs. Sample {n % 5 if repeat else n} "
                    "is stored locally and rules turn it into alerts for the operators.")
            op = "sentiment" if n % 4 == 0 else "summarize"
            try:
                async with self.session.post(f"{self.url}/v1/text/{op}", json={"text": text},
                                             headers={"X-API-Key": API_KEY}) as r:
                    await r.read()
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(self.pause)


async def side_requests(session, url: str) -> None:
    """One of each: 401, 422, 404 (unmatched), 413, a gzip-compressed response, a versioned request."""
    h = {"X-API-Key": API_KEY}
    body = {"text": "Prometheus scrapes metrics from instrumented jobs every second."}
    checks = [
        ("POST", "/v1/text/summarize", {"X-API-Key": "wrong"}, body, 401),
        ("POST", "/v1/text/summarize", h, {"text": "short"}, 422),
        ("GET", "/no/such/route", h, None, 404),
        ("POST", "/v1/text/summarize", h, {"text": "x" * 100_000}, 413),
        ("GET", "/openapi.json", {**h, "Accept-Encoding": "gzip"}, None, 200),
        ("POST", "/v1/text/summarize", {**h, "X-API-Version": "v1"}, body, 200),
    ]
    for method, path, headers, payload, want in checks:
        async with session.request(method, url + path, headers=headers, json=payload) as r:
            await r.read()
            assert r.status == want, (path, r.status)


async def rare_events(session, url: str) -> None:
    """A gzip body over the decoded-size cap (413), and a one-second benchmark on the background task pool."""
    h = {"X-API-Key": API_KEY}
    bomb = gzip.compress(json.dumps({"text": "metrics " * 6000}).encode())  # ~48 KB decoded, cap 32 KB
    async with session.post(url + "/v1/text/summarize", data=bomb,
                            headers={**h, "Content-Type": "application/json", "Content-Encoding": "gzip"}) as r:
        await r.read()
        assert r.status == 413, r.status
    async with session.post(url + "/internal/monitoring/benchmark", json={"duration_seconds": 1, "concurrency": 1},
                            headers=h) as r:
        assert r.status in (200, 202), await r.text()


def _pending(expr: str) -> bool:
    """The query reads an LLM metric still to come (dashboards.generate.PENDING_METRICS) that is not exported yet."""
    from exporter.metrics import REGISTRY
    exported = {m.name for m in REGISTRY.collect()}
    return any(m in expr and m not in exported for m in PENDING_METRICS)


def data_checks(expr: str) -> list[tuple[str, bool]]:
    """(query, must have data): the panel query, and for a rare-event one also the metric without its 0 fallback."""
    out = [(expr, not _pending(expr))]
    if expr.endswith(ZERO_FALLBACK):
        bare = expr[: -len(ZERO_FALLBACK)]
        out.append((bare, not any(m in bare for m in NOT_CAUSED)))
    return out


async def admission_burst(session, stack) -> int:
    """Load shedding once: one slot, no queue, a slow upstream, eight requests at once."""
    h = {"X-API-Key": API_KEY}

    async def post(path, body, url=None):
        async with session.post((url or stack.svc.url) + path, json=body, headers=h) as r:
            await r.read()
            return r.status

    assert await post("/internal/config/monitoring", {"max_concurrent_requests": 1, "queue_size": 0}) == 200
    assert await post("/_control", {"latency_ms": 300}, stack.upstream.url) == 200
    statuses = await asyncio.gather(*[post("/v1/text/summarize", {"text": f"Admission burst item {i}: "
                                                                          "metrics, alerts and dashboards."})
                                      for i in range(8)])
    assert await post("/_control", {"latency_ms": 0}, stack.upstream.url) == 200
    assert await post("/internal/config/monitoring", {"max_concurrent_requests": 0, "queue_size": 100}) == 200
    return sum(1 for s in statuses if s == 503)


# ---- the scenario ----------------------------------------------------------------------------
async def test_error_alert_reaches_sink_resolves_and_dashboards_have_data(stack):
    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        # the upstream sends x-ratelimit-remaining-* headers, as OpenAI does (the quota panel reads them)
        await _control(session, stack, ratelimit_requests=1_000_000, ratelimit_tokens=100_000_000)
        traffic = Traffic(session, stack.svc.url)
        traffic.start()
        try:
            await side_requests(session, stack.svc.url)
            await rare_events(session, stack.svc.url)
            # Prometheus scrapes the service and evaluates the generated rules
            await wait_for(lambda: _has_value(session, stack, f"llmapi:kpi_error_rate:ratio{{job=\"{JOB}\"}}"),
                           30, "the error-rate recording rule")

            # errors: the upstream fails every call -> 503s -> critical error-rate alert at the sink
            await _control(session, stack, error_rate=1.0)
            traffic.repeat_share = 0.0
            fired = await wait_for(lambda: sink_alerts(session, stack, CRITICAL, "firing"), 60,
                                   "the critical error-rate alert at the webhook sink")
            assert fired[0]["labels"]["severity"] == "critical" and fired[0]["labels"]["kpi"] == "error_rate"
            assert fired[0]["annotations"]["runbook_url"].endswith("#error-rate")
            assert fired[0]["receiver"] == "critical"
            burn = await wait_for(lambda: fast_burn(session, stack, "firing"), 60,
                                  "the quality SLO's fast-burn page at the webhook sink")
            assert burn[0]["labels"]["severity"] == "critical" and burn[0]["receiver"] == "critical"
            assert burn[0]["annotations"]["runbook_url"].endswith("#slo-quality")
            # the warning of the same KPI is firing in Prometheus but inhibited in Alertmanager
            inhibited = await wait_for(lambda: _am_inhibited(session, stack, WARNING), 20,
                                       "the warning inhibited by the critical")
            assert inhibited

            # errors stop: the alert resolves and the sink hears it
            await _control(session, stack, error_rate=0.0)
            traffic.repeat_share = 0.5
            await wait_for(lambda: sink_alerts(session, stack, CRITICAL, "resolved"), 90,
                           "the resolved notification at the webhook sink")
            await wait_for(lambda: fast_burn(session, stack, "resolved"), 90,
                           "the fast-burn page resolved at the webhook sink")
            assert traffic.statuses.get(503, 0) > 0 and traffic.statuses.get(200, 0) > 0

            shed = await admission_burst(session, stack)
            assert shed > 0
            await asyncio.sleep(3)  # a few scrapes after the last events

            # every dashboard panel query: valid PromQL with data
            problems = []
            queries = provisioned_queries(stack.grafana_tree)
            assert len(queries) >= 50
            for title, expr in queries:
                for check, need_data in data_checks(expr):
                    q = (check.replace("$__rate_interval", RATE_INTERVAL).replace("$job", JOB)
                         .replace("$instance", ".+"))
                    res = await prom_query(session, stack, q)
                    if res.get("status") != "success":
                        problems.append(f"{title}: invalid: {res.get('error')} :: {q}")
                    elif need_data and not res["data"]["result"]:
                        problems.append(f"{title}: no data :: {q}")
            assert not problems, "\n".join(problems)

            # scrape cost, for the record
            series = await prom_query(session, stack, f'scrape_samples_scraped{{job="{JOB}"}}')
            duration = await prom_query(session, stack, f'avg_over_time(scrape_duration_seconds{{job="{JOB}"}}[1m])')
            worst = await prom_query(session, stack, f'max_over_time(scrape_duration_seconds{{job="{JOB}"}}[1m])')
            print(f"\n[e2e] {len(queries)} dashboard queries answered; "
                  f"scrape of the service: {series['data']['result'][0]['value'][1]} series in "
                  f"{float(duration['data']['result'][0]['value'][1]) * 1000:.1f} ms on average over the last minute "
                  f"(max {float(worst['data']['result'][0]['value'][1]) * 1000:.1f} ms, 1 scrape/s under load); "
                  f"traffic {traffic.statuses}; scenario {time.monotonic() - t0:.0f}s")

            # the service's own view (5-minute window, still holding the error burst) agrees
            async with session.get(f"{stack.svc.url}/internal/monitoring/alerts",
                                   headers={"X-API-Key": API_KEY}) as r:
                assert r.status == 200, "service.internal.kpi must be registered in service/app.py"
                own = {a["kpi"]: a for a in (await r.json())["alerts"]}
            assert own["error_rate"]["severity"] == "critical"
        finally:
            await traffic.stop()


async def test_configure_alerts_moves_the_threshold_prometheus_sees(stack):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        q = 'llmapi_kpi_threshold{kpi="error_rate",level="critical"}'
        try:
            async with session.post(f"{stack.svc.url}/internal/monitoring/configure-alerts",
                                    json={"error_rate_critical": 0.25}, headers={"X-API-Key": API_KEY}) as r:
                assert r.status == 200, await r.text()

            async def moved():
                res = await prom_query(session, stack, q)
                return [v for v in res["data"]["result"] if v["value"][1] == "0.25"]
            await wait_for(moved, 15, "the moved threshold in Prometheus")
        finally:
            async with session.post(f"{stack.svc.url}/internal/monitoring/configure-alerts",
                                    json={"error_rate_critical": 0.02}, headers={"X-API-Key": API_KEY}) as r:
                assert r.status == 200


def provisioned_queries(tree: Tree) -> list[tuple[str, str]]:
    """(title, PromQL) of every panel of every dashboard Grafana's provisioning loads, as the container sees them."""
    provider = _load(tree.host(f"{ETC}/grafana/provisioning/dashboards/llmapi.yml"))["providers"][0]
    folder = tree.host(provider["options"]["path"])
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as fh:
                out += [(f"{name}: {title}", expr) for title, expr in panel_queries(json.load(fh))]
    return out


async def _has_value(session, stack, q: str):
    res = await prom_query(session, stack, q)
    return res.get("status") == "success" and res["data"]["result"]


async def _control(session, stack, **settings) -> None:
    async with session.post(f"{stack.upstream.url}/_control", json=settings) as r:
        assert r.status == 200


async def _am_inhibited(session, stack, name: str):
    async with session.get(f"{stack.am.url}/api/v2/alerts", params={"filter": f'alertname="{name}"'}) as r:
        alerts = await r.json()
    return [a for a in alerts if a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"]]
