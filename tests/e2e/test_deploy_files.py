"""docker-compose.yml and deploy/: one folder of config, mounted by compose, checked with the real tools.

(No Docker daemon is needed: these read the files; the e2e test runs them.)
"""
from __future__ import annotations

import os
import re
import subprocess

import yaml

from tests.helpers import ROOT

DEPLOY = os.path.join(ROOT, "deploy")


def load(*parts: str) -> dict:
    with open(os.path.join(ROOT, *parts)) as fh:
        return yaml.safe_load(fh)


def test_compose_runs_the_stack_from_the_deploy_folder():
    c = load("docker-compose.yml")
    s = c["services"]
    assert {"llmapi", "redis", "prometheus", "alertmanager", "grafana", "alert-sink"} <= set(s)
    for name in ("prometheus", "alertmanager", "grafana"):
        assert "./deploy:/etc/llmapi:ro" in s[name]["volumes"], name
    assert "--config.file=/etc/llmapi/prometheus.yml" in s["prometheus"]["command"]
    assert s["alertmanager"]["entrypoint"][-1] == "/etc/llmapi/alertmanager-entrypoint.sh"
    assert "ALERT_WEBHOOK_URL" in s["alertmanager"]["environment"]
    assert s["grafana"]["environment"]["GF_PATHS_PROVISIONING"] == "/etc/llmapi/grafana/provisioning"
    assert s["llmapi"]["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert os.path.exists(os.path.join(ROOT, s["llmapi"]["build"]["dockerfile"]))


def test_compose_images_match_the_binaries_the_e2e_test_runs():
    s = load("docker-compose.yml")["services"]
    for image, binary in ((s["prometheus"]["image"], "/usr/bin/prometheus"),
                          (s["alertmanager"]["image"], "/usr/bin/prometheus-alertmanager")):
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout + \
            subprocess.run([binary, "--version"], capture_output=True, text=True).stderr
        tested = re.search(r"version (\d+\.\d+)", out).group(1)
        assert image.split(":v", 1)[1].startswith(tested), (image, tested)


def test_paths_inside_containers_exist_in_deploy():
    c = load("docker-compose.yml")
    text = yaml.safe_dump(c)
    for path in set(re.findall(r"/etc/llmapi/([\w./-]+)", text)):
        assert os.path.exists(os.path.join(DEPLOY, path)), path
    provider = load("deploy", "grafana", "provisioning", "dashboards", "llmapi.yml")["providers"][0]
    dash_dir = provider["options"]["path"].replace("/etc/llmapi", DEPLOY)
    assert any(f.endswith(".json") for f in os.listdir(dash_dir))
    ds = load("deploy", "grafana", "provisioning", "datasources", "prometheus.yml")["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"


def test_prometheus_config_and_rules_pass_promtool():
    r = subprocess.run(["promtool", "check", "config", os.path.join(DEPLOY, "prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rules/llmapi.rules.yml" in r.stdout + r.stderr
    cfg = load("deploy", "prometheus.yml")
    assert [j["job_name"] for j in cfg["scrape_configs"]][0] == "llmapi"
