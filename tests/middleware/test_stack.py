"""The stack runner (service/middleware/stack.py): the order of the steps, waits, re-routing,
failures turned into answers, and what a cancelled request releases."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.middleware import ORDER
from service.middleware.stack import Answer, Layer, Rerouted, Wait, build
from service.middleware.stackperf import StackProfiler


class Recorder(Layer):
    def __init__(self, name: str, log: list, wait: bool = False, refuse: Exception | None = None,
                 rescue: bool = False, answer: bool = False):
        self.name, self.log, self.waits, self.refuse, self.rescue, self.answer = name, log, wait, refuse, rescue, answer

    def enter(self, request):
        self.log.append(f"enter {self.name}")
        if self.answer:
            raise Answer(web.Response(status=204))
        if self.refuse is not None:
            raise self.refuse
        return Wait(self.name) if self.waits else self.name

    async def wait(self, request, state):
        await asyncio.sleep(0)
        self.log.append(f"wait {self.name}")
        return state + "!"

    def leave(self, request, resp, state):
        self.log.append(f"leave {self.name} {state} {resp.status}")
        resp.headers[f"X-{self.name}"] = state

    def fail(self, request, exc, state):
        self.log.append(f"fail {self.name} {type(exc).__name__}")
        if self.rescue and isinstance(exc, Exception):
            return web.Response(status=418)
        return None


def _prof(every: int = 1_000_000) -> StackProfiler:
    prof = StackProfiler(ConfigStore(SECTIONS, env={}), ORDER)
    prof.every = every
    return prof


@pytest.fixture(params=["generated", "general"])
def prof(request) -> StackProfiler:
    """Each behaviour test runs twice: through a route's generated runner (Plan.run), and sampled, through
    the general runner (_run) with every step timed."""
    return _prof(every=1_000_000 if request.param == "generated" else 1)


async def _client(aiohttp_client, layers, handler=None, prof=None):
    async def ok(request):
        return web.Response(text="ok")
    app = web.Application(middlewares=[build(layers, prof or _prof())])
    app.router.add_get("/x", handler or ok)
    return await aiohttp_client(app)


async def test_enters_outside_in_leaves_inside_out_with_their_states(aiohttp_client, prof):
    log: list = []
    client = await _client(aiohttp_client, [Recorder("a", log), Recorder("b", log, wait=True), Recorder("c", log)],
                           prof=prof)
    r = await client.get("/x")
    assert r.status == 200 and r.headers["X-b"] == "b!" and r.headers["X-a"] == "a"
    assert log == ["enter a", "enter b", "wait b", "enter c", "leave c c 200", "leave b b! 200", "leave a a 200"]


async def test_a_refusal_unwinds_only_the_layers_entered_and_an_outer_one_answers(aiohttp_client, prof):
    log: list = []
    layers = [Recorder("a", log, rescue=True), Recorder("b", log), Recorder("c", log, refuse=ValueError("no")),
              Recorder("d", log)]
    r = await (await _client(aiohttp_client, layers, prof=prof)).get("/x")
    assert r.status == 418
    assert log == ["enter a", "enter b", "enter c", "fail b ValueError", "fail a ValueError"]


async def test_a_failure_raised_in_place_of_another_reaches_the_outer_layers(aiohttp_client, prof):
    log: list = []

    class Swap(Recorder):
        def fail(self, request, exc, state):
            super().fail(request, exc, state)
            raise KeyError("swapped")

    layers = [Recorder("a", log, rescue=True), Swap("b", log)]

    async def boom(request):
        raise ValueError("handler")
    r = await (await _client(aiohttp_client, layers, boom, prof=prof)).get("/x")
    assert r.status == 418
    assert log == ["enter a", "enter b", "fail b ValueError", "fail a KeyError"]


async def test_a_leave_that_raises_is_failed_by_the_outer_layers_only(aiohttp_client, prof):
    log: list = []

    class Broken(Recorder):
        def leave(self, request, resp, state):
            super().leave(request, resp, state)
            raise RuntimeError("leave")

    layers = [Recorder("a", log, rescue=True), Recorder("b", log), Broken("c", log), Recorder("d", log)]
    r = await (await _client(aiohttp_client, layers, prof=prof)).get("/x")
    assert r.status == 418
    assert log == ["enter a", "enter b", "enter c", "enter d", "leave d d 200", "leave c c 200",
                   "fail b RuntimeError", "fail a RuntimeError"]


async def test_an_answer_skips_the_inner_layers_and_the_outer_ones_leave(aiohttp_client, prof):
    log: list = []
    layers = [Recorder("a", log), Recorder("b", log, answer=True), Recorder("c", log)]
    r = await (await _client(aiohttp_client, layers, prof=prof)).get("/x")
    assert r.status == 204 and r.headers["X-a"] == "a"
    assert log == ["enter a", "enter b", "leave a a 204"]


async def test_a_rerouted_request_reaches_the_inner_layers_and_the_new_handler(aiohttp_client, prof):
    seen: dict = {}

    class Route(Layer):
        name = "route"

        def enter(self, request):
            return Wait("v")

        async def wait(self, request, state):
            async def other(req):
                return web.Response(text=req.headers["X-Clone"])
            return Rerouted(request.clone(headers={"X-Clone": "yes"}), other, state)

    class Inner(Layer):
        name = "inner"

        def enter(self, request):
            seen["inner"] = request.headers.get("X-Clone")

    class Outer(Layer):
        name = "outer"

        def leave(self, request, resp, state):
            seen["outer"] = request.headers.get("X-Clone")

    r = await (await _client(aiohttp_client, [Outer(), Route(), Inner()], prof=prof)).get("/x")
    assert await r.text() == "yes"
    assert seen == {"inner": "yes", "outer": None}


async def test_a_leave_that_waits_gives_the_response(aiohttp_client, prof):
    class Later(Layer):
        name = "later"

        def leave(self, request, resp, state):
            async def swap():
                await asyncio.sleep(0)
                return web.Response(text="later")
            return swap()

    r = await (await _client(aiohttp_client, [Later()], prof=prof)).get("/x")
    assert await r.text() == "later"


async def test_a_cancelled_request_runs_every_entered_fail_step(aiohttp_client, prof):
    log: list = []
    started = asyncio.Event()

    async def slow(request):
        started.set()
        await asyncio.sleep(30)
        return web.Response(text="never")
    client = await _client(aiohttp_client, [Recorder("a", log), Recorder("b", log)], slow, prof=prof)
    task = asyncio.ensure_future(client.get("/x"))
    await started.wait()
    task.cancel()  # the client goes away: aiohttp cancels the handler
    for _ in range(100):
        if len(log) == 4:
            break
        await asyncio.sleep(0.02)
    assert log == ["enter a", "enter b", "fail b CancelledError", "fail a CancelledError"]


async def test_a_sampled_request_times_every_step(aiohttp_client):
    names = [m.__name__.rsplit(".", 1)[-1] for m in ORDER]
    log: list = []
    prof = _prof(every=1)
    client = await _client(aiohttp_client, [Recorder(n, log, wait=(n == "auth")) for n in names], prof=prof)
    for _ in range(3):
        assert (await client.get("/x")).status == 200
    snap = prof.snapshot()
    assert snap["samples"] == 3 and snap["incomplete_samples"] == 0
    assert set(snap["breakdown"]) == set(names) | {"stack"}
    assert snap["breakdown"]["auth"]["avg_ms"] > 0  # its wait (a loop turn) counts as its own time


async def test_an_answered_failure_is_freed_without_the_garbage_collector(aiohttp_client, prof):
    # the errors layer's render re-raises the exception in a frame that holds it, so its traceback and
    # that frame form a cycle; once answered the runner cuts it and the exception dies with the request
    import gc
    import weakref

    class Boom(Exception):
        pass

    class Render(Layer):
        name = "render"

        def fail(self, request, exc, state):
            try:
                raise exc
            except Boom:
                return web.Response(status=500)

    refs = []

    async def boom(request):
        e = Boom("handler")
        refs.append(weakref.ref(e))
        raise e
    client = await _client(aiohttp_client, [Render()], boom, prof=prof)
    gc.disable()
    try:
        r = await client.get("/x")
        assert r.status == 500
        await r.read()
        for _ in range(5):
            await asyncio.sleep(0)
        assert refs and refs[0]() is None
    finally:
        gc.enable()


class Skipper(Recorder):
    """Skips the fixed route /x while `skip` is set."""
    skip = True

    def skips(self, path, method):
        return self.skip and path == "/x"


async def test_a_layer_that_skips_a_fixed_route_is_left_out_of_it_until_the_config_changes(aiohttp_client):
    log: list = []
    prof = _prof()
    skipper = Skipper("s", log)

    async def ok(request):
        return web.Response(text="ok")
    app = web.Application(middlewares=[build([Recorder("a", log), skipper], prof)])
    app.router.add_get("/x", ok)
    app.router.add_get("/y/{n}", ok)
    client = await aiohttp_client(app)
    assert (await client.get("/x")).status == 200
    assert log == ["enter a", "leave a a 200"]
    for path, status in (("/y/1", 200), ("/nowhere", 404)):  # a dynamic route, an unmatched path: every layer
        log.clear()
        await client.get(path)
        assert "enter s" in log, path
    skipper.skip = False  # (what a config change may decide)
    log.clear()
    await client.get("/x")
    assert log == ["enter a", "leave a a 200"]  # the route's list is kept...
    await prof.store.update("middleware", {"overhead_target_ms": 0.4}, actor="test")
    log.clear()
    await client.get("/x")
    assert log == ["enter a", "enter s", "leave s s 200", "leave a a 200"]  # ...until any config change


async def test_a_sampled_request_runs_every_layer_even_one_that_skips_its_route(aiohttp_client):
    log: list = []
    client = await _client(aiohttp_client, [Recorder("a", log), Skipper("s", log)], prof=_prof(every=1))
    assert (await client.get("/x")).status == 200
    assert log == ["enter a", "enter s", "leave s s 200", "leave a a 200"]


async def test_a_layer_with_no_leave_or_fail_of_its_own_is_not_called_on_the_way_out(aiohttp_client):
    from service.middleware.stack import Plan
    log: list = []

    class EnterOnly(Layer):
        name = "only"

        def enter(self, request):
            log.append("enter only")

    layers = [Recorder("a", log), EnterOnly(), Recorder("c", log)]
    assert Plan(None, layers).outward == [2, 0]  # innermost first, without the enter-only layer
    client = await _client(aiohttp_client, layers)
    assert (await client.get("/x")).status == 200
    assert log == ["enter a", "enter only", "enter c", "leave c c 200", "leave a a 200"]
    log.clear()
    layers[2].refuse = web.HTTPForbidden()  # a refusal inside it unwinds the layers entered before
    client = await _client(aiohttp_client, layers)
    assert (await client.get("/x")).status == 403
    assert log == ["enter a", "enter only", "enter c", "fail a HTTPForbidden"]


async def test_an_enter_that_passes_a_fixed_route_is_not_called_there_but_its_leave_is(aiohttp_client):
    log: list = []

    class Passer(Recorder):
        def passes(self, path, method):
            return path == "/x"

        def leave(self, request, resp, state):
            self.log.append(f"leave {self.name} {state} {resp.status}")

    async def ok(request):
        return web.Response(text="ok")
    app = web.Application(middlewares=[build([Recorder("a", log), Passer("p", log)], _prof())])
    app.router.add_get("/x", ok)
    app.router.add_get("/y", ok)
    client = await aiohttp_client(app)
    assert (await client.get("/x")).status == 200
    assert log == ["enter a", "leave p None 200", "leave a a 200"]
    log.clear()
    assert (await client.get("/y")).status == 200
    assert log == ["enter a", "enter p", "leave p p 200", "leave a a 200"]
