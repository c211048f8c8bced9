"""Every curl command of the operations guide holds against a live service (memory only and with Redis).

After the replay with the default config, a live scrape passes `promtool check metrics` and stays within
the series budget (issue 14: at most SERIES_BUDGET series, the LLM metrics included), and the scrape's
own count (llmapi_scrape_series) agrees.
"""
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest

from tests.helpers import API_KEY, ROOT

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
REPLAY = os.path.join(SHARED, "tools", "seed_replay.py")
SEED = os.path.join(SHARED, "seed", "PERFORMANCE_OPTIMIZATION.md")
SERIES_BUDGET = 700


def check_series_budget(url: str) -> int:
    body = urllib.request.urlopen(f"{url}/metrics", timeout=10).read()
    series = [ln for ln in body.decode().splitlines() if ln and not ln.startswith("#")]
    assert shutil.which("promtool"), "promtool is missing: `make test` installs it (Debian prometheus)"
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()[-3000:]
    own = [ln for ln in series if ln.startswith("llmapi_scrape_series ")]
    assert own and float(own[0].split()[1]) == len(series)
    assert len(series) <= SERIES_BUDGET, f"{len(series)} series after the seed replay (budget {SERIES_BUDGET})"
    return len(series)


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
    if topology == "memory":  # the budget is for the default config
        print(f"series after the seed replay: {check_series_budget(svc.url)} (budget {SERIES_BUDGET})")
