"""The floor of a cache hit: the least an aiohttp service can do to answer one.

One fused middleware and a handler do only what every cache hit must do:
    a request id, a constant-time API key check, read the body, one dict
    lookup from the body bytes to the stored answer, the answer's per-request
    tail (service/text/service.py:finish: cache_hit, processing time, request
    id, timestamp), the same response headers as the service (X-API-Version,
    X-Request-ID, the security headers), and one tuple appended per request
    for metrics.
Nothing is tunable and nothing else is measured: no config reads, no version
detection, no size, rate or admission checks, no analytics.  Scenario
`fused_floor` in `make bench` puts it beside bare aiohttp and the service, so
each run shows how much of the gap to bare is aiohttp and CPython's.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import os
from time import perf_counter

from aiohttp import web

from service.text.service import finish

SECURITY = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"))


def build(api_key: str, size: int) -> web.Application:
    key_digest = hashlib.sha256(api_key.encode()).digest()
    rid_prefix = os.urandom(8).hex()
    counter = itertools.count()
    head = '{"operation":"summarize","success":true,"result":"'
    pad = max(0, size - len(finish((head + '"').encode(), True, perf_counter(), "0" * 32)))
    prefix = (head + "x" * pad + '"').encode()
    answers: dict[bytes, bytes] = {}
    events: list = []

    @web.middleware
    async def fused(request: web.Request, handler):
        start = perf_counter()
        rid = f"{rid_prefix}{next(counter):016x}"
        presented = request.headers.get("X-API-Key")
        if presented is None or not hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), key_digest):
            raise web.HTTPUnauthorized()
        request["request_id"] = rid
        resp = await handler(request)
        headers = resp.headers
        headers["X-API-Version"] = "v1"
        headers["X-Request-ID"] = rid
        headers.extend(SECURITY)
        events.append((request.match_info.route.resource, request.method, resp.status, perf_counter() - start))
        if len(events) >= 10_000:
            events.clear()  # (a real exporter would aggregate them here)
        return resp

    async def summarize(request: web.Request) -> web.Response:
        start = perf_counter()
        raw = await request.read()
        answer = answers.get(raw)
        if answer is None:
            answer = answers[raw] = prefix
        return web.Response(body=finish(answer, True, start, request["request_id"]), content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[fused])
    app.router.add_post("/v1/text/summarize", summarize)
    app.router.add_get("/v1/health", health)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--size", type=int, default=600, help="bytes of the answer, about")
    ap.add_argument("--api-key", default=os.environ.get("API_KEY", ""))
    a = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    web.run_app(build(a.api_key, a.size), host="127.0.0.1", port=a.port, access_log=None, print=lambda *x: None)


if __name__ == "__main__":
    main()
