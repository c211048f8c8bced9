"""HTTP RED metrics by route template; unknown routes collapse to 'unmatched'.

Also feeds the request analytics behind /internal/monitoring (per-route
latency histogram, status mix, payload sizes, operations): a dict lookup and
a few additions per request, see service/monitoring/analytics.py.
"""
from __future__ import annotations

import json
import time

from aiohttp import web

from exporter.metrics import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS
from service.config.schema import ConfigValidationError
from service.errors import ApiError
from service.monitoring.analytics import RequestAnalytics


def route_template(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


def make(ctx):
    counters: dict = {}
    histograms: dict = {}
    analytics = ctx.extras.get("analytics")
    if analytics is None:
        analytics = ctx.extras["analytics"] = RequestAnalytics()
    record = analytics.record

    @web.middleware
    async def metrics_middleware(request: web.Request, handler):
        start = time.perf_counter()
        HTTP_IN_FLIGHT.inc()
        status = 500
        resp_bytes = None
        try:
            resp = await handler(request)
            status = resp.status
            if isinstance(resp, web.Response):
                resp_bytes = resp.content_length
            return resp
        except (web.HTTPException, ApiError) as e:  # rendered by the errors middleware, outside
            status = e.status
            raise
        except ConfigValidationError:
            status = 422
            raise
        except json.JSONDecodeError:
            status = 400
            raise
        finally:
            HTTP_IN_FLIGHT.dec()
            elapsed = time.perf_counter() - start
            route = route_template(request)
            method = request.method
            key = (route, method)
            h = histograms.get(key)
            if h is None:
                h = histograms[key] = HTTP_DURATION.labels(route, method)
            h.observe(elapsed)
            ckey = (route, method, status)
            c = counters.get(ckey)
            if c is None:
                c = counters[ckey] = HTTP_REQUESTS.labels(route, method, str(status))
            c.inc()
            request["elapsed"] = elapsed
            record(route, method, status, elapsed, request.content_length, resp_bytes, request.get("operation"))

    return metrics_middleware
