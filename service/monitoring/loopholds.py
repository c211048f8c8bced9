"""How long each task step holds the event loop (opt-in: monitoring.loop_hold_timing).

An asyncio task runs as steps: from one await that suspends to the next.
While a step runs nothing else on the loop does, so the longest step is the
longest any other request waits for it.  When monitoring.loop_hold_timing is
on, the loop's task factory wraps every new task's coroutine so that each
step is timed: its wall time (perf_counter), the loop thread's CPU time
(thread_time), the time that thread was runnable but waiting for a core (the
kernel's schedstat run_delay) and whether it gave the core up itself (its
voluntary context switches: a blocking system call, the GIL).  A step's
`held` time is what the code itself kept the loop for: its CPU time when it
never blocked (the rest of its wall time was preemption, the hypervisor's
steal or interrupts: measured during the seed replay's load tests, steps of
under 1 ms of CPU took up to 11 ms of wall time that way, with neither a
voluntary switch nor a wait for a core to explain it), else its wall time
less its wait for a core.  That is the figure a busy box moves least.  The
collector's time (gc.callbacks) is counted in the step that triggered it.

Holds are attributed to a kind: a request's method and route (aiohttp runs
each request in a task of its own, RequestHandler._handle_request, and the
fast path its requests in FastHandler._fast, service/fastpath.py: the
middleware stack, the handler, the response's writing and the access log
line; the route as registered, `/internal/config/{section}`, never the raw
path), else the task's name when it has one, else its coroutine's qualified
name.  A request handler can be
`labelled`: the steps of its request's task while it runs (the step it
returns in included) count under its label as well; /metrics is labelled
"scrape".

Only tasks created while the timing is on are timed, and callbacks outside
tasks (timers, I/O callbacks) are not.  A step costs 5-12 us more while it
is on (the three clocks are system calls), nothing when it is off.  Where
schedstat cannot be read, held is the wall time.  Read by
GET /internal/monitoring/loop-holds, cleared by POST .../loop-holds/reset.
"""
from __future__ import annotations

import asyncio
import collections
import collections.abc
import gc
import heapq
import itertools
import os
import resource
import time

RECORD_SECONDS = 0.001   # shorter steps are only counted; longer ones are attributed to their kind
LIMIT_SECONDS = 0.005    # issue 16: no scrape holds the loop for longer
LONGEST_KEPT = 20

_perf = time.perf_counter


class _Clock:
    """(thread CPU ns, schedstat, voluntary switches) of the loop's thread.  thread_time is exact;
    schedstat's run_delay (its second field) is exact at each read since the thread runs then (its CPU
    figure is only brought up to date at scheduler ticks); getrusage counts the voluntary switches."""

    def __init__(self):
        try:
            self.fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            self.read = self._schedstat
            self.read()
        except (OSError, ValueError, IndexError):
            self.fd = None
            self.read = self._thread_time

    def _schedstat(self) -> tuple:
        return _thread_ns(), os.pread(self.fd, 64, 0), _rusage(_THREAD).ru_nvcsw

    @staticmethod
    def _thread_time() -> tuple:
        return _thread_ns(), b"0 0", next(_reads)   # (as if it blocked between any two reads: held = wall)


_thread_ns = time.thread_time_ns
_rusage, _THREAD = resource.getrusage, resource.RUSAGE_THREAD
_reads = itertools.count()


def _cpu_and_queued(start: tuple, end: tuple) -> tuple[float, float, int]:
    """(CPU seconds, seconds waiting for a core, voluntary switches) between two reads."""
    return ((end[0] - start[0]) / 1e9, (int(end[1].split()[1]) - int(start[1].split()[1])) / 1e9,
            end[2] - start[2])


def held_seconds(wall: float, cpu: float, queued: float, blocked: int) -> float:
    """What a step itself kept the loop for: its CPU time if it never blocked (gave the core up itself),
    else its wall time less its wait for a core."""
    return cpu if blocked == 0 else max(cpu, wall - queued)


class _GcClock:
    """gc.callbacks: the collector's time, summed, and each generation's collections and longest."""

    def __init__(self):
        self.seconds = 0.0
        self._t = 0.0
        self.reset()

    def reset(self) -> None:
        self.counts = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = _perf()
            return
        took = _perf() - self._t
        self.seconds += took
        g = info.get("generation", 2)
        self.counts[g] += 1
        self.longest[g] = max(self.longest[g], took)

    def view(self) -> dict:
        """Each generation's collections and longest since the reset; `pending`: gc.get_count() against the
        thresholds (the young count reaching its threshold is the next collection)."""
        return {**{f"gen{g}": {"collections": self.counts[g], "longest_ms": _ms(self.longest[g])} for g in range(3)},
                "pending": list(gc.get_count()), "thresholds": list(gc.get_threshold())}


