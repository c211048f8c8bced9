"""/v1/text routes: one per operation, /process, /batch, /operations."""
from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.hdrs import CONTENT_TYPE

from service.answer import Answer
from service.context import CTX, KEY_NAME, OPERATION, REQUEST_ID
from service.errors import ApiError
from service.http import decode_json, json_response, read_body, read_json
from exporter.metrics import TEXT_DEGRADED
from service.providers.base import OPERATIONS
from service.text.service import STALE
from service.text.schemas import OPTION_LIMITS, parse_text_request

UNNAMED = "unnamed"  # the key_name label of a request the auth middleware named no key for

OPERATION_INFO = {
    "summarize": {"description": "Extractive or abstractive summary", "options": ["max_length"], "requires_question": False},
    "sentiment": {"description": "Sentiment label, confidence and explanation", "options": [], "requires_question": False},
    "key_points": {"description": "Key points of the text", "options": ["max_points"], "requires_question": False},
    "questions": {"description": "Questions the text answers", "options": ["num_questions"], "requires_question": False},
    "qa": {"description": "Answer a question from the text", "options": [], "requires_question": True},
}


def _op_handler(operation: str | None, ctx):
    """The handler of one operation's route (None: /process, the operation is in the body)."""
    async def handler(request: web.Request) -> web.Response:
        text = ctx.text
        raw = await read_body(request)
        route = (operation, request._headers.get(CONTENT_TYPE))  # (aiohttp's attribute behind `headers`)
        parsed = text.memo.get(route, raw)  # (TextRequest, cache key) of a body validated before
        if parsed is None:
            req = parse_text_request(decode_json(request, raw), operation, text.ctx.store.get("text"))
            parsed = (req, text.ctx.cache.key_for(req))
            text.memo.put(route, raw, parsed)
        req, key = parsed
        shared = request._state  # (the request's dict: see service/context.py)
        text.by_key.add((shared.get(KEY_NAME, UNNAMED), req.operation))
        if operation is None:  # /process: analytics learns the operation here (other routes name it)
            shared[OPERATION] = req.operation
        rid = shared[REQUEST_ID]
        out = text.cached(req, key, rid)
        if out is None:
            out = await text.process(req, rid, key)
        return Answer(out)
    handler.__name__ = f"text_{operation or 'process'}"
    return handler


async def batch(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    limits = ctx.store.get("text")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(422, "VALIDATION_ERROR", "request body must be a JSON object", field="body")
    items = body.get("requests", body.get("items"))
    if not isinstance(items, list):
        raise ApiError(422, "VALIDATION_ERROR", "requests must be a list of text requests", field="requests")
    if not 1 <= len(items) <= limits["batch_max_items"]:
        raise ApiError(422, "VALIDATION_ERROR", f"requests must hold 1 to {limits['batch_max_items']} items",
                       field="requests")
    rid = request[REQUEST_ID]
    key_name = request.get(KEY_NAME, UNNAMED)
    sem = asyncio.Semaphore(limits["batch_concurrency"])

    async def one(i: int, item) -> dict:
        try:
            req = parse_text_request(item, None, limits, prefix=f"requests[{i}].")
        except ApiError as e:
            return {"index": i, "status": "failed", "error": {"error_code": e.error_code, "message": e.message,
                                                               "details": e.details}}
        ctx.text.by_key.add((key_name, req.operation))
        async with sem:
            try:
                out = await ctx.text.process(req, f"{rid}-{i}", count_degraded=False)
            except ApiError as e:
                return {"index": i, "status": "failed", "error": {"error_code": e.error_code, "message": e.message,
                                                                   "details": e.details}}
        return {"index": i, "status": "completed", "response": json.loads(out)}

    results = await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
    done = sum(1 for r in results if r["status"] == "completed")
    if any(r.get("response", {}).get("fallback") for r in results):
        TEXT_DEGRADED.labels("batch", STALE).inc()
    return json_response({"batch_id": rid, "total_requests": len(items), "completed": done,
                          "failed": len(items) - done, "results": results})


async def operations(request: web.Request) -> web.Response:
    ops = []
    for name in OPERATIONS:
        info = dict(OPERATION_INFO[name], id=name, path=f"/v1/text/{name}")
        info["option_limits"] = {o: {"min": OPTION_LIMITS[o][1], "max": OPTION_LIMITS[o][2]} for o in info["options"]}
        ops.append(info)
    return json_response({"operations": ops})


def register(app: web.Application, ctx) -> None:
    for op in OPERATIONS:
        app.router.add_post(f"/v1/text/{op}", _op_handler(op, ctx))
    app.router.add_post("/v1/text/process", _op_handler(None, ctx))
    app.router.add_post("/v1/text/batch", batch)
    app.router.add_get("/v1/text/operations", operations)
