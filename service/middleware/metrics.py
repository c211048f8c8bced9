"""HTTP RED metrics by route template; unknown routes collapse to 'unmatched'.

Series budget: only the API routes (exporter.metrics.API_ROUTE_PREFIX) get the
per-route duration histogram, with the request id as exemplar; every other
route shares llmapi_http_other_request_duration_seconds by group (internal,
self, unmatched).  The request counter keeps every route template except the
admin ones, counted together as route="/internal/*" (the service's own request
analytics, behind /internal/monitoring, keep each).  `method` is one of
KNOWN_METHODS, else "OTHER".

Counts and durations are batched (exporter/tally.py): each (route, method)
has a plan (_Plan) holding its histogram cell, its request counter's cells by
status and its request-analytics accumulator, so a request adds to them in
place; the cells reach the Prometheus metrics once a second and on every
scrape.  The request analytics behind /internal/monitoring (per-route latency
histogram, status mix, payload sizes, operations) are
service/monitoring/analytics.py's.
"""
from __future__ import annotations

import json
from bisect import bisect_left
from time import perf_counter

from aiohttp import web
from aiohttp.hdrs import CONTENT_LENGTH
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from exporter.metrics import (API_ROUTE_PREFIX, HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_OTHER_DURATION, HTTP_REQUESTS,
                              KNOWN_METHODS)
from exporter.tally import HistogramTally, LiveGauge, Tally
from service.answer import WHOLE
from service.config.schema import ConfigValidationError
from service.context import OPERATION, REQUEST_ID
from service.errors import ApiError
from service.middleware.stack import Layer
from service.monitoring.analytics import LAT_EDGES, RequestAnalytics, add, bucket_map


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


def _body_bytes(resp) -> int | None:
    """The bytes of a Response's body (its content_length, without the property's 3,500 instructions), None
    for a streamed answer.  (type(): isinstance would go through ABCMeta, StreamResponse is a MutableMapping.)"""
    if type(resp) not in WHOLE:
        return None
    body = resp._body
    if type(body) is bytes and resp._compressed_body is None and not resp._chunked \
            and CONTENT_LENGTH not in resp._headers:
        return len(body)
    return resp.content_length


class _Plan:
    """What one (route, method) adds to: its histogram cell, its request counter cells by status, and its
    request-analytics accumulator (taken again when the analytics start a new interval)."""
    __slots__ = ("route", "method", "api", "hist", "bounds", "size", "buckets", "counts", "counted", "acc", "gen")

    def __init__(self, layer: "MetricsLayer", route: str, method: str):
        group = route_group(route)
        tally = layer.durations if group is None else layer.others
        self.route, self.method, self.api = route, method, group is None
        self.hist = tally.cell((route, method) if group is None else (group,))
        self.bounds, self.size = tally.bounds, tally.size
        self.buckets = layer.buckets[tally]  # the analytics' latency bucket -> the histogram's (bucket_map)
        self.counts: dict = {}  # status -> the request counter's cell
        self.counted = INTERNAL_ROUTES if group == "internal" else route
        self.acc, self.gen = None, -1


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
        self.plans: dict = {}  # (matched route, method) -> _Plan: one dict lookup a request
        self.buckets = {tally: bucket_map(tally.bounds) for tally in (self.durations, self.others)}

    def enter(self, request):
        IN_FLIGHT.value += 1
        return perf_counter()

    def leave(self, request, resp, start):
        self.record(request, resp._status, _body_bytes(resp), start)

    def fail(self, request, exc, start):
        self.record(request, _status(exc), None, start)

    def record(self, request, status: int, resp_bytes, start: float) -> None:
        IN_FLIGHT.value -= 1
        elapsed = perf_counter() - start
        method = request._method  # (aiohttp's attributes: see service/middleware/stack.py)
        if method not in METHODS:
            method = "OTHER"
        info = request._match_info
        key = (info._route if type(info) is UrlMappingMatchInfo else None, method)  # (None: unmatched)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = _Plan(self, "unmatched" if key[0] is None else route_template(request), method)
        fine = bisect_left(LAT_EDGES, elapsed)  # the analytics' latency bucket, and through it the histogram's
        i = plan.buckets[fine]
        if i < 0:  # (one of the histogram's bounds is inside that bucket)
            i = bisect_left(plan.bounds, elapsed)
        h = plan.hist  # the histogram cell: one bucket, the sum, the request id as the bucket's exemplar
        h[i] += 1
        h[-1] += elapsed
        if plan.api:
            rid = request._state.get(REQUEST_ID)
            if rid is not None:
                h[plan.size + i] = (rid, elapsed)
        c = plan.counts.get(status)
        if c is None:
            c = plan.counts[status] = self.requests.cell((plan.counted, method, status))
        c[0] += 1
        analytics = self.analytics
        if plan.gen != analytics.gen:
            plan.acc, plan.gen = analytics.acc(method, plan.route), analytics.gen
        body = request._read_bytes  # (the body the handler read, else what its Content-Length says)
        add(plan.acc, status, elapsed, request.content_length if body is None else len(body), resp_bytes, fine)
        if plan.route == PROCESS_ROUTE:
            op = request._state.get(OPERATION)
            if op is not None:
                ops = analytics.ops
                ops[op] = ops.get(op, 0) + 1


def make(ctx):
    return MetricsLayer(ctx)
