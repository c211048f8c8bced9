"""Security headers on every response, and optional CORS."""
from __future__ import annotations

from aiohttp import web

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer"}


def make(ctx):
    @web.middleware
    async def security_middleware(request: web.Request, handler):
        resp = await handler(request)
        resp.headers.update(SECURITY_HEADERS)
        return resp

    return security_middleware
