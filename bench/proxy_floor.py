"""The floor of an uncached request: the least any Python proxy does to forward one.

A bare aiohttp server whose one handler reads the request, builds the same
chat-completions body the service sends (service/providers/openai_compat.py's
prompt), POSTs it through one shared aiohttp ClientSession (a TCPConnector of
--pool connections, as the service's pool) to the upstream, and returns the
upstream's body.  No middleware, no validation, no config, no metrics, no
retries.  Scenario `proxy_capacity` in `make bench` puts the service beside it
against the same fake upstream, as `fused_floor` does for cache hits.
"""
from __future__ import annotations

import argparse
import json

import aiohttp
from aiohttp import web

from service.providers.base import TextRequest
from service.providers.openai_compat import SYSTEM_PROMPT, build_prompt


def build(upstream: str, pool: int, model: str = "gpt-4o-mini") -> web.Application:
    app = web.Application()
    holder: dict = {}

    async def session_ctx(app):
        holder["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool))
        yield
        await holder["s"].close()

    async def forward(request: web.Request) -> web.Response:
        doc = json.loads(await request.read())
        req = TextRequest(operation="summarize", text=doc["text"], options=doc.get("options") or {})
        body = {"model": model, "temperature": 0.0,
                "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                             {"role": "user", "content": build_prompt(req)}]}
        async with holder["s"].post(f"{upstream}/chat/completions", json=body) as r:
            data = await r.read()
            return web.Response(body=data, status=r.status, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "healthy"})

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/text/summarize", forward)
    app.router.add_get("/v1/health", health)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="OpenAI-compatible base URL (…/v1)")
    ap.add_argument("--pool", type=int, default=1000)
    a = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    web.run_app(build(a.upstream, a.pool), host="127.0.0.1", port=a.port, access_log=None, print=lambda *x: None)


if __name__ == "__main__":
    main()
