"""The closed loop end to end: real redis-server, the service (AI_PROVIDER=openai) on the fake upstream,
Prometheus with the generated rules (short window and `for:`), Alertmanager with the generated config
(deploy/alertmanager.yml through its entrypoint: playbook alerts to the service's webhook, with the
credential in a file) -- the stack `make stack` runs (deploy/stack.py), as tests/e2e/test_observability_e2e.py
starts it.

1. the operator switches the error_rate entry to enforce (through the config store);
2. the fake upstream fails half its calls -> LlmapiErrorRateNeedsAttention fires -> Alertmanager posts it
   -> the service applies the aggressive resilience preset as actor alertmanager:LlmapiErrorRateNeedsAttention,
   llmapi_remediation_actions_total{outcome="applied"} counts it (in Prometheus too);
3. the upstream heals -> the alert resolves -> Alertmanager posts the resolve -> the service restores
   exactly the config before the action.
Bounded in time; 5xx only while the upstream fails (and the few seconds its errors take to drain).
The timeline is printed (run with -s to see it).
"""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from dashboards import remediation as dashboard_remediation
from tests.e2e.test_observability_e2e import CRITICAL, JOB, Stack, Traffic, _control, prom_query, wait_for
from tests.helpers import API_KEY

pytestmark = pytest.mark.e2e

H = {"X-API-Key": API_KEY}
ACTOR = f"alertmanager:{CRITICAL}"
DRAIN = 8.0   # seconds after healing during which a request that started failing may still end in 5xx


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("remediation-e2e"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


class TimedTraffic(Traffic):
    """Traffic that keeps (time, status) of every answer."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.log: list[tuple[float, int]] = []

    async def _worker(self, i: int):
        while True:
            self.n += 1
            n = self.n
            text = (f"Prometheus scrapes metrics from instrumented jobs. Sample {n} "
                    "is stored locally and rules turn it into alerts for the operators.")
            try:
                async with self.session.post(f"{self.url}/v1/text/summarize", json={"text": text}, headers=H) as r:
                    await r.read()
                    self.log.append((time.monotonic(), r.status))
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(self.pause)


async def _get(session, url):
    async with session.get(url, headers=H) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _values(session, stack) -> dict:
    cfg = await _get(session, f"{stack.svc.url}/internal/config")
    return {name: s["values"] for name, s in cfg["sections"].items()}


async def _history(session, stack, outcome):
    h = (await _get(session, f"{stack.svc.url}/internal/remediation/history"))["history"]
    return [x for x in h if x["outcome"] == outcome and x["entry"] == "error_rate"]


async def _prom_alert(session, stack, state):
    res = await prom_query(session, stack, f'ALERTS{{alertname="{CRITICAL}",alertstate="{state}"}}')
    return res.get("status") == "success" and res["data"]["result"]


async def test_alert_drives_the_remedy_and_its_resolve_reverts_it(stack):
    t0 = time.monotonic()
    marks: dict[str, float] = {}

    def mark(name):
        marks[name] = time.monotonic() - t0

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(f"{stack.svc.url}/internal/remediation/error_rate", json={"mode": "enforce"},
                                headers=H) as r:
            assert r.status == 200, await r.text()
        before = await _values(session, stack)
        assert before["resilience"]["preset"] == "simple"
        traffic = TimedTraffic(session, stack.svc.url, workers=3, pause=0.05)
        traffic.start()
        try:
            await wait_for(lambda: _prom_alert_absent_with_data(session, stack), 30, "Prometheus evaluating the rules")
            await _control(session, stack, error_rate=0.5)
            mark("fault injected (upstream fails 50 %)")
            fault_at = time.monotonic()
            await wait_for(lambda: _prom_alert(session, stack, "firing"), 60, "the alert firing in Prometheus")
            mark("alert firing (Prometheus)")
            applied = await wait_for(lambda: _history(session, stack, "applied"), 60,
                                     "the remedy applied by the webhook")
            mark("action applied (service)")
            assert applied[-1]["actor"] == ACTOR and applied[-1]["mode"] == "enforce"
            assert applied[-1]["changes"] == {"resilience": {"preset": "aggressive"}}
            live = await _get(session, f"{stack.svc.url}/internal/resilience/config/current")
            assert {op["strategy"] for op in live["operations"].values()} == {"aggressive"}  # live, not just stored
            hist = (await _get(session, f"{stack.svc.url}/internal/config/history"))["history"]
            assert any(e["section"] == "resilience" and e["actor"] == ACTOR for e in hist), hist[:5]
            counted = await wait_for(lambda: _prom_value(
                session, stack, f'sum(llmapi_remediation_actions_total{{job="{JOB}",entry="error_rate",'
                                f'outcome="applied"}})'), 30, "the applied action counted in Prometheus")
            assert counted == 1.0
            assert await wait_for(lambda: _prom_value(
                session, stack, f'max(llmapi_remediation_active{{job="{JOB}",entry="error_rate"}})'), 30,
                "the active remedy in Prometheus") == 1.0
            # the dashboard's annotation query marks it
            ann = dashboard_remediation.annotation({}, 'job=~"$job",instance=~"$instance"')["expr"]
            ann = ann.replace("$job", JOB).replace("$instance", ".+")
            marked = await wait_for(lambda: _has_result(session, stack, ann), 30, "the dashboard annotation")
            assert {m["metric"]["outcome"] for m in marked} >= {"applied"}

            await _control(session, stack, error_rate=0.0)
            mark("upstream healed")
            healed_at = time.monotonic()
            await wait_for(lambda: _prom_alert_gone(session, stack), 90, "the alert resolving in Prometheus")
            mark("alert resolved (Prometheus)")
            reverted = await wait_for(lambda: _history(session, stack, "reverted"), 60,
                                      "the revert on the resolve notification")
            mark("remedy reverted (service)")
            assert reverted[-1]["actor"] == ACTOR
            after = await _values(session, stack)
            assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        finally:
            await traffic.stop()

        # 5xx: only from the fault (upstream errors the retries and breaker could not hide), never outside it
        unexplained = [(round(t - t0, 1), s) for t, s in traffic.log
                       if s >= 500 and not (fault_at <= t <= healed_at + DRAIN and s in (502, 503, 504))]
        assert not unexplained, unexplained
        total = len(traffic.log)
        five = sum(1 for _, s in traffic.log if s >= 500)
        assert five > 0  # the fault was real
        elapsed = time.monotonic() - t0
        assert elapsed < 240
        print("\n[remediation e2e] timeline (seconds from the start):")
        for name, t in marks.items():
            print(f"  {t:6.1f}  {name}")
        print(f"  traffic: {total} requests, {five} 5xx (all while the upstream failed); total {elapsed:.0f}s")


async def _prom_value(session, stack, q):
    res = await prom_query(session, stack, q)
    if res.get("status") != "success" or not res["data"]["result"]:
        return None
    return float(res["data"]["result"][0]["value"][1]) or None


async def _has_result(session, stack, q):
    res = await prom_query(session, stack, q)
    assert res.get("status") == "success", res
    return res["data"]["result"]


async def _prom_alert_gone(session, stack):
    res = await prom_query(session, stack, f'ALERTS{{alertname="{CRITICAL}"}}')
    return res.get("status") == "success" and not res["data"]["result"]


async def _prom_alert_absent_with_data(session, stack):
    """The error-rate record has a value and the alert is not pending or firing (a clean start)."""
    rec = await prom_query(session, stack, f'llmapi:kpi_error_rate:ratio{{job="{JOB}"}}')
    return rec.get("status") == "success" and rec["data"]["result"] and await _prom_alert_gone(session, stack)
