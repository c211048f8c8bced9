"""A fake OpenAI-compatible upstream for tests, benchmarks and load tests
without an LLM bill.

    python -m service.providers.fake_upstream --host 127.0.0.1 --port 8099 \
        [--latency-ms 50] [--jitter-ms 20] [--error-rate 0.1] [--error-status 503] \
        [--retry-after 2] [--mode json|fenced|plain|garbage|no_choices|not_json] [--api-key KEY] [--seed N]

POST /v1/chat/completions answers in the OpenAI response shape (with usage).
The content is produced by the embedded LocalProvider from the user message,
so answers are meaningful and in the JSON shape the OpenAIProvider prompt
asks for.  Other prompts get a summary of the message.

Control while running:
    POST /_control  {"latency_ms", "jitter_ms", "error_rate", "error_status", "retry_after", "mode",
                     "seed", "reject_json_mode", "ratelimit_requests", "ratelimit_tokens"}
                    (ratelimit_*: a quota; answers then carry x-ratelimit-remaining-requests/-tokens,
                    the quota minus the calls / tokens answered so far)
    GET  /_control  current settings
    GET  /_stats    {"calls", "errors", "in_flight", "max_in_flight", "connections"}
                    (connections: distinct client connections seen, shows keep-alive reuse)
    GET  /_last     the last chat request body (and whether it carried a key)
    POST /_reset    zero the stats and restore the start-up settings
GET /v1/models lists the one model.  Prints "listening on http://host:port"
when ready (port 0 picks a free port).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
import uuid

from aiohttp import web

from service.providers.base import ProviderError, TextRequest
from service.providers.local import LocalProvider, estimate_tokens
from service.providers.openai_compat import parse_prompt, render_answer

MODES = ("json", "fenced", "plain", "garbage", "no_choices", "not_json")
MODEL = "fake-" + LocalProvider.model
_SETTINGS = {  # name: (type check, default)
    "latency_ms": ((int, float), 0.0),
    "jitter_ms": ((int, float), 0.0),
    "error_rate": ((int, float), 0.0),
    "error_status": ((int,), 503),
    "retry_after": ((int, float, str, type(None)), None),
    "mode": ((str,), "json"),
    "seed": ((int, type(None)), None),
    "reject_json_mode": ((bool,), False),  # answer 400 to response_format, like some servers
    "ratelimit_requests": ((int, type(None)), None),
    "ratelimit_tokens": ((int, type(None)), None),
}


class UpstreamState:
    def __init__(self, **settings):
        self.initial = {k: d for k, (_, d) in _SETTINGS.items()}
        self.initial.update({k: v for k, v in settings.items() if k in _SETTINGS})
        self.api_key: str | None = settings.get("api_key")
        self.settings: dict = {}
        self.rng = random.Random()
        self.reset()

    def reset(self) -> None:
        self.settings = dict(self.initial)
        self.rng.seed(self.settings["seed"])
        self.calls = self.errors = self.in_flight = self.max_in_flight = 0
        self.answered = self.tokens = 0
        self.last: dict | None = None
        self.peers: set = set()

    def update(self, changes: dict) -> None:
        """Validate everything first, then apply; raises ValueError naming the field."""
        for k, v in changes.items():
            if k not in _SETTINGS:
                raise ValueError(f"unknown setting {k!r}")
            types, _ = _SETTINGS[k]
            if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
                raise ValueError(f"{k}: wrong type")
            if k in ("latency_ms", "jitter_ms") and v < 0:
                raise ValueError(f"{k}: must be >= 0")
            if k == "error_rate" and not 0 <= v <= 1:
                raise ValueError("error_rate: must be between 0 and 1")
            if k == "error_status" and not 400 <= v <= 599:
                raise ValueError("error_status: must be an HTTP error status")
            if k == "mode" and v not in MODES:
                raise ValueError(f"mode: one of {', '.join(MODES)}")
        self.settings.update(changes)
        if "seed" in changes:
            self.rng.seed(changes["seed"])

    def stats(self) -> dict:
        return {"calls": self.calls, "errors": self.errors, "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight, "connections": len(self.peers)}


STATE = web.AppKey("state", UpstreamState)
_local = LocalProvider()


def _error(status: int, message: str, etype: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": etype, "code": status}},
                             status=status, headers=headers)


def _message_text(msg: dict) -> str:
    c = msg.get("content")
    if isinstance(c, list):  # content parts
        return "\n".join(p.get("text", "") for p in c if isinstance(p, dict))
    return c if isinstance(c, str) else ""


def _render(mode: str, op: str, answer: dict) -> str:
    if mode == "fenced":
        return "Here is the result:\n```json\n" + json.dumps(answer, indent=2) + "\n```"
    if mode == "garbage":
        return "%%% ### ~~~ !!! ::: ---"
    if mode != "plain":
        return json.dumps(answer)
    if op == "sentiment":
        return (f"The sentiment is {answer['label']} (confidence {answer['confidence']}). "
                f"{answer['explanation']}")
    if op in ("key_points", "questions"):
        title = "Key points" if op == "key_points" else "Questions"
        return f"{title}:\n" + "\n".join(f"{i}. {x}" for i, x in enumerate(answer[op], 1))
    return ("Answer: " if op == "qa" else "Summary: ") + next(iter(answer.values()))


_ANSWERS: dict[tuple, object] = {}
ANSWERS_KEPT = 4096  # a repeated prompt is answered from here: load tests measure the caller, not this CPU


def _answer(req: TextRequest):
    try:
        key = (req.operation, req.text, req.question, tuple(sorted((req.options or {}).items())))
        result = _ANSWERS.get(key)
    except TypeError:  # an unhashable option value: no memo
        return _local.run(req)
    if result is None:
        result = _local.run(req)
        if len(_ANSWERS) < ANSWERS_KEPT:
            _ANSWERS[key] = result
    return result


async def chat_completions(request: web.Request) -> web.Response:
    st = request.app[STATE]
    s = st.settings
    st.calls += 1
    st.in_flight += 1
    st.max_in_flight = max(st.max_in_flight, st.in_flight)
    if request.transport is not None:
        st.peers.add(request.transport.get_extra_info("peername"))
    try:
        try:
            body = await request.json()
        except ValueError:
            st.errors += 1
            return _error(400, "request body is not JSON", "invalid_request_error")
        st.last = {"body": body, "authorization": bool(request.headers.get("Authorization"))}
        delay = float(s["latency_ms"]) + (st.rng.uniform(0, float(s["jitter_ms"])) if s["jitter_ms"] else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if st.api_key and request.headers.get("Authorization") != f"Bearer {st.api_key}":
            st.errors += 1
            return _error(401, "invalid API key", "invalid_request_error")
        if s["error_rate"] and st.rng.random() < float(s["error_rate"]):
            st.errors += 1
            status = int(s["error_status"])
            ra = s["retry_after"]
            if isinstance(ra, float) and ra.is_integer():
                ra = int(ra)
            headers = {"Retry-After": str(ra)} if ra is not None else None
            etype = "rate_limit_exceeded" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
            return _error(status, f"injected error {status}", etype, headers)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            st.errors += 1
            return _error(400, "messages: a non-empty list is required", "invalid_request_error")
        if s["reject_json_mode"] and "response_format" in body:
            st.errors += 1
            return _error(400, "response_format is not supported", "invalid_request_error")
        if body.get("stream"):
            st.errors += 1
            return _error(400, "stream: not supported by the fake upstream", "invalid_request_error")
        user = [_message_text(m) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt_text = user[-1] if user else ""
        req = parse_prompt(prompt_text)
        structured = req is not None
        if req is None:
            req = TextRequest("summarize", prompt_text or "(empty)", {})
        try:
            result = _answer(req)
        except ProviderError as e:
            st.errors += 1
            return _error(400, str(e), "invalid_request_error")
        answer = render_answer(req.operation, result.payload)
        if s["mode"] == "not_json":
            return web.Response(text="<html><body>upstream proxy error</body></html>", content_type="text/html")
        if structured:
            content = _render(s["mode"], req.operation, answer)
        else:
            content = result.payload["result"]
        prompt_tokens = sum(estimate_tokens(_message_text(m)) for m in messages if isinstance(m, dict))
        completion_tokens = estimate_tokens(content)
        choices = [] if s["mode"] == "no_choices" else [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
        st.answered += 1
        st.tokens += prompt_tokens + completion_tokens
        quota = {}
        if s["ratelimit_requests"] is not None:
            quota["x-ratelimit-remaining-requests"] = str(max(0, s["ratelimit_requests"] - st.answered))
        if s["ratelimit_tokens"] is not None:
            quota["x-ratelimit-remaining-tokens"] = str(max(0, s["ratelimit_tokens"] - st.tokens))
        return web.json_response(headers=quota or None, data={
            "id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or MODEL, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}})
    finally:
        st.in_flight -= 1


async def models(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if st.api_key and request.headers.get("Authorization") != f"Bearer {st.api_key}":
        return _error(401, "invalid API key", "invalid_request_error")
    return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "local"}]})


async def control(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if request.method == "POST":
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            st.update(changes)
        except ValueError as e:
            return _error(400, str(e), "invalid_request_error")
    return web.json_response(st.settings)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def last(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].last)


async def reset(request: web.Request) -> web.Response:
    st = request.app[STATE]
    st.reset()
    return web.json_response({"settings": st.settings, "stats": st.stats()})


def make_app(**settings) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[STATE] = UpstreamState(**settings)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_route("*", "/_control", control)
    app.router.add_get("/_stats", stats)
    app.router.add_get("/_last", last)
    app.router.add_post("/_reset", reset)
    return app


class FakeUpstream:
    """In-process server: `async with FakeUpstream(latency_ms=5) as up: up.base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **settings):
        self.host, self.port = host, port
        self.app = make_app(**settings)
        self.runner: web.AppRunner | None = None

    @property
    def state(self) -> UpstreamState:
        return self.app[STATE]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    async def start(self) -> "FakeUpstream":
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def __aenter__(self) -> "FakeUpstream":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def _parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m service.providers.fake_upstream",
                                description="Fake OpenAI-compatible /v1/chat/completions server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--error-status", type=int, default=503)
    p.add_argument("--retry-after", default=None, help="Retry-After value sent with injected errors")
    p.add_argument("--mode", choices=MODES, default="json")
    p.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    if not 0 <= args.error_rate <= 1:
        p.error("--error-rate must be between 0 and 1")
    return args


async def _serve(args: argparse.Namespace) -> None:
    retry_after = args.retry_after
    if retry_after is not None:
        try:
            retry_after = float(retry_after)
        except ValueError:
            pass  # an HTTP date
    up = FakeUpstream(args.host, args.port, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
                      error_rate=args.error_rate, error_status=args.error_status, retry_after=retry_after,
                      mode=args.mode, api_key=args.api_key, seed=args.seed)
    await up.start()
    print(f"listening on {up.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await up.stop()


def main(argv=None) -> None:
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
