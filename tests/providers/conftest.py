"""Fixtures for the provider tests: a config store and a fake upstream on a
free loopback port (real HTTP)."""
from __future__ import annotations

import pytest

from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.providers.fake_upstream import FakeUpstream


@pytest.fixture
def store() -> ConfigStore:
    return ConfigStore(SECTIONS, env={})


@pytest.fixture
async def upstream():
    up = FakeUpstream()
    await up.start()
    try:
        yield up
    finally:
        await up.stop()


@pytest.fixture
async def openai_store(store, upstream) -> ConfigStore:
    await store.update("ai", {"provider": "openai", "base_url": upstream.base_url, "timeout_seconds": 5.0})
    return store
