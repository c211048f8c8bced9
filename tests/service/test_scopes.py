"""Scopes over the live route table, API_KEYS_FILE (hashed keys, tiers, strict validation, SIGHUP), the deployment secret."""
import asyncio
import hashlib
import json
import os
import re
import signal
import time
import urllib.request

import pytest
from aiohttp import web

from service.context import CTX, KEY_NAME, SCOPES
from service.keys import ALL_SCOPES
from tests.helpers import API_KEY

TEXT_KEY, ADMIN_KEY = "text-only-key-1", "admin-only-key-1"
BODY = {"text": "Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally."}


def _concrete(path: str) -> str:
    return re.sub(r"{[^}]+}", "x", path)


@pytest.fixture
async def probe_client(aiohttp_client, tmp_path):
    """An app whose handlers are replaced by a probe answering who auth let through:
    the real route table and middleware stack, without running a handler (no benchmarks, no clears)."""
    from service.app import create_app
    from service.settings import Settings

    async def make(**env):
        env = {"API_KEY": API_KEY, "STATE_DIR": str(tmp_path / "state"), "LOG_LEVEL": "WARNING",
               "ADDITIONAL_API_KEYS": TEXT_KEY, "ADMIN_API_KEYS": ADMIN_KEY, **env}
        app = create_app(Settings.from_env(env), env=env)

        async def probe(request):
            return web.json_response({"key_name": request[KEY_NAME], "scopes": sorted(request[SCOPES])})
        for route in app.router.routes():  # (the stack goes around each handler when the app starts)
            route._handler = probe
        return await aiohttp_client(app)

    return make


def _routes(app, prefix):
    return sorted({(r.method, r.resource.canonical) for r in app.router.routes()
                   if r.method not in ("HEAD", "*") and r.resource is not None
                   and r.resource.canonical.startswith(prefix)})


async def test_every_internal_route_needs_admin_and_every_text_route_needs_text(probe_client):
    c = await probe_client(API_SUPPORTED_VERSIONS="v1,v2")
    internal, text = _routes(c.server.app, "/internal"), _routes(c.server.app, "/v1/text")
    assert len(internal) >= 50 and len(text) >= 8
    for method, path in internal:
        url = _concrete(path)
        r = await c.request(method, url, headers={"X-API-Key": TEXT_KEY})
        assert r.status == 403, (method, path, r.status)
        body = await r.json()
        assert body["error_code"] == "FORBIDDEN" and body["details"]["required_scope"] == "admin", body
        assert body["details"]["key_name"] == "client-1"
        for key, name in ((API_KEY, "operator"), (ADMIN_KEY, "admin-1")):
            r = await c.request(method, url, headers={"Authorization": f"Bearer {key}"})
            assert r.status == 200 and (await r.json())["key_name"] == name, (method, path, r.status)
    for method, path in text:
        r = await c.request(method, _concrete(path), headers={"X-API-Key": ADMIN_KEY})
        assert r.status == 403, (method, path, r.status)
        assert (await r.json())["details"]["required_scope"] == "text"
        for key, name in ((API_KEY, "operator"), (TEXT_KEY, "client-1")):
            r = await c.request(method, _concrete(path), headers={"X-API-Key": key})
            assert r.status == 200 and (await r.json()) == {"key_name": name, "scopes": sorted(
                ALL_SCOPES if name == "operator" else {"text"})}
    # a versioned path is the same route
    assert (await c.get("/v2/text/operations", headers={"X-API-Key": ADMIN_KEY})).status == 403


async def test_the_operator_key_runs_every_internal_read(make_client):
    """The real handlers: every /internal GET answers the operator key (not 401/403), refuses the client key."""
    c = await make_client(ADDITIONAL_API_KEYS=TEXT_KEY)
    for method, path in _routes(c.server.app, "/internal"):
        if method != "GET":
            continue
        r = await c.get(_concrete(path))
        assert r.status not in (401, 403), (path, r.status)
        assert (await c.get(_concrete(path), headers={"X-API-Key": TEXT_KEY})).status == 403


