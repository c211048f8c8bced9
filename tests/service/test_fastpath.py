"""service/fastpath.py: a plain request to a fixed route is served by the FastHandler itself, with the same
request, the same bytes out and the same connection behaviour as aiohttp's path; anything else goes down
aiohttp's path.  Real servers on free loopback ports, raw sockets; each test counts the requests the fast
path served, so none passes by going down aiohttp's path only."""
from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
from aiohttp import web
from aiohttp.http import StreamWriter

from service import fastpath, protocol
from service.monitoring import loopholds
from service.answer import Answer
from tests.helpers import API_KEY

BODY = b'{"ok":true}'


@pytest.fixture
def served(monkeypatch):
    """served: the requests the fast path took (their targets), in order: its route table's hits (the table is
    looked up last, once every other condition held)."""
    protocol.install()  # (what create_app does)
    taken: list = []

    class Counted(dict):
        def get(self, key, default=None):
            found = super().get(key, default)
            if found is not None:
                taken.append(key[1])
            return found

    routes_of = fastpath.routes_of
    monkeypatch.setattr(fastpath, "routes_of", lambda app: Counted(routes_of(app)))
    return taken


@pytest.fixture
async def start():
    """start(app, fast=True, **runner kwargs) -> port; fast=False: the same app with no fast route."""
    runners = []

    async def make(app: web.Application, fast: bool = True, **kwargs) -> int:
        runner = web.AppRunner(app, access_log=None, **kwargs)
        await runner.setup()
        if not fast:
            runner.server._fast_routes = {}
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return site._server.sockets[0].getsockname()[1]

    make.runners = runners
    yield make
    for runner in runners:
        await runner.cleanup()


async def _answer(reader: asyncio.StreamReader, head_only: bool = False) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    m = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    if head_only or b" 204 " in head.split(b"\r\n", 1)[0]:
        return head
    if m:
        return head + await reader.readexactly(int(m.group(1)))
    return head + await reader.read()


async def _closed(reader: asyncio.StreamReader, wait: float = 0.15) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), wait) == b""
    except asyncio.TimeoutError:
        return False
    except ConnectionError:
        return True


async def _exchange(port: int, request: bytes, check_closed: bool = False):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        raw = await _answer(reader, head_only=request.startswith(b"HEAD"))
        return (raw, await _closed(reader)) if check_closed else raw
    finally:
        writer.close()


def _undated(raw: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]+\r\n", b"\r\nDate: -\r\n", raw)


