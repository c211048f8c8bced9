"""A primary failover under load (Sentinel promotion, a cluster replica taking over): no 5xx, health
degraded then healthy, shared state (config propagation, L2 cache, global rate limit) back in bounded time."""
import asyncio
import itertools
import json
import time

import aiohttp
import pytest

from tests.helpers import API_KEY, RedisClusterServers, RedisSentinelServers, redis_cli

pytestmark = pytest.mark.topology

TEXT = "During a failover the service answers from its memory cache and limits locally, then shares state again."
BOUND_S = 20.0   # shared state is back within this long of the new primary being elected


class SentinelSetup(RedisSentinelServers):
    def primary(self) -> int:
        return self.primary_port()

    def kill_primary(self) -> None:
        port = self.primary()
        self.procs[port].kill()
        self.procs[port].wait()


class ClusterSetup(RedisClusterServers):
    def primary(self) -> int:
        """The primary serving the {llmapi} slot (every key of the service)."""
        slot = int(redis_cli(self.live_port(), "cluster", "keyslot", "{llmapi}"))
        for n in self.nodes():
            if "master" in n["flags"] and "fail" not in n["flags"]:
                for r in n["slots"]:
                    lo, _, hi = r.partition("-")
                    if int(lo) <= slot <= int(hi or lo):
                        return n["port"]
        return -1

    def kill_primary(self) -> None:
        self.stop_node(self.primary())


@pytest.fixture(params=["sentinel", "cluster"])
def setup(request):
    s = SentinelSetup() if request.param == "sentinel" else ClusterSetup(primaries=3, replicas_each=1)
    s.kind = request.param
    s.start()
    yield s
    s.close()


async def _post(s, url, body):
    async with s.post(url, json=body) as r:
        return r.status, await r.json()


async def _get(s, url):
    async with s.get(url) as r:
        return r.status, await r.json()


async def test_failover_under_load(setup, service_factory, tmp_path):
    cfg = tmp_path / "config.yml"
    cfg.write_text("redis:\n  command_timeout_seconds: 0.5\ncache:\n  redis_retry_max_seconds: 1.0\n"
                   "rate_limit:\n  redis_retry_seconds: 1.0\n")
    env = dict(REDIS_URL=setup.url, CONFIG_FILE=str(cfg), REDIS_SOCKET_TIMEOUT="1", RATE_LIMIT_ENABLED="true",
               RATE_LIMIT_REQUESTS_PER_MINUTE="600000", RATE_LIMIT_BURST_SIZE="1000",
               MONITORING_SNAPSHOT_INTERVAL="1")
    a, b = service_factory(**env), service_factory(**env)
    statuses: list[tuple[float, int]] = []
    health: dict[str, list[tuple[float, str]]] = {"a": [], "b": []}
    stop = asyncio.Event()
    t0 = time.monotonic()
    seq = itertools.count()

    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}, timeout=aiohttp.ClientTimeout(total=10)) as s:
        async def load(svc):
            while not stop.is_set():
                i = next(seq)
                text = TEXT if i % 2 else f"{TEXT} Request {i}."   # L1 hits and fresh computations
                try:
                    st, _ = await _post(s, f"{svc.url}/v1/text/summarize", {"text": text})
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    st = 599
                statuses.append((time.monotonic() - t0, st))

        async def watch(name, svc):
            while not stop.is_set():
                try:
                    st, body = await _get(s, f"{svc.url}/v1/health")
                    health[name].append((time.monotonic() - t0, body["status"] if st == 200 else f"http {st}"))
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    health[name].append((time.monotonic() - t0, "no answer"))
                await asyncio.sleep(0.1)

        tasks = [asyncio.create_task(load(svc)) for svc in (a, b, a, b)]
        tasks += [asyncio.create_task(watch("a", a)), asyncio.create_task(watch("b", b))]
        try:
            await asyncio.sleep(1.5)
            old = setup.primary()
            t_kill = time.monotonic() - t0
            setup.kill_primary()

            # the new primary
            t_elected = None
            while time.monotonic() - t0 < t_kill + 60:
                try:
                    new = setup.primary()
                except Exception:
                    new = None
                if new not in (None, old, -1):
                    t_elected = time.monotonic() - t0
                    break
                await asyncio.sleep(0.1)
            assert t_elected is not None, "no new primary was elected"

            async def until(pred, limit=BOUND_S + 10):
                deadline = time.monotonic() + limit
                while time.monotonic() < deadline:
                    if await pred():
                        return time.monotonic() - t0
                    await asyncio.sleep(0.1)
                return None

            async def both_healthy():
                return all(h and h[-1][1] == "healthy" and h[-1][0] > t_elected for h in health.values())
            t_healthy = await until(both_healthy)

            async def limits_shared():
                modes = [(await _get(s, f"{svc.url}/internal/middleware/rate-limiting/performance"))[1]["mode"]
                         for svc in (a, b)]
                return modes == ["redis", "redis"]
            t_limits = await until(limits_shared)

            value = itertools.count(5000)

            async def config_shared():
                want = next(value)
                await _post(s, f"{a.url}/internal/config/text", {"max_text_length": want})
                for _ in range(10):
                    cfg_b = (await _get(s, f"{b.url}/internal/config"))[1]
                    if cfg_b["sections"]["text"]["values"]["max_text_length"] == want:
                        return True
                    await asyncio.sleep(0.05)
                return False
            t_config = await until(config_shared)

            async def cache_shared():
                text = f"{TEXT} After the failover {next(value)}."
                st, first = await _post(s, f"{a.url}/v1/text/summarize", {"text": text})
                st2, second = await _post(s, f"{b.url}/v1/text/summarize", {"text": text})
                return first.get("cache_hit") is False and second.get("cache_hit") is True
            t_cache = await until(cache_shared)

            await asyncio.sleep(0.5)
        finally:  # the load and watch tasks stop however the test ends
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    def first(name, state, after):
        return next((t for t, st in health[name] if st == state and t >= after), None)

    timeline = {"topology": setup.kind, "primary_killed": round(t_kill, 2),
                "new_primary_elected": round(t_elected, 2),
                "first_degraded": {n: first(n, "degraded", t_kill) for n in health},
                "healthy_again": t_healthy, "rate_limit_shared_again": t_limits,
                "config_propagates_again": t_config, "cache_shared_again": t_cache,
                "requests": len(statuses), "statuses": {st: sum(1 for _, x in statuses if x == st)
                                                        for st in sorted({x for _, x in statuses})}}
    print("failover timeline (seconds from start):", json.dumps(timeline))
    errors = [(t, st) for t, st in statuses if st >= 500]
    assert not errors, (errors[:10], timeline)
    during = [st for t, st in statuses if t_kill <= t <= (t_healthy or t_elected)]
    assert during and all(st == 200 for st in during), timeline      # requests kept answering
    assert all(st in ("healthy", "degraded") for h in health.values() for _, st in h), health
    assert any(first(n, "degraded", t_kill) for n in health), timeline   # health said so ...
    for t in (t_healthy, t_limits, t_config, t_cache):                   # ... and everything came back
        assert t is not None and t - t_elected <= BOUND_S, timeline
    for svc in (a, b):
        log = svc.output()
        assert "Traceback" not in log, log[-3000:]
