"""The middleware stack as one aiohttp middleware: each layer's steps called in order.

A layer (one module each, listed in service/middleware/__init__.py) has
three plain methods:

    enter(request) -> state         before the handler; raises to refuse
    leave(request, response, state) after it, innermost first; returns None,
                                    or an awaitable giving the response
    fail(request, exc, state)       an exception from inside it; returns a
                                    response to answer with, None to pass
                                    the exception on outwards, or raises
                                    another one in its place

An enter that must wait (reading the body, a Redis lease, an admission
slot) returns Wait(state), and the runner awaits the layer's
`wait(request, state)` for the state.  A state of type Rerouted (versioning: /v2/... served by the /v1
route) replaces the request and handler the inner layers and the handler
see; the outer layers keep the original.  An Answer raised by an enter is
the response itself (a CORS preflight): the inner layers and the handler are
skipped, the layers outside it leave as usual.

One coroutine for the whole stack instead of one per layer: what the nine
layers cost is their own work, not nine frames, partials and try blocks.

Per route: a request matched to a fixed route (one path, see fixed_route)
runs only the layers that act on that route under the current config: a
layer whose `skips(path, method)` is true (versioning off the /vN/ paths,
admission on admin routes, rate limiting when it is off) is left out of
that route's list, which is rebuilt after any config change.  The route is
in request[ROUTE] (None when the path is not fixed), so layers can key
their own per-route decisions on it.

Timing (service/middleware/stackperf.py): one request in
`middleware.sample_every` runs every layer through the general runner, which
records perf_counter() around every step (each enter, the handler, each
leave), so each layer's own time, the handler's and the runner's own are
measured directly.
"""
from __future__ import annotations

from time import perf_counter

from aiohttp import web
from aiohttp.web_urldispatcher import PlainResource, UrlMappingMatchInfo

from service.context import ROUTE


from service.errors import drop_tracebacks


class Wait:
    """An enter's answer when it must wait: the runner awaits layer.wait(request, state) for the state."""
    __slots__ = ("state",)

    def __init__(self, state=None):
        self.state = state


class Rerouted:
    """A state that re-routes the request: the inner layers and the handler get `request` and `handler`."""
    __slots__ = ("request", "handler", "state")

    def __init__(self, request, handler, state):
        self.request = request
        self.handler = handler
        self.state = state


class Answer(Exception):
    """Raised by an enter: answer with this response (the layers already entered leave with it)."""

    def __init__(self, response: web.StreamResponse):
        super().__init__("answered by a layer")
        self.response = response


class Layer:
    """The steps a layer leaves out do nothing."""
    name = "layer"

    def enter(self, request):
        return None

    def leave(self, request, response, state):
        return None

    def fail(self, request, exc, state):
        return None

    async def wait(self, request, state):
        return state

    def skips(self, path: str, method: str) -> bool:
        """Does this layer do nothing at all (enter None, no leave, no fail) for every request matched to the
        fixed route (path, method) under the current config?  Asked once per route after each config change."""
        return False

    def passes(self, path: str, method: str) -> bool:
        """Is this layer's enter a step that does nothing (None, no effect) for every request matched to the
        fixed route (path, method) under the current config?  Then that route's runner does not call it (its
        leave and fail still run).  Asked with skips."""
        return False


def fixed_route(request: web.Request):
    """The route a request matched when its path is fixed (a PlainResource: one route, one path), else None:
    a bounded set of objects to key per-route decisions on (unlike paths, or unmatched requests)."""
    info = request.match_info
    if info.http_exception is not None:
        return None
    route = info.route
    return route if type(route.resource) is PlainResource else None


