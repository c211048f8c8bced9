"""The service as a process: PYTHONOPTIMIZE=2, workers, graceful shutdown, refusing unsafe binds."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from tests.helpers import API_KEY, ROOT, free_port, service_env

TEXT = "Prometheus scrapes metrics from instrumented jobs and evaluates alerting rules over them every minute."


def _post(url, body, timeout=30):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def test_runs_under_pythonoptimize_2(service_factory):
    svc = service_factory(PYTHONOPTIMIZE="2")
    status, body = _post(f"{svc.url}/v1/text/summarize", {"text": TEXT})
    assert status == 200 and body["success"]


def test_the_worker_freezes_its_start_up_heap_and_raises_the_young_gc_threshold(service_factory):
    from service.__main__ import GC_YOUNG_THRESHOLD
    svc = service_factory()
    req = urllib.request.Request(f"{svc.url}/internal/monitoring/memory-analysis", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=30) as r:
        gc_state = json.loads(r.read())["gc"]
    assert gc_state["thresholds"][0] == GC_YOUNG_THRESHOLD != 700
    assert gc_state["frozen"] > 10_000  # the modules, config and metrics start-up built


def test_an_idle_process_collects_its_young_generation_and_a_busy_one_waits():
    import gc

    from service.__main__ import IDLE_COLLECT_AT, IDLE_CPU_SHARE, idle_collect
    before = gc.get_threshold()
    gc.collect()
    gc.set_threshold(10 * IDLE_COLLECT_AT)  # (the worker's is 50,000; the test process keeps CPython's 700)
    kept = [[i] for i in range(IDLE_COLLECT_AT + 1000)]  # tracked, alive: what a busy period leaves
    try:
        assert gc.get_count()[0] >= IDLE_COLLECT_AT
        assert not idle_collect(IDLE_CPU_SHARE * 2)  # busy: the collection waits
        assert gc.get_count()[0] >= IDLE_COLLECT_AT
        assert idle_collect(0.0)  # idle: collected now
        assert gc.get_count()[0] < 100
        assert not idle_collect(0.0)  # nothing young left to collect
        for _ in range(gc.get_threshold()[1] + 1):  # as CPython would, the middle generation every 10th time
            kept.extend([i] for i in range(IDLE_COLLECT_AT))
            assert idle_collect(0.0)
        assert gc.get_count()[1] < gc.get_threshold()[1]
    finally:
        del kept
        gc.set_threshold(*before)


def _worker_pids(url: str, n: int) -> set:
    """The pids that answer /v1/health, until n of them did (or 20 s passed)."""
    pids = set()
    deadline = time.monotonic() + 20
    while len(pids) < n and time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=5) as r:
            pids.add(json.loads(r.read())["pid"])
    return pids


def test_workers_share_one_port(service_factory):
    svc = service_factory(WORKERS="2")
    assert len(_worker_pids(svc.url, 2)) == 2


def test_refuses_non_loopback_without_keys(tmp_path):
    env = service_env(free_port(), str(tmp_path), HOST="0.0.0.0")
    env.pop("API_KEY")
    r = subprocess.run([sys.executable, "-m", "service"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "no API_KEY" in r.stderr


def test_open_on_loopback_without_keys_says_so(service_factory, tmp_path):
    svc = service_factory(API_KEY="", LOG_LEVEL="INFO")
    with urllib.request.urlopen(urllib.request.Request(f"{svc.url}/v1/text/operations"), timeout=5) as r:
        assert r.status == 200
    svc.stop()
    assert "running OPEN" in svc.output()


def test_sigterm_finishes_in_flight_requests(service_factory, fake_upstream_factory):
    up = fake_upstream_factory("--latency-ms", "1500")
    svc = service_factory(AI_PROVIDER="openai", OPENAI_BASE_URL=f"{up.url}/v1", OPENAI_API_KEY="x",
                          GRACEFUL_TIMEOUT="10")
    result = {}

    def call():
        try:
            result["status"], result["body"] = _post(f"{svc.url}/v1/text/summarize", {"text": TEXT})
        except Exception as e:  # noqa
            result["error"] = e

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the request is waiting on the slow upstream
        with urllib.request.urlopen(f"{up.url}/_stats", timeout=5) as r:
            if json.loads(r.read())["in_flight"] >= 1:
                break
        time.sleep(0.05)
    svc.proc.send_signal(signal.SIGTERM)
    t.join(20)
    assert result.get("status") == 200, result
    assert svc.proc.wait(15) == 0


def _config_shared(url: str) -> str:
    req = urllib.request.Request(f"{url}/internal/config", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["shared"]


def test_workers_without_redis_say_changes_stay_in_one_worker(service_factory, tmp_path):
    svc = service_factory(WORKERS="2")
    assert _config_shared(svc.url) == "this worker only"
    assert len(_worker_pids(svc.url, 2)) == 2  # both started: each saves its history when stopped
    svc.stop()
    assert "without REDIS_URL" in svc.output()
    saved = sorted(f for f in os.listdir(tmp_path / "state") if f.startswith("monitoring-") and "baseline" not in f)
    assert saved == [f"monitoring-{svc.port}-w0.json", f"monitoring-{svc.port}-w1.json"]


def test_config_scope_is_the_process_or_redis(service_factory, redis_url):
    assert _config_shared(service_factory().url) == "process"
    assert _config_shared(service_factory(REDIS_URL=redis_url).url) == "redis"
