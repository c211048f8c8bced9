"""In-process caches on a real config store (and a real redis-server when asked)."""
import asyncio

import pytest

from service.cache import ResponseCache
from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.context import Context
from service.providers.base import TextRequest

TEXT = ("Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally and runs rules "
        "over this data to aggregate and record new time series or generate alerts.")


def req(text: str = TEXT, op: str = "summarize", **options) -> TextRequest:
    return TextRequest(op, text, options or {"max_length": 20})


class Provider:
    """A counting compute function: the stand-in for resilience + provider."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None):
        self.calls = 0
        self.delay = delay
        self.fail = fail

    async def __call__(self, r: TextRequest) -> bytes:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return f'{{"operation":"{r.operation}","result":"answer {self.calls} for {len(r.text)} chars"'.encode()


@pytest.fixture
async def make_cache():
    made = []

    async def make(redis_url: str | None = None, **cache_cfg) -> ResponseCache:
        store = ConfigStore(SECTIONS, env={})
        if cache_cfg:
            await store.update("cache", cache_cfg, source="test")
        ctx = Context(settings=None, store=store)
        if redis_url:
            from service.redis_client import make_redis
            ctx.redis = make_redis(redis_url, {"REDIS_SOCKET_TIMEOUT": "1", "REDIS_POOL_SIZE": "2"})
        cache = ResponseCache(ctx)
        await cache.start()
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()
        if cache.ctx.redis is not None:
            await cache.ctx.redis.aclose()
