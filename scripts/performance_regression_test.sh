#!/bin/bash
# performance_regression_test.sh
#
# The guide's regression test (PERFORMANCE_OPTIMIZATION.md, "Performance
# Regression Testing"): runs POST /internal/monitoring/benchmark, waits for
# it, then compares it with the saved baseline (GET compare-baseline).
# The first run (no baseline yet) saves its result as the baseline.
#
# Env (or options):
#   BASE_URL                       service URL (default http://localhost:8000)
#   API_KEY                        sent as X-API-Key
#   BENCHMARK_DURATION / --duration S        benchmark length, seconds (default 60)
#   REGRESSION_THRESHOLD / --threshold P     percent; default: the service's monitoring.regression_threshold_percent
#   --save-baseline                          save this run as the new baseline instead of comparing
# Exit: 0 no regression (or baseline saved), 1 regression, 2 the benchmark could not run.
set -u
BASE_URL="${BASE_URL:-http://localhost:8000}"
BASE_URL="${BASE_URL%/}"
DURATION="${BENCHMARK_DURATION:-60}"
THRESHOLD="${REGRESSION_THRESHOLD:-}"
SAVE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --threshold) THRESHOLD="$2"; shift 2 ;;
        --save-baseline) SAVE=1; shift ;;
        *) echo "usage: $0 [--duration S] [--threshold PERCENT] [--save-baseline]" >&2; exit 2 ;;
    esac
done
M="$BASE_URL/internal/monitoring"
H=(-H "X-API-Key: ${API_KEY:-}" -H "Content-Type: application/json")

echo "=== Performance regression test $(date) ==="
echo "Running a ${DURATION}s benchmark against $BASE_URL ..."
START=$(curl -s -m 30 -w '\n%{http_code}' -X POST "${H[@]}" "$M/benchmark" \
    -d "{\"include_cache\": true, \"include_ai_service\": true, \"include_resilience\": true, \"duration_seconds\": $DURATION}")
CODE=$(echo "$START" | tail -n1)
BODY=$(echo "$START" | sed '$d')
if [ "$CODE" != "202" ]; then
    echo "benchmark did not start (HTTP $CODE): $BODY" >&2
    exit 2
fi
JOB=$(echo "$BODY" | jq -r '.job_id')
echo "benchmark job $JOB"

DEADLINE=$(( $(date +%s) + ${DURATION%.*} + 120 ))
STATUS=running
while :; do
    sleep 1
    RES=$(curl -s -m 30 "${H[@]}" "$M/benchmark/results?id=$JOB")
    STATUS=$(echo "$RES" | jq -r '.status')
    case "$STATUS" in
        completed|failed|cancelled|rejected) break ;;
    esac
    if [ "$(date +%s)" -gt "$DEADLINE" ]; then
        echo "benchmark $JOB did not finish in time (status $STATUS)" >&2
        exit 2
    fi
    echo "  progress $(echo "$RES" | jq -r '.progress')"
done
if [ "$STATUS" != completed ]; then
    echo "benchmark $JOB $STATUS: $(echo "$RES" | jq -r '.job.error')" >&2
    exit 2
fi
echo "$RES" | jq '[.results.scenarios[] | {name, requests_per_second, p95_ms, error_rate}]'

Q="id=$JOB"
[ -n "$THRESHOLD" ] && Q="$Q&threshold_percent=$THRESHOLD"
CMP=$(curl -s -m 30 "${H[@]}" "$M/compare-baseline?$Q")
if [ "$SAVE" = 1 ] || [ "$(echo "$CMP" | jq -r '.status')" = no_baseline ]; then
    curl -s -m 30 -X POST "${H[@]}" "$M/benchmark/baseline" -d "{\"job_id\": \"$JOB\"}" | jq '{saved, job_id: .baseline.job_id}'
    echo "Baseline saved from $JOB"
    exit 0
fi

# Compare with baseline
echo "$CMP" | jq '{status, threshold_percent, regression, regressions, scenarios: [.scenarios[] | {scenario, regression, p95_ms: .deltas.p95_ms, requests_per_second: .deltas.requests_per_second}]}'
if [ "$(echo "$CMP" | jq -r '.regression')" = true ]; then
    echo "PERFORMANCE REGRESSION against baseline $(echo "$CMP" | jq -r '.baseline.job_id')"
    exit 1
fi
echo "No regression against baseline $(echo "$CMP" | jq -r '.baseline.job_id')"
exit 0
