"""service/protocol.py's RequestLoop: on Python 3.11 each request runs inline in its connection's task, not
in a task of its own, with the request id reset after it; with a task factory on the loop (loop-hold
timing) requests get their own tasks as before."""
from __future__ import annotations

import asyncio
import pathlib
import re
import sys

import pytest
from aiohttp import web

from service import protocol
from service.log import request_id_var

INLINE = sys.version_info < (3, 12)


def _app(seen: list) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append((request_id_var.get(), asyncio.current_task()))
        request_id_var.set(request.query["n"])
        if request.query.get("fail"):
            raise RuntimeError("boom")
        if request.query.get("wait"):
            await asyncio.sleep(0.01)  # suspends: the rest of the request runs in a later step
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/x", handler)
    return app


@pytest.fixture
def installed():
    protocol.install()  # (what create_app does)


async def test_requests_on_one_connection_share_its_task_and_start_without_the_last_ones_request_id(
        installed, aiohttp_client):
    seen: list = []
    client = await aiohttp_client(_app(seen))
    for q in ("n=0", "n=1&wait=1", "n=2", "n=3&fail=1"):  # one keep-alive connection (a 500 closes it)
        r = await client.get(f"/x?{q}")
        assert r.status == (500 if "fail" in q else 200)
    assert [v for v, _ in seen] == [None, None, None, None]  # a suspended and a failed request reset it too
    tasks = {id(t) for _, t in seen}
    assert len(tasks) == (1 if INLINE else 4)


async def test_with_a_task_factory_on_the_loop_each_request_has_a_task_of_its_own(installed, aiohttp_client):
    loop = asyncio.get_running_loop()
    made = []

    def factory(loop, coro, **kwargs):
        made.append(getattr(coro, "__qualname__", ""))
        return asyncio.Task(coro, loop=loop, **kwargs)

    seen: list = []
    client = await aiohttp_client(_app(seen))
    loop.set_task_factory(factory)
    try:
        for n in range(3):
            assert (await client.get(f"/x?n={n}")).status == 200
    finally:
        loop.set_task_factory(None)
    assert len({id(t) for _, t in seen}) == 3 and [v for v, _ in seen] == [None, None, None]
    if INLINE:
        assert made.count("RequestHandler._handle_request") == 3


def test_the_request_id_is_the_services_only_context_variable():
    """A task of its own gave each request a fresh copy of every context variable; inline, only the request
    id is reset (service/protocol.py). A new ContextVar needs the same."""
    root = pathlib.Path(__file__).resolve().parents[2]
    found = [(p.relative_to(root).as_posix(), m) for d in ("service", "exporter") for p in (root / d).rglob("*.py")
             for m in re.findall(r"ContextVar\(\s*\"(\w+)\"", p.read_text())]
    assert found == [("service/log.py", "request_id")]


def test_the_request_loop_is_the_loop_but_for_the_task_per_request():
    loop = asyncio.new_event_loop()
    try:
        rl = protocol.RequestLoop(loop)
        assert rl.time == loop.time and rl.get_debug() == loop.get_debug()

        async def other():
            return 1

        t = rl.create_task(other())
        assert isinstance(t, asyncio.Task) and loop.run_until_complete(t) == 1
    finally:
        loop.close()
