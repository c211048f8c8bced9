"""Start real services (redis-server, the service, the fake upstream) on free loopback ports."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
API_KEY = "test-key-0123456789"


async def wait_until(pred, timeout: float = 15.0) -> bool:
    """Poll pred() on the running loop until it is true or timeout seconds pass; returns its last value."""
    import asyncio
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
            last = e
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout}s: {last}")


class RedisServer:
    """A real redis-server; stop() and start() again on the same port for outage tests."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def flush(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "flushall"], capture_output=True, check=True)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


_LOGS: list[str] = []  # every Proc's log file, removed when the process that started them exits


@atexit.register
def _remove_logs() -> None:
    for path in _LOGS:
        try:
            os.unlink(path)
        except OSError:
            pass


class Proc:
    """A service or fake-upstream subprocess with its own port and log file (kept until this process exits,
    so output() still reads it after stop())."""

    def __init__(self, args: list[str], env: dict, port: int, health_path: str):
        self.port = port
        self.env = env
        self.log = tempfile.NamedTemporaryFile(prefix="svc-", suffix=".log", delete=False)
        _LOGS.append(self.log.name)
        self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"{self.url}{health_path}", proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"failed to start: {self.output()[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        with open(self.log.name, errors="replace") as fh:
            return fh.read()

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def service_env(port: int, state_dir: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "API_", "AI_", "OPENAI_", "ADDITIONAL_API_", "ADMIN_API_", "LLMAPI_"))}
    env.update({"HOST": "127.0.0.1", "PORT": str(port), "API_KEY": API_KEY, "STATE_DIR": state_dir,
                "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_service(state_dir: str, port: int | None = None, **env) -> Proc:
    port = port or free_port()
    return Proc([PYTHON, "-m", "service"], service_env(port, state_dir, **env), port, "/v1/health")


def start_fake_upstream(*args: str) -> Proc:
    port = free_port()
    return Proc([PYTHON, "-m", "service.providers.fake_upstream", "--host", "127.0.0.1", "--port", str(port), *args],
                dict(os.environ), port, "/_stats")


# ---- Redis topologies: a cluster and a Sentinel setup of real redis-servers ------------------------------
ACL_USER, ACL_PASSWORD = "llmapi", "topology-secret"
_ACL = ["--user", "default", "on", "nopass", "~*", "&*", "+@all",
        "--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all"]


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (Redis needs the port <= 55535)."""
    import random
    while True:
        port = random.randint(20000, 55000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


def _redis_node(port: int, workdir: str, *extra: str) -> subprocess.Popen:
    os.makedirs(workdir, exist_ok=True)
    return subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir, "--protected-mode", "no", *_ACL, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def redis_cli(port: int, *args: str, check: bool = True) -> str:
    r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)}: {r.stderr or r.stdout}")
    return r.stdout.strip()


class RedisClusterServers:
    """`primaries` redis-servers in cluster mode, each with `replicas_each` replicas, on loopback ports.

    The URL authenticates as an ACL user (not `default`), so credentials are exercised on every node."""

    def __init__(self, primaries: int = 3, replicas_each: int = 1, node_timeout_ms: int = 1000):
        self.dir = tempfile.mkdtemp(prefix="redis-cluster-")
        self.ports = [cluster_port() for _ in range(primaries * (1 + replicas_each))]
        self.primaries_n = primaries
        self.replicas_each = replicas_each
        self.node_timeout_ms = node_timeout_ms
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"redis+cluster://{ACL_USER}:{ACL_PASSWORD}@" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def start_node(self, port: int) -> None:
        self.procs[port] = _redis_node(port, os.path.join(self.dir, str(port)), "--cluster-enabled", "yes",
                                       "--cluster-config-file", f"nodes-{port}.conf",
                                       "--cluster-node-timeout", str(self.node_timeout_ms),
                                       # a replica takes over however long ago it last heard its primary
                                       # (on a loaded box its link may look stale and it would never try)
                                       "--cluster-replica-validity-factor", "0")
        wait_port(port, proc=self.procs[port])

    def start(self) -> "RedisClusterServers":
        for p in self.ports:
            self.start_node(p)
        redis_cli(self.ports[0], "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                  "--cluster-replicas", str(self.replicas_each), "--cluster-yes")
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = [p for p in self.ports if self.procs.get(p) and self.procs[p].poll() is None]
            infos = [redis_cli(p, "cluster", "info", check=False) for p in alive]
            if infos and all("cluster_state:ok" in i for i in infos) and \
                    all(len(self.primaries(p)) == self.primaries_n for p in alive):
                return
            time.sleep(0.2)
        raise TimeoutError("redis cluster did not reach cluster_state:ok")

    def nodes(self, via: int | None = None) -> list[dict]:
        out = []
        for line in redis_cli(via or self.live_port(), "cluster", "nodes").splitlines():
            f = line.split()
            out.append({"id": f[0], "port": int(f[1].split("@")[0].rsplit(":", 1)[1]), "flags": f[2],
                        "master": f[3], "slots": f[8:]})
        return out

    def primaries(self, via: int | None = None) -> list[int]:
        return sorted(n["port"] for n in self.nodes(via) if "master" in n["flags"] and "fail" not in n["flags"]
                      and n["slots"])

    def live_port(self) -> int:
        return next(p for p in self.ports if self.procs.get(p) and self.procs[p].poll() is None)

    def keys(self) -> list[str]:
        """Every key on every primary."""
        out = []
        for p in self.primaries():
            out += [k for k in redis_cli(p, "--scan").splitlines() if k]
        return out

    def flush(self) -> None:
        for p in self.primaries():
            redis_cli(p, "flushall")

    def stop_node(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        for p in list(self.procs):
            self.stop_node(p)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisSentinelServers:
    """One primary, `replicas` replicas and `sentinels` sentinels (quorum 2), on loopback ports."""

    def __init__(self, replicas: int = 1, sentinels: int = 3, master: str = "llmapi", down_after_ms: int = 1000):
        self.dir = tempfile.mkdtemp(prefix="redis-sentinel-")
        self.master = master
        self.data_ports = [free_port() for _ in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.down_after_ms = down_after_ms
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return (f"redis+sentinel://{ACL_USER}:{ACL_PASSWORD}@" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
                + f"/{self.master}/0")

    def start(self) -> "RedisSentinelServers":
        primary = self.data_ports[0]
        for p in self.data_ports:
            extra = ["--replicaof", "127.0.0.1", str(primary)] if p != primary else []
            self.procs[p] = _redis_node(p, os.path.join(self.dir, str(p)), "--masteruser", ACL_USER,
                                        "--masterauth", ACL_PASSWORD, *extra)
            wait_port(p, proc=self.procs[p])
        for p in self.sentinel_ports:
            conf = os.path.join(self.dir, f"sentinel-{p}.conf")
            with open(conf, "w") as fh:
                fh.write(f"port {p}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
                         f"sentinel monitor {self.master} 127.0.0.1 {primary} 2\n"
                         f"sentinel auth-user {self.master} {ACL_USER}\nsentinel auth-pass {self.master} {ACL_PASSWORD}\n"
                         f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}\n"
                         f"sentinel failover-timeout {self.master} 10000\nsentinel parallel-syncs {self.master} 1\n")
            self.procs[p] = subprocess.Popen(["redis-server", conf, "--sentinel"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(p, proc=self.procs[p])
        self.wait_replicas_known()
        return self

    def primary_port(self) -> int:
        for p in self.sentinel_ports:
            if self.procs.get(p) and self.procs[p].poll() is None:
                out = redis_cli(p, "sentinel", "get-master-addr-by-name", self.master, check=False).split()
                if len(out) == 2:
                    return int(out[1])
        raise RuntimeError("no sentinel answers")

    def wait_replicas_known(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        want = len(self.data_ports) - 1
        while time.monotonic() < deadline:
            ok = True
            for p in self.sentinel_ports:
                info = redis_cli(p, "sentinel", "master", self.master, check=False).split("\n")
                fields = dict(zip(info[::2], info[1:][::2]))
                if int(fields.get("num-slaves", 0)) < want or int(fields.get("num-other-sentinels", 0)) < \
                        len(self.sentinel_ports) - 1:
                    ok = False
            link = redis_cli(self.data_ports[1], "info", "replication", check=False) if want else "master_link_status:up"
            if ok and "master_link_status:up" in link:
                return
            time.sleep(0.2)
        raise TimeoutError("sentinels did not see every replica and each other")

    def failover(self) -> None:
        redis_cli(self.sentinel_ports[0], "sentinel", "failover", self.master)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def sync_redis(url: str):
    """A blocking redis-py client for inspecting what the service wrote (one node or a cluster)."""
    import redis

    from service.redis_client import parse_url
    t = parse_url(url)
    if t.topology == "cluster":
        return redis.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in t.nodes],
                                  username=t.username, password=t.password)
    return redis.Redis.from_url(url)


def calls_on_main_thread(monkeypatch, module, name: str) -> list[bool]:
    """Replace module.name with a spy: the list it returns gets, per call, whether it ran on the main thread."""
    import threading
    seen: list[bool] = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        seen.append(threading.current_thread() is threading.main_thread())
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, spy)
    return seen
