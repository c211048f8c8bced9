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
