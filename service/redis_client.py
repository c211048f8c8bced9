"""The process's shared Redis client (redis.asyncio), pooled from env."""
from __future__ import annotations

import os

import redis.asyncio as aioredis


def pool_settings(env=None) -> dict:
    env = os.environ if env is None else env
    return {
        "max_connections": int(env.get("REDIS_MAX_CONNECTIONS", "20")),
        "socket_timeout": float(env.get("REDIS_SOCKET_TIMEOUT", "5")),
        "socket_connect_timeout": float(env.get("REDIS_CONNECT_TIMEOUT", env.get("REDIS_SOCKET_TIMEOUT", "5"))),
    }


def make_redis(url: str, env=None) -> aioredis.Redis:
    s = pool_settings(env)
    return aioredis.Redis.from_url(url, max_connections=s["max_connections"], socket_timeout=s["socket_timeout"],
                                   socket_connect_timeout=s["socket_connect_timeout"], decode_responses=False,
                                   health_check_interval=0)
