"""Wires the components of one service process into an aiohttp app.

A request flows: middleware stack (service/middleware, outermost first) ->
handler (service/text/handlers.py) -> TextService -> ResponseCache ->
Resilience -> ProviderManager -> provider.
"""
from __future__ import annotations

import importlib
import logging

from aiohttp import web

from service import protocol
from service.cache import ResponseCache
from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.context import CTX, Context
from service.log import setup_logging
from service.middleware import build_stack
from service.providers.manager import ProviderManager
from service.resilience import Resilience
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
)


def check_bind_safety(settings: Settings) -> None:
    if settings.api_keys:
        return
    if not settings.loopback:
        raise SystemExit(f"refusing to start: no API_KEY configured and HOST={settings.host} is not loopback. "
                         "Set API_KEY (and optionally ADDITIONAL_API_KEYS), or bind to 127.0.0.1.")
    log.warning("no API keys configured: running OPEN on loopback %s only", settings.host)


def build_store(settings: Settings, env=None) -> ConfigStore:
    """The config store; without Redis each of several workers keeps its own state file
    (config-PORT-wN.json), so no worker's restart loads or overwrites another's changes."""
    return ConfigStore(SECTIONS, yaml_path=settings.config_file, env=env, state_path=settings.state_file("config"))


def create_app(settings: Settings | None = None, env=None) -> web.Application:
    settings = settings or Settings.from_env(env)
    store = build_store(settings, env)
    setup_logging(store.get("logging")["level"])
    protocol.install()  # a request the HTTP parser rejects gets the JSON error shape too
    store.subscribe(lambda name, new, old: name == "logging" and logging.getLogger().setLevel(new["level"]))
    check_bind_safety(settings)

    ctx = Context(settings=settings, store=store)
    if settings.redis_url:
        from service.redis_client import make_redis
        ctx.redis = make_redis(settings.redis_url, env)
    ctx.providers = ProviderManager(store)
    ctx.cache = ResponseCache(ctx)
    ctx.resilience = Resilience(ctx)
    ctx.text = TextService(ctx)

    app = web.Application(middlewares=build_stack(ctx), client_max_size=1024 ** 3)
    app[CTX] = ctx
    for name in ROUTE_MODULES:
        importlib.import_module(name).register(app, ctx)
    from exporter.handler import metrics_handler
    app.router.add_get("/metrics", metrics_handler)

    app.on_startup.append(_startup)
    app.on_cleanup.append(_cleanup)
    return app


async def _startup(app: web.Application) -> None:
    ctx: Context = app[CTX]
    await ctx.store.start(ctx.redis)
    await ctx.cache.start()
    await ctx.resilience.start()
    from exporter import collectors
    ctx.background.extend(await collectors.start(ctx))
    log.info("service ready", extra={"host": ctx.settings.host, "port": ctx.settings.port,
                                     "redis": bool(ctx.redis), "provider": ctx.store.get("ai")["provider"]})


async def _cleanup(app: web.Application) -> None:
    ctx: Context = app[CTX]
    for t in ctx.background:
        t.cancel()
    await ctx.resilience.close()
    await ctx.cache.close()
    await ctx.providers.close()
    await ctx.store.stop()
    if ctx.redis is not None:
        await ctx.redis.aclose()
    from exporter.tally import flush_all
    flush_all()  # (timers die with the loop)
