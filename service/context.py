"""The components of one service process, wired by service/app.py.

Handlers reach them as request.app[CTX].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Context:
    settings: Any                      # service.settings.Settings (process-level, from env)
    store: Any                         # service.config.store.ConfigStore
    keys: Any = None                   # service.keys.KeyRing (names, scopes, tiers of the API keys)
    secret: Any = None                 # service.secret.DeploymentSecret (benchmark token, client ip ids)
    redis: Any = None                  # redis.asyncio Redis / RedisCluster (service/redis_client.py) or None
    providers: Any = None              # service.providers.manager.ProviderManager
    cache: Any = None                  # service.cache (ResponseCache)
    resilience: Any = None             # service.resilience (Resilience)
    text: Any = None                   # service.text.service.TextService
    ratelimiter: Any = None            # service.ratelimit
    monitoring: Any = None             # service.monitoring (history, analytics)
    access_log: Any = None             # service.accesslog.AccessLog (set by the errors middleware)
    extras: dict = field(default_factory=dict)  # other subsystems by name
    background: list = field(default_factory=list)  # asyncio tasks to cancel on shutdown
    draining_since: float | None = None  # SIGTERM arrived: /v1/health/ready answers 503 (service/lifecycle.py)


CTX: web.AppKey[Context] = web.AppKey("ctx", Context)

# what the stack's layers and the handlers share on a request (web.RequestKey: typed, no string keys).
# On the hot path they are read and written in the request's own dict, `request._state` (what
# request[KEY] reads): aiohttp's Mapping methods on the request cost two Python calls each
# (request.get goes through collections.abc): 12 calls fewer on a cached hit (cProfile's count).
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)        # errors layer
KEY_NAME: web.RequestKey[str] = web.RequestKey("key_name", str)            # auth: a configured key name
SCOPES: web.RequestKey[frozenset] = web.RequestKey("scopes", frozenset)    # auth
KEY_TIER: web.RequestKey[Any] = web.RequestKey("key_tier", object)         # auth: the key's rate-limit tier
BENCHMARK_MARK: web.RequestKey[bool] = web.RequestKey("benchmark", bool)   # auth: a valid X-Benchmark token
OPERATION: web.RequestKey[str] = web.RequestKey("operation", str)          # /v1/text/process: the body's operation
ROUTE: web.RequestKey[Any] = web.RequestKey("route", object)               # the stack: the fixed route matched, or None
