"""Cross-field invariants are declared with the sections and hold on every change path.

Each invariant is tried through the dedicated /internal endpoint (where one
exists), POST /internal/config/{section}, rollback, YAML and env at start, and
a peer's change through a real redis-server.  Every refusal is a 422 naming
every offending field, with the config and its version unchanged (a refused
start exits with a message naming them).
"""
import asyncio
import json
import subprocess

import pytest

from exporter.kpis import KPIS
from service.config.schema import ConfigValidationError
from service.config.sections import SECTIONS
from service.config.store import KEY_PREFIX, ConfigStore
from service.context import CTX
from tests.helpers import PYTHON, ROOT, free_port, service_env, wait_until


def _swap(k):
    """A KPI's warning and critical thresholds swapped: out of order in its direction."""
    d = SECTIONS["alerts"].defaults()
    return {k.config_field: d[k.config_critical_field], k.config_critical_field: d[k.config_field]}


# name, section, bad changes, the fields it must name, env vars giving the same values,
# dedicated endpoint (path, body, fields named in the body's terms) or None
INVARIANTS = [
    *[(f"kpi-order-{k.key}", "alerts", _swap(k), {k.config_field, k.config_critical_field}, None,
       ("/internal/monitoring/configure-alerts", _swap(k), {k.config_field, k.config_critical_field}))
      for k in KPIS],
    ("cache-pressure-below-emergency", "cache", {"pressure_threshold": 0.99, "emergency_threshold": 0.5},
     {"pressure_threshold", "emergency_threshold"}, None,
     ("/internal/cache/configure-pressure", {"pressure_threshold": 0.99, "emergency_threshold": 0.5},
      {"pressure_threshold", "emergency_threshold"})),
    ("cache-pressure-equal-emergency", "cache", {"pressure_threshold": 0.9, "emergency_threshold": 0.9},
     {"pressure_threshold", "emergency_threshold"}, None,
     ("/internal/cache/configure-pressure", {"emergency_threshold": 0.8}, {"pressure_threshold", "emergency_threshold"})),
    ("cache-base-ttl-under-max", "cache", {"base_ttl_seconds": 9000, "max_ttl_seconds": 100},
     {"base_ttl_seconds", "max_ttl_seconds"}, {"CACHE_DEFAULT_TTL": "9000", "CACHE_MAX_TTL": "100"},
     ("/internal/cache/configure-ttl", {"max_ttl_seconds": 100}, {"base_ttl_seconds", "max_ttl_seconds"})),
    ("cache-ttl-known-operations", "cache", {"ttl_by_operation": {"translate": 60, "qa": 10}},
     {"ttl_by_operation.translate"}, None,
     ("/internal/cache/configure-ttl", {"ttl_by_operation": {"translate": 60}}, {"ttl_by_operation.translate"})),
    ("default-version-supported", "versioning", {"default_version": "v7"}, {"default_version", "supported_versions"},
     {"API_DEFAULT_VERSION": "v7"},
     ("/internal/middleware/versioning/optimize", {"default_version": "v7"}, {"default_version", "supported_versions"})),
    ("default-version-in-new-supported", "versioning", {"supported_versions": ["v2"]},
     {"default_version", "supported_versions"}, {"API_SUPPORTED_VERSIONS": "v2"},
     ("/internal/middleware/versioning/optimize", {"supported_versions": ["v2"]},
      {"default_version", "supported_versions"})),
    ("client-tier-known", "rate_limit", {"client_tiers": {"0123456789abcdef": "gold"}}, {"client_tiers.0123456789abcdef"},
     None, ("/internal/middleware/rate-limiting/optimize", {"client_tiers": {"operator": "gold"}},
            {"client_tiers[0]"})),
    ("text-min-under-max", "text", {"min_text_length": 500, "max_text_length": 100},
     {"min_text_length", "max_text_length"}, {"TEXT_MIN_LENGTH": "500", "TEXT_MAX_LENGTH": "100"}, None),
    ("cors-credentials-not-any-origin", "cors", {"allow_credentials": True, "allow_origins": ["*"]},
     {"allow_credentials", "allow_origins"}, None, None),
    ("middleware-target-under-warning", "middleware", {"overhead_target_ms": 5.0, "overhead_warning_ms": 1.0},
     {"overhead_target_ms", "overhead_warning_ms"}, None, None),
]
IDS = [i[0] for i in INVARIANTS]
DEDICATED = [i for i in INVARIANTS if i[5]]
WITH_ENV = [i for i in INVARIANTS if i[4]]


async def _state(client):
    cfg = await (await client.get("/internal/config")).json()
    return cfg["version"], cfg["sections"]


async def _refused(client, path, body, fields):
    before = await _state(client)
    r = await client.post(path, json=body)
    assert r.status == 422, await r.text()
    err = await r.json()
    assert err["error_code"] == "VALIDATION_ERROR" and err["request_id"]
    assert set(err["details"]["fields"]) == set(fields), err
    assert err["details"]["field"] == err["details"]["fields"][0]
    assert await _state(client) == before  # nothing changed, version included


def test_every_rule_names_fields_of_its_section():
    rules = {name: s.rules for name, s in SECTIONS.items() if s.rules}
    assert {"alerts", "cache", "versioning", "rate_limit"} <= set(rules)
    assert len(SECTIONS["alerts"].rules) == len(KPIS)
    for name, s in SECTIONS.items():
        for r in s.rules:
            assert set(r.fields) <= set(s.fields), (name, r)
            s.check_rules(s.defaults())  # the defaults obey every rule


@pytest.mark.parametrize("inv", INVARIANTS, ids=IDS)
async def test_generic_endpoint_refuses(make_client, inv):
    _, section, bad, fields, _, _ = inv
    await _refused(await make_client(), f"/internal/config/{section}", bad, fields)


