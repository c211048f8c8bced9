"""Helpers for the topology tests: HTTP calls and a MONITOR of every primary of a cluster."""
import json
import re
import subprocess
import tempfile
import urllib.error
import urllib.request

from tests.helpers import API_KEY


def call(url: str, method: str = "GET", body=None, timeout: float = 10) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"X-API-Key": API_KEY, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class Monitor:
    """`redis-cli monitor` on each port: every command the servers executed, with its arguments."""

    LINE = re.compile(r'^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$')
    ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')  # each quoted argument, escapes kept as they are

    def __init__(self, ports):
        self.files = [tempfile.NamedTemporaryFile(prefix="monitor-", suffix=".log", delete=False) for _ in ports]
        self.procs = [subprocess.Popen(["redis-cli", "-p", str(p), "monitor"], stdout=f, stderr=subprocess.DEVNULL)
                      for p, f in zip(ports, self.files)]

    def stop(self) -> list[tuple[str, list[str]]]:
        """[(client, [command, args...])] of every monitored command."""
        for p in self.procs:
            p.terminate()
            p.wait(5)
        out = []
        for f in self.files:
            with open(f.name, errors="replace") as fh:
                for line in fh:
                    m = self.LINE.match(line.strip())
                    if m:
                        out.append((m.group(1), self.ARG.findall(m.group(2))))
        return out
