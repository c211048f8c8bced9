"""Who made a config change: the audit fields every /internal change path passes to the store.

    await store.update(section, changes, **audit.actor(request))

actor is the configured key name the auth middleware set (never the key),
request_id the id the error middleware gave the request, remote the client's
address.
"""
from __future__ import annotations

from aiohttp import web
from service.context import KEY_NAME, REQUEST_ID


def actor(request: web.Request) -> dict:
    return {"actor": request.get(KEY_NAME) or "api", "request_id": request.get(REQUEST_ID),
            "remote": request.remote}
