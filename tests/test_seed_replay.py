"""Every curl command of the operations guide holds against a live service (memory only and with Redis)."""
import os
import subprocess
import sys

import pytest

from tests.helpers import API_KEY, ROOT

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
REPLAY = os.path.join(SHARED, "tools", "seed_replay.py")
SEED = os.path.join(SHARED, "seed", "PERFORMANCE_OPTIMIZATION.md")


@pytest.mark.skipif(not os.path.exists(REPLAY), reason="shared/ (the spec and its replay tool) is not beside the repo")
@pytest.mark.parametrize("topology", ["memory", "single", pytest.param("cluster", marks=pytest.mark.topology)])
def test_every_seed_command_holds(service_factory, request, topology):
    env = {}
    if topology == "single":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    elif topology == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        env["REDIS_URL"] = cluster.url
    svc = service_factory(**env)
    r = subprocess.run([sys.executable, REPLAY, SEED, svc.url, API_KEY], capture_output=True, text=True, timeout=600)
    last = r.stdout.strip().splitlines()[-1]
    print(f"seed replay ({topology}): {last}")
    done, total = last.split()[0].split("/")
    assert r.returncode == 0 and done == total and int(total) >= 70, r.stdout[-3000:]
