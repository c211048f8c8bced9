"""Alertmanager's webhook payload (version 4), checked whole before anything acts on it.

https://prometheus.io/docs/alerting/latest/configuration/#webhook_config:
{version: "4", groupKey, truncatedAlerts, status: firing|resolved, receiver,
 groupLabels, commonLabels, commonAnnotations, externalURL,
 alerts: [{status, labels, annotations, startsAt, endsAt, generatorURL, fingerprint}]}

A payload that is not this shape raises ApiError 422 naming the first bad
field (e.g. `alerts[0].fingerprint`); the receiver then changes nothing.
"""
from __future__ import annotations

from service.errors import validation_error

VERSION = "4"
STATUSES = ("firing", "resolved")
MAX_ALERTS = 1000
MAX_LABELS = 100
MAX_STRING = 4096


def _str(value, field: str, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > MAX_STRING:
        raise validation_error(field, f"must be a non-empty string of at most {MAX_STRING} characters"
                               if required else f"must be a string of at most {MAX_STRING} characters")
    return value


def _labels(value, field: str, required: bool = True) -> dict:
    if value is None and not required:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_LABELS:
        raise validation_error(field, f"must be an object of at most {MAX_LABELS} string labels")
    for k, v in value.items():
        if not isinstance(v, str) or len(v) > MAX_STRING or not k:
            raise validation_error(f"{field}.{k}", "must be a string")
    return value


def parse(body) -> dict:
    """The payload, checked; alerts reduced to what the receiver uses."""
    if not isinstance(body, dict):
        raise validation_error("body", "must be an Alertmanager webhook payload (a JSON object)")
    if body.get("version") != VERSION:
        raise validation_error("version", f"must be {VERSION!r} (Alertmanager webhook payload version 4)")
    if body.get("status") not in STATUSES:
        raise validation_error("status", f"must be one of {list(STATUSES)}")
    alerts = body.get("alerts")
    if not isinstance(alerts, list) or len(alerts) > MAX_ALERTS:
        raise validation_error("alerts", f"must be a list of at most {MAX_ALERTS} alerts")
    for name in ("groupLabels", "commonLabels", "commonAnnotations"):
        _labels(body.get(name), name, required=False)
    out = []
    for i, a in enumerate(alerts):
        f = f"alerts[{i}]"
        if not isinstance(a, dict):
            raise validation_error(f, "must be an object")
        if a.get("status") not in STATUSES:
            raise validation_error(f"{f}.status", f"must be one of {list(STATUSES)}")
        labels = _labels(a.get("labels"), f"{f}.labels")
        if not labels.get("alertname"):
            raise validation_error(f"{f}.labels.alertname", "is required")
        _labels(a.get("annotations"), f"{f}.annotations", required=False)
        out.append({"status": a["status"], "labels": labels,
                    "fingerprint": _str(a.get("fingerprint"), f"{f}.fingerprint"),
                    "startsAt": _str(a.get("startsAt"), f"{f}.startsAt"),
                    "endsAt": _str(a.get("endsAt"), f"{f}.endsAt", required=False)})
    return {"status": body["status"], "receiver": _str(body.get("receiver"), "receiver", required=False),
            "groupKey": _str(body.get("groupKey"), "groupKey", required=False), "alerts": out}
