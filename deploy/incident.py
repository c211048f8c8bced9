"""`make incident`: a scripted incident against a running stack (deploy/stack.py), with a timeline.

1. Traffic: a few clients send text requests, most repeating a few texts (cache
   hits), the rest fresh (they reach the upstream).  It waits until Prometheus
   scrapes the service and the alerts settle; alerts active before the fault
   are reported and left out.
2. Fault: the fake upstream fails a share of its calls (POST /_control error_rate).
3. Watch Prometheus's /api/v1/alerts and the webhook sink: each alert going
   pending, then firing, then reaching the sink through Alertmanager.
4. What the remediation playbook did or would do (GET /internal/remediation's
   last runs: dry-run by default, enforce where the operator switched an entry on).
5. Heal: the upstream answers again; watch the alerts resolve, in Prometheus and at the sink.

Every phase waits at most --timeout seconds.  Exit 0 when an expected alert
fired and resolved, else 1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

# alerts the injected fault must fire and resolve: the error-rate KPI (critical) and the quality SLO's
# burn-rate alert (degraded answers count against it too); every other alert is reported as it moves
REQUIRED = ("LlmapiErrorRateNeedsAttention", "LlmapiQualityBudgetBurn")
WATCH_PREFIXES = ("Llmapi",)
IGNORED = ("LlmapiWatchdog", "Watchdog", "LlmapiAlertThresholdsChanged")


class Timeline:
    def __init__(self):
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str]] = []

    def mark(self, what: str) -> None:
        t = time.monotonic() - self.t0
        self.events.append((t, what))
        print(f"  t+{t:6.1f}s  {what}", flush=True)


class Traffic:
    def __init__(self, session: aiohttp.ClientSession, url: str, key: str, clients: int = 4, pause: float = 0.05,
                 repeat_share: float = 0.8):
        self.session, self.url, self.key, self.clients, self.pause = session, url, key, clients, pause
        self.repeat_share = repeat_share  # share of requests that repeat one of a few texts (cache hits)
        self.n = 0
        self.statuses: dict[int, int] = {}
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._client()) for _ in range(self.clients)]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _client(self) -> None:
        while True:
            self.n += 1
            n = self.n
            op = "sentiment" if n % 3 == 0 else "summarize"
            repeat = (n % 100) < self.repeat_share * 100
            text = (f"Incident drill request {n % 7 if repeat else n}: the operators watch the dashboards while Prometheus "
                    "evaluates the rules and Alertmanager routes the notifications.")
            try:
                async with self.session.post(f"{self.url}/v1/text/{op}", json={"text": text},
                                             headers={"X-API-Key": self.key}) as r:
                    await r.read()
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                self.statuses[0] = self.statuses.get(0, 0) + 1
            await asyncio.sleep(self.pause)


async def prom_alerts(session, prom: str) -> dict[str, str]:
    """alertname -> worst state (firing > pending) of the watched alerts."""
    async with session.get(f"{prom}/api/v1/alerts") as r:
        data = await r.json()
    out: dict[str, str] = {}
    for a in data["data"]["alerts"]:
        name = a["labels"].get("alertname", "")
        if not name.startswith(WATCH_PREFIXES) or name in IGNORED:
            continue
        if out.get(name) != "firing":
            out[name] = a["state"]
    return out


async def sink_seen(session, sink: str) -> set[tuple[str, str]]:
    async with session.get(f"{sink}/alerts") as r:
        notes = (await r.json())["notifications"]
    return {(a["labels"].get("alertname", ""), a["status"]) for n in notes for a in n.get("alerts", [])}


class Playbook:
    """What the remediation playbook did or would do (GET /internal/remediation's last runs), each run once."""

    def __init__(self, session, url: str, key: str, since: float):
        self.session, self.url, self.key, self.since = session, url, key, since
        self.seen: set = set()

    async def new_runs(self) -> list[str]:
        try:
            async with self.session.get(f"{self.url}/internal/remediation", headers={"X-API-Key": self.key}) as r:
                if r.status != 200:
                    return []
                doc = await r.json()
        except (aiohttp.ClientError, ValueError):
            return []
        out = []
        for run in sorted(doc.get("last_runs") or [], key=lambda x: x.get("time", 0)):
            mark = (run.get("time"), run.get("entry"), run.get("outcome"), run.get("fingerprint"))
            if run.get("time", 0) < self.since or mark in self.seen:
                continue
            self.seen.add(mark)
            out.append(f"playbook {run.get('entry')} ({run.get('mode', '?')}) on {run.get('alertname', '?')}: "
                       f"{run.get('action', '?')} -> {run.get('outcome')}"
                       + (f" ({str(run['message'])[:120]})" if run.get("message") else ""))
        return out


async def settle(session, prom: str, timeout: float, quiet_for: float = 10.0) -> dict[str, str]:
    """Wait until the service is scraped and the watched alerts stay unchanged for quiet_for seconds
    (a fresh Prometheus starts with `absent()` pending); returns the alerts still active."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        async with session.get(f"{prom}/api/v1/query", params={"query": 'up{job="llmapi"} == 1'}) as r:
            scraped = bool((await r.json())["data"]["result"])
        now = await prom_alerts(session, prom)
        if now != last or not scraped:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_for:
            return now
        await asyncio.sleep(1.0)
    return last or {}


async def control(session, upstream: str, **settings) -> None:
    async with session.post(f"{upstream}/_control", json=settings) as r:
        if r.status != 200:
            raise RuntimeError(f"fake upstream refused {settings}: {r.status}")


async def run(state: dict, key: str, timeout: float, error_rate: float, poll: float = 1.0) -> int:
    c = state["components"]
    svc, prom, sink, upstream = (c[n]["url"] for n in ("llmapi", "prometheus", "sink", "upstream"))
    tl = Timeline()
    print(f"incident against {svc} (Prometheus {prom}, sink {sink}); each phase waits at most {timeout:.0f}s")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await control(session, upstream, error_rate=0.0)
        traffic = Traffic(session, svc, key)
        traffic.start()
        seen_states: dict[str, str] = {}
        sink_before = await sink_seen(session, sink)
        playbook = Playbook(session, svc, key, time.time())
        ok = False
        try:
            tl.mark(f"traffic started ({traffic.clients} clients, {1 - traffic.repeat_share:.0%} fresh texts that "
                    "reach the upstream)")
            before = await settle(session, prom, timeout)
            tl.mark("Prometheus scrapes the service; active before the fault (left out): "
                    + (", ".join(f"{n} {s}" for n, s in sorted(before.items())) or "none"))
            await control(session, upstream, error_rate=error_rate)
            tl.mark(f"fault injected: the fake upstream fails {error_rate:.0%} of its calls")
            deadline = time.monotonic() + timeout
            notified: set[str] = set()
            while time.monotonic() < deadline:
                for name, st in (await prom_alerts(session, prom)).items():
                    if name in before:
                        continue
                    if seen_states.get(name) != st and not (seen_states.get(name) == "firing" and st == "pending"):
                        tl.mark(f"{name} {st} in Prometheus")
                        seen_states[name] = st
                for name, status in (await sink_seen(session, sink)) - sink_before:
                    if status == "firing" and name not in notified and name not in IGNORED and name not in before:
                        notified.add(name)
                        tl.mark(f"{name} notification reached the webhook sink (through Alertmanager)")
                for line in await playbook.new_runs():
                    tl.mark(line)
                if all(n in notified for n in REQUIRED):
                    break
                await asyncio.sleep(poll)
            else:
                tl.mark(f"gave up: {', '.join(n for n in REQUIRED if n not in notified)} did not reach the sink")
                return 1
            await control(session, upstream, error_rate=0.0)
            tl.mark("healed: the fake upstream answers every call again")
            deadline = time.monotonic() + timeout
            firing = set(notified)
            while time.monotonic() < deadline:
                now = await prom_alerts(session, prom)
                for name in list(seen_states):
                    if name not in now and seen_states[name] != "inactive":
                        tl.mark(f"{name} resolved in Prometheus")
                        seen_states[name] = "inactive"
                resolved = {n for n, s in (await sink_seen(session, sink)) - sink_before if s == "resolved"}
                for name in sorted(firing & resolved):
                    tl.mark(f"{name} resolved notification reached the webhook sink")
                firing -= resolved
                for line in await playbook.new_runs():
                    tl.mark(line)
                if not firing:
                    ok = True
                    break
                await asyncio.sleep(poll)
            else:
                tl.mark(f"gave up: {', '.join(sorted(firing))} did not resolve")
            await asyncio.sleep(2 * poll)  # the reverts the resolve notifications cause
            for line in await playbook.new_runs():
                tl.mark(line)
        finally:
            await traffic.stop()
            await control(session, upstream, error_rate=0.0)
    print(f"traffic: {dict(sorted(traffic.statuses.items()))} (status: count; 0 = no answer)")
    print("incident " + ("done: the alerts fired and resolved" if ok else "FAILED"))
    return 0 if ok else 1


def main(state: dict, key: str, timeout: float = 300.0, argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.stack incident")
    ap.add_argument("--error-rate", type=float, default=0.6, help="share of upstream calls that fail")
    args = ap.parse_args(argv or [])
    return asyncio.run(run(state, key, timeout, args.error_rate))
