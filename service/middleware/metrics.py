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
from service.context import OPERATION, REQUEST_ID
from service.errors import ApiError
from service.middleware.stack import Layer
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


def _status(exc: BaseException) -> int:
    """The status the errors layer will answer `exc` with (500 for anything it does not name)."""
    if isinstance(exc, (web.HTTPException, ApiError)):
        return exc.status
    if isinstance(exc, ConfigValidationError):
        return 422
    if isinstance(exc, json.JSONDecodeError):
        return 400
    return 500


class MetricsLayer(Layer):
    name = "metrics"

    def __init__(self, ctx):
        analytics = ctx.extras.get("analytics")
        if analytics is None:
            analytics = ctx.extras["analytics"] = RequestAnalytics()
        self.analytics = analytics
        self.requests = Tally(lambda key: HTTP_REQUESTS.labels(key[0], key[1], str(key[2])))
        self.durations = HistogramTally(HTTP_DURATION, companions=(IN_FLIGHT,))
        self.others = HistogramTally(HTTP_OTHER_DURATION)
        ctx.extras["http_tallies"] = (self.requests, self.durations, self.others)
        self.plans: dict = {}  # matched route -> _plan(its template): one dict lookup a request
        self._unmatched = self._plan("unmatched")

    def enter(self, request):
        IN_FLIGHT.value += 1
        return perf_counter()

    def leave(self, request, resp, start):
        self.record(request, resp.status, resp.content_length if type(resp) is web.Response else None, start)
        # (isinstance would go through ABCMeta: StreamResponse is a MutableMapping)

    def fail(self, request, exc, start):
        self.record(request, _status(exc), None, start)

    def record(self, request, status: int, resp_bytes, start: float) -> None:
        IN_FLIGHT.value -= 1
        elapsed = perf_counter() - start
        info = request.match_info
        if info.http_exception is None:  # a matched route: its labels looked up once (by the route object)
            plan = self.plans.get(info.route)
            if plan is None:
                plan = self.plans[info.route] = self._plan(route_template(request))
        else:
            plan = self._unmatched
        route, group, counted = plan
        method = request.method
        if method not in METHODS:
            method = "OTHER"
        if group is None:
            self.durations.observe((route, method), elapsed, request._state.get(REQUEST_ID))
        else:
            self.others.observe((group,), elapsed)
        self.requests.add((counted, method, status))
        self.analytics.record(route, method, status, elapsed, request.content_length, resp_bytes,
                              request._state.get(OPERATION) if route == PROCESS_ROUTE else None)

    @staticmethod
    def _plan(route: str) -> tuple:
        """(route template, its group in the shared histogram or None, its request counter label)."""
        group = route_group(route)
        return route, group, INTERNAL_ROUTES if group == "internal" else route


def make(ctx):
    return MetricsLayer(ctx)
