"""Breaker state shared between processes through a real redis-server."""
import asyncio

import pytest

from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.context import Context
from service.providers.base import TextRequest
from service.providers.fake_upstream import FakeUpstream
from service.providers.manager import ProviderManager
from service.redis_client import make_redis
from service.resilience import AIUnavailable, Resilience
from tests.helpers import wait_until

TEXT = "Circuit breakers stop calls to a failing service so that callers fail fast instead of waiting."


async def _replica(up, redis_url):
    env = {"AI_PROVIDER": "openai", "OPENAI_BASE_URL": up.base_url, "OPENAI_API_KEY": "sk-test",
           "AI_MAX_RETRIES": "0", "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "2", "CIRCUIT_BREAKER_RECOVERY_TIMEOUT": "60"}
    store = ConfigStore(SECTIONS, env=env)
    ctx = Context(settings=None, store=store, redis=make_redis(redis_url, {}))
    ctx.providers = ProviderManager(store, env)
    ctx.resilience = Resilience(ctx)
    await ctx.resilience.start()
    return ctx


async def test_open_and_close_propagate_between_replicas(any_redis_url):
    redis_url = any_redis_url
    up = await FakeUpstream(error_rate=1.0, error_status=503).start()
    a = await _replica(up, redis_url)
    b = await _replica(up, redis_url)
    try:
        await asyncio.sleep(0.2)  # both followers subscribed
        for _ in range(2):
            with pytest.raises(AIUnavailable):
                await a.resilience.call(TextRequest("summarize", TEXT))
        assert a.resilience.breakers["openai.summarize"].state == "open"
        bb = b.resilience.breaker("openai", "summarize")
        assert await wait_until(lambda: bb.state == "open")
        assert bb.transitions[-1]["source"] == "redis"
        calls = up.state.calls
        with pytest.raises(AIUnavailable) as ei:
            await b.resilience.call(TextRequest("summarize", TEXT))
        assert ei.value.error_code == "CIRCUIT_BREAKER_OPEN"
        assert up.state.calls == calls  # replica b failed fast without calling the upstream
        a.resilience.reset_breaker("openai.summarize")
        assert await wait_until(lambda: bb.state == "closed")
        # no echo: a heard nothing back that changed it
        assert a.resilience.breakers["openai.summarize"].state == "closed"
        assert b.resilience.shared.info()["received"] == 2
    finally:
        for ctx in (a, b):
            await ctx.resilience.close()
            await ctx.providers.close()
            await ctx.redis.aclose()
        await up.stop()


async def test_without_redis_breakers_are_per_process():
    up = await FakeUpstream().start()
    env = {"AI_PROVIDER": "openai", "OPENAI_BASE_URL": up.base_url}
    store = ConfigStore(SECTIONS, env=env)
    ctx = Context(settings=None, store=store)
    ctx.providers = ProviderManager(store, env)
    ctx.resilience = Resilience(ctx)
    await ctx.resilience.start()
    try:
        assert ctx.resilience.shared.info()["enabled"] is False
        assert (await ctx.resilience.call(TextRequest("summarize", TEXT))).provider == "openai"
    finally:
        await ctx.resilience.close()
        await ctx.providers.close()
        await up.stop()


def test_unknown_breaker_names_from_redis_are_ignored():
    from service.resilience.shared import SharedBreakers

    class R:
        breakers = {}
        ctx = Context(settings=None, store=None)

        def breaker(self, provider, op):
            raise AssertionError("must not create a breaker")

    sb = SharedBreakers(R())
    for name in ("evil.summarize", "openai.drop_tables", "nodot", 5):
        sb.apply({"origin": "other", "breaker": name, "state": "open"})
    assert sb.received == 0