class _Timed(collections.abc.Coroutine):
    """A task's coroutine whose every step (send/throw) is timed by `holds`."""
    __slots__ = ("coro", "holds", "kind", "label", "hit", "where", "request")

    def __init__(self, coro, holds: "LoopHolds", request=None):
        self.coro, self.holds, self.request = coro, holds, request
        self.kind = self.label = self.hit = self.where = None

    def send(self, value):
        h = self.holds
        t, c, g = _perf(), h.clock.read(), h.gc.seconds
        try:
            return self.coro.send(value)
        finally:
            h.note(self, _perf() - t, c, g)

    def throw(self, typ, val=None, tb=None):
        h = self.holds
        t, c, g = _perf(), h.clock.read(), h.gc.seconds
        try:
            if val is None and tb is None:
                return self.coro.throw(typ)
            return self.coro.throw(typ, val, tb)
        finally:
            h.note(self, _perf() - t, c, g)

    def close(self):
        return self.coro.close()

    def __await__(self):
        return self.coro.__await__()

    def __getattr__(self, name):  # cr_frame, cr_code, __qualname__, ...: asyncio's repr and stack walk
        return getattr(self.coro, name)


_ASYNCIO = os.path.dirname(asyncio.__file__)


def _where(coro) -> str:
    """Where a suspended coroutine waits: its innermost frame outside asyncio itself (or "done")."""
    frame = None
    while coro is not None:
        f = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if f is None:
            break
        if not f.f_code.co_filename.startswith(_ASYNCIO):
            frame = f
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    if frame is None:
        return "done"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}"


# aiohttp's task per request, and the fast path's (service/fastpath.py); the argument of each: the request
_REQUEST_TASKS = frozenset({"RequestHandler._handle_request", "FastHandler._fast"})


def _request_of(coro):
    """The request a request task serves (from its frame's arguments, before its first step)."""
    if getattr(coro, "__qualname__", None) not in _REQUEST_TASKS:
        return None
    frame = getattr(coro, "cr_frame", None)
    return frame.f_locals.get("request") if frame is not None else None


def _route(request) -> str | None:
    """`METHOD /route/{canonical}` of a request once it is matched (never its raw path: unbounded)."""
    try:
        resource = request.match_info.route.resource
    except Exception:   # not matched yet, or no match
        return None
    return f"{request.method} {resource.canonical}" if resource is not None else f"{request.method} (no route)"


def _kind(w: _Timed) -> str:
    if w.kind is None:
        name = _route(w.request) if w.request is not None else None
        if name is None:
            task = asyncio.current_task()
            name = task.get_name() if task is not None else ""
            if not name or name.startswith("Task-"):
                name = getattr(w.coro, "__qualname__", None) or type(w.coro).__name__
        w.kind = name
    return w.kind


def _ms(s: float) -> float:
    return round(s * 1000, 3)


_OVER = f"over_{_ms(LIMIT_SECONDS):g}_ms"


class _Worst:
    """The worst holds of one kind or label (`over_limit`: steps held longer than LIMIT_SECONDS)."""
    __slots__ = ("steps", "over_limit", "wall", "held", "cpu", "cpu_total")

    def __init__(self):
        self.steps = self.over_limit = 0
        self.wall = self.held = self.cpu = self.cpu_total = 0.0

    def add(self, wall: float, held: float, cpu: float) -> None:
        self.steps += 1
        self.cpu_total += cpu
        self.over_limit += held > LIMIT_SECONDS
        self.wall = max(self.wall, wall)
        self.held = max(self.held, held)
        self.cpu = max(self.cpu, cpu)

    def view(self) -> dict:
        return {"steps": self.steps, "max_held_ms": _ms(self.held), "max_cpu_ms": _ms(self.cpu),
                "max_wall_ms": _ms(self.wall), _OVER: self.over_limit}