def build(layers: list, prof) -> web.middleware:
    """The one middleware of the app; `prof` is the StackProfiler that samples it."""
    finish = prof.finish
    countdown = prof.every
    every = list(layers)
    everyone = Plan(None, every)
    plans: dict = {}  # matched route -> its Plan
    prof.store.subscribe(lambda section, new, old: plans.clear())

    def plan(route) -> Plan:
        if type(route.resource) is not PlainResource:
            return everyone
        path, method = route.resource.canonical, route.method
        return Plan(route, [layer for layer in every if not layer.skips(path, method)])

    timed = Plan(None, every, timed=True)

    async def sampled(request, handler):
        ts: list = []
        try:
            return await _run(timed, request, handler, ts)
        finally:
            finish(ts)

    @web.middleware
    def stack(request: web.Request, handler):
        """(Not a coroutine function: it gives the plan's coroutine, which aiohttp awaits.)"""
        nonlocal countdown
        countdown -= 1
        info = request._match_info  # (set before the middlewares run; `match_info` is a reify)
        if type(info) is UrlMappingMatchInfo:  # matched (a MatchInfoError is a 404/405)
            p = plans.get(info._route)
            if p is None:
                p = plans[info._route] = plan(info._route)
        else:
            p = everyone
        request._state[ROUTE] = p.route  # (the request's dict: see service/context.py)
        if countdown > 0:
            return p.run(request, handler)
        countdown = prof.every  # a sampled request: every layer's steps, each between two timestamps
        return sampled(request, handler)

    return stack


class Plan:
    """The layers a route runs, their bound steps, and `run(request, handler)`, the coroutine function that
    runs them.

    `outward`: innermost first, the indices of the layers with a leave or a fail step of their own (a layer
    with neither, like auth, has nothing to do on the way out).  `run` is generated for the list (see
    _source): the enters and the leaves one after the other, each step called directly, for the common
    case where no enter waits and nothing fails.  At the first Wait, Answer or exception it hands the
    request, with the states so far, to the general runner (_run, _unwind), which does the same steps in
    loops."""
    __slots__ = ("route", "layers", "passed", "enters", "leaves", "fails", "outward", "run")

    def __init__(self, route, layers: list, timed: bool = False):
        self.route = route  # the fixed route (see fixed_route) or None
        self.layers = layers
        where = (route.resource.canonical, route.method) if route is not None else None
        self.passed = [where is not None and layer.passes(*where) for layer in layers]  # enters run() leaves out
        self.enters = [layer.enter for layer in layers]
        self.leaves = [layer.leave for layer in layers]
        self.fails = [layer.fail for layer in layers]
        self.outward = [i for i in range(len(layers) - 1, -1, -1)  # (a timed plan: every layer leaves, timed)
                        if timed or type(layers[i]).leave is not Layer.leave or type(layers[i]).fail is not Layer.fail]
        self.run = None if timed else _compile(self)


def _source(plan: Plan) -> str:
    """The source of a plan's run(request, handler): for layers [a, b] with leaves of their own, in effect

        try: s0 = enter0(request)
        except BaseException as e: return await failed(plan, request, [], e)
        if type(s0) is Wait: return await _run(plan, request, handler, None, [], s0)
        ... (s1 the same) ...
        try: resp = await handler(request)
        except BaseException as e: return await failed(plan, request, [s0, s1], e)
        try: w = leave1(request, resp, s1); if w is not None: resp = await w
        except BaseException as e: return await _unwind(plan, request, request, 0, [s0, s1], resp, e, 1)
        ... (leave0 the same, from position 2 of outward) ...
        return resp
    """
    n = len(plan.layers)
    out = ["async def run(request, handler):"]
    for i in range(n):
        states = ", ".join(f"s{j}" for j in range(i))
        if plan.passed[i]:
            out.append(f"    s{i} = None  # ({plan.layers[i].name}: nothing to do on this route)")
            continue
        out += [f"    try:", f"        s{i} = enter{i}(request)",
                f"    except BaseException as e:", f"        return await failed(plan, request, [{states}], e)",
                f"    if type(s{i}) is Wait:", f"        return await run_all(plan, request, handler, None, [{states}], s{i})"]
    states = ", ".join(f"s{j}" for j in range(n))
    out += ["    try:", "        resp = await handler(request)",
            "    except BaseException as e:", f"        return await failed(plan, request, [{states}], e)"]
    for pos, i in enumerate(plan.outward):
        if type(plan.layers[i]).leave is Layer.leave:
            continue  # (a fail step only)
        out += ["    try:", f"        w = leave{i}(request, resp, s{i})", "        if w is not None:",
                "            resp = await w",
                "    except BaseException as e:", f"        return await unwind(plan, request, request, 0, [{states}], resp, e, {pos + 1})"]
    out.append("    return resp")
    return "\n".join(out) + "\n"


