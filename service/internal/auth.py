"""/internal/auth: the configured keys, by name (never a key or its digest).

GET /internal/auth/keys   each key's name, scopes, tier and source; the caller's own name; API_KEYS_FILE reloads
"""
from __future__ import annotations

from aiohttp import web

from service.context import CTX, KEY_NAME
from service.http import json_response


async def keys(request: web.Request) -> web.Response:
    """The configured API keys: name, scopes, rate-limit tier, source."""
    ring = request.app[CTX].keys
    return json_response({"keys": ring.describe(), "open": not ring.configured, "caller": request.get(KEY_NAME),
                          "api_keys_file": ring.file_path, "file_reloads": dict(ring.reloads)})


def register(app: web.Application, ctx) -> None:
    app.router.add_get("/internal/auth/keys", keys)