async def test_open_mode_is_anonymous_with_every_scope(probe_client):
    c = await probe_client(API_KEY="", ADDITIONAL_API_KEYS="", ADMIN_API_KEYS="")
    for path in ("/internal/config", "/v1/text/operations"):
        r = await c.get(path)
        assert r.status == 200 and await r.json() == {"key_name": "anonymous", "scopes": sorted(ALL_SCOPES)}
    # with keys, a public route is anonymous without scopes
    c2 = await probe_client()
    assert await (await c2.get("/v1/health")).json() == {"key_name": "anonymous", "scopes": []}


def _write(path, entries) -> str:
    import yaml
    with open(path, "w") as fh:
        yaml.safe_dump(entries, fh)
    return str(path)


async def test_hashed_key_from_file_authenticates_with_its_scopes_and_tier(probe_client, make_client, tmp_path):
    hashed = "ci-bot-secret-0042"
    f = _write(tmp_path / "keys.yaml", [
        {"name": "ci-bot", "sha256": hashlib.sha256(hashed.encode()).hexdigest(), "scopes": ["text"],
         "tier": "premium"},
        {"name": "grafana", "key": "grafana-secret-7", "scopes": ["metrics"]},
    ])
    c = await probe_client(API_KEYS_FILE=f, AUTH_PROTECT_METRICS="true")
    r = await c.get("/v1/text/operations", headers={"X-API-Key": hashed})
    assert r.status == 200 and (await r.json())["key_name"] == "ci-bot"
    assert (await c.get("/internal/config", headers={"X-API-Key": hashed})).status == 403
    assert (await c.get("/v1/text/operations", headers={"X-API-Key": hashlib.sha256(hashed.encode()).hexdigest()})
            ).status == 401                                           # the digest itself is not a key
    assert (await c.get("/metrics", headers={"X-API-Key": "grafana-secret-7"})).status == 200
    assert (await c.get("/v1/text/operations", headers={"X-API-Key": "grafana-secret-7"})).status == 403
    # the tier is the entry's, and client_tiers (by name) overrides it
    c = await make_client(API_KEYS_FILE=f, RATE_LIMIT_ENABLED="true")
    r = await c.post("/v1/text/summarize", json=BODY, headers={"X-API-Key": hashed})
    assert r.status == 200 and r.headers["RateLimit-Limit"] == "200"
    r = await c.post("/internal/middleware/rate-limiting/optimize", json={"client_tiers": {"ci-bot": "basic"}})
    assert r.status == 200, await r.text()
    r = await c.post("/v1/text/summarize", json=BODY, headers={"X-API-Key": hashed})
    assert r.headers["RateLimit-Limit"] == "50"
    r = await c.post("/internal/middleware/rate-limiting/optimize", json={"client_tiers": {hashed: "basic"}})
    assert r.status == 422 and (await r.json())["details"]["field"] == "client_tiers[0]"
    assert hashed not in await r.text()


async def test_the_key_list_names_keys_and_never_shows_one(make_client, tmp_path):
    f = _write(tmp_path / "keys.yaml", [{"name": "ci-bot", "key": "ci-bot-secret-0042", "scopes": ["text"],
                                         "tier": "basic"}])
    c = await make_client(API_KEYS_FILE=f, ADMIN_API_KEYS=ADMIN_KEY)
    r = await c.get("/internal/auth/keys", headers={"X-API-Key": ADMIN_KEY})
    assert r.status == 200
    body = await r.json()
    assert [(k["name"], k["scopes"], k["tier"], k["source"]) for k in body["keys"]] == [
        ("operator", sorted(ALL_SCOPES), None, "API_KEY"), ("admin-1", ["admin", "health", "metrics"], None,
                                                            "ADMIN_API_KEYS"),
        ("ci-bot", ["text"], "basic", "API_KEYS_FILE")]
    assert body["caller"] == "admin-1" and body["open"] is False
    text = await r.text()
    for secret in ("ci-bot-secret-0042", ADMIN_KEY, API_KEY, hashlib.sha256(b"ci-bot-secret-0042").hexdigest()):
        assert secret not in text


@pytest.mark.parametrize("path", ["deploy/api-keys.example.yml", "deploy/kubernetes/base/api-keys.example.yml",
                                  "deploy/kubernetes/overlays/production/api-keys.yml"])
