"""The process's shared Redis client (redis.asyncio), pooled from env.

REDIS_MAX_CONNECTIONS caps the pool; a command that finds every connection
busy waits for one (up to REDIS_SOCKET_TIMEOUT) instead of failing.
REDIS_POOL_SIZE connections are opened at start (`warm_pool`), so the first
requests do not pay for connects.  REDIS_SOCKET_TIMEOUT bounds every socket
operation.  A failed command is retried once at once (a pooled connection
that died with a restarted server reconnects); no backoff sleeps are spent
in a request: the cache's L2 tier backs off instead (service/cache/redis_tier.py).
"""
from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.settings import env_number


def pool_settings(env=None) -> dict:
    env = os.environ if env is None else env
    max_conn = env_number(env, "REDIS_MAX_CONNECTIONS", int, 1)
    timeout = env_number(env, "REDIS_SOCKET_TIMEOUT", float, 0.01)
    return {
        "max_connections": max_conn,
        "pool_size": min(max_conn, env_number(env, "REDIS_POOL_SIZE", int, 0)),
        "socket_timeout": timeout,
        "socket_connect_timeout": env_number(env, "REDIS_CONNECT_TIMEOUT", float, 0.01, default=str(timeout)),
    }


def make_redis(url: str, env=None) -> aioredis.Redis:
    s = pool_settings(env)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=s["max_connections"], timeout=s["socket_timeout"],
        socket_timeout=s["socket_timeout"], socket_connect_timeout=s["socket_connect_timeout"],
        decode_responses=False, health_check_interval=0, retry=Retry(NoBackoff(), 1))
    client = aioredis.Redis(connection_pool=pool)
    client.pool_size = s["pool_size"]  # read by warm_pool
    return client


async def warm_pool(client: aioredis.Redis, size: int | None = None) -> int:
    """Open `size` (default REDIS_POOL_SIZE) connections now; returns how many connected."""
    n = getattr(client, "pool_size", 0) if size is None else size
    pool = client.connection_pool
    conns = []
    try:
        for _ in range(max(0, n)):
            conns.append(await pool.get_connection())  # connects (and handshakes) the connection
    except Exception:
        pass
    finally:
        for c in conns:
            await pool.release(c)
    return len(conns)


def pool_stats(client) -> dict:
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return {}
    in_use = len(getattr(pool, "_in_use_connections", ()) or ())
    made = in_use + len(getattr(pool, "_available_connections", ()) or ())
    return {"max_connections": pool.max_connections, "pool_size": getattr(client, "pool_size", None),
            "connections_open": made, "connections_in_use": in_use}


async def follow(client, channel: str, handle, log=None, on_error=None, first_delay: float = 0.5,
                 max_delay=lambda: 10.0) -> None:
    """Call `await handle(data)` for each message on a pub/sub channel, forever.

    A lost connection is retried with backoff (first_delay, 0.5 s, doubling to
    max_delay(), 10 s; on_error() counts it); each reconnect closes the
    subscription it replaces.  Cancel the task to stop.
    """
    delay = first_delay
    while True:
        pubsub = None
        try:
            pubsub = client.pubsub()
            await pubsub.subscribe(channel)
            delay = first_delay
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg and msg.get("type") == "message":
                    await handle(msg["data"])
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if on_error is not None:
                on_error()
            if log is not None:
                log.debug("%s: redis unavailable (%s), retrying in %.1fs", channel, type(e).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay())
        finally:
            if pubsub is not None:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass
