"""The two-tier response cache: memory L1 + Redis L2 (see core.py).

Modules: keys (key building), memory (L1), redis_tier (L2, outage backoff),
codec (stored value format), ttl (TTL table, adaptive TTL), warming,
maintenance (size, pressure, cleanup), analytics (measurements,
recommendations), views (the /internal/cache read answers).
"""
from service.cache.core import ResponseCache

__all__ = ["ResponseCache"]
