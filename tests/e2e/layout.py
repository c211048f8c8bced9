"""The config tree each container of docker-compose.yml sees, rebuilt in a temp dir.

compose bind-mounts, read-only, parts of three folders under /etc/llmapi:
./deploy (hand-written config), ./alerts/rules and ./dashboards/json (generated).
`Tree(tmp, "prometheus")` reads that service's volume lines and mirrors them
with symlinks: <tmp>/etc/llmapi/prometheus.yml -> <repo>/deploy/prometheus.yml,
<tmp>/etc/llmapi/rules -> <repo>/alerts/rules, and so on.  The end-to-end
test runs the real binaries on such a tree, so it reads exactly the files
compose mounts, at the same relative places.

`write()` replaces one mounted file (or a file of a mounted folder) with test
content; it first turns the symlink into a private copy, so the repository
is never written through a link.
"""
from __future__ import annotations

import os
import shutil

import yaml

from tests.helpers import ROOT

COMPOSE = os.path.join(ROOT, "docker-compose.yml")
CONTAINER_ROOT = "/etc/llmapi"


def compose() -> dict:
    with open(COMPOSE) as fh:
        return yaml.safe_load(fh)


def bind_mounts(service: str) -> list[tuple[str, str, bool]]:
    """(absolute host path, container path, read_only) of a service's bind mounts (named volumes skipped)."""
    out = []
    for v in compose()["services"][service].get("volumes", []):
        parts = v.split(":")
        if not parts[0].startswith("."):
            continue
        src, dst = parts[0], parts[1]
        ro = len(parts) > 2 and "ro" in parts[2].split(",")
        out.append((os.path.normpath(os.path.join(ROOT, src)), dst, ro))
    return out


class Tree:
    def __init__(self, root, service: str):
        self.root = str(root)
        self.service = service
        self.mounts = bind_mounts(service)
        for src, dst, _ in self.mounts:
            link = self._local(dst)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(src, link)

    def _local(self, container_path: str) -> str:
        return os.path.join(self.root, container_path.lstrip("/"))

    def mount_of(self, container_path: str) -> tuple[str, str, bool] | None:
        """The bind mount that holds container_path (None: not mounted)."""
        for m in self.mounts:
            dst = m[1].rstrip("/")
            if container_path == dst or container_path.startswith(dst + "/"):
                return m
        return None

    def host(self, container_path: str) -> str:
        """Where container_path is in this tree (whether or not anything is there)."""
        return self._local(container_path)

    def exists(self, container_path: str) -> bool:
        return self.mount_of(container_path) is not None and os.path.exists(self.host(container_path))

    def write(self, container_path: str, text: str) -> str:
        m = self.mount_of(container_path)
        if m is None:
            raise ValueError(f"{container_path} is not mounted in {self.service}")
        link = self._local(m[1])
        if os.path.islink(link):
            os.unlink(link)
            if os.path.isdir(m[0]):
                shutil.copytree(m[0], link)
        path = self._local(container_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
        return path
