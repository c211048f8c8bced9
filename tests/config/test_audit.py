"""Every config change says who made it: actor, request id, remote address, before and after."""
import logging

from exporter.metrics import REGISTRY
from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.context import CTX


def _changes(section, actor):
    return REGISTRY.get_sample_value("llmapi_config_changes_total", {"section": section, "actor": actor}) or 0.0


async def test_history_records_actor_request_id_remote_and_fields(make_client):
    client = await make_client()
    r = await client.post("/internal/config/text", json={"max_text_length": 4321}, headers={"X-Request-ID": "rid-7"})
    assert r.status == 200
    hist = await (await client.get("/internal/config/history")).json()
    e = hist["history"][0]
    assert e["actor"] == "operator"  # API_KEY's name
    assert e["request_id"] == "rid-7" and e["remote"] == "127.0.0.1"
    assert e["previous"] == {"max_text_length": 10000} and e["changes"] == {"max_text_length": 4321}
    assert e["source"] == "api:/internal/config/text"


async def test_dedicated_endpoint_and_rollback_are_audited(make_client):
    client = await make_client()
    r = await client.post("/internal/cache/configure-ttl", json={"base_ttl_seconds": 600},
                          headers={"X-Request-ID": "rid-ttl"})
    assert r.status == 200
    r = await client.post("/internal/config/rollback", json={"version": 0}, headers={"X-Request-ID": "rid-rb"})
    assert r.status == 200
    hist = (await (await client.get("/internal/config/history")).json())["history"]
    assert hist[0]["actor"] == "rollback" and hist[0]["request_id"] == "rid-rb"
    assert hist[0]["source"].startswith("rollback:0 by ")
    assert hist[1]["request_id"] == "rid-ttl" and hist[1]["source"] == "api:/internal/cache/configure-ttl"


async def test_one_structured_log_line_per_change(caplog):
    s = ConfigStore(SECTIONS, env={})
    with caplog.at_level(logging.INFO, logger="service.config"):
        await s.update("text", {"max_text_length": 5000}, actor="operator", request_id="r1", remote="10.0.0.9")
    lines = [r for r in caplog.records if r.getMessage() == "config changed"]
    assert len(lines) == 1
    rec = lines[0]
    assert (rec.actor, rec.client_request_id, rec.remote, rec.section, rec.version) == \
        ("operator", "r1", "10.0.0.9", "text", 1)
    assert rec.before == {"max_text_length": 10000} and rec.after == {"max_text_length": 5000}


async def test_metrics_count_changes_with_a_bounded_actor_label():
    s = ConfigStore(SECTIONS, env={})
    s.known_actors.add("ops-team")
    before = {a: _changes("text", a) for a in ("ops-team", "other", "alertmanager", "startup")}
    await s.update("text", {"max_text_length": 5000}, actor="ops-team")
    await s.update("text", {"max_text_length": 5001}, actor="a-name-nobody-configured")
    await s.update("text", {"max_text_length": 5002}, actor="alertmanager:LlmapiHighErrorRate")
    assert _changes("text", "ops-team") == before["ops-team"] + 1
    assert _changes("text", "other") == before["other"] + 1
    assert _changes("text", "alertmanager") == before["alertmanager"] + 1
    assert REGISTRY.get_sample_value("llmapi_config_version") == 3
    assert _changes("text", "a-name-nobody-configured") == 0


async def test_source_alone_still_names_the_actor():
    s = ConfigStore(SECTIONS, env={})
    e = await s.update("text", {"max_text_length": 5000}, source="legacy-caller")
    assert e["actor"] == "legacy-caller" and e["source"] == "legacy-caller"


async def test_each_worker_without_redis_keeps_its_own_state_file(tmp_path):
    from service.app import build_store
    from service.settings import Settings
    stores = []
    for wid in (0, 1):
        st = build_store(Settings(port=8123, workers=2, worker_id=wid, state_dir=str(tmp_path)), env={})
        await st.start()
        stores.append(st)
    await stores[0].update("text", {"max_text_length": 1111})
    await stores[1].update("text", {"max_text_length": 2222})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config-8123-w0.json", "config-8123-w1.json"]
    for wid, want in ((0, 1111), (1, 2222)):  # a restart of either finds its own change
        st = build_store(Settings(port=8123, workers=2, worker_id=wid, state_dir=str(tmp_path)), env={})
        await st.start()
        assert st.get("text")["max_text_length"] == want


async def test_the_actor_label_takes_configured_key_names(make_client):
    client = await make_client(ADDITIONAL_API_KEYS="client-key-0123456789", ADMIN_API_KEYS="ops-key-0123456789")
    admin = "admin-1"  # ADMIN_API_KEYS' first key
    assert admin in client.app[CTX].keys.names()
    before = _changes("text", admin)
    r = await client.post("/internal/config/text", json={"max_text_length": 4444},
                          headers={"X-API-Key": "ops-key-0123456789"})
    assert r.status == 200
    assert _changes("text", admin) == before + 1
    hist = (await (await client.get("/internal/config/history")).json())["history"]
    assert hist[0]["actor"] == admin


async def test_startup_seed_is_recorded_with_actor_startup_and_where_it_came_from(tmp_path, caplog):
    cfg = tmp_path / "c.yml"
    cfg.write_text("cache:\n  base_ttl_seconds: 1200\n")
    before = _changes("text", "startup")
    s = ConfigStore(SECTIONS, yaml_path=str(cfg), env={"TEXT_MAX_LENGTH": "20000"},
                    state_path=str(tmp_path / "state.json"))
    with caplog.at_level(logging.INFO, logger="service.config"):
        await s.start()
    hist = {e["section"]: e for e in s.public_history() if e["actor"] == "startup"}
    assert hist["text"]["changes"] == {"max_text_length": 20000} and hist["text"]["previous"] == {"max_text_length": 10000}
    assert hist["text"]["source"] == "env TEXT_MAX_LENGTH"
    assert hist["cache"]["changes"] == {"base_ttl_seconds": 1200} and hist["cache"]["source"].startswith("CONFIG_FILE")
    assert s.version == 0 and set(hist) == {"text", "cache"}  # a record, not a change of the version
    assert _changes("text", "startup") == before + 1
    assert sorted(r.section for r in caplog.records if r.getMessage() == "config seeded") == ["cache", "text"]
    assert await s.rollback(0) == []  # rollback to 0 keeps the seed: the startup records change nothing
