"""The process's Redis clients (redis.asyncio), one URL scheme per topology.

    redis://[user:pass@]host:port/db      one node (rediss:// for TLS; unix:// works too)
    redis+cluster://[user:pass@]h1:p1,h2:p2[/0]          Redis Cluster (rediss+cluster:// for TLS)
    redis+sentinel://[user:pass@]h1:p1,h2:p2/master[/db] Sentinel-managed primary (rediss+sentinel://)

The user and password are the data nodes' ACL credentials; `?sentinel_username=`
and `?sentinel_password=` authenticate to the sentinels when they need it, and
`?ssl_cert_reqs=`, `?ssl_ca_certs=`, `?ssl_certfile=`, `?ssl_keyfile=` tune TLS.
A cluster has only db 0, so another db is refused at start.

REDIS_MAX_CONNECTIONS caps the pool (per node on a cluster); on one node and
behind Sentinel a command that finds every connection busy waits for one (up
to redis.socket_timeout_seconds) instead of failing.  REDIS_POOL_SIZE
connections are opened at start (`warm_pool`), so the first requests do not
pay for connects.  The timeouts are the "redis" config section's (seeded from
REDIS_SOCKET_TIMEOUT and REDIS_CONNECT_TIMEOUT); `apply_timeouts` moves them on
a live client.  redis.socket_timeout_seconds bounds every socket operation.  A failed command is retried
once at once (a pooled connection that died with a restarted server, or with a
promoted primary, reconnects; a cluster client refreshes its slot map then); no
backoff sleeps are spent in a request: the callers back off instead
(service/cache/redis_tier.py, service/ratelimit).

Every key the service writes carries the hash tag {llmapi}, so each multi-key
command, transaction and Lua call stays in one slot.  Pub/sub goes through
`publish` and `listen`: sharded (SPUBLISH/SSUBSCRIBE, routed by the channel's
slot) on a cluster, plain elsewhere.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from service.settings import env_number

SCHEMES = {"redis": "single", "rediss": "single", "unix": "single",
           "redis+cluster": "cluster", "rediss+cluster": "cluster",
           "redis+sentinel": "sentinel", "rediss+sentinel": "sentinel"}
TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


@dataclass
class RedisTarget:
    """What a REDIS_URL names; `str()` never shows the password."""
    topology: str                                   # single | cluster | sentinel
    url: str
    nodes: list[tuple[str, int]] = field(default_factory=list)
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    master: str | None = None
    options: dict = field(default_factory=dict)     # TLS options, sentinel credentials

    def redacted(self) -> str:
        if self.topology == "single":
            u = urlsplit(self.url)
            host = u.hostname or u.path
            return f"{u.scheme}://{host}{':' + str(u.port) if u.port else ''}"
        scheme = self.url.split("://", 1)[0]
        nodes = ",".join(f"{h}:{p}" for h, p in self.nodes)
        return f"{scheme}://{nodes}" + (f"/{self.master}" if self.master else "")

    __str__ = redacted


def _node(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"REDIS_URL: a node without a host ({text!r})")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"REDIS_URL: port of {text!r} is not a number") from None


def parse_url(url: str) -> RedisTarget:
    """Parse REDIS_URL; ValueError names what is wrong (never echoing a password)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    topology = SCHEMES.get(scheme)
    if topology is None:
        raise ValueError(f"REDIS_URL: unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if topology == "single":
        return RedisTarget("single", url, tls=scheme == "rediss")
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    creds, _, hosts = netloc.rpartition("@")
    user, _, password = creds.partition(":") if creds else ("", "", "")
    default_port = 26379 if topology == "sentinel" else 6379
    nodes = [_node(h.strip(), default_port) for h in hosts.split(",") if h.strip()]
    if not nodes:
        raise ValueError("REDIS_URL: no host:port given")
    options = {k: v for k, v in parse_qsl(query)}
    unknown = set(options) - set(TLS_OPTIONS) - {"sentinel_username", "sentinel_password"}
    if unknown:
        raise ValueError(f"REDIS_URL: unknown option(s) {', '.join(sorted(unknown))}")
    parts = [p for p in path.split("/") if p]
    master, db = None, 0
    if topology == "sentinel":
        if not parts:
            raise ValueError("REDIS_URL: a sentinel URL names the primary: redis+sentinel://host:port/mastername")
        master, parts = unquote(parts[0]), parts[1:]
    if parts:
        if len(parts) > 1 or not parts[0].isdigit():
            raise ValueError(f"REDIS_URL: the path after the host(s) must be a db number, not {'/'.join(parts)!r}")
        db = int(parts[0])
    if topology == "cluster" and db != 0:
        raise ValueError("REDIS_URL: Redis Cluster has only db 0")
    return RedisTarget(topology, url, nodes, unquote(user) or None, unquote(password) or None, db,
                       scheme.startswith("rediss"), master, options)


def pool_settings(env=None) -> dict:
    env = os.environ if env is None else env
    max_conn = env_number(env, "REDIS_MAX_CONNECTIONS", int, 1)
    return {"max_connections": max_conn, "pool_size": min(max_conn, env_number(env, "REDIS_POOL_SIZE", int, 0))}


def timeouts_from_env(env=None) -> dict:
    """The "redis" section as env seeds it (for a client made without a config store)."""
    from service.config.schema import parse_env
    from service.config.sections import SECTIONS
    env = os.environ if env is None else env
    sec = SECTIONS["redis"]
    out = sec.defaults()
    for name, f in sec.fields.items():
        if f.env and env.get(f.env, "") != "":
            out[name] = parse_env(f, env[f.env])
    return out


def _socket_timeouts(timeouts: dict) -> tuple[float, float]:
    sock = timeouts["socket_timeout_seconds"]
    return sock, timeouts["connect_timeout_seconds"] or sock


def apply_timeouts(client, timeouts: dict) -> None:
    """The "redis" section's socket timeouts on a live client: its pool's next connections and the open ones."""
    sock, connect = _socket_timeouts(timeouts)
    pools = [getattr(client, "connection_pool", None)]
    if hasattr(client, "get_nodes"):  # a cluster: one pool per node
        pools = [getattr(getattr(n, "redis_connection", None), "connection_pool", None) for n in client.get_nodes()]
    for pool in pools:
        if pool is None:
            continue
        pool.connection_kwargs.update(socket_timeout=sock, socket_connect_timeout=connect)
        if hasattr(pool, "timeout"):
            pool.timeout = sock  # the wait for a free connection
        for conn in [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]:
            conn.socket_timeout, conn.socket_connect_timeout = sock, connect


def _tls_kwargs(target: RedisTarget) -> dict:
    if not target.tls:
        return {}
    out = {"ssl": True}
    for k in TLS_OPTIONS:
        if k in target.options:
            v = target.options[k]
            out[k] = v.lower() in ("1", "true", "yes") if k == "ssl_check_hostname" else v
    return out


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel pool that waits for a free connection (like the single-node pool) instead of failing."""


class SentinelRedis(aioredis.Redis):
    """The primary's client; closing it closes the sentinel connections too."""
    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            for s in self.sentinel.sentinels:
                await s.aclose()


def make_redis(url: str, env=None, *, timeouts: dict | None = None, max_connections: int | None = None,
               timeout: float | None = None, retries: int = 1):
    """A client for REDIS_URL's topology (pool from env, timeouts from the "redis" config section; the
    keywords override them, e.g. the rate limiter's)."""
    target = parse_url(url)
    s = pool_settings(env)
    max_conn = max_connections or s["max_connections"]
    sock, connect = _socket_timeouts(timeouts if timeouts is not None else timeouts_from_env(env))
    if timeout is not None:
        sock = connect = timeout
    common = dict(socket_timeout=sock, socket_connect_timeout=connect, decode_responses=False,
                  health_check_interval=0, retry=Retry(NoBackoff(), retries))
    if target.topology == "single":
        pool = BlockingConnectionPool.from_url(url, max_connections=max_conn, timeout=sock, **common)
        client = aioredis.Redis(connection_pool=pool)
    elif target.topology == "cluster":
        client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
                              username=target.username, password=target.password, max_connections=max_conn,
                              **_tls_kwargs(target), **common)
    else:
        auth = {k.removeprefix("sentinel_"): target.options[k]
                for k in ("sentinel_username", "sentinel_password") if k in target.options}
        sentinel_kwargs = dict(socket_timeout=sock, socket_connect_timeout=connect, **auth, **_tls_kwargs(target))
        sentinel = Sentinel(target.nodes, sentinel_kwargs=sentinel_kwargs)
        client = sentinel.master_for(target.master, redis_class=SentinelRedis,
                                     connection_pool_class=_BlockingSentinelPool,
                                     username=target.username, password=target.password, db=target.db,
                                     max_connections=max_conn, timeout=sock, **_tls_kwargs(target), **common)
        client.sentinel = sentinel
    client.topology = target.topology
    client.target = target
    client.pool_size = min(max_conn, s["pool_size"])  # read by warm_pool
    return client