def _post(path: str, body: bytes = BODY, extra: str = "", version: str = "1.1") -> bytes:
    return (f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


# ---- the route table ----------------------------------------------------------------------------------------

async def _noop(request):
    return Answer(BODY)


def _frozen(app: web.Application) -> web.Application:
    app.freeze()
    return app


def test_the_table_holds_each_fixed_routes_methods_as_the_router_would_resolve_them():
    app = web.Application()
    app.router.add_post("/a", _noop)
    app.router.add_get("/a", _noop)  # (and HEAD, which stays aiohttp's)
    app.router.add_route("*", "/any", _noop)
    app.router.add_get("/d/{name}", _noop)  # (indexed under /d, tried before the plain /d: /d stays aiohttp's)
    app.router.add_get("/d", _noop)
    app.router.add_get("/e", _noop)  # (tried before /e/{name})
    app.router.add_get("/e/{name}", _noop)
    table = fastpath.routes_of(_frozen(app))
    assert set(table) == {("POST", "/a"), ("GET", "/a"), ("GET", "/e")}
    info, handler, hooked = table[("POST", "/a")]
    assert info.route.method == "POST" and info.route.resource.canonical == "/a" and handler is _noop
    assert info.apps == (app,) and info._frozen and dict(info) == {} and not hooked


def test_no_table_for_an_app_with_middlewares_a_prepare_hook_is_noted_and_nothing_before_freezing():
    @web.middleware
    async def mw(request, handler):
        return await handler(request)

    with_mw = web.Application(middlewares=[mw])
    with_mw.router.add_post("/a", _noop)
    assert fastpath.routes_of(_frozen(with_mw)) == {}
    hooked = web.Application()
    hooked.router.add_post("/a", _noop)
    hooked.on_response_prepare.append(lambda request, resp: None)
    assert fastpath.routes_of(_frozen(hooked))[("POST", "/a")][2] is True
    unfrozen = web.Application()
    unfrozen.router.add_post("/a", _noop)
    assert fastpath.routes_of(unfrozen) == {}


# ---- the request --------------------------------------------------------------------------------------------

async def test_a_fast_request_holds_what_aiohttps_request_factory_makes(served, start):
    pairs = []

    async def handler(request):
        protocol = request._protocol
        made = protocol._request_factory(request._message, request._payload, protocol,
                                         StreamWriter(protocol, asyncio.get_running_loop()), protocol._task_handler)
        made._match_info = protocol._fast_routes[("POST", "/r")][0]
        pairs.append((request, dict(vars(request)), dict(vars(made)), dict(vars(request._payload_writer)),
                      dict(vars(made._payload_writer))))
        await request.read()
        return Answer(BODY)

    app = web.Application(client_max_size=12345)
    app.router.add_post("/r", handler)
    port = await start(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for n in range(3):  # (the first request of a connection makes its template; the others are made from it)
        writer.write(_post("/r", extra=f"X-A: {n}\r\n"))
        await _answer(reader)
    writer.close()
    assert served == ["/r", "/r", "/r"]
    for n, (mine, a, b, wa, wb) in enumerate(pairs):
        assert type(mine) is web.Request and a.keys() == b.keys()
        for k in b:
            if k == "_payload_writer":
                assert type(a[k]) is type(b[k]) and wa == wb
            else:
                assert a[k] == b[k], k
        assert mine.headers["X-A"] == str(n) and mine._client_max_size == 12345
        assert mine.match_info.route.resource.canonical == "/r" and mine.app is app


# ---- the bytes out ------------------------------------------------------------------------------------------

KINDS = {  # /k/NAME -> what the handler does
    "answer": lambda r: Answer(BODY),
    "answer-header": lambda r: Answer(BODY, 201, {"X-Request-ID": "abc"}),
    "answer-500": lambda r: Answer(BODY, 500),
    "answer-closes": lambda r: _closing(Answer(BODY)),
    "response": lambda r: web.Response(text="plain"),
    "http-error": lambda r: _raise(web.HTTPConflict(text="no")),
    "error": lambda r: _raise(RuntimeError("boom")),
    "timeout": lambda r: _raise(asyncio.TimeoutError()),
    "none": lambda r: None,
}
CLOSES = {"answer-closes", "error", "timeout"}  # (aiohttp answers a None with a 500 and keeps the connection)


def _closing(resp):
    resp.force_close()
    return resp


def _raise(exc):
    raise exc


def _kinds_app() -> web.Application:
    app = web.Application()

    def route(kind):
        async def handler(request):
            await request.read()
            return KINDS[kind](request)
        return handler

    for kind in KINDS:
        app.router.add_post(f"/k/{kind}", route(kind))
        app.router.add_get(f"/k/{kind}", route(kind))
    return app


VARIANTS = {  # name -> (request for PATH, taken by the fast path)
    "POST kept alive": (lambda p: _post(p), True),
    "GET kept alive": (lambda p: f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), True),
    "empty body": (lambda p: _post(p, b""), True),
    "Connection: close": (lambda p: _post(p, extra="Connection: close\r\n"), False),
    "HTTP/1.0": (lambda p: _post(p, version="1.0"), False),
    "HTTP/1.0 keep-alive": (lambda p: _post(p, extra="Connection: keep-alive\r\n", version="1.0"), False),
    "HEAD": (lambda p: f"HEAD {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), False),
    "a query": (lambda p: _post(p + "?a=1"), False),
    "an escape": (lambda p: _post(p.replace("k/", "k%2F")), False),
    "chunked": (lambda p: f"POST {p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n0\r\n\r\n", False),
    "gzip body": (lambda p: _post(p, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00",
                                  extra="Content-Encoding: gzip\r\n"), False),
}


async def test_every_kind_of_answer_goes_out_byte_for_byte_as_on_aiohttps_path(served, start, caplog):
    fast, slow = await start(_kinds_app()), await start(_kinds_app(), fast=False)
    for name, (make, takes) in VARIANTS.items():
        for kind in KINDS:
            request = make(f"/k/{kind}")
            before = len(served)
            with caplog.at_level(logging.ERROR, "aiohttp.server"):
                caplog.clear()
                mine = await _exchange(fast, request, check_closed=name == "POST kept alive")
                mine_logged = [r.getMessage() for r in caplog.records]
                caplog.clear()
                theirs = await _exchange(slow, request, check_closed=name == "POST kept alive")
                theirs_logged = [r.getMessage() for r in caplog.records]
            assert len(served) - before == takes, (name, kind)
            if isinstance(mine, tuple):
                assert mine[1] == theirs[1] == (kind in CLOSES), kind
                mine, theirs = mine[0], theirs[0]
            assert _undated(mine) == _undated(theirs), (name, kind)
            assert mine_logged == theirs_logged, (name, kind)


async def test_an_expect_header_goes_down_aiohttps_path(served, start):
    port = await start(_kinds_app())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /k/answer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
    writer.write(BODY)
    assert (await _answer(reader)).endswith(BODY)
    writer.close()
    assert served == []


# ---- the connection -----------------------------------------------------------------------------------------

def _timed_app(log: list) -> web.Application:
    async def slow(request):
        log.append("slow in")
        try:
            await asyncio.sleep(float(request.headers.get("X-Sleep", "0.2")))
        except asyncio.CancelledError:
            log.append("slow cancelled")
            raise
        log.append("slow out")
        return Answer(b'{"n":"slow"}')

    async def quick(request):
        log.append("quick")
        return Answer(b'{"n":"quick"}')

    app = web.Application()
    app.router.add_post("/slow", slow)
    app.router.add_post("/quick", quick)
    return app


async def test_requests_pipelined_behind_a_fast_one_are_answered_in_order_on_the_same_connection(served, start):
    log: list = []
    port = await start(_timed_app(log))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/slow"))
    await asyncio.sleep(0.05)  # the slow request is in flight on the fast path
    writer.write(_post("/quick") + _post("/quick"))  # queued for aiohttp's loop
    got = [await _answer(reader) for _ in range(3)]
    assert [g.rsplit(b"\r\n\r\n", 1)[1] for g in got] == [b'{"n":"slow"}', b'{"n":"quick"}', b'{"n":"quick"}']
    assert log == ["slow in", "slow out", "quick", "quick"] and served == ["/slow"]
    writer.write(_post("/quick"))  # the connection idle again: fast again
    assert (await _answer(reader)).endswith(b'{"n":"quick"}') and served == ["/slow", "/quick"]
    writer.write(_post("/quick") + _post("/quick"))  # two in one read: aiohttp's
    assert [(await _answer(reader)).endswith(b'{"n":"quick"}') for _ in range(2)] == [True, True]
    assert served == ["/slow", "/quick"]
    writer.close()


async def test_the_keep_alive_timeout_closes_an_idle_connection_but_not_one_with_a_fast_request_in_flight(
        served, start):
    log: list = []
    port = await start(_timed_app(log), keepalive_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/slow", extra="X-Sleep: 0.8\r\n"))  # longer than the keep-alive timeout
    assert (await _answer(reader)).endswith(b'{"n":"slow"}')
    writer.write(_post("/quick"))
    assert (await _answer(reader)).endswith(b'{"n":"quick"}')
    assert not await _closed(reader, 0.1)
    assert await _closed(reader, 2.0)  # idle past the timeout: closed by the server
    assert served == ["/slow", "/quick"]


async def _slow_request(start, shutdown_timeout: float, sleep: str):
    """A server of _timed_app with its one fast request to /slow (taking `sleep` seconds) under way: its log,
    the connection's reader and writer (kept: a writer collected closes the connection)."""
    log: list = []
    port = await start(_timed_app(log), shutdown_timeout=shutdown_timeout)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/slow", extra=f"X-Sleep: {sleep}\r\n"))
    await asyncio.sleep(0.05)
    return log, reader, writer


async def test_a_graceful_shutdown_waits_for_a_fast_request_and_closes_the_connection(served, start):
    log, reader, _writer = await _slow_request(start, 5, "0.3")
    runner = start.runners.pop()
    stopping = asyncio.ensure_future(runner.cleanup())
    assert (await _answer(reader)).endswith(b'{"n":"slow"}')
    assert await _closed(reader, 2.0)
    await stopping
    assert log == ["slow in", "slow out"] and served == ["/slow"]


async def test_a_shutdown_timeout_cancels_a_fast_request(served, start):
    log, reader, _writer = await _slow_request(start, 0.2, "5")
    await asyncio.wait_for(start.runners.pop().cleanup(), 3)
    assert log == ["slow in", "slow cancelled"] and served == ["/slow"]
    assert await _closed(reader, 1.0)


@pytest.mark.parametrize("cancellation", [True, False])
async def test_a_client_gone_cancels_the_handler_as_aiohttps_handler_cancellation_says(served, start, cancellation):
    log: list = []
    port = await start(_timed_app(log), handler_cancellation=cancellation)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/slow", extra="X-Sleep: 0.3\r\n"))
    await asyncio.sleep(0.05)
    writer.close()
    await asyncio.sleep(0.5)
    assert log == (["slow in", "slow cancelled"] if cancellation else ["slow in", "slow out"])
    assert served == ["/slow"]
    assert len(start.runners[0].server.connections) == 0


async def test_with_a_task_factory_on_the_loop_a_fast_request_runs_in_a_task_it_made(served, start):
    loop = asyncio.get_running_loop()
    made = []

    def factory(loop, coro, **kwargs):
        made.append(getattr(coro, "__qualname__", ""))
        request = loopholds._request_of(coro)  # what loop-hold timing attributes the task's steps to
        if request is not None:
            made.append(loopholds._route(request))
        return asyncio.Task(coro, loop=loop, **kwargs)

    tasks = []

    async def handler(request):
        tasks.append(asyncio.current_task())
        return Answer(BODY)

    app = web.Application()
    app.router.add_post("/t", handler)
    port = await start(app)
    loop.set_task_factory(factory)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(_post("/t"))
            await _answer(reader)
        writer.close()
    finally:
        loop.set_task_factory(None)
    assert served == ["/t", "/t"] and made.count("FastHandler._fast") == 2 and tasks[0] is not tasks[1]
    assert made.count("POST /t") == 2


# ---- the service's own app: its stack, errors, limits, access log and metrics -------------------------------

@pytest.fixture
async def service_ports(tmp_path, start, monkeypatch):
    from service.app import create_app
    from service.settings import Settings
    lines = []
    from service.accesslog import AccessLog
    add = AccessLog.add

    def logged(self, method, target, status, *args, **kwargs):
        lines.append((method, target, status))
        return add(self, method, target, status, *args, **kwargs)

    monkeypatch.setattr(AccessLog, "add", logged)

    async def one(fast: bool, n: int) -> int:
        env = {"API_KEY": API_KEY, "STATE_DIR": str(tmp_path / f"state{n}"), "LOG_LEVEL": "INFO",
               "MAX_JSON_SIZE_BYTES": "2048", "ENABLE_CACHING": "false"}
        return await start(create_app(Settings.from_env(env), env=env), fast=fast)

    return await one(True, 0), await one(False, 1), lines


def _normal(raw: bytes) -> bytes:
    """An answer less what differs between any two requests: the request id, the Date, timings in the body
    (and so the Content-Length of a body with timings)."""
    raw = re.sub(rb"[0-9a-f]{32}", b"RID", _undated(raw))
    timed = rb'"(\w*time\w*|\w*_ms|\w*_seconds|created_at)": ?[^,}]+'
    if re.search(timed, raw) or raw.startswith(b"HEAD"):
        raw = re.sub(rb"\r\nContent-Length: \d+\r\n", b"\r\nContent-Length: -\r\n", raw)
    return re.sub(timed, rb'"\1": -', raw)


async def test_the_services_answers_on_the_fast_path_are_its_answers_on_aiohttps(served, service_ports):
    fast, slow, lines = service_ports
    key = f"X-API-Key: {API_KEY}\r\n"
    text = json.dumps({"text": "The quick brown fox jumps over the lazy dog. " * 3}).encode()
    cases = {  # name -> (request, taken by the fast path)
        "summarize": (_post("/v1/text/summarize", text, key), True),
        "no key": (_post("/v1/text/summarize", text), True),
        "not JSON": (_post("/v1/text/summarize", b"{nope", key), True),
        "unknown field": (_post("/v1/text/summarize", b'{"text": "a", "nope": 1}', key), True),
        "too large": (_post("/v1/text/summarize", b'{"text": "' + b"a" * 4000 + b'"}', key), True),
        "GET on a POST route (405)": (f"GET /v1/text/summarize HTTP/1.1\r\nHost: x\r\n{key}\r\n".encode(), False),
        "no such route (404)": (_post("/v1/text/nowhere", text, key), False),
        "HEAD health": (b"HEAD /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", False),
        "health": (b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", True),
        "HTTP/1.0 summarize": (_post("/v1/text/summarize", text, key, version="1.0"), False),
    }
    for name, (request, takes) in cases.items():
        before, logged = len(served), len(lines)
        mine = await _exchange(fast, request)
        assert len(served) - before == takes, name
        theirs = await _exchange(slow, request)
        if request.startswith(b"HEAD"):
            mine, theirs = b"HEAD " + mine, b"HEAD " + theirs
        assert _normal(mine) == _normal(theirs), name
        assert lines[logged] == lines[logged + 1] and len(lines) == logged + 2, name  # one access log line each
    status = {n: _normal(await _exchange(fast, r)).split(b" ", 2)[1] for n, (r, _) in cases.items()}
    assert status["summarize"] == b"200" and status["no key"] == b"401" and status["too large"] == b"413"


async def test_the_services_metrics_count_a_fast_request(served, service_ports):
    fast, _, _ = service_ports
    key = f"X-API-Key: {API_KEY}\r\n"

    async def count() -> float:
        raw = await _exchange(fast, f"GET /metrics HTTP/1.1\r\nHost: x\r\n{key}\r\n".encode())
        m = re.search(rb'llmapi_http_requests_total\{[^}]*route="/v1/text/summarize"[^}]*status="401"[^}]*\} (\S+)',
                      raw)
        return float(m.group(1)) if m else 0.0

    before = await count()
    for _ in range(3):
        await _exchange(fast, _post("/v1/text/summarize", b'{"text": "a"}'))
    assert await count() == before + 3 and served.count("/v1/text/summarize") == 3


async def test_a_connections_fast_requests_share_one_task_start_without_the_last_ones_request_id_and_it_ends_with_it(
        served, start):
    from service.log import request_id_var
    seen = []

    async def handler(request):
        seen.append((request_id_var.get(), asyncio.current_task()))
        request_id_var.set("rid")
        if request.headers.get("X-Fail"):
            raise web.HTTPBadRequest()
        return Answer(BODY)

    app = web.Application()
    app.router.add_post("/t", handler)
    port = await start(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for extra in ("", "X-Fail: 1\r\n", ""):
        writer.write(_post("/t", extra=extra))
        await _answer(reader)
    assert served == ["/t"] * 3 and [v for v, _ in seen] == [None, None, None]
    task = seen[0][1]
    assert all(t is task for _, t in seen) and not task.done()
    writer.close()
    await asyncio.sleep(0.1)
    assert task.done()