def test_the_deploy_keys_files_are_valid(path):
    """Including sha256 values of digits only, which YAML would read as numbers: every scalar is read as text."""
    from service.config.sections import SECTIONS
    from service.keys import read_file
    from tests.helpers import ROOT
    tiers = SECTIONS["rate_limit"].fields["client_tier_limits"].default
    full = os.path.join(ROOT, path)
    if not os.path.exists(full):
        pytest.skip(f"{path} is not in this tree")
    keys = read_file(full, set(tiers))
    assert keys and all(k.source == "API_KEYS_FILE" and len(k.digest) == 32 for k in keys)


def test_keys_file_scalars_are_text(tmp_path):
    from service.keys import read_file
    f = tmp_path / "keys.yaml"
    f.write_text("- name: a\n  key: 0123\n  scopes: [text]\n  tier: null\n"
                 "- name: b\n  sha256: " + "0" * 64 + "\n  scopes: [admin]\n"
                 "- name: c\n  key: yes\n  scopes: [text]\n")
    a, b, c = read_file(str(f), {"basic"})
    assert a.digest == hashlib.sha256(b"0123").digest() and a.tier is None
    assert b.digest == bytes(32) and c.digest == hashlib.sha256(b"yes").digest()


def test_a_file_changed_before_the_handler_is_installed_is_reloaded(tmp_path):
    from service.keys import KeyRing
    f = tmp_path / "keys.yaml"
    _write(f, [{"name": "a", "key": "key-a-0001", "scopes": ["text"]}])
    ring = KeyRing((), str(f))
    assert ring.reload_if_changed() is False and ring.authenticate("key-a-0001").name == "a"
    time.sleep(0.01)
    _write(f, [{"name": "b", "key": "key-b-0002", "scopes": ["admin"]}])
    assert ring.reload_if_changed() is True
    assert ring.authenticate("key-a-0001") is None and ring.authenticate("key-b-0002").scopes == {
        "admin", "metrics", "health"}
    assert ring.reloads == {"ok": 1, "refused": 0}


BAD_FILES = [
    ({"name": "x", "key": "k", "scopes": ["text"]}, "must be a YAML list"),
    ([{"name": "Bad Name", "key": "k-secret-1", "scopes": ["text"]}], "entry 0: name must match"),
    ([{"name": "a" * 65, "key": "k-secret-1", "scopes": ["text"]}], "entry 0: name must match"),
    ([{"name": "a", "key": "k-secret-1", "scopes": ["text"]}, {"name": "a", "key": "k-secret-2", "scopes": ["text"]}],
     "two keys are named 'a'"),
    ([{"name": "a", "key": "k-secret-1", "scopes": ["text"]}, {"name": "b", "key": "k-secret-1", "scopes": ["text"]}],
     "are the same key"),
    ([{"name": "a", "key": "k-secret-1", "scopes": ["root"]}], "unknown scope"),
    ([{"name": "a", "key": "k-secret-1", "scopes": []}], "scopes must be a non-empty list"),
    ([{"name": "a", "key": "k-secret-1", "scopes": ["text"], "tier": "gold"}], "tier must be one of"),
    ([{"name": "a", "key": "k-secret-1", "sha256": "ab" * 32, "scopes": ["text"]}], "exactly one of key, sha256"),
    ([{"name": "a", "sha256": "k-secret-1", "scopes": ["text"]}], "sha256 must be 64 hex digits"),
    ([{"name": "a", "key": "k-secret-1", "scopes": ["text"], "k-secret-2": 1}], "unknown field"),
    ([{"name": "anonymous", "key": "k-secret-1", "scopes": ["text"]}], "reserved"),
    ([{"name": "operator", "key": "k-secret-1", "scopes": ["text"]}], "two keys are named 'operator'"),
    ("- name: a\n  key: k-secret-1\n  scopes: [text\n", "not valid YAML at line"),
]


