"""GET /metrics: formats, gzip, off-loop rendering, promtool lint of a live scrape, WORKERS > 1."""
from __future__ import annotations

import asyncio
import gzip
import os
import signal
import subprocess
import time
import urllib.request

import psutil
import pytest

from exporter import direct, handler
from tests.helpers import API_KEY

TEXT = {"text": "Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally."}


async def test_text_format_by_default(kpi_client):
    r = await kpi_client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    body = await r.text()
    for name in ("llmapi_http_requests_total", "llmapi_kpi_threshold{", "llmapi_build_info{",
                 "llmapi_cpu_limit_cores", "llmapi_memory_limit_bytes", "llmapi_process_cpu_seconds_total",
                 "llmapi_process_resident_memory_bytes", "llmapi_event_loop_lag_seconds", "process_open_fds"):
        assert name in body, name
    assert "_created" not in body


async def test_openmetrics_when_asked(kpi_client):
    r = await kpi_client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await r.text()).rstrip().endswith("# EOF")


async def test_gzip_when_asked(kpi_client):
    r = await kpi_client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert r.headers["Content-Encoding"] == "gzip"
    assert b"llmapi_build_info" in gzip.decompress(await r.read())
    r = await kpi_client.get("/metrics", headers={"Accept-Encoding": "gzip;q=0"}, auto_decompress=False)
    assert "Content-Encoding" not in r.headers
    assert b"llmapi_build_info" in await r.read()


async def test_exposition_gives_the_event_loop_back_while_it_renders(kpi_client, monkeypatch):
    """With a zero slice the exposition yields after every family: a task scheduled beside the scrape
    runs during it, not only after it (without the yields it would see no turn until the answer)."""
    ticks, during = 0, []

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    real = direct.write

    def spy(collector, om, add):
        during.append(ticks)
        return real(collector, om, add)

    monkeypatch.setattr(handler, "SLICE_SECONDS", 0.0)
    monkeypatch.setattr(direct, "write", spy)
    task = asyncio.create_task(ticker())
    try:
        body, _ = await handler.render_on_loop("application/openmetrics-text")
    finally:
        task.cancel()
    assert body.endswith(b"# EOF\n") and len(during) > 20
    assert during[-1] - during[0] >= len(during) - 2  # the ticker ran between (almost) every two families


async def test_concurrent_scrapes_take_turns_and_both_are_whole(tmp_path, monkeypatch):
    """Two scrapes of one process at once share the writers' caches: while one writes the workers' families
    (giving the loop back after each), the other, which finds new entries in the files, waits its turn
    instead of changing the families under it; each answer is a whole exposition."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

    from tests.exporter.test_workerfiles import Worker, fill
    a, b = Worker(str(tmp_path), os.getpid()), Worker(str(tmp_path), os.getppid())  # alive: their files stay
    fill(a, b)
    monkeypatch.setattr(handler, "SLICE_SECONDS", 0.0)
    monkeypatch.setattr(handler, "_source", handler._MultiProcessSource(str(tmp_path)))
    monkeypatch.setattr(handler, "_source_key", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    first = asyncio.create_task(handler.render_on_loop("application/openmetrics-text"))
    for _ in range(len(os.listdir(str(tmp_path))) + 3):  # past its reading, into its writing
        await asyncio.sleep(0)
    for i in range(5):
        a.counter(f"t_new_{i}", {}, i)
    try:
        second = asyncio.create_task(handler.render_on_loop("application/openmetrics-text"))
        bodies = [body for body, _ in await asyncio.gather(first, second)]
    finally:
        a.close()
        b.close()
    for body in bodies:
        names = [f.name for f in parse_om(body.decode())]
        assert len(names) == len(set(names)) > 10 and names[-1] == "llmapi_scrape_series"
    assert b"t_new_4_total" in bodies[1]


def _scrape(url: str, accept: str = "text/plain") -> str:
    req = urllib.request.Request(url + "/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def _post(url: str, path: str, body: dict, key: str | None = API_KEY) -> int:
    import json
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _value(text: str, line_prefix: str) -> float:
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(line_prefix):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, line_prefix
    return total


def test_promtool_check_metrics_on_a_live_scrape_reports_nothing(service_factory):
    svc = service_factory()
    for _ in range(5):
        _post(svc.url, "/v1/text/summarize", TEXT)
    _post(svc.url, "/v1/text/summarize", TEXT, key="wrong")       # 401
    _post(svc.url, "/v1/text/summarize", {"text": "short"})       # 422
    _post(svc.url, "/nowhere", {})                                # unmatched
    text = _scrape(svc.url)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    assert 'route="unmatched"' in text and "/nowhere" not in text
    assert API_KEY not in text and "wrong" not in text


def _workers(proc: subprocess.Popen) -> list[int]:
    return sorted(c.pid for c in psutil.Process(proc.pid).children() if c.status() != psutil.STATUS_ZOMBIE)


def _two_workers(proc: subprocess.Popen) -> list[int] | None:
    w = _workers(proc)
    return w if len(w) == 2 else None


def _exported_workers(url: str) -> float:
    try:
        return _value(_scrape(url), "llmapi_process_workers ")
    except AssertionError:  # not exported yet
        return 0.0


def _wait(pred, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_workers_are_summed_and_a_dead_worker_does_not_linger(service_factory):
    svc = service_factory(WORKERS="2")
    first = _wait(lambda: _two_workers(svc.proc))
    _wait(lambda: _exported_workers(svc.url) == 2)  # both have started their collectors
    n = 30
    for _ in range(n):
        assert _post(svc.url, "/v1/text/summarize", TEXT) == 200
    route = 'llmapi_http_requests_total{method="POST",route="/v1/text/summarize",status="200"}'
    # the worker that answers a scrape flushes its batched counts; the other's arrive within a second
    _wait(lambda: _value(_scrape(svc.url), route) == n, timeout=5)
    for _ in range(6):  # scrapes land on either worker: each answers for both
        text = _scrape(svc.url)
        assert _value(text, route) == n
        assert _value(text, "llmapi_process_workers ") == 2
        assert "process_open_fds" not in text  # per-process collectors are left out in multiprocess mode
    rss_two = _value(text, "llmapi_process_resident_memory_bytes ")
    os.kill(first[0], signal.SIGKILL)
    _wait(lambda: (w := _two_workers(svc.proc)) and first[0] not in w)
    _wait(lambda: _exported_workers(svc.url) == 2)
    for _ in range(6):
        text = _scrape(svc.url)
        assert _value(text, "llmapi_process_workers ") == 2     # the dead worker's live gauges are gone
        assert _value(text, route) == n                          # its counters are not
    assert _value(text, "llmapi_process_resident_memory_bytes ") < rss_two * 2
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "", r.stdout


@pytest.mark.parametrize("accept", ["application/openmetrics-text; version=1.0.0", "text/plain"])
def test_multiprocess_formats(service_factory, accept):
    svc = service_factory(WORKERS="2")
    text = _scrape(svc.url, accept)
    assert "llmapi_kpi_threshold" in text
    if "openmetrics" in accept:
        assert text.rstrip().endswith("# EOF")
