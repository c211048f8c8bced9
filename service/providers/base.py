"""The one interface every AI provider implements.

A provider turns a TextRequest into a ProviderResult.  Failures are raised as
ProviderError with a `kind` that the resilience layer uses to decide whether a
retry is worth it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OPERATIONS = ("summarize", "sentiment", "key_points", "questions", "qa")

# error kinds; the retryable ones are what resilience retries
RETRYABLE_KINDS = frozenset({"timeout", "connection", "rate_limited", "server"})


@dataclass(frozen=True)
class TextRequest:
    operation: str
    text: str
    options: dict = field(default_factory=dict)
    question: str | None = None


@dataclass
class ProviderResult:
    # operation specific payload: {"result": str} for summarize/qa,
    # {"sentiment": {label, confidence, explanation}}, {"key_points": [...]},
    # {"questions": [...]}
    payload: dict[str, Any]
    provider: str
    model: str
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0, "total": 0})
    usage: Any = None  # service.resilience.meter.Usage, set by the resilience layer after a successful call


class ProviderError(Exception):
    """kind: timeout | connection | rate_limited | server | client | parse"""

    def __init__(self, kind: str, message: str, status: int | None = None,
                 retry_after: float | None = None, tokens: dict | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.tokens = tokens  # what the failed call still cost (an answer that did not parse was billed)

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


class Provider:
    name = "base"
    model = ""

    async def process(self, req: TextRequest) -> ProviderResult:  # pragma: no cover
        raise NotImplementedError

    async def process_batch(self, reqs: list[TextRequest]) -> list[ProviderResult | ProviderError]:
        """Default: one call per request.  Providers that can do better override it."""
        out: list[ProviderResult | ProviderError] = []
        for r in reqs:
            try:
                out.append(await self.process(r))
            except ProviderError as e:
                out.append(e)
        return out

    async def health(self) -> dict:
        return {"status": "healthy"}

    async def close(self) -> None:
        return None
