"""A minimal Alertmanager webhook receiver.

    python -m alerts.webhook_sink --host 0.0.0.0 --port 5001

POST /alerts (or /) takes Alertmanager's webhook payload, logs one JSON line
per alert to stdout and keeps the last notifications in memory; GET /alerts
lists them.  docker-compose.yml runs it as the default ALERT_WEBHOOK_URL
target and the end-to-end test uses it as its sink.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque

from aiohttp import web

KEEP = 1000


class Sink:
    def __init__(self, keep: int = KEEP, echo: bool = False):
        self.notifications: deque[dict] = deque(maxlen=keep)
        self.echo = echo
        self.changed = asyncio.Event()

    async def receive(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(payload, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        payload["received_at"] = time.time()
        self.notifications.append(payload)
        if self.echo:
            for a in payload.get("alerts", []):
                print(json.dumps({"status": a.get("status"), "labels": a.get("labels"),
                                  "summary": a.get("annotations", {}).get("summary"),
                                  "receiver": payload.get("receiver")}), flush=True)
        self.changed.set()
        self.changed = asyncio.Event()
        return web.json_response({"ok": True})

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({"notifications": list(self.notifications)})

    def alerts(self, name: str | None = None, status: str | None = None) -> list[dict]:
        """Every alert of every notification received, optionally filtered."""
        out = []
        for n in self.notifications:
            for a in n.get("alerts", []):
                if name is not None and a.get("labels", {}).get("alertname") != name:
                    continue
                if status is not None and a.get("status") != status:
                    continue
                out.append({**a, "receiver": n.get("receiver"), "received_at": n.get("received_at")})
        return out

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/alerts", self.receive)
        app.router.add_post("/", self.receive)
        app.router.add_get("/alerts", self.list)
        return app


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Alertmanager webhook sink")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5001)
    args = ap.parse_args(argv)
    web.run_app(Sink(echo=True).app(), host=args.host, port=args.port, print=lambda *a: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
