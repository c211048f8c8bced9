"""Wires the components of one service process into an aiohttp app.

A request flows: middleware stack (service/middleware, outermost first) ->
handler (service/text/handlers.py) -> TextService -> ResponseCache ->
Resilience -> ProviderManager -> provider.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal

from aiohttp import web

from service import protocol
from service.background import cancel_and_wait
from service.cache import ResponseCache
from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.context import CTX, Context
from service.keys import KeyRing
from service.lifecycle import drain_on_sigterm
from service.log import setup_logging
from service.middleware import around, build_stack
from service.middleware.around import STACK
from service.monitoring.loopholds import labelled
from service.providers.manager import ProviderManager
from service.resilience import Resilience
from service.secret import DeploymentSecret
from service.settings import Settings
from service.text.service import TextService

log = logging.getLogger("service")

# route modules: each has register(app, ctx)
ROUTE_MODULES = (
    "service.health",
    "service.text.handlers",
    "service.openapi",
    "service.internal.config",
    "service.internal.cache",
    "service.internal.resilience",
    "service.internal.ai",
    "service.internal.kpi",
    "service.internal.monitoring",
    "service.internal.middleware",
    "service.internal.auth",
    "service.internal.remediation",
)


def check_bind_safety(settings: Settings) -> None:
    if settings.keys_configured:
        return
    if not settings.loopback:
        raise SystemExit(f"refusing to start: no API_KEY configured and HOST={settings.host} is not loopback. "
                         "Set API_KEY (and optionally ADDITIONAL_API_KEYS, ADMIN_API_KEYS, API_KEYS_FILE), "
                         "or bind to 127.0.0.1.")
    log.warning("no API keys configured: running OPEN on loopback %s only", settings.host)


def build_keys(settings: Settings, store: ConfigStore) -> KeyRing:
    ring = KeyRing(settings.api_keys, settings.api_keys_file,
                   tiers=lambda: store.get("rate_limit")["client_tier_limits"].keys())
    if ring.configured:
        log.info("api keys", extra={"api_keys": ring.describe(), "api_keys_file": settings.api_keys_file})
    store.key_names = ring.names  # the audit metric's actor label: configured names only (SIGHUP included)
    return ring


def build_store(settings: Settings, env=None) -> ConfigStore:
    """The config store; without Redis each of several workers keeps its own state file
    (config-PORT-wN.json), so no worker's restart loads or overwrites another's changes."""
    return ConfigStore(SECTIONS, yaml_path=settings.config_file, env=env, state_path=settings.state_file("config"))


def create_app(settings: Settings | None = None, env=None) -> web.Application:
    settings = settings or Settings.from_env(env)
    store = build_store(settings, env)
    setup_logging(store.get("logging")["level"])
    protocol.install()  # a request the HTTP parser rejects gets the JSON error shape too
    around.install()  # an unmatched request runs through the stack too
    store.subscribe(lambda name, new, old: name == "logging" and logging.getLogger().setLevel(new["level"]))
    check_bind_safety(settings)

    ctx = Context(settings=settings, store=store, keys=build_keys(settings, store),
                  secret=DeploymentSecret(os.environ if env is None else env, store))
    if settings.redis_url:
        from service.redis_client import apply_timeouts, make_redis
        try:
            ctx.redis = make_redis(settings.redis_url, env, timeouts=store.get("redis"))
        except ValueError as e:  # a REDIS_URL that names no usable topology: say why and stop
            raise SystemExit(str(e)) from None
        store.subscribe(lambda name, new, old: name == "redis" and apply_timeouts(ctx.redis, new))
    ctx.providers = ProviderManager(store)
    ctx.cache = ResponseCache(ctx)
    ctx.resilience = Resilience(ctx)
    ctx.text = TextService(ctx)

    (stack,) = build_stack(ctx)
    app = web.Application(client_max_size=1024 ** 3)  # no aiohttp middleware: the stack is around each handler
    app[CTX] = ctx
    app[STACK] = stack  # put around every route's handler when the app is served (service/middleware/around.py)
    for name in ROUTE_MODULES:
        importlib.import_module(name).register(app, ctx)
    from exporter.handler import metrics_handler
    app.router.add_get("/metrics", labelled("scrape", metrics_handler))
    from service.middleware import metrics as http_metrics
    http_metrics.preinit(app)

    for part in lifecycle(ctx):
        app.cleanup_ctx.append(part)
    return app


def reload_keys_on_sighup(app: web.Application) -> None:
    """`kill -HUP` re-reads API_KEYS_FILE (the process entry point installs this; tests' apps do not)."""
    async def install(app: web.Application) -> None:
        keys = app[CTX].keys
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, keys.reload)
        keys.reload_if_changed()
    app.on_startup.append(install)