@pytest.mark.parametrize("inv", DEDICATED, ids=[i[0] for i in DEDICATED])
async def test_dedicated_endpoint_refuses(make_client, inv):
    path, body, fields = inv[5]
    await _refused(await make_client(), path, body, fields)


@pytest.mark.parametrize("inv", INVARIANTS, ids=IDS)
async def test_rollback_refuses_a_snapshot_breaking_a_rule(make_client, inv):
    """A history entry written by an older service (or by hand) whose snapshot breaks a rule today."""
    _, section, bad, fields, _, _ = inv
    client = await make_client()
    store = client.app[CTX].store
    other = "ai" if section == "text" else "text"
    r = await client.post(f"/internal/config/{other}", json={"max_retries": 2} if other == "ai"
                          else {"max_text_length": 9999})
    assert r.status == 200
    entry = store.history[-1]
    entry["section"], entry["snapshot"] = section, {**store.get(section), **bad}
    before = await _state(client)
    r = await client.post("/internal/config/rollback", json={"version": entry["version"]})
    assert r.status == 422, await r.text()
    err = await r.json()
    assert set(err["details"]["fields"]) == set(fields)
    assert await _state(client) == before


@pytest.mark.parametrize("inv", INVARIANTS, ids=IDS)
def test_yaml_breaking_a_rule_refuses_to_start(tmp_path, inv):
    _, section, bad, fields, _, _ = inv
    y = tmp_path / "c.yaml"
    y.write_text(json.dumps({section: bad}))  # JSON is YAML
    with pytest.raises(SystemExit) as ei:
        ConfigStore(SECTIONS, yaml_path=str(y), env={})
    msg = str(ei.value)
    assert "refusing to start" in msg and str(y) in msg
    for f in fields:
        assert f"{section}.{f}" in msg, msg


@pytest.mark.parametrize("inv", WITH_ENV, ids=[i[0] for i in WITH_ENV])
def test_env_breaking_a_rule_refuses_to_start(inv):
    _, section, _, fields, env, _ = inv
    with pytest.raises(SystemExit) as ei:
        ConfigStore(SECTIONS, env=env)
    msg = str(ei.value)
    assert "refusing to start" in msg
    for var in env:
        assert f"env {var}" in msg
    for f in fields:
        assert f"{section}.{f}" in msg, msg


def test_the_service_exits_with_the_reason(tmp_path):
    port = free_port()
    env = service_env(port, str(tmp_path / "state"), CACHE_DEFAULT_TTL="9000", CACHE_MAX_TTL="100")
    p = subprocess.run([PYTHON, "-m", "service"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    out = p.stdout + p.stderr
    assert "cache.base_ttl_seconds" in out and "cache.max_ttl_seconds" in out and "Traceback" not in out


@pytest.mark.parametrize("inv", INVARIANTS, ids=IDS)
async def test_a_peers_change_breaking_a_rule_is_refused(redis_url, caplog, inv):
    """A peer (another process, an older build, a hand edit) writes overrides and announces them."""
    from service.redis_client import make_redis
    _, section, bad, fields, _, _ = inv
    store = ConfigStore(SECTIONS, env={})
    redis = make_redis(redis_url, {})
    peer = make_redis(redis_url, {})
    await store.start(redis)
    try:
        await asyncio.sleep(0.1)  # subscribed
        # a valid peer change first: the pipeline works, so the refusal below means something
        await peer.hset(f"{KEY_PREFIX}:overrides", "logging", json.dumps({"access_log": False}))
        await peer.set(f"{KEY_PREFIX}:version", 1)
        await peer.publish(f"{KEY_PREFIX}:changed", json.dumps({"origin": "peer", "sections": ["logging"],
                                                                "version": 1}))
        assert await wait_until(lambda: store.get("logging")["access_log"] is False)
        before, version = store.snapshot(), store.version
        ov = {k: v for k, v in {**store.get(section), **bad}.items() if store.seed[section].get(k) != v}
        await peer.hset(f"{KEY_PREFIX}:overrides", section, json.dumps(ov))
        await peer.set(f"{KEY_PREFIX}:version", 2)
        await peer.publish(f"{KEY_PREFIX}:changed", json.dumps({"origin": "peer", "sections": [section],
                                                                "version": 2}))
        assert await wait_until(lambda: any("refused peer values" in r.getMessage() for r in caplog.records))
        assert store.snapshot() == before and store.version == version
        rec = next(r for r in caplog.records if "refused peer values" in r.getMessage())
        assert set(rec.fields) == set(fields)
    finally:
        await store.stop()
        await redis.aclose()
        await peer.aclose()


def test_internal_fields_are_read_only_through_the_generic_endpoint():
    internal = {(n, k) for n, s in SECTIONS.items() for k, f in s.fields.items() if f.internal}
    assert {("monitoring", "emergency_mode"), ("monitoring", "emergency_saved")} <= internal
    with pytest.raises(ConfigValidationError) as ei:
        SECTIONS["monitoring"].refuse_internal({"emergency_mode": True, "emergency_saved": {}, "queue_size": 3})
    assert ei.value.fields == ["emergency_mode", "emergency_saved"]


async def test_generic_endpoint_refuses_internal_fields(make_client):
    client = await make_client()
    before = await _state(client)
    r = await client.post("/internal/config/monitoring", json={"emergency_mode": True, "queue_size": 5})
    assert r.status == 422
    assert (await r.json())["details"]["fields"] == ["emergency_mode"]
    assert await _state(client) == before
    r = await client.post("/internal/monitoring/emergency-mode", json={"enabled": True})
    assert r.status == 200 and (await _state(client))[1]["monitoring"]["values"]["emergency_mode"] is True
