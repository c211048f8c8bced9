"""/internal/config: the runtime config store, its history and rollback."""
from __future__ import annotations

from aiohttp import web

from service.context import CTX
from service.errors import ApiError
from service.http import json_response, query_number, read_object
from service.internal.audit import actor


async def get_config(request: web.Request) -> web.Response:
    store = request.app[CTX].store
    sections = {name: {"values": store.get(name), "doc": s.doc,
                       "rules": [{"fields": list(r.fields), "rule": r.message} for r in s.rules],
                       "fields": {k: {"type": f.type.__name__, "default": f.default, "min": f.min, "max": f.max,
                                      "choices": list(f.choices) if f.choices else None, "env": f.env,
                                      "internal": f.internal}
                                  for k, f in s.fields.items()}}
                for name, s in store.sections.items()}
    return json_response({"version": store.version, "shared": _shared(request), "sections": sections,
                          "overrides": store.overrides()})


def _shared(request: web.Request) -> str:
    """Who else sees a change made here: every worker and replica (through Redis), or this process only."""
    ctx = request.app[CTX]
    if ctx.store.shared:
        return "redis"
    return "this worker only" if ctx.settings.workers > 1 else "process"


async def history(request: web.Request) -> web.Response:
    store = request.app[CTX].store
    limit = query_number(request, "limit", 50, 1, 200, integer=True)
    return json_response({"version": store.version, "history": store.public_history(limit)})


async def update_section(request: web.Request) -> web.Response:
    store = request.app[CTX].store
    name = request.match_info["section"]
    if name not in store.sections:
        raise ApiError(404, "UNKNOWN_SECTION", f"no config section {name!r}", field="section")
    body = await read_object(request, allow_empty=False)
    store.refuse_internal(name, body)
    entry = await store.update(name, body, source=f"api:/internal/config/{name}", **actor(request))
    return json_response({"version": store.version, "section": name, "values": store.get(name),
                          "changes": entry["changes"]})


async def rollback(request: web.Request) -> web.Response:
    store = request.app[CTX].store
    body = await read_object(request, allow_empty=False)
    if set(body) - {"version"}:
        raise ApiError(422, "VALIDATION_ERROR", "only 'version' is accepted", field=sorted(set(body) - {"version"})[0])
    who = actor(request)
    entries = await store.rollback(body.get("version"), actor="rollback", request_id=who["request_id"],
                                   remote=who["remote"], source=f"rollback:{body.get('version')} by {who['actor']}")
    return json_response({"version": store.version, "rolled_back_to": body["version"],
                          "changed_sections": [e["section"] for e in entries]})


def register(app: web.Application, ctx) -> None:
    app.router.add_get("/internal/config", get_config)
    app.router.add_get("/internal/config/history", history)
    app.router.add_post("/internal/config/rollback", rollback)
    app.router.add_post("/internal/config/{section}", update_section)
