#!/bin/bash
# optimize_middleware_performance.sh
#
# The guide's middleware optimization script (PERFORMANCE_OPTIMIZATION.md,
# "Performance Optimization Script"), run against this service.  Each
# auto-optimize decides from measured data and answers
# {optimization_applied: [...] | false, reason}.
#
# Env: BASE_URL (default http://localhost:8000), API_KEY (sent as X-API-Key).
set -u
BASE_URL="${BASE_URL:-http://localhost:8000}"
BASE_URL="${BASE_URL%/}"

post() { curl -s -m 60 -X POST -H "X-API-Key: ${API_KEY:-}" "$BASE_URL$1"; }

echo "=== Middleware Performance Optimization $(date) ==="

# 1. Compression optimization
echo "Optimizing compression middleware..."
post /internal/middleware/compression/auto-optimize | jq '.optimization_applied'

# 2. Rate limiting optimization
echo "Optimizing rate limiting..."
post /internal/middleware/rate-limiting/auto-optimize | jq '.optimization_applied'

# 3. Request size optimization
echo "Optimizing request size limits..."
post /internal/middleware/request-size/auto-optimize | jq '.optimization_applied'

# 4. Version detection optimization
echo "Optimizing API versioning..."
post /internal/middleware/versioning/auto-optimize | jq '.optimization_applied'

# 5. Overall performance check
echo "Final performance check:"
curl -s -m 30 -H "X-API-Key: ${API_KEY:-}" "$BASE_URL/internal/monitoring/middleware-performance" | jq '{
  total_overhead: .total_overhead_ms,
  status: .performance_status,
  recommendations: .active_recommendations
}'

echo "=== Middleware optimization completed ==="
