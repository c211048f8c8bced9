"""/internal/alerts/webhook and /internal/remediation: the closed loop's receiver and its operator view.

POST /internal/alerts/webhook          Alertmanager webhook payload v4 -> what was done (or would be, in dry run)
GET  /internal/remediation             the playbook, each entry's mode and state, last runs, pending reverts
POST /internal/remediation/{entry}     {"mode": "off"|"dry_run"|"enforce"} or {"dry_run": true} (plan it now)
GET  /internal/remediation/history     ?limit=

The webhook takes an admin-scoped key or the dedicated webhook credential
(ALERT_WEBHOOK_TOKEN_FILE, scope `alerts`, valid for this route only).
Thin handlers over service/remediation.
"""
from __future__ import annotations

import logging

from aiohttp import web
from redis.exceptions import RedisError

from exporter.playbook import BY_NAME, MODES
from service.errors import ApiError, validation_error
from service.context import CTX, REQUEST_ID, SCOPES
from service.http import json_response, query_number, read_json, read_object
from service.internal.audit import actor
from service.remediation import SECTION, Remediation
from service.remediation import payload as am_payload
from service.remediation.credential import WEBHOOK_PATH, WEBHOOK_SCOPE

log = logging.getLogger("service.remediation")

def _rem(request: web.Request) -> Remediation:
    return request.app[CTX].extras["remediation"]


def _entry(request: web.Request):
    name = request.match_info["entry"]
    e = BY_NAME.get(name)
    if e is None:
        raise ApiError(404, "UNKNOWN_ENTRY", f"no playbook entry {name!r}; known: {sorted(BY_NAME)}", field="entry")
    return e


async def webhook(request: web.Request) -> web.Response:
    scopes = request.get(SCOPES)
    if scopes is not None and not ({"admin", WEBHOOK_SCOPE} & set(scopes)):
        raise ApiError(403, "FORBIDDEN", "the alert webhook needs an admin key or the webhook credential",
                       details={"required_scope": "admin"})
    parsed = am_payload.parse(await read_json(request))
    try:
        results = await _rem(request).handle(parsed, request_id=request.get(REQUEST_ID), remote=request.remote)
    except (RedisError, OSError) as e:  # the shared state is away: Alertmanager retries a 5xx, nothing acted
        log.warning("remediation: state unavailable (%s): webhook refused", type(e).__name__)
        raise ApiError(503, "REMEDIATION_STATE_UNAVAILABLE", "the remediation state (Redis) cannot be reached; "
                       "nothing was done, Alertmanager will retry", headers={"Retry-After": "10"})
    acted = [r for r in results if r["outcome"] in ("applied", "reverted", "revert_skipped", "dry_run")]
    return json_response({"status": "ok", "received": len(parsed["alerts"]), "acted_on": len(acted),
                          "results": results})


async def get_status(request: web.Request) -> web.Response:
    return json_response(await _rem(request).status())


async def post_entry(request: web.Request) -> web.Response:
    rem = _rem(request)
    entry = _entry(request)
    body = await read_object(request, allow_empty=False)
    extra = sorted(set(body) - {"mode", "dry_run"})
    if extra:
        raise validation_error(extra[0], "unknown field; send mode or dry_run")
    if ("mode" in body) == ("dry_run" in body):
        raise validation_error("body", "send exactly one of mode, dry_run")
    if "dry_run" in body:
        if body["dry_run"] is not True:
            raise validation_error("dry_run", "must be true")
        return json_response(await rem.dry_run_now(entry))
    if body["mode"] not in MODES:
        raise validation_error("mode", f"must be one of {list(MODES)}")
    store = request.app[CTX].store
    previous = store.get(SECTION)[entry.mode_field]
    res = await store.update(SECTION, {entry.mode_field: body["mode"]}, **actor(request),
                             source=f"api:/internal/remediation/{entry.name}")
    return json_response({"entry": entry.name, "mode": store.get(SECTION)[entry.mode_field], "previous": previous,
                          "changes": res["changes"], "config_version": store.version})


async def get_history(request: web.Request) -> web.Response:
    limit = query_number(request, "limit", 100, 1, 500, integer=True)
    return json_response({"history": await _rem(request).history(limit)})


def register(app: web.Application, ctx) -> None:
    if "remediation" not in ctx.extras:
        ctx.extras["remediation"] = Remediation(ctx)  # started and stopped by service/app.py:lifecycle
    r = app.router
    r.add_post(WEBHOOK_PATH, webhook)
    r.add_get("/internal/remediation", get_status)
    r.add_get("/internal/remediation/history", get_history)
    r.add_post("/internal/remediation/{entry}", post_entry)
