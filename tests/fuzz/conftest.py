"""Hostile-input fuzzing against a real service process.

One service (the subprocess of `python -m service`, embedded defaults) serves
every fuzz test of the session.  Its AI provider is the local one, and the
openai base URL points at a closed loopback port, so a fuzzed config change
can never send traffic off the machine.  Benchmarks a fuzzed body might
start are capped at 1 s (and cancelled).

Profiles (FUZZ_PROFILE): `ci` (default, what `make test` runs: bounded so all
fuzz tests take about a minute or two) and `long` (`make fuzz`: 20x the
examples).  Every test checks, after it ran, that the service logged no
traceback and no ERROR line.
"""
from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.client import Client
from tests.helpers import free_port, start_service

PROFILE = os.environ.get("FUZZ_PROFILE", "ci")
_common = dict(deadline=None, derandomize=False, database=None, print_blob=True,
               suppress_health_check=list(HealthCheck))
settings.register_profile("ci", max_examples=120, **_common)
settings.register_profile("long", max_examples=2500, **_common)
settings.load_profile(PROFILE)
EXAMPLES = settings.get_profile(PROFILE).max_examples

_BAD_LOG = re.compile(r'traceback|"level": "(ERROR|CRITICAL)"', re.I)


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/fuzz/" in str(item.fspath):
            item.add_marker(pytest.mark.fuzz)


@pytest.fixture(scope="session")
def fuzz_service(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    cfg = d / "config.yaml"
    cfg.write_text("monitoring:\n  benchmark_max_duration_seconds: 1\n"
                   f"ai:\n  base_url: http://127.0.0.1:{free_port()}/v1\n")
    proc = start_service(str(d / "state"), CONFIG_FILE=str(cfg), LOG_LEVEL="WARNING")
    yield proc
    proc.stop()


class FuzzClient(Client):
    def __init__(self, proc):
        super().__init__(proc.port)
        self.baseline = self.config_version()

    def restore(self) -> None:
        """Undo what an accepted /internal call changed: config back to the start, no benchmark running."""
        if self.config_version() != self.baseline:
            a = self.json("POST", "/internal/config/rollback", {"version": 0})
            assert a.status == 200, a
        self.request("POST", "/internal/monitoring/benchmark/cancel", b"{}", {"Content-Type": "application/json"})
        running = self.request("GET", "/internal/resilience/benchmarks").json().get("running")
        if running:
            self.request("POST", f"/internal/resilience/benchmark/{running}/cancel", b"{}",
                         {"Content-Type": "application/json"})
        self.baseline = self.config_version()


@pytest.fixture(autouse=True)
def service_log_stays_clean(fuzz_service):
    """After each test: no traceback, no ERROR line in the service's log, and the service still runs."""
    start = len(fuzz_service.output())
    yield
    log = fuzz_service.output()[start:]
    bad = [line for line in log.splitlines() if _BAD_LOG.search(line)]
    assert not bad, "the service logged:\n" + "\n".join(line[:2000] for line in bad[:5])
    assert fuzz_service.proc.poll() is None, "the service died"


@pytest.fixture
def client(fuzz_service):
    c = FuzzClient(fuzz_service)
    yield c
    c.close()
