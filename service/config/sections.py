"""Every tunable of the service, once.  One section per subsystem.

Each field names the env var that seeds it (if any).  Subsystems read their
section live from the store; /internal endpoints change it through the store.
Later subsystems add their sections here.

Cross-field invariants are declared here with their section (rules=[Rule]);
the store checks them on every change path (dedicated and generic /internal
endpoints, rollback, YAML and env at start, a peer's change through Redis).
Fields marked internal=True are set by the service itself and read-only
through POST /internal/config/{section}.
"""
import re

from service.config.schema import Field as F, Rule, Section
from service.providers.base import OPERATIONS

SECTIONS: dict[str, Section] = {}


def section(name: str, doc: str, rules=(), **fields: F) -> Section:
    s = Section(name, fields, doc, rules)
    SECTIONS[name] = s
    return s


def at_most(low: str, high: str, strict: bool = False) -> Rule:
    """Rule: values[low] <= values[high] (< with strict)."""
    if strict:
        return Rule((low, high), lambda v: v[low] < v[high], f"{low} must be below {high}")
    return Rule((low, high), lambda v: v[low] <= v[high], f"{low} must not exceed {high}")


def keys_in(field: str, allowed: tuple, what: str) -> Rule:
    """Rule: every key of the dict field is one of allowed."""
    return Rule((field,), lambda v: [f"{field}.{k}" for k in v[field] if k not in allowed],
                f"unknown {what}; one of {list(allowed)}")


def each(ok, message: str):
    """Field check: every item of a list satisfies ok; else names the first that does not ([i])."""
    def check(items):
        for i, item in enumerate(items):
            if not ok(item):
                return f"[{i}]", message
        return None
    return check


section(
    "text", "Text API request limits",
    min_text_length=F(int, 10, 1, 1_000_000, env="TEXT_MIN_LENGTH", help="shortest accepted text, characters"),
    max_text_length=F(int, 10_000, 1, 1_000_000, env="TEXT_MAX_LENGTH", help="longest accepted text, characters"),
    max_question_length=F(int, 1_000, 1, 100_000, env="TEXT_MAX_QUESTION_LENGTH", help="longest accepted question"),
    batch_max_items=F(int, 50, 1, 1000, env="BATCH_MAX_ITEMS", help="most items in one /v1/text/batch"),
    batch_concurrency=F(int, 8, 1, 256, env="BATCH_CONCURRENCY", help="items of one batch processed at once"),
    max_json_depth=F(int, 32, 2, 256, env="MAX_JSON_DEPTH",
                     help="deepest nesting of objects and arrays in a JSON request body, every route; deeper: 400 JSON_TOO_DEEP"),
    rules=[at_most("min_text_length", "max_text_length")],
)

section(
    "ai", "AI provider selection and connection pool",
    provider=F(str, "local", choices=("local", "openai"), env="AI_PROVIDER", help="local (embedded) or openai (any OpenAI-compatible server)"),
    base_url=F(str, "https://api.openai.com/v1", env="OPENAI_BASE_URL", help="OpenAI-compatible base URL (…/v1)"),
    model=F(str, "gpt-4o-mini", env="AI_MODEL", help="model name sent upstream"),
    timeout_seconds=F(float, 30.0, 0.05, 600, env="AI_TIMEOUT_SECONDS", help="per-call timeout"),
    max_retries=F(int, 3, 0, 10, env="AI_MAX_RETRIES", help="retries for retryable upstream errors"),
    temperature=F(float, 0.0, 0.0, 2.0, env="AI_TEMPERATURE"),
    max_connections=F(int, 100, 1, 10_000, env="MAX_CONNECTIONS", help="upstream connection pool size"),
    keepalive_connections=F(int, 100, 0, 10_000, env="KEEPALIVE_CONNECTIONS", help="idle keep-alive connections kept"),
    pool_timeout=F(float, 30.0, 0.1, 600, env="POOL_TIMEOUT", help="seconds to wait for a pooled connection"),
    connection_pooling=F(bool, True, help="reuse upstream connections"),
    batch_processing=F(bool, False, help="micro-batch concurrent provider calls"),
)