@pytest.mark.parametrize("doc,message", BAD_FILES)
def test_a_bad_keys_file_refuses_to_start_naming_no_key(tmp_path, doc, message):
    from service.app import create_app
    from service.settings import Settings
    f = tmp_path / "keys.yaml"
    if isinstance(doc, str):
        f.write_text(doc)
    else:
        _write(f, doc)
    env = {"API_KEY": API_KEY, "API_KEYS_FILE": str(f), "STATE_DIR": str(tmp_path / "state")}
    with pytest.raises(SystemExit) as e:
        create_app(Settings.from_env(env), env=env)
    assert message in str(e.value) and "API_KEYS_FILE" in str(e.value)
    assert "k-secret" not in str(e.value) and API_KEY not in str(e.value)


def _status(url, key) -> int:
    req = urllib.request.Request(url, headers={"X-API-Key": key, "Connection": "close"})
    try:
        return urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def _until(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_the_keys_file_in_every_worker(service_factory, tmp_path, workers):
    f = tmp_path / "keys.yaml"
    _write(f, [{"name": "old-app", "key": "old-secret-key", "scopes": ["text"]}])
    svc = service_factory(API_KEYS_FILE=str(f), WORKERS=str(workers), LOG_LEVEL="INFO")
    url = f"{svc.url}/v1/text/operations"
    assert _until(lambda: svc.output().count('"service ready"') >= workers)
    assert _status(url, "old-secret-key") == 200 and _status(url, "new-secret-key") == 401
    _write(f, [{"name": "new-app", "sha256": hashlib.sha256(b"new-secret-key").hexdigest(), "scopes": ["text"]}])
    svc.proc.send_signal(signal.SIGHUP)
    # every worker: many fresh connections, spread over the SO_REUSEPORT workers
    assert _until(lambda: all(_status(url, "new-secret-key") == 200 for _ in range(8 * workers)))
    assert [_status(url, "old-secret-key") for _ in range(8 * workers)] == [401] * 8 * workers, svc.output()[-3000:]
    assert _status(url, API_KEY) == 200                                   # the env keys stay
    # a bad file keeps the keys in force and says why
    f.write_text("- name: Bad Name\n  key: leaked-secret-key\n  scopes: [text]\n")
    svc.proc.send_signal(signal.SIGHUP)
    assert _until(lambda: svc.output().count("reload refused") >= workers), svc.output()[-3000:]
    assert [_status(url, "new-secret-key") for _ in range(4 * workers)] == [200] * 4 * workers, svc.output()[-3000:]
    assert _status(url, "leaked-secret-key") == 401
    assert svc.proc.poll() is None
    out = svc.output()
    assert "leaked-secret-key" not in out and "old-secret-key" not in out and "new-secret-key" not in out
    reloaded = [json.loads(line) for line in out.splitlines() if '"api keys reloaded"' in line]
    assert len(reloaded) == workers
    assert reloaded[0]["added"] == ["new-app"] and reloaded[0]["removed"] == ["old-app"]


# ---- the deployment secret ------------------------------------------------------------------------------------
async def test_secret_is_shared_through_redis_and_differs_without(make_client, redis_url):
    a = await make_client(REDIS_URL=redis_url)
    b = await make_client(REDIS_URL=redis_url)
    sa, sb = a.server.app[CTX].secret, b.server.app[CTX].secret
    assert sa.benchmark_token == sb.benchmark_token and sa.source == sb.source == "redis"
    assert sa.client_ip_id("10.0.0.1") == sb.client_ip_id("10.0.0.1")
    c = await make_client()
    assert c.server.app[CTX].secret.benchmark_token != sa.benchmark_token
    assert c.server.app[CTX].secret.client_ip_id("10.0.0.1") != sa.client_ip_id("10.0.0.1")
    # the token of one deployment does not exempt a request in another
    r = await c.post("/internal/monitoring/enable-throttling", json={"max_requests_per_minute": 1})
    assert r.status == 200
    for _ in range(c.server.app[CTX].store.get("rate_limit")["burst_size"] + 2):
        await c.get("/v1/text/operations")
    assert (await c.get("/v1/text/operations", headers={"X-Benchmark": sa.benchmark_token})).status == 429


async def test_secret_adopted_when_redis_comes_back(make_client, fresh_redis, monkeypatch):
    import service.secret as S
    monkeypatch.setattr(S, "RETRY_SECONDS", 0.1)
    monkeypatch.setattr(S, "REFRESH_SECONDS", 0.1)
    url = fresh_redis.url
    fresh_redis.stop()
    a = await make_client(REDIS_URL=url)
    sa = a.server.app[CTX].secret
    assert sa.source == "random"
    fresh_redis.start()
    other = S.DeploymentSecret()
    import redis.asyncio as aioredis
    r = aioredis.from_url(url)
    assert await other.share(r)                      # whichever reaches Redis first stores its own
    for _ in range(100):
        if sa.source == "redis":
            break
        await asyncio.sleep(0.1)
    assert sa.source == "redis" and sa.benchmark_token == other.benchmark_token
    assert sa.client_ip_id("10.0.0.9") == other.client_ip_id("10.0.0.9")
    # Redis loses the key (a flush): the processes store theirs again and still agree
    await r.flushall()
    newcomer = S.DeploymentSecret()
    for _ in range(100):
        if await r.get(S.REDIS_KEY) is not None:
            break
        await asyncio.sleep(0.1)
    assert await newcomer.share(r) and newcomer.benchmark_token == sa.benchmark_token
    await r.aclose()


def test_ip_client_ids_are_keyed_and_shared_by_the_workers(service_factory):
    """Open mode (no key): a client is its address, hashed with the deployment secret the supervisor hands to
    every worker; not the unsalted hash anyone could compute (or reverse by trying addresses)."""
    svc = service_factory(API_KEY="", WORKERS="2", RATE_LIMIT_ENABLED="true", RATE_LIMIT_REQUESTS_PER_MINUTE="1",
                          RATE_LIMIT_BURST_SIZE="0")
    ids = set()
    for _ in range(40):
        req = urllib.request.Request(f"{svc.url}/v1/text/operations", headers={"Connection": "close"})
        try:
            urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as e:
            assert e.code == 429
            ids.add(json.loads(e.read())["details"]["client_id"])
    assert len(ids) == 1, ids
    cid = ids.pop()
    assert cid.startswith("ip:") and len(cid) == 19
    for guess in ("ip:127.0.0.1", "127.0.0.1"):
        assert hashlib.sha256(guess.encode()).hexdigest()[:16] not in cid
    assert os.environ.get("LLMAPI_DEPLOYMENT_SECRET") is None


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(x) for x in fh.read().split()]