def topology(client) -> str:
    return getattr(client, "topology", "single") if client is not None else "none"


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster)


async def warm_pool(client, size: int | None = None) -> int:
    """Open `size` (default REDIS_POOL_SIZE) connections now; returns how many connected.

    On a cluster this loads the slot map and opens one connection per node."""
    if is_cluster(client):
        try:
            await client.initialize()
            await client.ping(target_nodes=RedisCluster.ALL_NODES)
        except Exception:
            return 0
        return len(client.get_nodes())
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
    if client is None:
        return {}
    if is_cluster(client):
        nodes = client.get_nodes()
        made = sum(len(getattr(n, "_connections", ()) or ()) for n in nodes)
        free = sum(len(getattr(n, "_free", ()) or ()) for n in nodes)
        return {"topology": "cluster", "nodes": len(nodes),
                "primaries": sum(1 for n in nodes if n.server_type == "primary"),
                "max_connections_per_node": nodes[0].max_connections if nodes else None,
                "connections_open": made, "connections_in_use": made - free}
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return {}
    in_use = len(getattr(pool, "_in_use_connections", ()) or ())
    made = in_use + len(getattr(pool, "_available_connections", ()) or ())
    out = {"topology": topology(client), "max_connections": pool.max_connections,
           "pool_size": getattr(client, "pool_size", None), "connections_open": made, "connections_in_use": in_use}
    if isinstance(pool, SentinelConnectionPool) and pool.master_address:
        out["primary"] = "%s:%s" % tuple(pool.master_address)
    return out