section(
    "pricing", "AI prices per model (USD per million tokens) for llmapi_ai_cost_usd_total and the cache savings; "
               "a model not listed costs 0",
    input_usd_per_million=F(dict, {}, 0, 1_000_000, item_type=float, help="model -> USD per million input tokens"),
    output_usd_per_million=F(dict, {}, 0, 1_000_000, item_type=float, help="model -> USD per million output tokens"),
)

section(
    "auth", "Authentication",
    protect_health=F(bool, False, env="AUTH_PROTECT_HEALTH", help="require a key for /v1/health"),
    protect_metrics=F(bool, False, env="AUTH_PROTECT_METRICS", help="require a key for /metrics"),
)

section(
    "logging", "Logging",
    level=F(str, "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), env="LOG_LEVEL"),
    access_log=F(bool, True, env="ACCESS_LOG", help="log one line per request"),
    access_log_shapes=F(int, 1024, 0, 1_000_000,
                        help="access-log line shapes (method, path, status) and key names kept rendered; "
                             "others are rendered per line"),
)

_PRESETS = ("simple", "development", "production", "aggressive")  # service/resilience/strategies.py PRESETS

section(
    "monitoring", "Monitoring history, request admission, background tasks and emergency mode",
    retention_hours=F(float, 24.0, 0.01, 8760, env="MONITORING_RETENTION_HOURS", help="minute snapshots kept for this long"),
    max_events=F(int, 2000, 10, 1_000_000, env="MONITORING_MAX_EVENTS", help="most snapshots (and most events) kept"),
    enable_compression=F(bool, False, env="MONITORING_COMPRESSION", help="keep snapshots zlib-compressed in memory and Redis"),
    snapshot_interval_seconds=F(float, 60.0, 0.05, 3600, env="MONITORING_SNAPSHOT_INTERVAL", help="seconds between history snapshots"),
    hourly_retention_days=F(int, 31, 1, 400, help="hourly roll-ups kept for long reports"),
    validation_mode=F(str, "fast", choices=("strict", "fast"), env="VALIDATION_MODE", help="fast: a body seen before reuses its validation (exact); strict: validate every body"),
    validation_memo_max_bytes=F(int, 8 * 1024 * 1024, 0, 1024 * 1024 * 1024, env="VALIDATION_MEMO_MAX_BYTES",
                                help="most bytes the fast-validation memo holds (bodies and parsed requests; 0: none)"),
    enable_caching=F(bool, True, env="ENABLE_CACHING", help="answer repeated requests from the response cache"),
    async_processing=F(bool, True, help="run background jobs on the worker pool (false: inline)"),
    max_concurrent_requests=F(int, 0, 0, 100_000, env="MAX_CONCURRENT_REQUESTS", help="API requests served at once per worker process; 0 = unlimited"),
    queue_size=F(int, 100, 0, 1_000_000, env="QUEUE_SIZE", help="API requests waiting for a slot (per worker); beyond it: 503 + Retry-After"),
    queue_timeout_seconds=F(float, 30.0, 0.01, 600, env="QUEUE_TIMEOUT_SECONDS", help="longest wait for a slot before 503"),
    background_workers=F(int, 4, 1, 256, env="BACKGROUND_WORKERS", help="background task workers"),
    task_queue_size=F(int, 500, 1, 1_000_000, env="TASK_QUEUE_SIZE", help="background tasks waiting; beyond it: refused"),
    worker_timeout=F(float, 300.0, 0.1, 86_400, env="WORKER_TIMEOUT", help="longest run of one background task, seconds"),
    memory_tracing=F(bool, False, env="MEMORY_TRACING", help="tracemalloc on (costs CPU and memory)"),
    tracing_frames=F(int, 1, 1, 64, help="stack frames tracemalloc keeps per allocation"),
    heap_trim_seconds=F(float, 2.0, 0.0, 3600, env="HEAP_TRIM_SECONDS",
                        help="seconds between two malloc_trim calls handing the heap's free pages back to the OS "
                             "(glibc; service/monitoring/heap.py); 0: never"),
    heap_trim_max_ms=F(float, 2.0, 0.01, 1000, help="a malloc_trim that holds the event loop longer pauses the trimming "
                                                     "until this or heap_trim_seconds changes"),
    loop_hold_timing=F(bool, False, env="LOOP_HOLD_TIMING",
                       help="time every task step's hold of the event loop (wall and CPU), by task, for "
                            "GET /internal/monitoring/loop-holds; 5-12 us a step while on"),
    benchmark_max_duration_seconds=F(float, 300.0, 1, 3600, help="longest benchmark run accepted"),
    regression_threshold_percent=F(float, 20.0, 1, 1000, env="REGRESSION_THRESHOLD_PERCENT", help="p95/throughput change flagged as regression"),
    emergency_ai_timeout_seconds=F(float, 10.0, 0.05, 600, help="AI timeout cap in emergency mode"),
    emergency_max_retries=F(int, 1, 0, 10, help="AI retry cap in emergency mode"),
    emergency_max_concurrent_requests=F(int, 20, 1, 100_000, help="admission limit in emergency mode"),
    emergency_queue_size=F(int, 20, 0, 1_000_000, help="admission queue in emergency mode"),
    emergency_cache_ttl_factor=F(float, 0.25, 0.01, 1.0, help="cache TTLs are multiplied by this in emergency mode"),
    emergency_resilience_preset=F(str, "aggressive", choices=_PRESETS, help="resilience preset in emergency mode"),
    emergency_mode=F(bool, False, internal=True, help="set by POST /internal/monitoring/emergency-mode"),
    emergency_saved=F(dict, {}, internal=True, help="values emergency mode replaced, restored when it ends"),
)

# KPI alert thresholds: fields and defaults derived from the KPI catalog
# (exporter/kpis.py); POST /internal/monitoring/configure-alerts moves them and
# the exported llmapi_kpi_threshold gauge (hence the Prometheus alerts) follows.
from exporter.kpis import KPIS as _KPIS, LOWER as _LOWER, config_fields as _kpi_alert_fields  # noqa: E402


def _kpi_order(k) -> Rule:
    """The warning threshold is met before the critical one, in the KPI's direction."""
    warn, crit = k.config_field, k.config_critical_field
    if k.direction == _LOWER:
        return at_most(warn, crit)
    return Rule((warn, crit), lambda v: v[warn] >= v[crit], f"{warn} must not be below {crit} (higher is better)")


section(
    "alerts", "KPI alert thresholds (warning = target missed, critical = needs attention)",
    rules=[_kpi_order(k) for k in _KPIS],
    **{_name: F(float, _d, _lo, _hi, help=_help) for _name, (_d, _lo, _hi, _help) in _kpi_alert_fields().items()},
)

section(
    "resilience", "AI-call resilience: preset, circuit breakers (per provider and operation); "
                  "deadline and retry ceiling are ai.timeout_seconds and ai.max_retries",
    preset=F(str, "simple", choices=_PRESETS, env="RESILIENCE_PRESET",
             help="maps each operation to a strategy (aggressive, balanced, conservative, critical)"),
    failure_threshold=F(int, 5, 1, 1000, env="CIRCUIT_BREAKER_FAILURE_THRESHOLD",
                        help="consecutive failures that open a breaker (scaled per strategy)"),
    recovery_timeout=F(float, 60.0, 0.1, 3600, env="CIRCUIT_BREAKER_RECOVERY_TIMEOUT",
                       help="seconds a breaker stays open before probing (scaled per strategy)"),
    half_open_max_calls=F(int, 1, 1, 100, help="probes allowed at once while a breaker is half-open"),
    performance_mode=F(bool, False, help="fail fast: cap backoff and stop retrying once a breaker is half-way to open"),
)

section(
    "batching", "Micro-batching of concurrent AI calls (switched on by ai.batch_processing)",
    batch_size=F(int, 5, 1, 256, env="AI_BATCH_SIZE", help="most requests in one provider batch"),
    batch_timeout_ms=F(float, 10.0, 0.0, 10_000, env="AI_BATCH_TIMEOUT_MS",
                       help="longest wait for a batch to fill before it is sent"),
    max_concurrent_batches=F(int, 3, 1, 256, env="AI_MAX_CONCURRENT_BATCHES", help="batches in flight at once"),
)

# Redis timeouts, in one place: the shared client's pool, the cache's L2
# commands and the health probe, the rate limiter's decisions.
section(
    "redis", "Redis timeouts (every Redis user reads them here)",
    socket_timeout_seconds=F(float, 5.0, 0.01, 600.0, env="REDIS_SOCKET_TIMEOUT",
                             help="every socket operation of the shared pool, and the wait for a free connection"),
    connect_timeout_seconds=F(float, 0.0, 0.0, 600.0, env="REDIS_CONNECT_TIMEOUT",
                              help="connecting; 0: socket_timeout_seconds"),
    command_timeout_seconds=F(float, 1.0, 0.01, 60.0,
                              help="longest cache L2 command and health ping; slower counts as an outage"),
    rate_limit_timeout_ms=F(float, 250.0, 1.0, 10_000,
                            help="longest rate-limit decision in Redis; slower falls back to the local limiter"),
)

# The two-tier response cache (service/cache).  Field names are the bodies of
# the /internal/cache POST commands, so a bad value is reported by its name.
_CACHE_RESPONSES = ("none", "clear_expired", "evict_old", "evict_lfu", "evict_policy", "clear_all")
_DAY = 86_400

section(
    "cache", "Two-tier response cache: memory L1 + Redis L2 (on/off is monitoring.enable_caching)",
    use_redis=F(bool, True, env="CACHE_USE_REDIS", help="use Redis as L2 when REDIS_URL is set"),
    # keys (POST /internal/cache/optimize-keys)
    enable_normalization=F(bool, True, env="CACHE_KEY_NORMALIZATION", help="normalize text before hashing it into a key"),
    normalize_whitespace=F(bool, True, help="with normalization: collapse runs of whitespace, strip the ends"),
    normalize_case=F(bool, False, help="with normalization: case-fold the text (answers may then be shared across case)"),
    normalize_unicode=F(bool, True, help="with normalization: Unicode NFC"),
    use_content_hash=F(bool, True, help="compact 128-bit BLAKE2b content digest (false: full SHA-256); never raw text"),
    include_metadata=F(bool, False, help="key includes AI provider and model (a model switch misses the cache)"),
    # TTL (POST /internal/cache/configure-ttl)
    base_ttl_seconds=F(int, 3600, 1, 30 * _DAY, env="CACHE_DEFAULT_TTL", help="TTL of operations not in ttl_by_operation"),
    ttl_by_operation=F(dict, {"sentiment": _DAY, "qa": 1800}, 1, 30 * _DAY, item_type=int,
                       help="TTL seconds per operation (overrides base_ttl_seconds)"),
    adaptive_ttl=F(bool, True, env="CACHE_ADAPTIVE_TTL", help="popular keys live longer"),
    max_ttl_seconds=F(int, 7200, 1, 30 * _DAY, env="CACHE_MAX_TTL", help="ceiling of adaptive TTLs"),
    popularity_factor=F(float, 1.5, 1.0, 100.0, help="popular key TTL = operation TTL x factor, up to max_ttl_seconds"),
    popularity_threshold=F(int, 3, 1, 1_000_000, help="hits that make a key popular (adaptive TTL, warming)"),
    stale_ttl_seconds=F(int, 3600, 0, 30 * _DAY, help="expired answers kept this long for fallbacks"),
    # size (POST /internal/cache/configure-size)
    max_entries=F(int, 10_000, 1, 10_000_000, env="CACHE_MAX_ENTRIES", help="most entries in memory"),
    max_memory_mb=F(float, 100.0, 0.01, 1_000_000, env="CACHE_MAX_MEMORY_MB", help="most MB held in memory"),
    eviction_policy=F(str, "lru", choices=("lru", "lfu", "ttl"), env="CACHE_EVICTION_POLICY",
                      help="lru, lfu (sampled over the least recent), ttl (soonest expiry first); expired go first"),
    size_check_interval=F(float, 300.0, 0.1, _DAY, help="seconds between background size and pressure checks"),
    # memory pressure (POST /internal/cache/configure-pressure)
    pressure_threshold=F(float, 0.8, 0.05, 1.0, help="fraction of max_memory_mb that triggers pressure_response"),
    pressure_response=F(str, "evict_old", choices=_CACHE_RESPONSES),
    emergency_threshold=F(float, 0.95, 0.05, 1.0, help="fraction of max_memory_mb that triggers emergency_response"),
    emergency_response=F(str, "clear_expired", choices=_CACHE_RESPONSES),
    emergency_cleanup_target=F(float, 0.5, 0.0, 1.0, help="emergency-cleanup evicts down to this fraction of max memory"),
    # memory (POST /internal/cache/optimize-memory, enable-auto-cleanup)
    compression_threshold_mb=F(float, 0.001, 0.0, 1024.0, env="CACHE_COMPRESSION_THRESHOLD_MB",
                               help="values at least this large are zlib-compressed (both tiers)"),
    compression_level=F(int, 6, 1, 9, help="zlib level"),
    cleanup_interval_minutes=F(float, 30.0, 0.01, 1440.0, help="minutes between automatic cleanups"),
    auto_cleanup=F(bool, False, env="CACHE_AUTO_CLEANUP", help="background cleanup of expired entries"),
    # warming (POST /internal/cache/enable-warming)
    enable_background_warming=F(bool, False, env="CACHE_WARMING", help="recompute popular keys before they expire"),
    warming_threshold=F(float, 0.1, 0.01, 0.99, help="fraction of TTL left that triggers a refresh"),
    max_warming_operations=F(int, 5, 1, 1000, help="refreshes at once; none while as many user misses are in flight"),
    warming_interval_seconds=F(float, 1.0, 0.05, 3600.0, help="seconds between warming scans"),
    # Redis L2
    redis_retry_max_seconds=F(float, 30.0, 0.1, 3600.0, help="longest backoff between reconnect probes"),
    # analysis
    text_size_tiers=F(dict, {"small": 500, "medium": 5000, "large": 50_000}, 1, 10 ** 9, item_type=int,
                      help="upper bounds (characters) of the text-size tiers in hit-miss-analysis; above: xlarge"),
    ghost_keys=F(int, 4096, 0, 10_000_000, help="keys evicted for room remembered, to tell capacity misses apart"),
    analysis_sample_size=F(int, 2000, 100, 1_000_000,
                           help="entries the analysis views look at, drawn at random when the memory tier holds more"),
    rules=[at_most("base_ttl_seconds", "max_ttl_seconds"),
           keys_in("ttl_by_operation", OPERATIONS, "operation"),
           at_most("pressure_threshold", "emergency_threshold", strict=True)],
)

# ---- middleware stack (service/middleware, issue 6) ------------------------
# One section per middleware; each has `enabled` (live: a disabled middleware
# passes requests straight through).  Field names are the bodies of the
# /internal/middleware/*/optimize commands.
_MiB = 1024 * 1024

section(
    "middleware", "Middleware stack measurement (GET /internal/middleware/stack/performance)",
    sample_every=F(int, 64, 1, 1_000_000, env="MIDDLEWARE_SAMPLE_EVERY",
                   help="time one request in this many through every middleware (1 = all)"),
    overhead_target_ms=F(float, 0.5, 0.001, 10_000, help="stack overhead at or below this is 'optimal'"),
    overhead_warning_ms=F(float, 2.0, 0.001, 10_000, help="stack overhead above this is 'degraded'"),
    middleware_warning_ms=F(float, 0.25, 0.001, 10_000, help="one middleware above this gets a recommendation"),
    lookup_cache_size=F(int, 512, 16, 1_000_000,
                        help="entries of each memo keyed by a request header value (Accept-Encoding, Content-Type)"),
    rules=[at_most("overhead_target_ms", "overhead_warning_ms")],
)

section(
    "security_headers", "Security headers on every response",
    enabled=F(bool, True, env="SECURITY_HEADERS_ENABLED"),
    frame_options=F(str, "DENY", choices=("DENY", "SAMEORIGIN"), help="X-Frame-Options"),
    referrer_policy=F(str, "no-referrer", choices=("no-referrer", "no-referrer-when-downgrade", "origin",
                                                   "origin-when-cross-origin", "same-origin", "strict-origin",
                                                   "strict-origin-when-cross-origin", "unsafe-url"),
                      help="Referrer-Policy"),
    content_security_policy=F(str, "", help="Content-Security-Policy ('' = not sent)"),
    hsts_max_age=F(int, 0, 0, 10 * 365 * 86_400, help="Strict-Transport-Security max-age (0 = not sent; TLS only)"),
)

section(
    "cors", "Cross-origin resource sharing (preflights answered before auth)",
    enabled=F(bool, False, env="CORS_ENABLED"),
    allow_origins=F(list, [], env="CORS_ALLOW_ORIGINS", item_type=str, help="exact origins, or '*'"),
    allow_methods=F(list, ["GET", "POST", "OPTIONS"], item_type=str),
    allow_headers=F(list, ["Content-Type", "Authorization", "X-API-Key", "X-Request-ID", "X-API-Version"],
                    item_type=str),
    expose_headers=F(list, ["X-Request-ID", "X-API-Version", "Retry-After", "RateLimit-Limit",
                            "RateLimit-Remaining", "RateLimit-Reset", "Deprecation", "Sunset"], item_type=str),
    allow_credentials=F(bool, False, help="not allowed together with origin '*'"),
    max_age=F(int, 600, 0, 86_400, help="seconds a browser may cache a preflight"),
    rules=[Rule(("allow_credentials", "allow_origins"), lambda v: not (v["allow_credentials"] and "*" in v["allow_origins"]),
                "allow_credentials is not allowed with origin '*'")],
)

_MEDIA = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/(\*|[A-Za-z0-9!#$&^_.+-]+)$")

section(
    "compression", "Response compression (gzip, br, deflate by Accept-Encoding) and compressed request bodies",
    enabled=F(bool, True, env="ENABLE_GZIP", help="compress responses"),
    algorithm=F(str, "gzip", choices=("gzip", "br", "brotli", "deflate"), env="COMPRESSION_ALGORITHM",
                help="preferred algorithm when the client accepts several equally"),
    level=F(int, 6, 1, 9, env="COMPRESSION_LEVEL", help="gzip/deflate level; brotli quality"),
    minimum_size=F(int, 1024, 0, 1024 * _MiB, env="COMPRESSION_MINIMUM_SIZE", help="smaller bodies are sent as they are"),
    exclude_content_types=F(list, ["image/*", "video/*", "audio/*", "application/zip", "application/gzip",
                                   "application/x-gzip", "font/woff2"], item_type=str,
                            help="never compressed; 'type/*' matches a whole family",
                            check=each(lambda t: bool(_MEDIA.match(t)), "must be a media type like image/png or image/*")),
    allowed_algorithms=F(list, ["br", "gzip", "deflate"], choices=("br", "gzip", "deflate"), item_type=str,
                         help="algorithms offered at all"),
    decompress_requests=F(bool, True, help="accept request bodies with Content-Encoding gzip, deflate or br"),
    max_decompressed_size=F(int, 10 * _MiB, 1, 1024 * _MiB, env="MAX_DECOMPRESSED_SIZE_BYTES",
                            help="cap on a decoded request body (zip-bomb guard); request_size limits also apply"),
    executor_threshold=F(int, 256 * 1024, 1024, 1024 * _MiB, help="bodies this large compress in a worker thread"),
)

section(
    "rate_limit", "Rate limiting: GCRA in Redis (one global limit across processes) with local token leases",
    enabled=F(bool, False, env="RATE_LIMIT_ENABLED", help="per-client limits (the global throttle works either way)"),
    requests_per_minute=F(int, 60, 1, 1_000_000_000, env="RATE_LIMIT_REQUESTS_PER_MINUTE",
                          help="limit of a client without a tier"),
    burst_size=F(int, 10, 0, 100_000_000, env="RATE_LIMIT_BURST_SIZE", help="requests allowed above the steady rate"),
    redis_pool_size=F(int, 10, 1, 1000, env="RATE_LIMIT_REDIS_POOL_SIZE", help="connections of the limiter's Redis pool"),
    local_cache_size=F(int, 10_000, 16, 10_000_000, env="RATE_LIMIT_LOCAL_CACHE_SIZE",
                       help="clients tracked in memory (leases and the fallback limiter)"),
    client_id_cache_size=F(int, 4096, 1, 10_000_000,
                           help="client ids of keyless clients (keyed hashes of their addresses) kept computed"),
    use_redis=F(bool, True, env="RATE_LIMIT_USE_REDIS", help="share limits through Redis when REDIS_URL is set"),
    lease_window_ms=F(float, 100.0, 0.0, 10_000, help="a process leases up to this much of its traffic from Redis "
                                                        "at once (0 = one Redis call per request)"),
    redis_retry_seconds=F(float, 2.0, 0.05, 600, help="after a Redis failure, use the local limiter this long"),
    client_tier_limits=F(dict, {"premium": 200, "standard": 100, "basic": 50}, 1, 1_000_000_000, item_type=int,
                         help="requests per minute by tier"),
    client_tiers=F(dict, {}, item_type=str, help="key name -> tier (overrides the tier of its API_KEYS_FILE entry)"),
    adaptive_limits=F(bool, False, help="multiply limits by peak_multiplier in peak hours, else off_peak_multiplier"),
    peak_multiplier=F(float, 1.0, 0.01, 100.0),
    off_peak_multiplier=F(float, 1.0, 0.01, 100.0),
    peak_hours=F(list, [9, 10, 11, 12, 13, 14, 15, 16, 17], item_type=int, help="UTC hours (0-23) that are peak",
                 check=each(lambda h: 0 <= h <= 23, "must be an hour 0-23")),
    global_limit_per_minute=F(int, None, 1, 1_000_000_000, nullable=True,
                              help="throttle over all clients (POST /internal/monitoring/enable-throttling)"),
    paths=F(list, ["/v1/text"], item_type=str, help="path prefixes that are limited",
            check=each(lambda p: p.startswith("/"), "must be a path prefix starting with /")),
    headers=F(bool, True, help="RateLimit-* headers on allowed responses too"),
    rules=[Rule(("client_tiers", "client_tier_limits"),
                lambda v: [f"client_tiers.{c}" for c, t in v["client_tiers"].items() if t not in v["client_tier_limits"]],
                "tier must be one of client_tier_limits")],
)

section(
    "request_size", "Request body limits by content type, from Content-Length and while streaming",
    enabled=F(bool, True, env="REQUEST_SIZE_LIMITS_ENABLED"),
    max_request_size=F(int, 10 * _MiB, 1, 1024 * _MiB, env="MAX_REQUEST_SIZE_BYTES",
                       help="file uploads (multipart) and any other content type"),
    max_json_size=F(int, 2 * _MiB, 1, 1024 * _MiB, env="MAX_JSON_SIZE_BYTES", help="application/json, */*+json"),
    max_form_size=F(int, 1 * _MiB, 1, 1024 * _MiB, env="MAX_FORM_SIZE_BYTES", help="application/x-www-form-urlencoded"),
    max_streaming_size=F(int, 100 * _MiB, 1, 1024 * _MiB, env="MAX_STREAMING_SIZE_BYTES",
                         help="application/octet-stream, ndjson, event streams"),
    check_async=F(bool, True, env="REQUEST_SIZE_CHECK_ASYNC",
                  help="true: enforce while the handler reads; false: read and check before the handler runs"),
    enable_streaming=F(bool, True, help="accept chunked bodies without Content-Length (else 411)"),
    chunk_size=F(int, 65536, 1024, 16 * _MiB, help="read size when checking a body before the handler"),
    body_read_timeout_seconds=F(float, 30.0, 0.1, 3600, env="BODY_READ_TIMEOUT_SECONDS",
                                help="longest wait for a request body to arrive in full; then 408 and the "
                                     "connection is closed"),
)

_VERSION = re.compile(r"^v\d{1,4}(\.\d{1,4})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_is_version = each(lambda v: bool(_VERSION.match(v)), "must be a version like v1 or v2.1")


def _sunsets(dv: dict):
    for k, d in dv.items():
        if not _VERSION.match(k):
            return f".{k}", "must be a version like v1 or v2.1"
        if d and not _DATE.match(d):
            return f".{k}", "must be a date YYYY-MM-DD or ''"
    return None


section(
    "versioning", "API version detection (header, path, query, Accept media type)",
    enabled=F(bool, True, env="API_VERSIONING_ENABLED"),
    supported_versions=F(list, ["v1"], env="API_SUPPORTED_VERSIONS", item_type=str,
                         check=lambda vs: _is_version(vs) or (None if vs else "must name at least one version")),
    default_version=F(str, "v1", env="API_DEFAULT_VERSION", help="when the request names none"),
    detection_strategy=F(str, "header_first", choices=("header_first", "path_first", "query_first", "accept_first",
                                                       "header", "path", "query", "accept"),
                         env="API_VERSION_DEFAULT_STRATEGY", help="X_first: X, then the others; X: only X"),
    fallback_enabled=F(bool, True, env="API_VERSION_FALLBACK_ENABLED",
                       help="an unsupported minor (v1.3) is served by its supported major (v1)"),
    enable_caching=F(bool, True, help="cache detection results"),
    cache_size=F(int, 1000, 1, 1_000_000, env="API_VERSION_CACHE_SIZE"),
    cache_ttl=F(int, 3600, 1, 30 * 86_400, help="seconds a cached detection is reused"),
    metrics_enabled=F(bool, True, env="API_VERSION_METRICS_ENABLED"),
    fast_path_versions=F(list, ["v1"], item_type=str, help="path prefixes recognised without the cache",
                         check=_is_version),
    deprecated_versions=F(dict, {}, item_type=str, help="version -> sunset date (YYYY-MM-DD, or '' for none)",
                          check=_sunsets),
    query_param=F(str, "version", help="query parameter naming the version",
                  check=lambda q: None if re.match(r"^[A-Za-z0-9_.-]{1,64}$", q) else "must be a query parameter name"),
    rules=[Rule(("default_version", "supported_versions"), lambda v: v["default_version"] in v["supported_versions"],
                "default_version must be one of supported_versions")],
)
# ---- end of middleware stack sections (issue 6) ----------------------------

# ---- remediation loop (service/remediation, issue 15) -----------------------
# One mode per playbook entry (exporter/playbook.py): shipped dry_run; an
# operator switches entries to enforce one by one.
from exporter.playbook import DEFAULT_MODE as _RDEFAULT, MODES as _RMODES, PLAYBOOK as _PLAYBOOK  # noqa: E402

section(
    "remediation", "Alertmanager-driven remedies (POST /internal/alerts/webhook): kill switch, limits, "
                   "one mode per playbook entry (off, dry_run, enforce)",
    enabled=F(bool, True, env="REMEDIATION_ENABLED", help="kill switch: false = no playbook action runs, not even "
                                                           "a dry run"),
    max_actions_per_hour=F(int, 6, 0, 1000, env="REMEDIATION_MAX_ACTIONS_PER_HOUR",
                           help="enforced actions per hour over every entry, worker and replica"),
    dedupe_ttl_seconds=F(float, 86_400.0, 60.0, 30 * 86_400, help="how long a firing alert (fingerprint + "
                                                                  "startsAt) is remembered as handled"),
    check_interval_seconds=F(float, 5.0, 0.1, 3600, help="seconds between verification and expiry checks"),
    **{e.mode_field: F(str, _RDEFAULT, choices=_RMODES, help=f"{e.alertname}: {e.actions[0].describe()}")
       for e in _PLAYBOOK},
)
