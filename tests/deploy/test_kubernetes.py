"""deploy/kubernetes: the kustomize base and production overlay build, validate and derive from the catalogs.

Offline: `kubectl kustomize` builds each (skipped with the reason when kubectl is not installed),
kubernetes-validate checks every built-in kind against the Kubernetes schema, promtool checks the rule
groups inside the PrometheusRule, and the generated objects must equal a regeneration.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from alerts import generate as alerts_generate
from dashboards import generate as dashboards_generate
from deploy.kubernetes import generate
from tests.helpers import ROOT

K8S = os.path.join(ROOT, "deploy", "kubernetes")
BUILDS = {"base": os.path.join(K8S, "base"), "production": os.path.join(K8S, "overlays", "production")}
K8S_VERSION = "1.30.0"
CUSTOM = {"monitoring.coreos.com/v1"}   # Prometheus Operator CRDs: checked below, not by the built-in schemas


def _kustomize(path: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (apt-get install kubectl, or see https://kubernetes.io/docs/tasks/tools/)")
    r = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module", params=sorted(BUILDS))
def built(request) -> tuple[str, list[dict]]:
    return request.param, _kustomize(BUILDS[request.param])


def _one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, (kind, [d["kind"] for d in docs])
    return found[0]


def test_generated_objects_are_current():
    assert generate.stale() == [], "run `make alerts` (or python -m deploy.kubernetes.generate) and commit"


def test_every_built_in_kind_is_valid(built):
    import kubernetes_validate
    name, docs = built
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "Secret",
            "ServiceMonitor", "PrometheusRule"} <= kinds, kinds
    for d in docs:
        if d["apiVersion"] in CUSTOM:
            continue
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)  # raises on a schema violation


def test_the_prometheus_rule_is_the_catalogs_rules_and_promtool_accepts_them(built, tmp_path):
    _, docs = built
    rule = _one(docs, "PrometheusRule")
    committed = yaml.safe_load(alerts_generate.outputs()[alerts_generate.RULES_PATH])
    assert rule["spec"]["groups"] == committed["groups"]
    with open(alerts_generate.RULES_PATH) as fh:
        assert yaml.safe_load(fh)["groups"] == committed["groups"]   # and alerts/rules is the same
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{sum(len(g['rules']) for g in committed['groups'])} rules found" in r.stdout


def test_dashboards_configmap_carries_every_dashboard_for_the_sidecar(built):
    _, docs = built
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("llmapi-dashboards"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    rendered = dashboards_generate.outputs()
    assert set(cm["data"]) == {os.path.basename(p) for p in rendered}
    for path, text in rendered.items():
        assert json.loads(cm["data"][os.path.basename(path)]) == json.loads(text)
    assert sum(len(v) for v in cm["data"].values()) < 900_000   # a ConfigMap holds at most 1 MiB


def test_deployment_probes_shutdown_resources_and_mounts(built):
    name, docs = built
    dep = _one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    live, ready = c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"]
    assert (live, ready) == ("/v1/health/live", "/v1/health/ready")
    graceful, drain = float(env["GRACEFUL_TIMEOUT"]["value"]), float(env["SHUTDOWN_DRAIN_SECONDS"]["value"])
    assert pod["terminationGracePeriodSeconds"] > graceful + drain
    # the readiness probe notices the drain well before the listener closes
    rp = c["readinessProbe"]
    assert rp["periodSeconds"] * rp["failureThreshold"] < drain
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), c["resources"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}

    def mounted_object(file_env: str, kind: str, key: str):
        directory, filename = os.path.split(env[file_env]["value"])
        vol = volumes[mounts[directory]]
        obj = by_name[(kind, vol["configMap"]["name"] if kind == "ConfigMap" else vol["secret"]["secretName"])]
        assert filename in obj["data"], (file_env, obj["data"].keys())
        return obj

    config = mounted_object("CONFIG_FILE", "ConfigMap", "llmapi.yml")
    assert isinstance(yaml.safe_load(config["data"]["llmapi.yml"]), dict)
    keys = mounted_object("API_KEYS_FILE", "Secret", "api-keys.yml")
    import base64
    entries = yaml.safe_load(base64.b64decode(keys["data"]["api-keys.yml"]))
    assert entries and all({"name", "scopes"} <= set(e) and ("key" in e) != ("sha256" in e) for e in entries)
    if name == "production":
        assert all("key" not in e for e in entries)     # no usable key in the repository
    from service.config.sections import SECTIONS
    from service.keys import parse_entries
    tiers = SECTIONS["rate_limit"].fields["client_tier_limits"].default
    assert [k.name for k in parse_entries(entries, tiers)] == [e["name"] for e in entries]  # the service takes it
    redis = by_name[("Secret", env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"])]
    from service.redis_client import parse_url
    url = base64.b64decode(redis["data"][env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"]]).decode()
    assert parse_url(url).topology == ("cluster" if name == "production" else "single")


def test_service_monitor_hpa_and_pdb_point_at_the_deployment(built):
    _, docs = built
    dep, svc = _one(docs, "Deployment"), _one(docs, "Service")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["metadata"]["name"] == alerts_generate.JOB       # Prometheus Operator's job label
    sm = _one(docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == alerts_generate.JOB
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
