"""HTTP RED metrics by route template; unknown routes collapse to 'unmatched'.

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

from exporter.metrics import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS
from exporter.tally import HistogramTally, LiveGauge, Tally
from service.config.schema import ConfigValidationError
from service.errors import ApiError
from service.monitoring.analytics import RequestAnalytics


PROCESS_ROUTE = "/v1/text/process"  # the one route whose operation is in the body (the handler names it)
# the method label (and the analytics key) takes these values; any other method token is "OTHER"
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
IN_FLIGHT = LiveGauge(HTTP_IN_FLIGHT)  # one per process, like the gauge


def route_template(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


def make(ctx):
    analytics = ctx.extras.get("analytics")
    if analytics is None:
        analytics = ctx.extras["analytics"] = RequestAnalytics()
    record = analytics.record
    in_flight = IN_FLIGHT
    requests = Tally(lambda key: HTTP_REQUESTS.labels(key[0], key[1], str(key[2])))
    durations = HistogramTally(HTTP_DURATION, companions=(in_flight,))
    ctx.extras["http_tallies"] = (requests, durations)

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
            durations.observe((route, method), elapsed)
            requests.add((route, method, status))
            record(route, method, status, elapsed, request.content_length, resp_bytes,
                   request.get("operation") if route == PROCESS_ROUTE else None)

    return metrics_middleware
