"""Drive HTTP load: wrk when installed, else a bundled asyncio client."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time


def _wrk(url: str, body: bytes, headers: dict, duration: float, connections: int, cpus=None) -> dict:
    lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    lua.write('wrk.method = "POST"\n')
    lua.write(f"wrk.body = {json.dumps(body.decode())}\n")
    for k, v in headers.items():
        lua.write(f'wrk.headers["{k}"] = "{v}"\n')
    lua.write('done = function(summary, latency, requests)\n'
              '  io.write(string.format("JSON {\\"p50\\": %d, \\"p99\\": %d, \\"requests\\": %d, '
              '\\"non2xx\\": %d, \\"errors\\": %d}\\n", latency:percentile(50), latency:percentile(99), '
              'summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + '
              'summary.errors.write + summary.errors.timeout))\nend\n')
    lua.close()
    try:
        pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus is not None and shutil.which("taskset") else []
        out = subprocess.run([*pin, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "-s", lua.name, url],
                             capture_output=True, text=True, timeout=duration + 30).stdout
    finally:
        os.unlink(lua.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    stats = json.loads(re.search(r"JSON (\{.*\})", out).group(1))
    return {"rps": rps, "p50_ms": stats["p50"] / 1000, "p99_ms": stats["p99"] / 1000,
            "requests": stats["requests"], "errors": stats["non2xx"] + stats["errors"], "tool": "wrk"}


async def _bundled(url: str, body, headers: dict, duration: float, connections: int) -> dict:
    """body: bytes, or a callable returning the next body (unique bodies defeat the cache)."""
    import aiohttp

    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration

    async def worker(session):
        nonlocal errors
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            async with session.post(url, data=body() if callable(body) else body, headers=headers) as r:
                await r.read()
                if r.status >= 300:
                    errors += 1
            lat.append(time.perf_counter() - t)

    conn = aiohttp.TCPConnector(limit=connections)
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=conn) as s:
        await asyncio.gather(*(worker(s) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    lat.sort()
    return {"rps": len(lat) / elapsed, "p50_ms": lat[len(lat) // 2] * 1000 if lat else 0,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1000 if lat else 0, "requests": len(lat),
            "errors": errors, "tool": "bundled"}


def drive(url: str, body: bytes, headers: dict, duration: float = 5.0, connections: int = 32, cpus=None) -> dict:
    """`cpus`: the CPUs wrk may run on (taskset), None for any."""
    headers = {"Content-Type": "application/json", **headers}
    if shutil.which("wrk") and not os.environ.get("BENCH_NO_WRK"):
        return _wrk(url, body, headers, duration, connections, cpus)
    return asyncio.run(_bundled(url, body, headers, duration, connections))
