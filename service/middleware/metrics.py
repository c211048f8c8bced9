"""HTTP RED metrics by route template; unknown routes collapse to 'unmatched'.

Series budget: only the API routes (exporter.metrics.API_ROUTE_PREFIX) get the
per-route duration histogram, with the request id as exemplar; every other
route shares llmapi_http_other_request_duration_seconds by group (internal,
self, unmatched).  The request counter keeps every route template except the
admin ones, counted together as route="/internal/*" (the service's own request
analytics, behind /internal/monitoring, keep each).  `method` is one of
KNOWN_METHODS, else "OTHER".

Counts and durations are batched (exporter/tally.py): a request adds to
plain dicts, which reach the Prometheus metrics once a second and on every
scrape.  Also feeds the request analytics behind /internal/monitoring
(per-route latency histogram, status mix, payload sizes, operations): a dict
lookup and a few additions per request, see service/monitoring/analytics.py.
"""
from __future__ import annotations

import json
from time import perf_counter

from aiohttp import web

from exporter.metrics import (API_ROUTE_PREFIX, HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_OTHER_DURATION, HTTP_REQUESTS,
                              KNOWN_METHODS)
from exporter.tally import HistogramTally, LiveGauge, Tally
from service.config.schema import ConfigValidationError
from service.errors import ApiError
from service.monitoring.analytics import RequestAnalytics


PROCESS_ROUTE = "/v1/text/process"  # the one route whose operation is in the body (the handler names it)
# the method label (and the analytics key) takes these values; any other method token is "OTHER"
METHODS = KNOWN_METHODS  # GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS (exporter/metrics.py)
IN_FLIGHT = LiveGauge(HTTP_IN_FLIGHT)  # one per process, like the gauge


def route_template(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


INTERNAL_ROUTES = "/internal/*"  # the request counter's route label of every admin route


def route_group(route: str) -> str | None:
    """None for an API route (per-route histogram), else its group in the shared histogram."""
    if route.startswith(API_ROUTE_PREFIX):
        return None
    if route.startswith("/internal"):
        return "internal"
    return "unmatched" if route == "unmatched" else "self"


def preinit(app: web.Application) -> None:
    """Create the series of every API route and of each group at 0, so rate() shows 0 before traffic."""
    for r in app.router.routes():
        info = r.get_info()
        route = info.get("path") or info.get("formatter")
        if route and route_group(route) is None and r.method in KNOWN_METHODS and r.method != "HEAD":
            HTTP_DURATION.labels(route, r.method)
            HTTP_REQUESTS.labels(route, r.method, "200")
    for group in ("internal", "self", "unmatched"):
        HTTP_OTHER_DURATION.labels(group)


def make(ctx):
    analytics = ctx.extras.get("analytics")
    if analytics is None:
        analytics = ctx.extras["analytics"] = RequestAnalytics()
    record = analytics.record
    in_flight = IN_FLIGHT
    requests = Tally(lambda key: HTTP_REQUESTS.labels(key[0], key[1], str(key[2])))
    durations = HistogramTally(HTTP_DURATION, companions=(in_flight,))
    others = HistogramTally(HTTP_OTHER_DURATION)
    ctx.extras["http_tallies"] = (requests, durations, others)
    groups: dict[str, tuple] = {}  # route template -> (route_group, counter route): a dict lookup per request

    @web.middleware
    async def metrics_middleware(request: web.Request, handler):
        start = perf_counter()
        in_flight.value += 1
        status = 500
        resp_bytes = None
        try:
            resp = await handler(request)
            status = resp.status
            if type(resp) is web.Response:  # (isinstance would go through ABCMeta: StreamResponse is a MutableMapping)
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
            in_flight.value -= 1
            elapsed = perf_counter() - start
            route = route_template(request)
            method = request.method
            if method not in METHODS:
                method = "OTHER"
            try:
                group, counted = groups[route]
            except KeyError:
                group = route_group(route)
                counted = INTERNAL_ROUTES if group == "internal" else route
                groups[route] = (group, counted)
            if group is None:
                durations.observe((route, method), elapsed, request.get("request_id"))
            else:
                others.observe((group,), elapsed)
            requests.add((counted, method, status))
            record(route, method, status, elapsed, request.content_length, resp_bytes,
                   request.get("operation") if route == PROCESS_ROUTE else None)

    return metrics_middleware
