"""REDIS_URL names the topology: one node, a Redis Cluster or a Sentinel-managed primary."""
import pytest

from service.redis_client import make_redis, parse_url, topology
from tests.helpers import API_KEY, PYTHON, ROOT, free_port, service_env


def test_single_node_urls_pass_through_as_they_are():
    for url in ("redis://127.0.0.1:6379/2", "rediss://u:p@host:6380/0", "unix:///run/redis.sock"):
        t = parse_url(url)
        assert t.topology == "single" and t.url == url
    assert parse_url("rediss://u:secret@host:6380/0").tls


def test_cluster_url_lists_seed_nodes_with_credentials_and_tls():
    t = parse_url("rediss+cluster://svc:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem")
    assert t.topology == "cluster" and t.tls
    assert t.nodes == [("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002)]
    assert (t.username, t.password, t.db) == ("svc", "p@ss", 0)
    assert t.options == {"ssl_cert_reqs": "none", "ssl_ca_certs": "/ca.pem"}
    assert "p@ss" not in str(t) and "p%40ss" not in t.redacted()
    assert parse_url("redis+cluster://h:1/0").db == 0


def test_sentinel_url_names_the_primary_and_db():
    t = parse_url("redis+sentinel://:pw@s1:26379,s2/mymaster/3?sentinel_password=spw")
    assert t.topology == "sentinel" and t.master == "mymaster" and t.db == 3
    assert t.nodes == [("s1", 26379), ("s2", 26379)] and t.password == "pw" and t.username is None
    assert t.options["sentinel_password"] == "spw"
    assert str(t) == "redis+sentinel://s1:26379,s2:26379/mymaster"


@pytest.mark.parametrize("url, says", [
    ("redis+cluster://h:7000/1", "only db 0"),
    ("redis+sentinel://h:26379", "names the primary"),
    ("redis+sentinel://h:26379/m/x", "db number"),
    ("redis+cluster://h:port", "not a number"),
    ("redis+cluster:///0", "no host"),
    ("memcached://h:1", "unknown scheme"),
    ("redis+cluster://h:1?bogus=1", "unknown option"),
])
def test_bad_urls_are_refused_saying_why(url, says):
    with pytest.raises(ValueError, match=says):
        parse_url(url)


async def test_clients_know_their_topology():
    for url, name in (("redis://127.0.0.1:1/0", "single"), ("redis+cluster://127.0.0.1:1", "cluster"),
                      ("redis+sentinel://127.0.0.1:1/m", "sentinel")):
        client = make_redis(url, {})
        assert topology(client) == name and client.target.topology == name
        await client.aclose()
    assert topology(None) == "none"


def test_service_refuses_to_start_on_a_bad_url(tmp_path):
    import subprocess
    env = service_env(free_port(), str(tmp_path), REDIS_URL="redis+cluster://u:hunter2@h:1/5")
    r = subprocess.run([PYTHON, "-m", "service"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "only db 0" in r.stderr
    assert "hunter2" not in r.stderr and "Traceback" not in r.stderr and API_KEY not in r.stderr
