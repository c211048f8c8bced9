import os
import subprocess
import sys

from tests.helpers import ROOT


def test_readme_env_table_is_generated_from_config_sections():
    r = subprocess.run([sys.executable, "-m", "service.docgen", "--check", os.path.join(ROOT, "README.md")],
                       cwd=ROOT)
    assert r.returncode == 0, "README env table or route list is stale: run python -m service.docgen --write README.md"


def test_ci_runs_make_test():
    assert "make test" in open(os.path.join(ROOT, ".ci", "run")).read()


# set by the service for its own child processes, not by operators
INTERNAL_ENV = {"LLMAPI_WORKER", "WORKER_ID", "PROMETHEUS_MULTIPROC_DIR", "LOADGEN_BENCHMARK_TOKEN",
                "LLMAPI_DEPLOYMENT_SECRET"}


def test_every_env_var_the_code_reads_is_declared_once():
    import re

    from service.config.sections import SECTIONS
    from service.settings import PROCESS_ENV

    section_envs = [f.env for s in SECTIONS.values() for f in s.fields.values() if f.env]
    assert len(section_envs) == len(set(section_envs)), "an env var seeds two config fields"
    assert not set(section_envs) & set(PROCESS_ENV), "an env var is both process-level and a config field"
    declared = set(section_envs) | set(PROCESS_ENV) | INTERNAL_ENV
    read = set()
    for folder in ("service", "exporter", "alerts", "dashboards"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(".py"):
                    text = open(os.path.join(dirpath, name)).read()
                    read |= set(re.findall(r'(?:env|environ)(?:\.get\(|\[)\s*"([A-Z][A-Z0-9_]+)"', text))
                    read |= set(re.findall(r'env_(?:str|number)\(env, "([A-Z][A-Z0-9_]+)"', text))
    assert read, "the scan found nothing: the pattern is wrong"
    assert read <= declared, f"env vars read but not declared: {sorted(read - declared)}"
