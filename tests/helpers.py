"""Start real services (redis-server, the service, the fake upstream) on free loopback ports."""
from __future__ import annotations

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


class Proc:
    """A service or fake-upstream subprocess with its own port and log file."""

    def __init__(self, args: list[str], env: dict, port: int, health_path: str):
        self.port = port
        self.env = env
        self.log = tempfile.NamedTemporaryFile(prefix="svc-", suffix=".log", delete=False)
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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "API_", "AI_", "OPENAI_"))}
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
