#!/bin/bash
# daily_performance_check.sh
#
# The guide's morning performance check (PERFORMANCE_OPTIMIZATION.md,
# "Daily Performance Review"), run against this service.
#
# Env:
#   BASE_URL  service URL (default http://localhost:8000)
#   API_KEY   sent as X-API-Key on every call (the /internal routes require it)
# Exit: 0 when the review ran, 2 when the service does not answer.
set -u
BASE_URL="${BASE_URL:-http://localhost:8000}"
BASE_URL="${BASE_URL%/}"

api() { curl -s -m 30 -H "X-API-Key: ${API_KEY:-}" "$BASE_URL$1"; }

if ! curl -s -m 10 -o /dev/null "$BASE_URL/v1/health"; then
    echo "service at $BASE_URL does not answer" >&2
    exit 2
fi

echo "=== Daily Performance Review $(date) ==="

# 1. Check current performance metrics
echo "Current performance metrics:"
api /internal/monitoring/performance | jq '.summary'

# 2. Review cache performance (hit_ratio is a 0..1 ratio)
echo "Cache performance:"
CACHE_STATS=$(api /internal/cache/stats)
HIT_RATIO=$(echo "$CACHE_STATS" | jq -r 'if (.hit_ratio | type) == "number" then (.hit_ratio * 10000 | round / 100) else "n/a" end')
echo "Cache hit ratio: ${HIT_RATIO}%"

# 3. Check for performance alerts (every alert of this service is a KPI
#    (performance) alert; the guide's filter on the message is kept as a fallback)
echo "Performance alerts:"
ALERTS=$(api /internal/monitoring/alerts)
PERF_ALERTS=$(echo "$ALERTS" | jq '.alerts[]? | select((.kpi != null) or ((.message // "") | ascii_downcase | contains("performance")))')
if [ -n "$PERF_ALERTS" ]; then
    echo "$PERF_ALERTS"
else
    echo "none"
fi

# 4. Review optimization recommendations
echo "Optimization recommendations:"
api /internal/cache/optimization-recommendations | jq '.recommendations[]?'
api "/internal/monitoring/performance-report?days=1" | jq '.optimization_opportunities[]? | {area, severity, finding, recommendation}'

echo "=== Performance review complete ==="
