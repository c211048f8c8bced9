"""Capture real webhook payloads from a real prometheus-alertmanager, through the generated config.

    python -m tests.remediation.capture      rewrite tests/remediation/payloads/*.json

Alertmanager runs deploy/alertmanager.yml (generated from the playbook) with
short waits, its remediation receiver pointed at a local capture server and
its credentials_file at a temp file.  Alerts are posted to its API
(/api/v2/alerts) the way Prometheus posts them: firing (endsAt in the
future), then resolved (endsAt now).  What reaches the capture server --
payload and Authorization header -- is what the service's webhook gets.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile

import aiohttp
import yaml
from aiohttp import web

from deploy import alertmanager as am_config
from tests.helpers import ROOT, free_port, wait_http

PAYLOADS = os.path.join(ROOT, "tests", "remediation", "payloads")
TOKEN = "capture-webhook-credential-0123456789"
BIN = "/usr/bin/prometheus-alertmanager"

# the alerts sent: one the playbook acts on (error_rate) and one it does not know
ALERTS = {
    "error_rate": {"alertname": "LlmapiErrorRateNeedsAttention", "severity": "critical", "kpi": "error_rate",
                   "job": "llmapi"},
    "memory": {"alertname": "LlmapiMemoryUsageNeedsAttention", "severity": "critical", "kpi": "memory_usage",
               "job": "llmapi", "instance": "llmapi:8000"},
}


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def config(url: str, credentials_file: str) -> dict:
    cfg = am_config.config()
    for r in cfg["route"]["routes"]:
        if r["receiver"] == am_config.RECEIVER:
            r.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    cfg["receivers"] = [am_config.remediation_receiver(url, credentials_file) if r["name"] == am_config.RECEIVER
                        else {"name": r["name"]} for r in cfg["receivers"]]
    return cfg


async def capture(tmp: str, timeout: float = 30.0) -> dict[str, dict]:
    got: list[tuple[dict, str]] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        got.append((await request.json(), request.headers.get("Authorization", "")))
        arrived.set()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/internal/alerts/webhook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    cred = os.path.join(tmp, "token")
    with open(cred, "w") as fh:
        fh.write(TOKEN + "\n")
    cfg_path = os.path.join(tmp, "am.yml")
    with open(cfg_path, "w") as fh:
        yaml.safe_dump(config(f"http://127.0.0.1:{port}/internal/alerts/webhook", cred), fh)
    am_port = free_port()
    proc = subprocess.Popen([BIN, f"--config.file={cfg_path}", f"--web.listen-address=127.0.0.1:{am_port}",
                             f"--storage.path={tmp}/data", "--cluster.listen-address=", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, dict] = {}
    try:
        await asyncio.get_running_loop().run_in_executor(None, lambda: wait_http(
            f"http://127.0.0.1:{am_port}/-/ready", proc=proc))
        now = dt.datetime.now(dt.timezone.utc)
        async with aiohttp.ClientSession() as s:
            async def post(status: str):
                body = [{"labels": labels, "annotations": {"summary": f"{name} test alert"},
                         "startsAt": _iso(now), "generatorURL": "http://prometheus:9090/graph",
                         "endsAt": _iso(now + dt.timedelta(minutes=5)) if status == "firing"
                         else _iso(dt.datetime.now(dt.timezone.utc))}
                        for name, labels in ALERTS.items()]
                async with s.post(f"http://127.0.0.1:{am_port}/api/v2/alerts", json=body) as r:
                    assert r.status == 200, await r.text()

            for status in ("firing", "resolved"):
                await post(status)
                deadline = asyncio.get_running_loop().time() + timeout
                while not all(any(p["status"] == status and p["commonLabels"].get("alertname") == v["alertname"]
                                  for p, _ in got) for v in ALERTS.values()):
                    arrived.clear()
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        raise TimeoutError(f"no {status} notification from Alertmanager in {timeout}s")
                    try:
                        await asyncio.wait_for(arrived.wait(), left)
                    except asyncio.TimeoutError:
                        pass
        for payload, auth in got:
            key = next(k for k, v in ALERTS.items() if payload["commonLabels"].get("alertname") == v["alertname"])
            out[f"{key}_{payload['status']}"] = {"payload": payload, "authorization": auth}
    finally:
        proc.terminate()
        proc.wait(10)
        await runner.cleanup()
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        got = asyncio.run(capture(tmp))
    os.makedirs(PAYLOADS, exist_ok=True)
    for name, item in sorted(got.items()):
        path = os.path.join(PAYLOADS, f"{name}.json")
        with open(path, "w") as fh:
            json.dump(item["payload"], fh, indent=2, sort_keys=True)
            fh.write("\n")
        print(f"wrote {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
