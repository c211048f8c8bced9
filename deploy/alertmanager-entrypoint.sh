#!/bin/sh
# Start Alertmanager with the webhook URL taken from ALERT_WEBHOOK_URL.
# Alertmanager 0.25 (Debian bookworm's prometheus-alertmanager) cannot read it
# from env or a file, so the committed config's placeholder is replaced here.
set -eu
: "${ALERT_WEBHOOK_URL:?ALERT_WEBHOOK_URL must be set}"
SRC=${ALERTMANAGER_CONFIG:-/etc/llmapi/alertmanager.yml}
OUT=${ALERTMANAGER_RENDERED:-/tmp/alertmanager.yml}
ESCAPED=$(printf '%s' "$ALERT_WEBHOOK_URL" | sed 's/[&|\\]/\\&/g')
sed "s|http://alert-webhook.invalid/ALERT_WEBHOOK_URL|$ESCAPED|g" "$SRC" > "$OUT"
BIN=${ALERTMANAGER_BIN:-/bin/alertmanager}
exec "$BIN" --config.file="$OUT" "$@"
