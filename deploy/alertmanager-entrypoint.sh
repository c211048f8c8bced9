#!/bin/sh
# Start Alertmanager with the webhook URL taken from ALERT_WEBHOOK_URL.
# Alertmanager 0.25 (Debian bookworm's prometheus-alertmanager) cannot read it
# from env or a file, so the committed config's placeholder is replaced here.
# The service's own webhook (the remediation receiver): its URL is replaced by
# LLMAPI_WEBHOOK_URL when set; its credentials_file (the compose secret) is
# moved by ALERT_WEBHOOK_TOKEN_PATH, and ALERT_WEBHOOK_TOKEN, when set (no
# Docker: `make stack`, tests), is written there (mode 600).  No key is ever
# in the config.
set -eu
: "${ALERT_WEBHOOK_URL:?ALERT_WEBHOOK_URL must be set}"
SRC=${ALERTMANAGER_CONFIG:-/etc/llmapi/alertmanager.yml}
OUT=${ALERTMANAGER_RENDERED:-/tmp/alertmanager.yml}
TOKEN_PATH=${ALERT_WEBHOOK_TOKEN_PATH:-/run/secrets/alert_webhook_token}
SERVICE_URL=${LLMAPI_WEBHOOK_URL:-http://llmapi:8000/internal/alerts/webhook}
esc() { printf '%s' "$1" | sed 's/[&|\\]/\\&/g'; }
if [ -n "${ALERT_WEBHOOK_TOKEN:-}" ]; then
  (umask 077 && printf '%s' "$ALERT_WEBHOOK_TOKEN" > "$TOKEN_PATH")
fi
sed -e "s|http://alert-webhook.invalid/ALERT_WEBHOOK_URL|$(esc "$ALERT_WEBHOOK_URL")|g" \
    -e "s|http://llmapi:8000/internal/alerts/webhook|$(esc "$SERVICE_URL")|g" \
    -e "s|/run/secrets/alert_webhook_token|$(esc "$TOKEN_PATH")|g" "$SRC" > "$OUT"
BIN=${ALERTMANAGER_BIN:-/bin/alertmanager}
exec "$BIN" --config.file="$OUT" "$@"
