"""The runtime config store: seeding, validation, atomicity, history, rollback, persistence."""
import json
import time
import urllib.request

import pytest

from service.config.schema import ConfigValidationError
from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from tests.helpers import API_KEY


def test_seed_order_defaults_yaml_env(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("text:\n  max_text_length: 2000\n  min_text_length: 20\n")
    s = ConfigStore(SECTIONS, yaml_path=str(y), env={"TEXT_MAX_LENGTH": "3000"})
    assert s.get("text")["max_text_length"] == 3000  # env beats YAML
    assert s.get("text")["min_text_length"] == 20     # YAML beats default
    assert s.get("text")["batch_max_items"] == 50     # default


@pytest.mark.parametrize("yaml_text", ["nosuch:\n  a: 1\n", "text:\n  max_text_length: -4\n", "text:\n  bogus: 1\n"])
def test_bad_yaml_refuses_to_start(tmp_path, yaml_text):
    y = tmp_path / "c.yaml"
    y.write_text(yaml_text)
    with pytest.raises(SystemExit):
        ConfigStore(SECTIONS, yaml_path=str(y), env={})


def test_bad_env_refuses_to_start():
    with pytest.raises(SystemExit, match="TEXT_MAX_LENGTH"):
        ConfigStore(SECTIONS, env={"TEXT_MAX_LENGTH": "many"})


async def test_update_validates_whole_change_atomically():
    s = ConfigStore(SECTIONS, env={})
    before = dict(s.get("text"))
    for bad, field in [({"max_text_length": 5000, "min_text_length": "x"}, "min_text_length"),
                       ({"max_text_length": 0}, "max_text_length"),
                       ({"nope": 1}, "nope"),
                       ({"batch_max_items": 2.5}, "batch_max_items")]:
        with pytest.raises(ConfigValidationError) as ei:
            await s.update("text", bad)
        assert ei.value.field == field
        assert s.get("text") == before
        assert s.version == 0 and not s.history


async def test_update_bumps_version_records_history_and_notifies():
    s = ConfigStore(SECTIONS, env={})
    seen = []
    s.subscribe(lambda name, new, old: seen.append((name, old["max_text_length"], new["max_text_length"])))
    e = await s.update("text", {"max_text_length": 4000}, source="test")
    assert s.version == 1 and e["version"] == 1
    assert e["changes"] == {"max_text_length": 4000} and e["previous"] == {"max_text_length": 10000}
    assert e["source"] == "test" and e["time"] <= time.time()
    assert seen == [("text", 10000, 4000)]
    h = s.public_history()
    assert h[0]["version"] == 1 and "snapshot" not in h[0]


async def test_rollback_restores_exactly():
    s = ConfigStore(SECTIONS, env={})
    await s.update("text", {"max_text_length": 4000})
    await s.update("ai", {"timeout_seconds": 5.0})
    snap = s.snapshot()
    await s.update("text", {"max_text_length": 100, "min_text_length": 50})
    await s.update("ai", {"max_retries": 0})
    await s.rollback(2)
    assert s.snapshot() == snap
    await s.rollback(0)
    assert s.snapshot() == s.seed
    with pytest.raises(ConfigValidationError):
        await s.rollback(999)


async def test_config_endpoints(make_client):
    client = await make_client()
    cfg = await (await client.get("/internal/config")).json()
    assert cfg["version"] == 0 and cfg["sections"]["text"]["values"]["max_text_length"] == 10000
    r = await client.post("/internal/config/text", json={"max_text_length": 12})
    assert r.status == 200
    r = await client.post("/internal/config/text", json={"max_text_length": "big"})
    assert r.status == 422
    err = await r.json()
    assert err["details"]["field"] == "max_text_length" and err["error_code"] == "VALIDATION_ERROR"
    r = await client.post("/internal/config/nosuch", json={"a": 1})
    assert r.status == 404
    hist = await (await client.get("/internal/config/history")).json()
    assert hist["history"][0]["changes"] == {"max_text_length": 12}
    r = await client.post("/internal/config/rollback", json={"version": 0})
    assert r.status == 200
    cfg = await (await client.get("/internal/config")).json()
    assert cfg["sections"]["text"]["values"]["max_text_length"] == 10000
    for bad in ({"version": "one"}, {"version": -1}, {}, {"version": 1, "x": 2}):
        r = await client.post("/internal/config/rollback", json=bad)
        assert r.status == 422, bad


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _get(url):
    req = urllib.request.Request(url, headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_file_persistence_survives_restart(service_factory):
    svc = service_factory()
    _post(f"{svc.url}/internal/config/text", {"max_text_length": 4321})
    port = svc.port
    svc.stop()
    svc2 = service_factory(port=port)
    cfg = _get(f"{svc2.url}/internal/config")
    assert cfg["sections"]["text"]["values"]["max_text_length"] == 4321
    assert cfg["version"] == 1
    assert cfg["overrides"]["text"] == {"max_text_length": 4321}


def test_change_reaches_other_process_through_redis(service_factory, any_redis_url):
    redis_url = any_redis_url
    a = service_factory(REDIS_URL=redis_url)
    b = service_factory(REDIS_URL=redis_url)
    _post(f"{a.url}/internal/config/text", {"max_text_length": 2222})
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if _get(f"{b.url}/internal/config")["sections"]["text"]["values"]["max_text_length"] == 2222:
            break
        time.sleep(0.05)
    cfg_b = _get(f"{b.url}/internal/config")
    assert cfg_b["sections"]["text"]["values"]["max_text_length"] == 2222
    assert cfg_b["version"] >= 1
    # and a third process started later loads it from Redis
    c = service_factory(REDIS_URL=redis_url)
    assert _get(f"{c.url}/internal/config")["sections"]["text"]["values"]["max_text_length"] == 2222