async def start_collectors(ctx: Context) -> list:
    """The exporter's collectors, with what the service registers for them (exporter/ never imports service/)."""
    from exporter import collectors
    from service import __version__
    from service.monitoring import kpi_status
    collectors.register(version=__version__, starter=kpi_status.start_sampler)
    return await collectors.start(ctx)


def lifecycle(ctx: Context) -> list:
    """What the process starts, in start-up order; aiohttp stops them in reverse (cleanup_ctx).

    The config store comes first (every other part reads it, and persisted
    overrides must be applied before they start); the Redis client is closed
    last, after everything that uses it; the collectors sample the others, so
    they start last and stop first."""
    async def access_log(app):
        yield
        if ctx.access_log is not None:
            ctx.access_log.flush()  # the lines of the last requests, once every other part stopped

    async def batched_counts(app):
        yield
        from exporter.tally import flush_all
        flush_all()  # whatever the others counted while stopping, before the loop (and its timers) goes

    async def redis_client(app):
        yield
        if ctx.redis is not None:
            await ctx.redis.aclose()

    async def config(app):
        await ctx.store.start(ctx.redis)
        yield
        await ctx.store.stop()

    async def loop_holds(app):
        # early, so the tasks the other parts start are timed too (when monitoring.loop_hold_timing is on)
        holds = ctx.monitoring.holds if ctx.monitoring is not None else None
        if holds is not None:
            holds.start()
        yield
        if holds is not None:
            holds.stop()

    async def deployment_secret(app):
        # adopted from Redis before the first request, so every process hashes and exempts alike
        if ctx.redis is not None:
            await ctx.secret.share(ctx.redis)
            ctx.background.append(asyncio.ensure_future(ctx.secret.keep_shared(ctx.redis)))
        yield

    async def ai_providers(app):
        yield
        await ctx.providers.close()

    async def cache(app):
        await ctx.cache.start()
        yield
        await ctx.cache.close()

    async def resilience(app):
        await ctx.resilience.start()
        yield
        await ctx.resilience.close()

    async def rate_limiter(app):
        yield
        if ctx.ratelimiter is not None:
            await ctx.ratelimiter.close()

    async def monitoring(app):
        if ctx.monitoring is not None:
            await ctx.monitoring.start()
        yield
        if ctx.monitoring is not None:
            await ctx.monitoring.stop()

    async def remediation(app):
        rem = ctx.extras.get("remediation")  # service/remediation: the verification and expiry check
        if rem is not None:
            rem.start()
        yield
        if rem is not None:
            await rem.stop()

    async def collectors(app):
        ctx.background.extend(await start_collectors(ctx))
        log.info("service ready", extra={"host": ctx.settings.host, "port": ctx.settings.port,
                                         "redis": bool(ctx.redis), "provider": ctx.store.get("ai")["provider"]})
        yield
        await cancel_and_wait(ctx.background)
        ctx.background.clear()

    return [access_log, batched_counts, redis_client, config, loop_holds, deployment_secret, ai_providers, cache, resilience,
            rate_limiter, monitoring, remediation, collectors, drain_on_sigterm(ctx)]
