"""TLS passes through: rediss:// to one node and rediss+cluster:// to a TLS-only cluster (certificates made here)."""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from service.redis_client import make_redis
from tests.helpers import ACL_PASSWORD, ACL_USER, _ACL, cluster_port, wait_port
from tests.topology.conftest import call

pytestmark = [pytest.mark.topology,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed (makes the test CA)")]


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="redis-tls-")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=llmapi-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "redis.key", "-out", "redis.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext.cnf"), "w") as fh:
        fh.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "redis.crt",
        "-days", "2", "-extfile", "ext.cnf")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _tls_node(certs: str, port: int, *extra: str) -> subprocess.Popen:
    work = tempfile.mkdtemp(prefix=f"redis-tls-{port}-", dir=certs)
    p = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                          "--tls-cert-file", f"{certs}/redis.crt", "--tls-key-file", f"{certs}/redis.key",
                          "--tls-ca-cert-file", f"{certs}/ca.crt", "--tls-auth-clients", "no", "--save", "",
                          "--appendonly", "no", "--dir", work, "--protected-mode", "no", *_ACL, *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc=p)
    return p


def _stop(procs):
    for p in procs:
        p.kill()
        p.wait()


async def test_rediss_to_one_node(certs):
    port = cluster_port()
    procs = [_tls_node(certs, port)]
    try:
        r = make_redis(f"rediss://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={certs}/ca.crt", {})
        assert await r.set("{llmapi}:tls", b"1") and await r.get("{llmapi}:tls") == b"1"
        await r.aclose()
        # without the CA the certificate is refused: TLS really is on
        bad = make_redis(f"rediss://127.0.0.1:{port}/0", {})
        with pytest.raises(Exception):
            await bad.ping()
        await bad.aclose()
    finally:
        _stop(procs)


def test_service_on_a_tls_cluster(certs, service_factory):
    ports = [cluster_port() for _ in range(3)]
    procs = [_tls_node(certs, p, "--tls-cluster", "yes", "--cluster-enabled", "yes", "--cluster-config-file",
                       f"nodes-{p}.conf", "--cluster-node-timeout", "1000") for p in ports]
    try:
        subprocess.run(["redis-cli", "--tls", "--cacert", f"{certs}/ca.crt", "--cluster", "create",
                        *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"], check=True, capture_output=True,
                       timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = subprocess.run(["redis-cli", "--tls", "--cacert", f"{certs}/ca.crt", "-p", str(ports[0]),
                                   "cluster", "info"], capture_output=True, text=True).stdout
            if "cluster_state:ok" in info:
                break
            time.sleep(0.2)
        url = (f"rediss+cluster://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
               f"?ssl_ca_certs={certs}/ca.crt")
        a, b = service_factory(REDIS_URL=url), service_factory(REDIS_URL=url)
        status, health = call(f"{a.url}/v1/health")
        assert status == 200 and health["checks"]["cache"]["redis"] == "up", health
        assert health["checks"]["cache"]["redis_topology"] == "cluster"
        assert call(f"{a.url}/internal/config/text", "POST", {"max_text_length": 4444})[0] == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if call(f"{b.url}/internal/config")[1]["sections"]["text"]["values"]["max_text_length"] == 4444:
                break
            time.sleep(0.05)
        assert call(f"{b.url}/internal/config")[1]["sections"]["text"]["values"]["max_text_length"] == 4444
    finally:
        _stop(procs)
