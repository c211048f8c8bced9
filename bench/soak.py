"""Bench scenario `soak`: cache misses with varied texts for BENCH_SOAK_SECONDS (600 by default; `make
bench` users pass a shorter one with the env var), sampling the service's RSS every 5 s.  Once the cache
is full, RSS must stay within +-5 % of its value at that moment.

"Full" is every bounded structure of the cache and of the validation memo at its bound: the memory tier
holds max_entries, the memo its byte budget (monitoring.validation_memo_max_bytes: it keeps filling with the
bodies of new texts after the cache has its 10,000 entries), and the list of keys evicted for room holds
cache.ghost_keys (4,096 by default).  That list starts filling only when the first entry is evicted, i.e. at
the moment the entries reach max_entries: about 0.8 MB of keys (1 % of RSS) come in over the next 4,096
misses, and meanwhile CPython resizes the tier's, the fingerprint index's and the memo's dicts once under
churn (16,384 -> 32,768 slots, ~0.9 MB).  Sampling at max_entries alone counted both as drift.  What is
left after that point is the heap's fragmentation, which service/monitoring/heap.py hands back to the OS."""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import time

import aiohttp
import psutil

from tests.helpers import API_KEY, PYTHON, Proc, free_port, service_env

SAMPLE_EVERY = 5.0
WORDS = ("metrics alerts dashboards operators latency cache budget tokens upstream model queue retry "
         "breaker scrape series label histogram quantile window burn").split()


def starter():
    def start(state: str, _redis) -> Proc:
        port = free_port()
        return Proc([PYTHON, "-m", "service"], service_env(port, state, LOG_LEVEL="INFO"), port, "/v1/health")
    return start


def _text(n: int) -> str:
    words = [WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(40)]
    return f"Soak request {n}: " + " ".join(words) + f". The operators track {n} of them."


def _entries(doc: dict) -> tuple[int, int, bool]:
    """(entries, max_entries, ghost list full) of the memory tier, wherever /internal/cache/stats nests them."""
    for part in (doc, doc.get("memory") or {}, doc.get("l1") or {}):
        if isinstance(part, dict) and "entries" in part:
            ghosts_full = part.get("ghost_keys", 0) >= part.get("max_ghost_keys", 0)
            return int(part["entries"]), int(part.get("max_entries") or 10_000), ghosts_full
    return 0, 10_000, False


def _find(doc, name: str):
    """The first value under key `name` anywhere in a JSON document."""
    if isinstance(doc, dict):
        if name in doc:
            return doc[name]
        doc = list(doc.values())
    if isinstance(doc, list):
        for v in doc:
            found = _find(v, name)
            if found is not None:
                return found
    return None


def _memo_full(doc: dict) -> bool:
    """Has the validation memo reached its byte budget (memory-analysis: validation_memo.reported)?"""
    memo = ((_find(doc, "validation_memo") or {}).get("reported")) or {}
    return bool(memo.get("evictions")) or memo.get("memory_bytes", 0) >= 0.95 * (memo.get("max_bytes") or 1)


async def _load(url: str, seconds: float, connections: int, pid: int) -> tuple[list, int, int]:
    counter = itertools.count()
    samples: list[tuple[float, float, int, int]] = []
    errors = 0
    end = time.perf_counter() + seconds
    proc = psutil.Process(pid)

    def rss() -> float:
        total = proc.memory_info().rss
        for c in proc.children(recursive=True):
            try:
                total += c.memory_info().rss
            except psutil.Error:
                pass
        return total / 2 ** 20

    async with aiohttp.ClientSession() as s:
        async def worker():
            nonlocal errors
            while time.perf_counter() < end:
                n = next(counter)
                async with s.post(f"{url}/v1/text/summarize", data=json.dumps({"text": _text(n)}),
                                  headers={"X-API-Key": API_KEY, "Content-Type": "application/json"}) as r:
                    await r.read()
                    errors += r.status >= 300

        async def sampler():
            t0 = time.perf_counter()
            while time.perf_counter() < end:
                async with s.get(f"{url}/internal/cache/stats", headers={"X-API-Key": API_KEY}) as r:
                    doc = await r.json()
                entries, cap, ghosts_full = _entries(doc)
                async with s.get(f"{url}/internal/monitoring/memory-analysis", headers={"X-API-Key": API_KEY}) as r:
                    memo_full = _memo_full(await r.json())
                samples.append((round(time.perf_counter() - t0, 1), round(rss(), 1), entries, cap,
                                memo_full and ghosts_full))
                await asyncio.sleep(SAMPLE_EVERY)
        await asyncio.gather(sampler(), *(worker() for _ in range(connections)))
    return samples, next(counter), errors


def run(proc: Proc, duration: float, connections: int) -> dict:
    seconds = float(os.environ.get("BENCH_SOAK_SECONDS", "600"))
    samples, n, errors = asyncio.run(_load(proc.url, seconds, min(connections, 8), proc.proc.pid))
    full = next((i for i, s in enumerate(samples) if s[2] >= s[3] and s[4]), None)
    after = samples[full:] if full is not None else []
    drift = None
    if len(after) >= 2:
        ref = after[0][1]
        drift = round(100 * max(abs(s[1] - ref) for s in after) / ref, 2)
    print(f"  {n} requests in {seconds:.0f} s; cache (entries and evicted keys) and validation memo full at "
          f"{after[0][0] if after else 'never'} s; RSS after that within {drift}% "
          f"({after[0][1] if after else '-'} MiB -> {samples[-1][1] if samples else '-'} MiB)")
    return {"rps": n / seconds, "p50_ms": 0.0, "p99_ms": 0.0, "requests": n, "errors": errors,
            "rss_drift_percent_after_full": drift, "samples": samples, "soak_seconds": seconds}