class LoopHolds:
    """The process's step timer: installs itself as the loop's task factory while the field is on."""

    def __init__(self, store):
        self.store = store
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock: _Clock | None = None
        self.gc = _GcClock()
        self._previous_factory = None
        self.reset()

    # ---- switching -----------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.loop is not None

    def start(self) -> None:
        """On the running loop: follow monitoring.loop_hold_timing from now on."""
        self.store.subscribe(self._on_config)
        self._apply(self.store.get("monitoring")["loop_hold_timing"])

    def stop(self) -> None:
        self._apply(False)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section == "monitoring" and new["loop_hold_timing"] != old.get("loop_hold_timing"):
            self._apply(new["loop_hold_timing"])

    def _apply(self, on: bool) -> None:
        if on and self.loop is None:
            if self.clock is None:   # opened once, on the loop's thread (/proc/thread-self is that thread)
                self.clock = _Clock()
            self.loop = asyncio.get_running_loop()
            self._previous_factory = self.loop.get_task_factory()
            self.loop.set_task_factory(self._factory)
            gc.callbacks.append(self.gc)
            self.reset()
        elif not on and self.loop is not None:
            if self.loop.get_task_factory() == self._factory:
                self.loop.set_task_factory(self._previous_factory)
            self.loop = self._previous_factory = None   # the clock stays: tasks wrapped before still run
            if self.gc in gc.callbacks:
                gc.callbacks.remove(self.gc)

    def _factory(self, loop, coro, **kw):
        timed = _Timed(coro, self, _request_of(coro))
        if self._previous_factory is not None:  # (a factory installed before: its task, our coroutine)
            return self._previous_factory(loop, timed, **kw)
        return asyncio.Task(timed, loop=loop, **kw)

    # ---- recording -------------------------------------------------------------
    def reset(self) -> None:
        self.since = time.time()
        self.steps = 0
        self.wall = 0.0
        self.kinds: dict[str, _Worst] = {}
        self.labels: dict[str, _Worst] = {}
        self.runs: collections.Counter = collections.Counter()   # label -> handler runs
        self.longest: list[tuple] = []   # min-heap of (held, wall, cpu, gc, kind, label, from, to, at)
        self.gc.reset()

    def note(self, w: _Timed, wall: float, start: tuple, gc_before: float) -> None:
        self.steps += 1
        self.wall += wall
        label = w.hit
        if wall < RECORD_SECONDS and label is None:
            return
        cpu, queued, blocked = _cpu_and_queued(start, self.clock.read())
        held = held_seconds(wall, cpu, queued, blocked)
        collecting = self.gc.seconds - gc_before
        began, w.where = w.where, _where(w.coro)   # (known when the step before was labelled or recorded)
        if label is not None:
            w.hit = w.label   # a label cleared during this step still covers it, not the next one
            worst = self.labels.get(label)
            if worst is None:
                worst = self.labels[label] = _Worst()
            worst.add(wall, held, cpu)
            if wall < RECORD_SECONDS:
                return
        kind = _kind(w)
        worst = self.kinds.get(kind)
        if worst is None:
            worst = self.kinds[kind] = _Worst()
        worst.add(wall, held, cpu)
        item = (held, self.steps, wall, cpu, collecting, kind, label, began, w.where, time.time())
        if len(self.longest) < LONGEST_KEPT:
            heapq.heappush(self.longest, item)
        elif held > self.longest[0][0]:
            heapq.heapreplace(self.longest, item)

    def view(self) -> dict:
        """What GET /internal/monitoring/loop-holds answers (this process only)."""
        kinds = sorted(self.kinds.items(), key=lambda kv: -kv[1].held)
        return {
            "enabled": self.enabled, "pid": os.getpid(), "since": round(self.since, 3),
            "record_ms": _ms(RECORD_SECONDS), "limit_ms": _ms(LIMIT_SECONDS),
            "steps": self.steps, "busy_wall_seconds": round(self.wall, 6),
            # a label's every step is timed: its CPU per run is the whole of what one run costs the loop
            "labels": {k: {**v.view(), "runs": self.runs[k],
                           "cpu_ms_per_run": _ms(v.cpu_total / self.runs[k]) if self.runs[k] else None}
                       for k, v in sorted(self.labels.items())},
            "kinds": {k: v.view() for k, v in kinds},
            "longest": [{"held_ms": _ms(h), "cpu_ms": _ms(c), "wall_ms": _ms(w), "gc_ms": _ms(g), "kind": k,
                         "label": lab, "from": a, "to": b, "at": round(at, 3)}
                        for h, _, w, c, g, k, lab, a, b, at in sorted(self.longest, reverse=True)],
            "gc": self.gc.view(),
            "note": "held: a step's wall time less the time its thread waited for a core; gc_ms: the collector's "
                    "time inside it; from/to: where its task resumed (when known) and where it waited next; "
                    "task steps created while timing is on, callbacks outside tasks are not timed; kinds and "
                    f"longest list steps of at least {_ms(RECORD_SECONDS):g} ms of wall time",
        }


def _timed_current() -> _Timed | None:
    task = asyncio.current_task()
    coro = task.get_coro() if task is not None else None
    return coro if coro.__class__ is _Timed else None


def labelled(label: str, handler):
    """`handler`, its request task's steps counted under `label` too while it runs (when timed)."""
    async def run(request):
        w = _timed_current()
        if w is None:
            return await handler(request)
        w.label = w.hit = label
        w.holds.runs[label] += 1
        try:
            return await handler(request)
        finally:
            w.label = None
    run.__name__ = run.__qualname__ = getattr(handler, "__name__", "handler")
    run.__doc__ = handler.__doc__
    return run
