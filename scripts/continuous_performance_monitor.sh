#!/bin/bash
# continuous_performance_monitor.sh
#
# The guide's continuous monitor (PERFORMANCE_OPTIMIZATION.md, "Continuous
# Performance Monitoring"), run against this service: every MONITOR_INTERVAL
# seconds it reads /internal/monitoring/performance and prints a line for each
# threshold crossed.
#
# Env (or options):
#   BASE_URL                    service URL (default http://localhost:8000)
#   API_KEY                     sent as X-API-Key
#   MONITOR_INTERVAL / --interval S     seconds between checks (default 300)
#   MONITOR_ITERATIONS / --iterations N checks to run, 0 = forever (default 0);
#                                       a bounded run exits 1 if a check crossed a threshold
#   RESPONSE_TIME_THRESHOLD_MS  (default 2000)
#   CACHE_HIT_RATIO_THRESHOLD   0..1 (default 0.7)
#   MEMORY_USAGE_THRESHOLD      percent (default 80; memory_usage_percent is a percentage)
set -u
BASE_URL="${BASE_URL:-http://localhost:8000}"
BASE_URL="${BASE_URL%/}"
MONITOR_INTERVAL="${MONITOR_INTERVAL:-300}"  # 5 minutes
MONITOR_ITERATIONS="${MONITOR_ITERATIONS:-0}"
RESPONSE_TIME_THRESHOLD_MS="${RESPONSE_TIME_THRESHOLD_MS:-2000}"
CACHE_HIT_RATIO_THRESHOLD="${CACHE_HIT_RATIO_THRESHOLD:-0.7}"
MEMORY_USAGE_THRESHOLD="${MEMORY_USAGE_THRESHOLD:-80}"

while [ $# -gt 0 ]; do
    case "$1" in
        --interval) MONITOR_INTERVAL="$2"; shift 2 ;;
        --iterations) MONITOR_ITERATIONS="$2"; shift 2 ;;
        *) echo "usage: $0 [--interval SECONDS] [--iterations N]" >&2; exit 2 ;;
    esac
done

# $1 > $2 (or $1 < $2 with "lt"), false when the value is missing
crossed() {
    local v="$1" t="$2" op="${3:-gt}"
    [ -z "$v" ] || [ "$v" = "null" ] && return 1
    if [ "$op" = lt ]; then
        (( $(echo "$v < $t" | bc -l) ))
    else
        (( $(echo "$v > $t" | bc -l) ))
    fi
}

i=0
breaches=0
while true; do
    i=$((i + 1))
    # Check performance metrics
    if ! PERFORMANCE=$(curl -s -f -m 30 -H "X-API-Key: ${API_KEY:-}" "$BASE_URL/internal/monitoring/performance"); then
        echo "$(date): service at $BASE_URL did not answer"
        breaches=$((breaches + 1))
    else
        # Extract key metrics
        RESPONSE_TIME=$(echo "$PERFORMANCE" | jq -r '.avg_response_time_ms')
        CACHE_HIT_RATIO=$(echo "$PERFORMANCE" | jq -r '.cache_hit_ratio')
        MEMORY_USAGE=$(echo "$PERFORMANCE" | jq -r '.memory_usage_percent')
        echo "$(date): check $i: avg_response_time_ms=${RESPONSE_TIME} cache_hit_ratio=${CACHE_HIT_RATIO} memory_usage_percent=${MEMORY_USAGE}"

        # Check thresholds
        if crossed "$RESPONSE_TIME" "$RESPONSE_TIME_THRESHOLD_MS"; then
            echo "$(date): High response time: ${RESPONSE_TIME}ms"
            breaches=$((breaches + 1))
        fi
        if crossed "$CACHE_HIT_RATIO" "$CACHE_HIT_RATIO_THRESHOLD" lt; then
            echo "$(date): Low cache hit ratio: ${CACHE_HIT_RATIO}"
            breaches=$((breaches + 1))
        fi
        if crossed "$MEMORY_USAGE" "$MEMORY_USAGE_THRESHOLD"; then
            echo "$(date): High memory usage: ${MEMORY_USAGE}%"
            breaches=$((breaches + 1))
        fi
    fi
    if [ "$MONITOR_ITERATIONS" -gt 0 ] && [ "$i" -ge "$MONITOR_ITERATIONS" ]; then
        break
    fi
    sleep "$MONITOR_INTERVAL"
done
echo "$(date): $i checks, $breaches threshold crossings"
[ "$breaches" -eq 0 ]
