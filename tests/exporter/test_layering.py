"""exporter/ is the metric and KPI layer: it never imports service/ (the service registers what it needs)."""
from __future__ import annotations

import ast
import os

from tests.helpers import ROOT


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path).read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def test_exporter_never_imports_service():
    folder = os.path.join(ROOT, "exporter")
    bad = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            found = {m for m in _imports(os.path.join(folder, name)) if m == "service" or m.startswith("service.")}
            if found:
                bad[name] = sorted(found)
    assert not bad, bad


def test_the_service_registers_its_version_and_sampler():
    from exporter import collectors
    from exporter.metrics import BUILD_INFO
    from service import __version__
    from service.monitoring import kpi_status
    collectors.register(version=__version__, starter=kpi_status.start_sampler)
    collectors.set_build_info()
    assert kpi_status.start_sampler in collectors._registered["starters"]
    versions = {s.labels["version"] for f in BUILD_INFO.collect() for s in f.samples if s.value == 1}
    assert __version__ in versions
