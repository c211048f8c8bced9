"""ProviderManager: the provider follows the store live."""
from __future__ import annotations

import asyncio

import pytest

from service.config.schema import ConfigValidationError
from service.providers import LocalProvider, OpenAIProvider, ProviderManager
from service.providers.base import ProviderResult, TextRequest
from service.providers.fake_upstream import FakeUpstream

from .helpers import TEXT, control, get_json

REQ = TextRequest("summarize", TEXT, {"max_length": 30})


@pytest.fixture
async def manager(store):
    m = ProviderManager(store, env={})
    yield m
    await m.close()


async def test_default_is_local(manager):
    assert isinstance(manager.current, LocalProvider)
    r = await manager.process(REQ)
    assert r.provider == "local" and len(r.payload["result"].split()) <= 30
    h = await manager.health()
    assert h["status"] == "healthy" and h["provider"] == "local" and h["model"] == "local-extractive-1"
    out = await manager.process_batch([REQ, TextRequest("qa", TEXT)])
    assert isinstance(out[0], ProviderResult) and out[1].kind == "client"


async def test_switches_provider_live_and_closes_the_old_one(manager, store, upstream):
    local = manager.current
    await store.update("ai", {"provider": "openai", "base_url": upstream.base_url})
    assert isinstance(manager.current, OpenAIProvider)
    r = await manager.process(REQ)
    assert r.provider == "openai"
    assert (await get_json(f"{upstream.url}/_stats"))["calls"] == 1
    h = await manager.health()
    assert h["provider"] == "openai" and h["status"] == "healthy"
    remote = manager.current
    pool = remote._pool
    # back to local: the OpenAI provider and its pool are closed
    await store.update("ai", {"provider": "local"})
    assert isinstance(manager.current, LocalProvider) and manager.current is not local
    assert (await manager.process(REQ)).provider == "local"
    await asyncio.sleep(0.05)
    assert pool.closed and remote._closed
    assert (await get_json(f"{upstream.url}/_stats"))["calls"] == 1
    assert manager.switches == 2


async def test_base_url_change_rebuilds_the_openai_provider(manager, store, upstream):
    await store.update("ai", {"provider": "openai", "base_url": upstream.base_url})
    first = manager.current
    async with FakeUpstream() as other:
        await store.update("ai", {"base_url": other.base_url})
        assert manager.current is not first and isinstance(manager.current, OpenAIProvider)
        await manager.process(REQ)
        assert (await get_json(f"{other.url}/_stats"))["calls"] == 1
        assert (await get_json(f"{upstream.url}/_stats"))["calls"] == 0
        await store.update("ai", {"provider": "local"})


async def test_base_url_change_while_local_keeps_the_provider(manager, store):
    first = manager.current
    await store.update("ai", {"base_url": "http://127.0.0.1:9/v1"})
    assert manager.current is first


async def test_pool_changes_reach_the_current_provider(manager, store, upstream):
    await store.update("ai", {"provider": "openai", "base_url": upstream.base_url})
    p = manager.current
    await manager.process(REQ)
    assert p.pool_info()["max_connections"] == 100
    await store.update("ai", {"max_connections": 3})
    assert manager.current is p  # same provider, new pool
    await manager.process(REQ)
    assert p.pool_info()["max_connections"] == 3


async def test_in_flight_call_finishes_on_the_old_provider(manager, store, upstream):
    await store.update("ai", {"provider": "openai", "base_url": upstream.base_url})
    await control(upstream.url, latency_ms=300)
    call = asyncio.create_task(manager.process(REQ))
    await asyncio.sleep(0.1)
    await store.update("ai", {"provider": "local"})
    r = await call
    assert r.provider == "openai" and r.payload["result"]


async def test_invalid_provider_changes_nothing(manager, store):
    first = manager.current
    with pytest.raises(ConfigValidationError) as e:
        await store.update("ai", {"provider": "anthropic"})
    assert e.value.field == "provider"
    assert manager.current is first


async def test_openai_from_the_start_and_unreachable_health(store):
    await store.update("ai", {"provider": "openai", "base_url": "http://127.0.0.1:9/v1"})
    m = ProviderManager(store, env={"OPENAI_API_KEY": "k"})
    try:
        assert isinstance(m.current, OpenAIProvider)
        h = await m.health()
        assert h["status"] == "degraded" and h["provider"] == "openai"
    finally:
        await m.close()
