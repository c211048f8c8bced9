"""Draining on SIGTERM: stop being ready before stopping to serve.

A load balancer (a Kubernetes Service, nginx) routes to a process while its
readiness probe passes.  Closing the listener at once on SIGTERM refuses the
requests it still routes during one probe period.  So on SIGTERM the process
first marks itself draining: GET /v1/health/ready answers 503 while every
request is still served, for SHUTDOWN_DRAIN_SECONDS; then aiohttp's graceful
exit closes the listener and finishes in-flight requests within
GRACEFUL_TIMEOUT.  A second SIGTERM (or SIGINT) exits at once.  With the
default of 0 seconds SIGTERM behaves as aiohttp's own handler.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time

log = logging.getLogger("service")


def _exit() -> None:
    from aiohttp.web_runner import GracefulExit
    raise GracefulExit()


def drain_on_sigterm(ctx):
    """A cleanup_ctx part: installs the SIGTERM handler while the app runs (under web.run_app only)."""
    async def part(app):
        loop = asyncio.get_running_loop()

        def on_term() -> None:
            if ctx.draining_since is not None:
                _exit()
            ctx.draining_since = time.time()
            delay = ctx.settings.drain_seconds
            log.info("SIGTERM: draining (readiness fails) for %.1fs, then stopping", delay)
            loop.call_later(delay, _exit)

        installed = False
        if ctx.settings is not None and ctx.settings.drain_seconds > 0:
            try:
                loop.add_signal_handler(signal.SIGTERM, on_term)
                installed = True
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), no signals
                pass
        yield
        if installed:
            try:
                loop.remove_signal_handler(signal.SIGTERM)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
    return part
