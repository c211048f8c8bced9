"""Every tunable of the service, once.  One section per subsystem.

Each field names the env var that seeds it (if any).  Subsystems read their
section live from the store; /internal endpoints change it through the store.
Later subsystems add their sections here.
"""
from service.config.schema import Field as F, Section

SECTIONS: dict[str, Section] = {}


def section(name: str, doc: str, **fields: F) -> Section:
    s = Section(name, fields, doc)
    SECTIONS[name] = s
    return s


section(
    "text", "Text API request limits",
    min_text_length=F(int, 10, 1, 1_000_000, env="TEXT_MIN_LENGTH", help="shortest accepted text, characters"),
    max_text_length=F(int, 10_000, 1, 1_000_000, env="TEXT_MAX_LENGTH", help="longest accepted text, characters"),
    max_question_length=F(int, 1_000, 1, 100_000, env="TEXT_MAX_QUESTION_LENGTH", help="longest accepted question"),
    batch_max_items=F(int, 50, 1, 1000, env="BATCH_MAX_ITEMS", help="most items in one /v1/text/batch"),
    batch_concurrency=F(int, 8, 1, 256, env="BATCH_CONCURRENCY", help="items of one batch processed at once"),
)

section(
    "ai", "AI provider selection and connection pool",
    provider=F(str, "local", choices=("local", "openai"), env="AI_PROVIDER", help="local (embedded) or openai (any OpenAI-compatible server)"),
    base_url=F(str, "https://api.openai.com/v1", env="OPENAI_BASE_URL", help="OpenAI-compatible base URL (…/v1)"),
    model=F(str, "gpt-4o-mini", env="AI_MODEL", help="model name sent upstream"),
    timeout_seconds=F(float, 30.0, 0.05, 600, env="AI_TIMEOUT_SECONDS", help="per-call timeout"),
    max_retries=F(int, 3, 0, 10, env="AI_MAX_RETRIES", help="retries for retryable upstream errors"),
    temperature=F(float, 0.0, 0.0, 2.0, env="AI_TEMPERATURE"),
    max_connections=F(int, 50, 1, 10_000, env="MAX_CONNECTIONS", help="upstream connection pool size"),
    keepalive_connections=F(int, 20, 0, 10_000, env="KEEPALIVE_CONNECTIONS", help="idle keep-alive connections kept"),
    pool_timeout=F(float, 30.0, 0.1, 600, env="POOL_TIMEOUT", help="seconds to wait for a pooled connection"),
    connection_pooling=F(bool, True, help="reuse upstream connections"),
    batch_processing=F(bool, False, help="micro-batch concurrent provider calls"),
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
)

section(
    "monitoring", "Monitoring history, request admission, background tasks and emergency mode",
    retention_hours=F(float, 24.0, 0.01, 8760, env="MONITORING_RETENTION_HOURS", help="minute snapshots kept for this long"),
    max_events=F(int, 2000, 10, 1_000_000, env="MONITORING_MAX_EVENTS", help="most snapshots (and most events) kept"),
    enable_compression=F(bool, False, env="MONITORING_COMPRESSION", help="keep snapshots zlib-compressed in memory and Redis"),
    snapshot_interval_seconds=F(float, 60.0, 0.05, 3600, env="MONITORING_SNAPSHOT_INTERVAL", help="seconds between history snapshots"),
    hourly_retention_days=F(int, 31, 1, 400, help="hourly roll-ups kept for long reports"),
    validation_mode=F(str, "strict", choices=("strict", "fast"), env="VALIDATION_MODE", help="request validation depth"),
    enable_caching=F(bool, True, env="ENABLE_CACHING", help="answer repeated requests from the response cache"),
    async_processing=F(bool, True, help="run background jobs on the worker pool (false: inline)"),
    max_concurrent_requests=F(int, 0, 0, 100_000, env="MAX_CONCURRENT_REQUESTS", help="requests served at once; 0 = unlimited"),
    queue_size=F(int, 100, 0, 1_000_000, env="QUEUE_SIZE", help="requests waiting for a slot; beyond it: 503"),
    queue_timeout_seconds=F(float, 30.0, 0.01, 600, env="QUEUE_TIMEOUT_SECONDS", help="longest wait for a slot before 503"),
    background_workers=F(int, 4, 1, 256, env="BACKGROUND_WORKERS", help="background task workers"),
    task_queue_size=F(int, 500, 1, 1_000_000, env="TASK_QUEUE_SIZE", help="background tasks waiting; beyond it: refused"),
    worker_timeout=F(float, 300.0, 0.1, 86_400, env="WORKER_TIMEOUT", help="longest run of one background task, seconds"),
    memory_tracing=F(bool, False, env="MEMORY_TRACING", help="tracemalloc on (costs CPU and memory)"),
    tracing_frames=F(int, 1, 1, 64, help="stack frames tracemalloc keeps per allocation"),
    benchmark_max_duration_seconds=F(float, 300.0, 1, 3600, help="longest benchmark run accepted"),
    regression_threshold_percent=F(float, 20.0, 1, 1000, env="REGRESSION_THRESHOLD_PERCENT", help="p95/throughput change flagged as regression"),
    emergency_ai_timeout_seconds=F(float, 10.0, 0.05, 600, help="AI timeout cap in emergency mode"),
    emergency_max_retries=F(int, 1, 0, 10, help="AI retry cap in emergency mode"),
    emergency_max_concurrent_requests=F(int, 20, 1, 100_000, help="admission limit in emergency mode"),
    emergency_queue_size=F(int, 20, 0, 1_000_000, help="admission queue in emergency mode"),
    emergency_cache_ttl_factor=F(float, 0.25, 0.01, 1.0, help="cache TTLs are multiplied by this in emergency mode"),
    emergency_resilience_preset=F(str, "aggressive", help="resilience preset in emergency mode"),
    emergency_mode=F(bool, False, help="set by POST /internal/monitoring/emergency-mode"),
    emergency_saved=F(dict, {}, help="values emergency mode replaced, restored when it ends"),
)

# KPI alert thresholds: fields and defaults derived from the KPI catalog
# (exporter/kpis.py); POST /internal/monitoring/configure-alerts moves them and
# the exported llmapi_kpi_threshold gauge (hence the Prometheus alerts) follows.
from exporter.kpis import config_fields as _kpi_alert_fields  # noqa: E402

section(
    "alerts", "KPI alert thresholds (warning = target missed, critical = needs attention)",
    **{_name: F(float, _d, _lo, _hi, help=_help) for _name, (_d, _lo, _hi, _help) in _kpi_alert_fields().items()},
)

section(
    "resilience", "AI-call resilience: preset, circuit breakers (per provider and operation); "
                  "deadline and retry ceiling are ai.timeout_seconds and ai.max_retries",
    preset=F(str, "simple", choices=("simple", "development", "production", "aggressive"), env="RESILIENCE_PRESET",
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