def test_a_replacement_worker_refusing_a_broken_keys_file_does_not_stop_the_others(service_factory, tmp_path):
    f = tmp_path / "keys.yaml"
    _write(f, [{"name": "app", "key": "app-secret-key", "scopes": ["text"]}])
    svc = service_factory(API_KEYS_FILE=str(f), WORKERS="2", LOG_LEVEL="INFO")
    url = f"{svc.url}/v1/text/operations"
    assert _until(lambda: svc.output().count('"service ready"') >= 2)
    first = _children(svc.proc.pid)
    assert len(first) == 2
    f.write_text("- name: Bad Name\n  key: app-secret-key\n  scopes: [text]\n")
    os.kill(first[0], signal.SIGKILL)                     # its replacement reads the broken file and refuses
    assert _until(lambda: "refused to start; the others keep serving" in svc.output())
    assert svc.proc.poll() is None
    assert all(_status(url, "app-secret-key") == 200 for _ in range(6))   # the other worker, with the keys it had
    _write(f, [{"name": "app", "key": "app-secret-key", "scopes": ["text"]}])
    assert _until(lambda: len(_children(svc.proc.pid)) == 2 and first[0] not in _children(svc.proc.pid))
    assert _until(lambda: svc.output().count('"service ready"') >= 3)  # the replacement came up
    assert all(_status(url, "app-secret-key") == 200 for _ in range(8))
    assert "app-secret-key" not in svc.output()


def test_a_broken_keys_file_at_first_start_stops_the_supervisor(tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT, free_port, service_env
    f = tmp_path / "keys.yaml"
    f.write_text("- name: Bad Name\n  key: app-secret-key\n  scopes: [text]\n")
    env = service_env(free_port(), str(tmp_path), WORKERS="2", API_KEYS_FILE=str(f))
    r = subprocess.run([sys.executable, "-m", "service"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "entry 0: name must match" in r.stderr and "app-secret-key" not in r.stderr
