"""A change is validated, persisted, then swapped in and announced: a failed write changes nothing.

Persisting fails for real here: a read-only STATE_DIR (immutable for root),
and a real redis-server stopped between the WATCH and the EXEC of the write.
The client gets 503 CONFIG_NOT_PERSISTED naming the backend; the config, its
version and the live behaviour stay as they were.
"""
import json
import os
import subprocess

import pytest

from service.config.sections import SECTIONS
from service.config.store import ConfigNotApplied, ConfigStore
from service.context import CTX

TEXT = "Prometheus scrapes metrics from instrumented jobs and evaluates rules over them."


def _read_only(path):
    """Make a directory read-only, for root too (chattr +i); returns the undo."""
    os.chmod(path, 0o555)
    if os.geteuid() == 0:
        r = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if r.returncode != 0:
            os.chmod(path, 0o755)
            pytest.skip(f"cannot make a directory read-only as root here: {r.stderr.decode().strip()}")

    def undo():
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        os.chmod(path, 0o755)
    return undo


async def _state(client):
    cfg = await (await client.get("/internal/config")).json()
    return cfg["version"], cfg["sections"]["text"]["values"]


async def _summarize(client):
    return (await client.post("/v1/text/summarize", json={"text": TEXT})).status


async def test_read_only_state_dir_answers_503_and_changes_nothing(make_client, tmp_path):
    client = await make_client(STATE_DIR=str(tmp_path / "ro"))
    r = await client.post("/internal/config/text", json={"max_text_length": 5000})
    assert r.status == 200  # the file backend works, and the state file exists
    state_file = client.app[CTX].store.state_path
    saved = open(state_file).read()
    before = await _state(client)
    undo = _read_only(tmp_path / "ro")
    try:
        r = await client.post("/internal/config/text", json={"max_text_length": 20})
        assert r.status == 503, await r.text()
        err = await r.json()
        assert err["error_code"] == "CONFIG_NOT_PERSISTED" and err["details"]["backend"] == "file"
        assert await _state(client) == before
        assert await _summarize(client) == 200  # an 80-character text still passes: max_text_length is not 20
        hist = (await (await client.get("/internal/config/history")).json())["history"]
        assert len([e for e in hist if e["actor"] != "startup"]) == 1  # the seed is recorded too (actor startup)
    finally:
        undo()
    assert open(state_file).read() == saved
    r = await client.post("/internal/config/text", json={"max_text_length": 20})  # writable again: it works
    assert r.status == 200 and await _summarize(client) == 422


async def test_redis_stopped_mid_write_answers_503_and_changes_nothing(make_client, fresh_redis):
    client = await make_client(REDIS_URL=fresh_redis.url)
    store = client.app[CTX].store
    assert store.backend == "redis"
    r = await client.post("/internal/config/text", json={"max_text_length": 5000})
    assert r.status == 200
    before = await _state(client)

    real = store._redis.pipeline

    def pipeline(*a, **kw):  # the server stops after WATCH and GET, before EXEC
        pipe = real(*a, **kw)
        execute = pipe.execute

        async def stop_then_execute(*ea, **ekw):
            fresh_redis.stop()
            return await execute(*ea, **ekw)
        pipe.execute = stop_then_execute
        return pipe

    store._redis.pipeline = pipeline
    try:
        r = await client.post("/internal/config/text", json={"max_text_length": 20})
    finally:
        store._redis.pipeline = real
    assert r.status == 503, await r.text()
    err = await r.json()
    assert err["error_code"] == "CONFIG_NOT_PERSISTED" and err["details"]["backend"] == "redis"
    assert await _state(client) == before
    assert await _summarize(client) == 200
    fresh_redis.start()  # the same port, empty: Redis persisted nothing (--save "")
    r = await client.post("/internal/config/text", json={"max_text_length": 6000})
    assert r.status == 200


async def test_redis_down_answers_503(make_client, fresh_redis):
    client = await make_client(REDIS_URL=fresh_redis.url)
    before = await _state(client)
    fresh_redis.stop()
    r = await client.post("/internal/cache/configure-ttl", json={"base_ttl_seconds": 60})
    assert r.status == 503 and (await r.json())["details"]["backend"] == "redis"
    cfg = await (await client.get("/internal/config")).json()
    assert cfg["sections"]["cache"]["values"]["base_ttl_seconds"] == 3600 and cfg["version"] == before[0]


async def test_a_subscriber_that_cannot_apply_puts_every_section_back(tmp_path):
    store = ConfigStore(SECTIONS, env={}, state_path=str(tmp_path / "config.json"))
    await store.start()
    seen = []

    def picky(name, new, old):
        if name == "cache" and new["base_ttl_seconds"] == 1234:
            raise RuntimeError("cannot use 1234")

    store.subscribe(lambda name, new, old: seen.append((name, new.get("base_ttl_seconds"),
                                                        new.get("max_text_length"))))
    store.subscribe(picky)
    with pytest.raises(ConfigNotApplied) as ei:
        await store.update_many({"text": {"max_text_length": 777}, "cache": {"base_ttl_seconds": 1234}},
                                actor="operator")
    assert ei.value.status == 422 and ei.value.error_code == "CONFIG_NOT_APPLIED"
    assert "cache.base_ttl_seconds" in ei.value.details["fields"]
    # the process is wholly old again, and every subscriber last heard the old values
    assert store.get("text")["max_text_length"] == 10000 and store.get("cache")["base_ttl_seconds"] == 3600
    last = {name: (ttl, mtl) for name, ttl, mtl in seen}
    assert last == {"text": (None, 10000), "cache": (3600, None)}
    # persisted: the change and its revert, so a restart loads the old values too
    assert [e["actor"] for e in store.history] == ["operator", "operator", "rollback", "rollback"]
    state = json.load(open(tmp_path / "config.json"))
    assert state["overrides"]["text"] == {} and state["overrides"]["cache"] == {}
    assert state["version"] == store.version == 4


async def test_a_subscriber_failure_is_a_422_over_http(make_client):
    client = await make_client()
    store = client.app[CTX].store

    def picky(name, new, old):
        if name == "text" and new["max_text_length"] == 4242:
            raise ValueError("no")
    store.subscribe(picky)
    r = await client.post("/internal/config/text", json={"max_text_length": 4242})
    assert r.status == 422 and (await r.json())["error_code"] == "CONFIG_NOT_APPLIED"
    assert store.get("text")["max_text_length"] == 10000


async def test_the_state_file_is_written_and_flushed_off_the_event_loop(tmp_path, monkeypatch):
    """The fsync waits for the disk: on the loop it held every request that long."""
    import json

    from service.config import store as store_module
    from tests.helpers import calls_on_main_thread
    seen = calls_on_main_thread(monkeypatch, store_module, "_write_durably")
    store = ConfigStore(SECTIONS, env={}, state_path=str(tmp_path / "config.json"))
    await store.start()
    await store.update("text", {"max_text_length": 4321}, actor="operator")
    assert seen == [False]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["overrides"]["text"]["max_text_length"] == 4321 and saved["version"] == store.version
