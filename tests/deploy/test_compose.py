"""docker-compose.yml hardened, checked offline: `docker-compose config` (Debian's docker-compose, no
daemon needed; `make test` installs it) and the properties an operator relies on."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.helpers import ROOT

COMPOSE = os.path.join(ROOT, "docker-compose.yml")
EXAMPLE_KEYS = os.path.join(ROOT, "deploy", "api-keys.example.yml")
SLO_WINDOW_DAYS = 30
ENV_OK = {"GRAFANA_ADMIN_PASSWORD": "test-password", "LLMAPI_KEYS_FILE": EXAMPLE_KEYS}


def compose_config(env_extra: dict) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (`make test` installs Debian's docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in ("GRAFANA_ADMIN_PASSWORD", "LLMAPI_KEYS_FILE")}
    env.update(env_extra)
    return subprocess.run(["docker-compose", "-f", COMPOSE, "config"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def resolved() -> dict:
    r = compose_config(ENV_OK)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_compose_config_validates(resolved):
    assert {"llmapi", "redis", "prometheus", "alertmanager", "grafana", "alert-sink"} <= set(resolved["services"])


def test_refuses_to_start_without_a_grafana_password():
    r = compose_config({"LLMAPI_KEYS_FILE": EXAMPLE_KEYS})
    assert r.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in r.stderr and "no default admin password" in r.stderr


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(resolved):
    for name, svc in resolved["services"].items():
        assert svc.get("healthcheck", {}).get("test"), name
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), (name, deps)
        for dep, cond in deps.items():
            assert cond == {"condition": "service_healthy"}, (name, dep, cond)
            assert "healthcheck" in resolved["services"][dep]


def named_volumes(resolved: dict, service: str) -> dict[str, str]:
    """container path -> named volume, of a service's mounts (short syntax SRC:DST[:MODE] or long)."""
    out = {}
    for v in resolved["services"][service].get("volumes", []):
        if isinstance(v, str):
            src, dst = v.split(":")[:2]
        else:
            src, dst = (v["source"], v["target"]) if v.get("type") == "volume" else ("/", v["target"])
        if not src.startswith(("/", ".")):
            out[dst] = src
    return out


def test_state_and_redis_data_are_on_volumes_with_aof(resolved):
    s = resolved["services"]
    assert s["llmapi"]["environment"]["STATE_DIR"] in named_volumes(resolved, "llmapi")
    assert "/data" in named_volumes(resolved, "redis")
    cmd = s["redis"]["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    for name, path in (("prometheus", "/prometheus"), ("alertmanager", "/alertmanager"), ("grafana", "/var/lib/grafana")):
        assert path in named_volumes(resolved, name), name
    assert set(resolved["volumes"]) >= {named_volumes(resolved, n)[p] for n, p in (
        ("llmapi", s["llmapi"]["environment"]["STATE_DIR"]), ("redis", "/data"))}


def test_prometheus_keeps_more_than_the_slo_window(resolved):
    cmd = resolved["services"]["prometheus"]["command"]
    retention = next(a.split("=", 1)[1] for a in cmd if a.startswith("--storage.tsdb.retention.time="))
    days = int(re.fullmatch(r"(\d+)d", retention).group(1))
    assert days > SLO_WINDOW_DAYS


def test_keys_come_from_a_secret_file_and_no_key_is_in_the_file(resolved):
    svc = resolved["services"]["llmapi"]
    assert svc["environment"]["API_KEYS_FILE"] == "/run/secrets/api_keys"
    assert [s["source"] for s in svc["secrets"]] == ["api_keys", "alert_webhook_token"]
    assert resolved["secrets"]["api_keys"]["file"] == EXAMPLE_KEYS
    # Alertmanager's credential for the service's webhook (tests/remediation): a secret both read, in deploy/secrets/
    assert svc["environment"]["ALERT_WEBHOOK_TOKEN_FILE"] == "/run/secrets/alert_webhook_token"
    am = resolved["services"]["alertmanager"]
    assert [s["source"] for s in am["secrets"]] == ["alert_webhook_token"]
    assert resolved["secrets"]["alert_webhook_token"]["file"] == os.path.join(ROOT, "deploy", "secrets",
                                                                              "alert-webhook-token")
    raw = yaml.safe_load(open(COMPOSE))
    for name, s in raw["services"].items():
        env = s.get("environment", {})
        assert not {"API_KEY", "ADDITIONAL_API_KEYS", "ADMIN_API_KEYS"} & set(env), name
        assert "GF_AUTH_ANONYMOUS_ENABLED" not in env or env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    # the example is a keys file the service accepts, with a plain key and a hashed one
    from service.config.sections import SECTIONS
    from service.keys import read_file
    tiers = SECTIONS["rate_limit"].defaults()["client_tier_limits"]
    keys = read_file(EXAMPLE_KEYS, tiers)
    assert {k.name for k in keys} == {"operator", "web-frontend"}
    assert {k.source for k in keys} == {"API_KEYS_FILE"}
    # the real keys file lives under deploy/secrets/, which git ignores
    assert "secrets/" in open(os.path.join(ROOT, "deploy", ".gitignore")).read().split()


def test_images_are_pinned_and_the_service_builds_from_the_dockerfile(resolved):
    for name, svc in resolved["services"].items():
        image = svc["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[a-z0-9]+)?", tag), (name, image)
    for name in ("llmapi", "alert-sink"):
        build = resolved["services"][name]["build"]
        assert os.path.samefile(os.path.join(build["context"], build["dockerfile"]),
                                os.path.join(ROOT, "deploy", "Dockerfile"))


def test_dockerfile_state_dir_matches_the_volume(resolved):
    text = open(os.path.join(ROOT, "deploy", "Dockerfile")).read()
    assert "STATE_DIR=" + resolved["services"]["llmapi"]["environment"]["STATE_DIR"] in text
    assert "HEALTHCHECK" in text
