"""Response cache (placeholder until the two-tier cache lands)."""
from __future__ import annotations

import hashlib
import json

from service.providers.base import TextRequest


class ResponseCache:
    def __init__(self, ctx):
        self.ctx = ctx
        self._data: dict[str, bytes] = {}

    def key_for(self, req: TextRequest) -> str:
        raw = json.dumps([req.operation, req.text, req.options, req.question], sort_keys=True)
        return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()

    async def get_or_compute(self, req: TextRequest, compute) -> tuple[bytes, bool]:
        key = self.key_for(req)
        hit = self._data.get(key)
        if hit is not None:
            return hit, True
        value = await compute(req)
        self._data[key] = value
        return value, False

    async def get_stale(self, req: TextRequest) -> bytes | None:
        return None

    async def health(self) -> dict:
        if self.ctx.redis is None:
            return {"status": "healthy", "backend": "memory"}
        await self.ctx.redis.ping()
        return {"status": "healthy", "backend": "memory+redis"}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
