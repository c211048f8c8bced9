"""GET /metrics: the Prometheus exposition of every llmapi_ metric.

* Format by `Accept`: OpenMetrics 1.0 when the client asks for
  application/openmetrics-text (Prometheus does), else the Prometheus text
  format 0.0.4.
* Written straight from the metrics' values (exporter/direct.py; with
  WORKERS > 1 from the workers' files, exporter/workerfiles.py), each
  sample's `name{labels} ` rendered once and kept: the same meaning as
  prometheus_client's collectors and encoders (tests compare them), several
  times cheaper.  Other collectors go through exporter/exposition.py.
* gzip (level 1) when `Accept-Encoding` allows it.
* All on the event loop, in steps (a collector, a worker's file, 32 KiB of
  gzip), giving the loop back whenever a slice of 1 ms is used up: no scrape
  holds the loop for long, and no thread is woken (one would hold the GIL
  against the loop for up to the switch interval, 5 ms, at a time).  Scrapes
  of one process take turns.
* The last family is llmapi_scrape_series: the number of samples of that
  same scrape, itself included (the series budget of the exposition).
* With WORKERS > 1 (PROMETHEUS_MULTIPROC_DIR set before the metrics were
  imported) a scrape of any worker returns every worker's metrics merged as
  prometheus_client's MultiProcessCollector merges them: counters and
  histograms summed, gauges by their declared mode ("live*" modes drop dead
  workers).  The live gauge files of workers that are gone are removed here,
  so a crashed and respawned worker never lingers in the gauges.  The
  per-process process_*/python_* collectors are left out in that mode (they
  would only describe the worker that answered); llmapi_process_* cover CPU
  and memory.
"""
from __future__ import annotations

import asyncio
import glob
import os
import re
import time
import weakref
import zlib

from aiohttp import web

from exporter import collectors, direct
from exporter.exposition import choose, openmetrics_family, text_family
from exporter.metrics import REGISTRY, SCRAPE_SERIES
from exporter.tally import flush_all
from exporter.workerfiles import WorkerFiles

GZIP_LEVEL = 1  # zlib's fastest: half the CPU of the default 6 for a body about 15 % larger
_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def _single_process_registries() -> tuple:
    # process_* (open fds among them); not python_gc_* / python_info (the series budget; the Python
    # version is in llmapi_build_info, collections in /internal/monitoring/gc)
    from prometheus_client import CollectorRegistry, ProcessCollector
    std = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=std)
    return REGISTRY, std


class _SingleProcessSource:
    def __init__(self):
        self.registries = _single_process_registries()

    def render(self, om: bool, add):
        return direct.render(self.registries, om, add)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def prune_dead_workers(path: str) -> list[int]:
    """Remove the live-gauge files of processes that no longer exist; returns their pids."""
    from prometheus_client.multiprocess import mark_process_dead
    dead = set()
    for f in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        m = _LIVE_FILE.match(os.path.basename(f))
        if not m:
            continue
        pid = int(m.group(1))
        if pid in dead or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:
            pass
    for pid in dead:
        mark_process_dead(pid, path)
    return sorted(dead)


class _MultiProcessSource:
    def __init__(self, path: str):
        self.path = path
        self.files = WorkerFiles(path)

    def render(self, om: bool, add):
        prune_dead_workers(self.path)
        values, present = yield from self.files.read()
        yield from self.files.render(values, present, om, add)


_source = None
_source_key = None


def source():
    """What a scrape collects from (re-evaluated if the multiprocess dir changes)."""
    global _source, _source_key
    key = multiprocess_dir()
    if _source is None or key != _source_key:
        _source = _MultiProcessSource(key) if key else _SingleProcessSource()
        _source_key = key
    return _source


def accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() not in ("gzip", "*"):
            continue
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        return q > 0
    return False


SLICE_SECONDS = 0.001  # the longest the exposition holds the event loop before letting others run
GZIP_CHUNK = 32 * 1024  # bytes compressed between two chances to give the loop back

_locks: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # event loop -> its scrape lock


def _scrape_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


def _series_family(n: int):
    from prometheus_client.core import GaugeMetricFamily
    return GaugeMetricFamily(SCRAPE_SERIES, "Series in this scrape, this one included", value=n + 1)


def _gzip(body: bytes):
    """gzip of `body`, a chunk at a time: a generator yielding between chunks and returning the bytes."""
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    view, out = memoryview(body), []
    for i in range(0, len(body), GZIP_CHUNK):
        out.append(z.compress(view[i:i + GZIP_CHUNK]))
        yield 0
    out.append(z.flush())
    return b"".join(out)


async def _run(steps) -> object:
    """Drive a generator of steps on the event loop, giving the loop back whenever SLICE_SECONDS is used up;
    returns what the generator returns."""
    deadline = time.perf_counter() + SLICE_SECONDS
    try:
        while True:
            next(steps)
            if time.perf_counter() > deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + SLICE_SECONDS
    except StopIteration as stop:
        return stop.value


def _scrape(om: bool, gz: bool):
    """The steps of one scrape (the exposition, then its gzip, under one slice clock); returns the body.
    Each family's samples are counted for llmapi_scrape_series."""
    out: list[str] = []
    add = out.append
    n = 0
    for count in source().render(om, add):
        n += count
        yield
    (openmetrics_family if om else text_family)(_series_family(n), add)
    add("# EOF\n" if om else "")
    body = "".join(out).encode()
    if gz:  # on the loop too, a chunk at a time (a thread would wait for the GIL, or hold it)
        body = yield from _gzip(body)
    return body


async def render_on_loop(accept: str = "", gz: bool = False) -> tuple[bytes, str]:
    """(body, content type) of one scrape, built on the event loop a step at a time, giving the loop back
    whenever a slice of SLICE_SECONDS is used up: no scrape holds it for long, and a thread would hold
    the GIL against it for up to the interpreter's switch interval (5 ms) at a time.  Scrapes of one
    process take turns (they share the caches of exporter/direct.py and exporter/workerfiles.py)."""
    om, content_type = choose(accept)
    async with _scrape_lock():
        collectors.sample_process()
        body = await _run(_scrape(om, gz))
    return body, content_type


async def metrics_handler(request: web.Request) -> web.Response:
    accept = request.headers.get("Accept", "")
    gz = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    flush_all()  # on the loop, where the tallies are written: the scrape sees every request so far
    body, content_type = await render_on_loop(accept, gz)
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding", "Cache-Control": "no-store"}
    if gz:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)