async def ping(client) -> bool:
    """PING; on a cluster every primary (a primary without answer leaves its slots unserved)."""
    if is_cluster(client):
        return await client.ping(target_nodes=RedisCluster.PRIMARIES)
    return await client.ping()


# ---- pub/sub that works on every topology ------------------------------------------
async def publish(client, channel: str, data) -> int:
    """PUBLISH, or SPUBLISH on a cluster (delivered by the shard owning the channel's slot)."""
    if is_cluster(client):
        return await client.spublish(channel, data)
    return await client.publish(channel, data)


async def listen(client, channel: str, poll: float = 1.0, subscribed=None):
    """Yield the data of every message on `channel`; raises when the connection fails (the caller
    backs off and calls again).  On a cluster the subscription is sharded (SSUBSCRIBE).
    `subscribed` (a coroutine function) runs once the subscription stands: a caller catches up there
    on what it missed while it was not subscribed."""
    pubsub = client.pubsub()
    sharded = is_cluster(client)

    async def next_message(ignore: bool = True):
        if sharded:
            msg = await pubsub.get_sharded_message(ignore_subscribe_messages=ignore, timeout=poll)
            if msg is None and not pubsub.node_pubsub_mapping:
                raise ConnectionError("sharded subscription lost")
            return msg
        return await pubsub.get_message(ignore_subscribe_messages=ignore, timeout=poll)

    try:
        if sharded:
            await client.initialize()  # the slot map routes the subscription (a no-op once loaded)
            await pubsub.ssubscribe(channel)
        else:
            await pubsub.subscribe(channel)
        early = []
        async with asyncio.timeout(max(5.0, poll * 5)):  # the server's confirmation: subscribed from now on
            while True:
                msg = await next_message(ignore=False)
                if msg is None:
                    continue
                if msg.get("type") in ("subscribe", "ssubscribe"):
                    break
                early.append(msg)
        if subscribed is not None:
            await subscribed()
        while True:
            msg = early.pop(0) if early else await next_message()
            if msg is not None and msg.get("type") in ("message", "smessage"):
                yield msg["data"]
    except Exception:
        if sharded:
            await refresh_slots(client)
        raise
    finally:
        try:
            await pubsub.aclose()
        except Exception:
            pass


async def follow(client, channel: str, handle, log=None, on_error=None, first_delay: float = 0.5,
                 max_delay=lambda: 10.0, subscribed=None) -> None:
    """Call `await handle(data)` for each message on a pub/sub channel, forever (see `listen`).

    A lost connection is retried with backoff (first_delay, 0.5 s, doubling to
    max_delay(), 10 s; on_error() counts it); each reconnect closes the
    subscription it replaces, and runs `subscribed` again once the new one
    stands.  Cancel the task to stop.
    """
    delay = first_delay

    async def on_subscribed():
        nonlocal delay
        delay = first_delay
        if subscribed is not None:
            await subscribed()

    while True:
        try:
            async for data in listen(client, channel, subscribed=on_subscribed):
                await handle(data)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if on_error is not None:
                on_error()
            if log is not None:
                log.debug("%s: redis unavailable (%s), retrying in %.1fs", channel, type(e).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay())


async def refresh_slots(client) -> None:
    """After a cluster connection failed: reload the slot map (a replica may have taken over)."""
    if not is_cluster(client):
        return
    try:
        async with asyncio.timeout(2.0):
            await client.nodes_manager.initialize()
    except Exception:
        pass