def _compile(plan: Plan):
    names = {"Wait": Wait, "plan": plan, "failed": _failed, "run_all": _run, "unwind": _unwind}
    for i, layer in enumerate(plan.layers):
        names[f"enter{i}"], names[f"leave{i}"] = plan.enters[i], plan.leaves[i]
    route = plan.route
    where = f"<stack {route.method} {route.resource.canonical}>" if route is not None else "<stack>"
    exec(compile(_source(plan), where, "exec"), names)
    return names["run"]


async def _failed(plan: Plan, request, states: list, exc: BaseException):
    """An enter (of layer len(states)) or the handler raised `exc`: an Answer is the response, the layers
    entered leave with it; anything else, they fail with it."""
    if isinstance(exc, Answer):
        return await _unwind(plan, request, request, 0, states, exc.response, None, 0)
    return await _unwind(plan, request, request, 0, states, None, exc, 0)


async def _run(plan: Plan, request, handler, ts=None, states=None, pending=None):
    """The general runner: the enters from layer len(states) (whose enter gave `pending`, a Wait, if any),
    the handler, then the way out.  `ts`: a sampled request's timestamps, taken before and after each
    enter (its wait included), the handler and each leave (service/middleware/stackperf.py)."""
    layers = plan.layers
    req = request
    split = 0  # layers from this index on see the re-routed request
    states = [] if states is None else states
    resp = exc = None
    try:
        for i in range(len(states), len(layers)):
            if pending is None:
                if ts is not None:
                    ts.append(perf_counter())
                st = plan.enters[i](req)
            else:
                st, pending = pending, None
            if type(st) is Wait:
                st = await layers[i].wait(req, st.state)
                if type(st) is Rerouted:
                    req, handler = st.request, st.handler
                    req._state[ROUTE] = fixed_route(req)
                    split = i + 1
            if ts is not None:
                ts.append(perf_counter())
            states.append(st)
        if ts is None:
            resp = await handler(req)
        else:
            ts.append(perf_counter())
            resp = await handler(req)
            ts.append(perf_counter())
    except Answer as a:
        resp = a.response
    except BaseException as e:  # (CancelledError too: the layers' fail steps release what they hold)
        exc = e
    return await _unwind(plan, request, req, split, states, resp, exc, 0, ts)


async def _unwind(plan: Plan, request, req, split: int, states: list, resp, exc, pos: int, ts=None):
    """The way out from position `pos` of plan.outward, for the layers entered (those with a state): each
    leaves with the response, or fails with the exception; the layers from `split` on see `req`.  `ts`:
    a sampled request's timestamps, before and after each leave."""
    leaves, fails, entered = plan.leaves, plan.fails, len(states)
    for i in plan.outward[pos:]:
        if i >= entered:
            continue
        r = req if i >= split else request
        if exc is None:
            try:
                if ts is not None:
                    ts.append(perf_counter())
                w = leaves[i](r, resp, states[i])
                if w is not None:
                    resp = await w
                if ts is not None:
                    ts.append(perf_counter())
            except BaseException as e:
                exc = e
        else:
            try:
                out = fails[i](r, exc, states[i])
            except BaseException as e:
                exc = e
                continue
            if out is not None:
                resp = out
                drop_tracebacks(exc)  # (else a reference cycle per failed request: service/errors.py)
                exc = None
    if exc is not None:
        raise exc
    return resp
