"""Shared fixtures: real redis-server, the service as a subprocess, in-process apps."""
from __future__ import annotations

import pytest

from tests.helpers import API_KEY, RedisClusterServers, RedisServer, start_fake_upstream, start_service


@pytest.fixture(scope="session")
def redis_server():
    srv = RedisServer().start()
    yield srv
    srv.close()


@pytest.fixture
def redis_url(redis_server):
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster():
    """A 3-primary Redis Cluster with a replica each, shared by the session (tests flush it)."""
    srv = RedisClusterServers().start()
    yield srv
    srv.close()


@pytest.fixture(params=["single", pytest.param("cluster", marks=pytest.mark.topology)])
def any_redis_url(request):
    """The same test on one redis-server and on a Redis Cluster (flushed before the test)."""
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url
    return request.getfixturevalue("redis_url")


@pytest.fixture
def fresh_redis():
    """A private redis-server this test may stop and start."""
    srv = RedisServer().start()
    yield srv
    srv.close()


def _stopping(start):
    """Wrap a process starter so every process it started is stopped after the test."""
    procs = []

    def wrapped(*args, **kwargs):
        p = start(*args, **kwargs)
        procs.append(p)
        return p

    return wrapped, procs


@pytest.fixture
def service_factory(tmp_path):
    start, procs = _stopping(lambda **env: start_service(str(tmp_path / "state"), **env))
    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def fake_upstream_factory():
    start, procs = _stopping(start_fake_upstream)
    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def api_headers():
    return {"X-API-Key": API_KEY}


@pytest.fixture
async def make_client(aiohttp_client, tmp_path):
    """An in-process app on a real loopback port: make_client(**env) -> aiohttp test client."""
    from service.app import create_app
    from service.settings import Settings

    async def make(**env):
        env = {"API_KEY": API_KEY, "STATE_DIR": str(tmp_path / "state"), "LOG_LEVEL": "WARNING",
               **{k: str(v) for k, v in env.items()}}
        app = create_app(Settings.from_env(env), env=env)
        client = await aiohttp_client(app)
        client.session.headers.update({"X-API-Key": API_KEY})
        return client

    return make
