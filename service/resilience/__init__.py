"""AI-call resilience (placeholder until breakers and retries land)."""
from __future__ import annotations

import asyncio

from service.providers.base import ProviderError, ProviderResult, TextRequest


class AIUnavailable(Exception):
    """The AI service cannot answer now (breaker open, retries exhausted, deadline)."""

    def __init__(self, error_code: str, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.retry_after = retry_after


class Resilience:
    def __init__(self, ctx):
        self.ctx = ctx

    async def call(self, req: TextRequest) -> ProviderResult:
        timeout = self.ctx.store.get("ai")["timeout_seconds"]
        try:
            return await asyncio.wait_for(self.ctx.providers.process(req), timeout)
        except asyncio.TimeoutError:
            raise AIUnavailable("AI_TIMEOUT", f"the AI service did not answer within {timeout}s", 1.0)
        except ProviderError as e:
            if e.retryable:
                raise AIUnavailable("AI_SERVICE_UNAVAILABLE", f"the AI service failed ({e.kind})",
                                    e.retry_after or 1.0)
            raise

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
