"""docker-compose.yml, deploy/ and the generated outputs it mounts, checked with the real tools.

deploy/ holds the hand-written config; alerts/rules and dashboards/json the
generated, committed outputs.  Compose mounts parts of the three read-only
under /etc/llmapi; tests/e2e/layout.py rebuilds each container's tree the same
way (no Docker daemon is needed: these read the files; the e2e test runs them).
"""
from __future__ import annotations

import glob
import os
import re
import subprocess

import pytest
import yaml

from alerts import generate as alerts_generate
from dashboards import generate as dashboards_generate
from tests.e2e.layout import CONTAINER_ROOT, Tree, bind_mounts
from tests.helpers import ROOT

DEPLOY = os.path.join(ROOT, "deploy")
CONFIG_SERVICES = ("prometheus", "alertmanager", "grafana")


def load(*parts: str) -> dict:
    with open(os.path.join(ROOT, *parts)) as fh:
        return yaml.safe_load(fh)


def test_compose_runs_the_stack_from_the_deploy_folder_and_the_generated_outputs():
    c = load("docker-compose.yml")
    s = c["services"]
    assert {"llmapi", "redis", "prometheus", "alertmanager", "grafana", "alert-sink"} <= set(s)
    mounts = {name: {os.path.relpath(src, ROOT): dst for src, dst, _ in bind_mounts(name)} for name in CONFIG_SERVICES}
    assert mounts["prometheus"] == {"deploy/prometheus.yml": "/etc/llmapi/prometheus.yml",
                                    "alerts/rules": "/etc/llmapi/rules"}
    assert mounts["alertmanager"] == {"deploy/alertmanager.yml": "/etc/llmapi/alertmanager.yml",
                                      "deploy/alertmanager-entrypoint.sh": "/etc/llmapi/alertmanager-entrypoint.sh"}
    assert mounts["grafana"] == {"deploy/grafana/provisioning": "/etc/llmapi/grafana/provisioning",
                                 "dashboards/json": "/etc/llmapi/grafana/dashboards"}
    assert "--config.file=/etc/llmapi/prometheus.yml" in s["prometheus"]["command"]
    assert s["alertmanager"]["entrypoint"][-1] == "/etc/llmapi/alertmanager-entrypoint.sh"
    assert "ALERT_WEBHOOK_URL" in s["alertmanager"]["environment"]
    assert s["grafana"]["environment"]["GF_PATHS_PROVISIONING"] == "/etc/llmapi/grafana/provisioning"
    assert s["llmapi"]["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert os.path.exists(os.path.join(ROOT, s["llmapi"]["build"]["dockerfile"]))


@pytest.mark.parametrize("service", CONFIG_SERVICES)
def test_config_mounts_are_read_only_and_not_nested(service):
    """Every config bind mount is read-only, comes from deploy/ or a generated output folder, and none
    sits inside another (Docker cannot create a mount point inside a read-only bind mount)."""
    ms = bind_mounts(service)
    assert ms
    allowed = (DEPLOY, os.path.dirname(alerts_generate.RULES_PATH), dashboards_generate.OUT_DIR)
    for src, dst, ro in ms:
        assert ro, (service, dst)
        assert os.path.exists(src), src
        assert any(src == a or src.startswith(a + os.sep) for a in allowed), src
        assert dst.startswith(CONTAINER_ROOT + "/"), dst
        for _, other, _ in ms:
            assert other == dst or not other.startswith(dst.rstrip("/") + "/"), (dst, other)


def test_generated_outputs_live_outside_deploy():
    """deploy/ is hand-written config, with two exceptions: deploy/kubernetes (kustomize loads nothing from outside
    its folder, so the objects generated from the catalogs sit in its base; tests/deploy/test_kubernetes.py checks
    them) and deploy/alertmanager.yml (generated from the remediation playbook by deploy/alertmanager.py;
    tests/remediation checks it).  The alerts and dashboards generators write next to themselves."""
    from deploy import alertmanager as deploy_alertmanager
    outputs = list(alerts_generate.outputs()) + list(dashboards_generate.outputs())
    assert os.path.dirname(alerts_generate.RULES_PATH) == os.path.join(ROOT, "alerts", "rules")
    assert dashboards_generate.OUT_DIR == os.path.join(ROOT, "dashboards", "json")
    for path in outputs:
        assert not path.startswith(DEPLOY + os.sep), path
    generated_here = set(deploy_alertmanager.outputs())
    for path in glob.glob(os.path.join(DEPLOY, "**", "*"), recursive=True):
        if (os.path.isfile(path) and path not in generated_here and not path.endswith(".pyc")
                and not path.startswith(os.path.join(DEPLOY, "kubernetes", "base") + os.sep)):
            with open(path, errors="replace") as fh:
                assert "GENERATED" not in fh.read(200), path


def test_compose_images_match_the_binaries_the_e2e_test_runs():
    s = load("docker-compose.yml")["services"]
    for image, binary in ((s["prometheus"]["image"], "/usr/bin/prometheus"),
                          (s["alertmanager"]["image"], "/usr/bin/prometheus-alertmanager")):
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout + \
            subprocess.run([binary, "--version"], capture_output=True, text=True).stderr
        tested = re.search(r"version (\d+\.\d+)", out).group(1)
        assert image.split(":v", 1)[1].startswith(tested), (image, tested)


@pytest.mark.parametrize("service", CONFIG_SERVICES)
def test_paths_inside_each_container_exist(service, tmp_path):
    """Every /etc/llmapi path a service's compose entry names is mounted in that container."""
    tree = Tree(tmp_path, service)
    text = yaml.safe_dump(load("docker-compose.yml")["services"][service])
    paths = set(re.findall(r"(/etc/llmapi/[\w./-]+)", text))
    assert paths
    for path in paths:
        assert tree.exists(path), (service, path)


def test_grafana_provisioning_finds_the_generated_dashboards(tmp_path):
    tree = Tree(tmp_path, "grafana")
    provider = yaml.safe_load(open(tree.host("/etc/llmapi/grafana/provisioning/dashboards/llmapi.yml")))["providers"][0]
    folder = tree.host(provider["options"]["path"])
    found = sorted(f for f in os.listdir(folder) if f.endswith(".json"))
    assert found == sorted(os.path.basename(p) for p in dashboards_generate.outputs())
    home = load("docker-compose.yml")["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert os.path.samefile(tree.host(home), dashboards_generate.OVERVIEW_PATH)
    ds = yaml.safe_load(open(tree.host("/etc/llmapi/grafana/provisioning/datasources/prometheus.yml")))["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"


def test_prometheus_config_and_rules_pass_promtool_as_mounted(tmp_path):
    """`promtool check config` on the container's tree: the config's rules/*.yml finds the generated rules."""
    tree = Tree(tmp_path, "prometheus")
    r = subprocess.run(["promtool", "check", "config", tree.host("/etc/llmapi/prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "rules/llmapi.rules.yml" in out and "SUCCESS" in out
    n_rules = sum(len(g["rules"]) for g in alerts_generate.rules()["groups"])
    assert f"{n_rules} rules found" in out, out
    cfg = load("deploy", "prometheus.yml")
    assert [j["job_name"] for j in cfg["scrape_configs"]][0] == "llmapi"


def test_prometheus_keeps_data_at_least_as_long_as_the_slo_period():
    """The budget-remaining records read the whole SLO period: the compose Prometheus must retain it."""
    from exporter import mixin
    cmd = load("docker-compose.yml")["services"]["prometheus"]["command"]
    retention = next(c.split("=", 1)[1].split()[0] for c in cmd if c.startswith("--storage.tsdb.retention.time="))
    assert mixin.seconds(retention) >= mixin.seconds(mixin.DEFAULT.slo_period), retention
