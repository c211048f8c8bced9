"""deploy/replicas: two replicas behind nginx sharing Redis, each a Prometheus target.

Checked offline against each other (compose, nginx.conf, prometheus.yml), with `docker-compose config`
and promtool; then the same Prometheus config runs for real against two service processes sharing
one redis-server, and finds both replicas as targets of job "llmapi"."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml

from alerts import generate as alerts_generate
from tests.helpers import ROOT, free_port, wait_http

HERE = os.path.join(ROOT, "deploy", "replicas")
COMPOSE = os.path.join(HERE, "docker-compose.yml")


def _load(name: str) -> dict:
    with open(os.path.join(HERE, name)) as fh:
        return yaml.safe_load(fh)


def _replicas(compose: dict) -> dict:
    return {n: s for n, s in compose["services"].items() if n.startswith("llmapi-")}


def test_replicas_share_redis_and_stop_gracefully():
    compose = _load("docker-compose.yml")
    reps = _replicas(compose)
    assert len(reps) == 2
    envs = [s["environment"] for s in reps.values()]
    assert len({e["REDIS_URL"] for e in envs}) == 1 and envs[0]["REDIS_URL"].startswith("redis")
    assert len({e["MONITORING_INSTANCE"] for e in envs}) == 2     # each its own name in the shared history
    for s, e in zip(reps.values(), envs):
        grace = int(s["stop_grace_period"].rstrip("s"))
        assert grace > float(e["GRACEFUL_TIMEOUT"]) + float(e["SHUTDOWN_DRAIN_SECONDS"])
        assert "/v1/health/ready" in " ".join(s["healthcheck"]["test"])
    assert set(compose["services"]["lb"]["depends_on"]) == set(reps)


def test_the_load_balancer_and_prometheus_know_every_replica():
    reps = set(_replicas(_load("docker-compose.yml")))
    with open(os.path.join(HERE, "nginx.conf")) as fh:
        upstream = re.search(r"upstream llmapi \{(.*?)\}", fh.read(), re.S).group(1)
    servers = set(re.findall(r"server ([\w-]+):8000", upstream))
    assert servers == reps
    prom = _load("prometheus.yml")
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == alerts_generate.JOB]
    targets = {t.split(":")[0] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == reps                               # each replica scraped itself, not through nginx


def test_compose_file_validates():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (`make test` installs Debian's docker-compose)")
    env = dict(os.environ, LLMAPI_KEYS_FILE=os.path.join(ROOT, "deploy", "api-keys.example.yml"))
    r = subprocess.run(["docker-compose", "-f", COMPOSE, "config", "-q"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_prometheus_finds_both_replicas(service_factory, redis_url, tmp_path):
    a, b = service_factory(REDIS_URL=redis_url), service_factory(REDIS_URL=redis_url)
    prom = _load("prometheus.yml")
    for j in prom["scrape_configs"]:
        j["scrape_interval"] = "1s"
        j["static_configs"] = [{"targets": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}]
    os.symlink(os.path.join(ROOT, "alerts", "rules"), tmp_path / "rules")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(prom))
    check = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=30, proc=proc)
        deadline = time.monotonic() + 30
        up = []
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5) as r:
                active = json.loads(r.read())["data"]["activeTargets"]
            up = sorted(t["labels"]["instance"] for t in active
                        if t["labels"]["job"] == alerts_generate.JOB and t["health"] == "up")
            if len(up) == 2:
                break
            time.sleep(0.5)
        assert up == sorted([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]), up
    finally:
        proc.terminate()
        proc.wait(10)
