"""/internal/monitoring: the KPI table as the service itself measures it.

GET  /internal/monitoring/performance        each KPI's value and status, summary, the spec's fields
GET  /internal/monitoring/metrics            request_metrics and performance_trends (?time_window_hours=N)
GET  /internal/monitoring/alerts             KPIs past their thresholds, as alerts
POST /internal/monitoring/configure-alerts   move the thresholds (config section "alerts")
"""
from __future__ import annotations

import time

from aiohttp import web

from exporter import kpis
from service.context import CTX
from service.http import json_response, query_number, read_object
from service.internal.audit import actor
from service.monitoring import kpi_status

MAX_WINDOW_HOURS = kpi_status.TREND_KEEP * kpi_status.TREND_INTERVAL / 3600.0


def _status(request: web.Request) -> kpi_status.KpiStatus:
    return kpi_status.get(request.app[CTX])


async def performance(request: web.Request) -> web.Response:
    return json_response(_status(request).performance())


async def metrics(request: web.Request) -> web.Response:
    hours = query_number(request, "time_window_hours", 1.0, 0.01, MAX_WINDOW_HOURS)
    body = _status(request).request_metrics(hours)
    body["time_window_hours"] = hours
    return json_response(body)


async def alerts(request: web.Request) -> web.Response:
    ks = _status(request)
    return json_response({"alerts": ks.alerts(), "thresholds": ks.thresholds(), "evaluated_at": time.time()})


async def configure_alerts(request: web.Request) -> web.Response:
    store = request.app[CTX].store
    body = await read_object(request, allow_empty=False)
    # the store checks each value and each KPI's warning/critical order: 422 naming every bad field
    entry = await store.update("alerts", body, source="api:/internal/monitoring/configure-alerts",
                               **actor(request))
    values = store.get("alerts")
    return json_response({"success": True, "version": store.version, "changes": entry["changes"],
                          "configuration": values, "thresholds": kpis.thresholds_from_config(values)})


def register(app: web.Application, ctx) -> None:
    app.router.add_get("/internal/monitoring/performance", performance)
    app.router.add_get("/internal/monitoring/metrics", metrics)
    app.router.add_get("/internal/monitoring/alerts", alerts)
    app.router.add_post("/internal/monitoring/configure-alerts", configure_alerts)
