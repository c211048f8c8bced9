"""The dedicated webhook credential: what Alertmanager sends instead of an admin key.

Alertmanager reads it from a file (`http_config.authorization.credentials_file`,
so no key is written in alertmanager.yml) and sends `Authorization: Bearer
<credential>`; the service reads the same secret from ALERT_WEBHOOK_TOKEN (or
the file ALERT_WEBHOOK_TOKEN_FILE names).
It is valid for POST /internal/alerts/webhook only, as key name
`alertmanager` with the single scope `alerts`.
"""
from __future__ import annotations

import hmac
import logging

from aiohttp import web

from service.context import KEY_NAME, SCOPES

log = logging.getLogger("service.remediation")

WEBHOOK_PATH = "/internal/alerts/webhook"
WEBHOOK_SCOPE = "alerts"      # what the dedicated webhook credential carries
WEBHOOK_KEY_NAME = "alertmanager"


def load_webhook_token(settings) -> bytes | None:
    """The webhook credential from ALERT_WEBHOOK_TOKEN or ALERT_WEBHOOK_TOKEN_FILE (read once at start), or None."""
    path = settings.alert_webhook_token_file
    if settings.alert_webhook_token:
        if path:
            raise SystemExit("set ALERT_WEBHOOK_TOKEN or ALERT_WEBHOOK_TOKEN_FILE, not both")
        return _checked(settings.alert_webhook_token.encode(), "ALERT_WEBHOOK_TOKEN")
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            token = fh.read().strip()
    except OSError as e:
        raise SystemExit(f"ALERT_WEBHOOK_TOKEN_FILE {path!r} cannot be read: {e.strerror}")
    if not token:
        log.warning("ALERT_WEBHOOK_TOKEN_FILE %s is empty: the alert webhook takes admin keys only", path)
        return None
    return _checked(token, "ALERT_WEBHOOK_TOKEN_FILE")


def _checked(token: bytes, source: str) -> bytes:
    if len(token) < 16:
        raise SystemExit(f"{source}: the webhook credential must be at least 16 characters")
    return token


def webhook_identity(request: web.Request, presented: str, token: bytes | None) -> bool:
    """For the auth middleware: is this the webhook credential on the webhook route? Sets name and scope."""
    if token is None or request.path != WEBHOOK_PATH or request.method != "POST":
        return False
    if not hmac.compare_digest(presented.encode(), token):
        return False
    request[KEY_NAME] = WEBHOOK_KEY_NAME
    request[SCOPES] = frozenset({WEBHOOK_SCOPE})
    return True
