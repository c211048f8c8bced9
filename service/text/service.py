"""The text pipeline: cache -> resilience -> provider.

Answers are kept pre-serialised: the cache stores the JSON body without its
closing brace, and each request appends only its own fields (cache_hit,
processing_time_ms, request_id, timestamp).  A cache hit therefore costs a
key hash (none for a body the validation memo knows), a lookup and one bytes
join, with no await (`cached`).
"""
from __future__ import annotations

import json
import time

from exporter.metrics import CLIENT_REQUESTS, TEXT_DEGRADED
from exporter.tally import Tally
from service import spans
from service.cache.codec import answer
from service.errors import ApiError
from service.jsonc import dumps_compact
from service.providers.base import OPERATIONS, ProviderError, ProviderResult, TextRequest
from service.resilience import AIUnavailable
from service.text.memo import ValidationMemo


def render_prefix(req: TextRequest, result: ProviderResult) -> bytes:
    """The cacheable part of an answer: a JSON object missing its final '}'."""
    doc = {"operation": req.operation, "success": True}
    doc.update(result.payload)
    doc["metadata"] = {"word_count": len(req.text.split()), "provider": result.provider,
                       "model": result.model, "tokens": result.tokens}
    return dumps_compact(doc).encode()[:-1]


DIGITS3 = tuple(f"{i:03d}" for i in range(1000))  # "000".."999": a lookup, not a 3,000-instruction format spec
_stamp = [-1, "", -1, ""]  # (epoch second, its ISO text; epoch millisecond, the whole stamp): shared by requests


def timestamp() -> str:
    """Now as ISO 8601 UTC with milliseconds: 2026-11-26T16:05:09.123Z (rendered once a millisecond)."""
    ms = int(time.time() * 1000)
    st = _stamp
    if ms != st[2]:
        s = ms // 1000
        if s != st[0]:
            st[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
            st[0] = s
        st[3] = f"{st[1]}.{DIGITS3[ms % 1000]}Z"
        st[2] = ms
    return st[3]


_FALLBACK = ',"fallback":true'
STALE = "stale_cache"  # reason label of a degraded answer


def finish(prefix: bytes, hit: bool, start: float, request_id: str, fallback: bool = False) -> bytes:
    us = int((time.perf_counter() - start) * 1_000_000)
    rid = f'"{request_id}"' if request_id.isalnum() else json.dumps(request_id)
    tail = (f',"cache_hit":{"true" if hit else "false"},"processing_time_ms":{us // 1000}.{DIGITS3[us % 1000]},'
            f'"request_id":{rid},"timestamp":"{timestamp()}"{_FALLBACK if fallback else ""}}}')
    return prefix + tail.encode()


def text_key_names(ctx) -> list[str]:
    """The configured names of the keys that may call the text API (`anonymous` when none is needed)."""
    from service.keys import ANONYMOUS
    ring = getattr(ctx, "keys", None)
    if ring is None or not ring.configured:
        return [ANONYMOUS]
    return [k.name for k in ring.entries if "text" in k.scopes]


class TextService:
    def __init__(self, ctx):
        self.ctx = ctx
        self.memo = ValidationMemo(ctx.store)
        for op in (*OPERATIONS, "batch"):  # rate() reads 0, not "no data", before the first degraded answer
            TEXT_DEGRADED.labels(op, STALE)
        # usage per configured key name (request["key_name"], set by the auth middleware): (name, operation)
        self.by_key = Tally(lambda key: CLIENT_REQUESTS.labels(*key))
        for name in text_key_names(ctx):  # known label values at 0 (rate() reads 0 before the first request)
            for op in OPERATIONS:
                CLIENT_REQUESTS.labels(name, op)

    async def _compute(self, req: TextRequest) -> bytes:
        result = await self.ctx.resilience.call(req)
        return answer(render_prefix(req, result), result.usage)

    def cached(self, req: TextRequest, key: str, request_id: str) -> bytes | None:
        """The answer from a fresh memory-cache hit, without an await; None otherwise."""
        cache = self.ctx.cache
        if not cache.enabled:
            return None
        start = time.perf_counter()
        prefix = cache.lookup(key, req)
        if prefix is None:
            return None
        spans.record("cache.lookup", time.perf_counter() - start)
        return finish(prefix, True, start, request_id)

    async def process(self, req: TextRequest, request_id: str, key: str | None = None,
                      count_degraded: bool = True) -> bytes:
        """The answer's JSON body.  A stale fallback counts in llmapi_text_degraded_responses_total
        (once per HTTP response: a batch counts its response itself, count_degraded=False)."""
        start = time.perf_counter()
        cache = self.ctx.cache
        try:
            if cache.enabled:
                prefix, hit = await cache.get_or_compute(req, self._compute, key)
            else:  # ENABLE_CACHING=false: the call itself (no cache frame, no Answer to keep a Usage for it)
                prefix, hit = render_prefix(req, await self.ctx.resilience.call(req)), False
        except AIUnavailable as e:
            stale = await cache.get_stale(req)
            self.ctx.resilience.record_fallback(req, "unavailable" if stale is None else "stale_cache")
            if stale is not None:
                if count_degraded:
                    TEXT_DEGRADED.labels(req.operation, STALE).inc()
                return finish(stale, True, start, request_id, fallback=True)
            raise ApiError(503, e.error_code, e.message, {"operation": req.operation},
                           headers={"Retry-After": str(max(1, int(e.retry_after + 0.999)))})
        except ProviderError as e:
            raise ApiError(502, "AI_PROVIDER_ERROR", f"the AI provider rejected the request ({e.kind})",
                           {"operation": req.operation, "kind": e.kind, "upstream_status": e.status})
        return finish(prefix, hit, start, request_id)
