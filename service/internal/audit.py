"""Who made a config change: the audit fields every /internal change path passes to the store.

    await store.update(section, changes, **audit.actor(request))

actor is the configured key name the auth middleware set (never the key),
request_id the id the error middleware gave the request, remote the client's
address.
"""
from __future__ import annotations

from aiohttp import web


def actor(request: web.Request) -> dict:
    return {"actor": request.get("key_name") or "api", "request_id": request.get("request_id"),
            "remote": request.remote}
