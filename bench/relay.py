"""A C relay in front of the fake upstream: haproxy (Debian's package), HTTP mode, one thread,
keep-alive on both sides and its server connections reused.  `uncached_overhead` puts it beside
`proxy_floor`: what forwarding costs on this machine when the forwarder's own code is small, so the
figures of the Python proxies can be read against the machine's and not only against each other.
`make bench` installs haproxy; without it the row is skipped, and says why."""
from __future__ import annotations

import os
import shutil
import tempfile

from tests.helpers import Proc, free_port

CONFIG = """global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend relay
  bind 127.0.0.1:{port}
  default_backend upstream
backend upstream
  server up 127.0.0.1:{upstream_port}
"""


def missing() -> str | None:
    """Why the relay cannot run here, or None."""
    return None if shutil.which("haproxy") else "haproxy is not installed (make bench installs it)"


def start(upstream_port: int, env: dict) -> Proc:
    """haproxy on a free port forwarding everything to 127.0.0.1:upstream_port; ready once the
    upstream's /_stats answers through it."""
    port = free_port()
    cfg = tempfile.NamedTemporaryFile("w", prefix="relay-", suffix=".cfg", delete=False)
    with cfg:
        cfg.write(CONFIG.format(port=port, upstream_port=upstream_port))
    try:
        return Proc([shutil.which("haproxy"), "-f", cfg.name, "-db"], env, port, "/_stats")
    finally:
        os.unlink(cfg.name)  # read at start
