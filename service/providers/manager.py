"""Holds the current AI provider, built from the "ai" config section.

A change of ai.provider (or of ai.base_url while the OpenAI provider is in
use) builds a new provider at once; calls already running finish on the old
one, which is then closed.  Other ai changes (pool size, keep-alive, ...) are
passed to the current provider's on_config_change.
"""
from __future__ import annotations

import asyncio
import logging
import os

from service.providers.base import Provider, ProviderResult, ProviderError, TextRequest
from service.providers.local import LocalProvider
from service.providers.openai_compat import OpenAIProvider

log = logging.getLogger("service.providers")

HEALTH_TIMEOUT_SECONDS = 0.9  # inside the 1 s bound of /v1/health


class ProviderManager:
    def __init__(self, store, env: dict | None = None):
        self.store = store
        self.env = os.environ if env is None else env
        self._closed = False
        self._closing: set[asyncio.Task] = set()
        self.switches = 0
        self.current: Provider = self._build(store.get("ai"))
        store.subscribe(self._on_config_change)

    def _build(self, ai: dict) -> Provider:
        if ai["provider"] == "openai":
            return OpenAIProvider(self.store, env=self.env, subscribe=False)
        return LocalProvider()

    def _on_config_change(self, section: str, new: dict, old: dict) -> None:
        if section != "ai" or self._closed:
            return
        switch = new.get("provider") != old.get("provider") or (
            new.get("provider") == "openai" and new.get("base_url") != old.get("base_url"))
        if not switch:
            hook = getattr(self.current, "on_config_change", None)
            if hook is not None:
                hook(section, new, old)
            return
        previous = self.current
        self.current = self._build(new)
        self.switches += 1
        log.info("ai provider switched", extra={"provider": self.current.name,
                                                 "previous": previous.name})
        self._close_later(previous)

    def _close_later(self, provider: Provider) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (store changed outside asyncio): nothing open to close
        t = loop.create_task(self._close_quietly(provider))
        self._closing.add(t)
        t.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_quietly(provider: Provider) -> None:
        try:
            await provider.close()
        except Exception:
            log.exception("closing the previous ai provider failed")

    # ---- calls ----------------------------------------------------------
    async def process(self, req: TextRequest) -> ProviderResult:
        return await self.current.process(req)

    async def process_batch(self, reqs: list[TextRequest], **kw) -> list[ProviderResult | ProviderError]:
        return await self.current.process_batch(reqs, **kw)

    async def health(self) -> dict:
        p = self.current
        base = {"provider": p.name, "model": p.model}
        try:
            h = await asyncio.wait_for(p.health(), HEALTH_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            return {**base, "status": "degraded", "detail": "provider health check timed out"}
        except Exception as e:
            return {**base, "status": "unhealthy", "detail": f"provider health check failed: {type(e).__name__}"}
        return {**base, **h}

    async def close(self) -> None:
        self._closed = True
        await self._close_quietly(self.current)
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
