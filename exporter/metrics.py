"""Every Prometheus metric of the service, defined once.

One prefix (llmapi_), base units (seconds, bytes), bounded label values.
Subsystems import the metric objects they record from this module; new
subsystems add their metrics here.  The one exception to the prefix: the two
per-call histograms of the OpenTelemetry GenAI semantic conventions, exposed
under the semconv's Prometheus names (gen_ai_client_*), so dashboards written
for the semconv work unchanged.

Series budget: only the API routes (API_ROUTE_PREFIX) get a per-route duration
histogram; every other route shares one coarse histogram by group; `method`
is one of KNOWN_METHODS or "other"; `model` is a configured model name or
"other".  llmapi_scrape_series reports the size of each scrape.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, disable_created_metrics

# No *_created series: halves the series count of counters and histograms and
# keeps single- and multi-process expositions alike (multiprocess has none).
disable_created_metrics()

PREFIX = "llmapi"
REGISTRY = CollectorRegistry(auto_describe=True)

# HTTP: P95 thresholds (1 s, 2 s, 3 s) are exact bucket edges
HTTP_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
# AI: 15 s, 30 s, 45 s thresholds are exact bucket edges
AI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 120.0)


def _c(name, doc, labels=()):
    return Counter(f"{PREFIX}_{name}", doc, labels, registry=REGISTRY)


# Gauge multiprocess modes (WORKERS > 1): "live*" modes drop the values of dead
# workers, so a gauge never reports a process that is gone.
def _g(name, doc, labels=(), mode="livesum"):
    return Gauge(f"{PREFIX}_{name}", doc, labels, registry=REGISTRY, multiprocess_mode=mode)


def _h(name, doc, labels, buckets, prefix=PREFIX + "_"):
    return Histogram(f"{prefix}{name}", doc, labels, buckets=buckets, registry=REGISTRY)


# ---- label bounds ----------------------------------------------------------
API_ROUTE_PREFIX = "/v1/text"   # routes with a per-route duration histogram (the API)
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
OTHER = "other"                 # any method, model, ... outside its known set


# ---- HTTP (RED) ---------------------------------------------------------
HTTP_REQUESTS = _c("http_requests", "HTTP requests by route template, method and status", ("route", "method", "status"))
HTTP_DURATION = _h("http_request_duration_seconds", f"HTTP request duration of the API routes ({API_ROUTE_PREFIX}...)",
                   ("route", "method"), HTTP_BUCKETS)
# every other route (admin /internal, self: /metrics /v1/health /openapi.json, unmatched) by group, coarse
OTHER_HTTP_BUCKETS = (0.01, 0.1, 1.0, 10.0)
HTTP_OTHER_DURATION = _h("http_other_request_duration_seconds",
                         "HTTP request duration outside the API routes, by group (internal, self, unmatched)",
                         ("group",), OTHER_HTTP_BUCKETS)
HTTP_IN_FLIGHT = _g("http_requests_in_flight", "HTTP requests being served", mode="livesum")

# ---- AI provider --------------------------------------------------------
# One observation per attempt (a retried call is several); outcome: success or the error kind
# (timeout, connection, rate_limited, server, client, parse, internal).  Per operation: the per-call
# gen_ai_client_operation_duration_seconds (the series budget keeps one of the two per operation).
AI_DURATION = _h("ai_request_duration_seconds", "AI provider attempt duration (each retry is one) by outcome",
                 ("provider", "model", "outcome"), AI_BUCKETS)
# OpenTelemetry GenAI semconv (gen_ai.client.token.usage, gen_ai.client.operation.duration) under their
# Prometheus names and bucket advice; one observation per call, retries included.
GENAI_TOKEN_BUCKETS = tuple(4 ** i for i in range(14))  # 1, 4, 16, ... 67108864
GENAI_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
GENAI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
GENAI_TOKENS = _h("client_token_usage", "Tokens used per AI call by token type (input, output)",
                  GENAI_LABELS + ("gen_ai_token_type",), GENAI_TOKEN_BUCKETS, prefix="gen_ai_")
GENAI_DURATION = _h("client_operation_duration_seconds",
                    "AI call duration, retries and backoff included; error_type empty on success",
                    GENAI_LABELS + ("error_type",), GENAI_DURATION_BUCKETS, prefix="gen_ai_")
AI_COST = _c("ai_cost_usd", "Cost of AI calls in USD, from the pricing config section", ("model", "operation"))
AI_UPSTREAM_REMAINING = _g("ai_upstream_remaining", "Upstream quota left (x-ratelimit-remaining-requests/-tokens)",
                           ("kind", "model"), mode="livemostrecent")
# the upstream connection pool of a provider that has one (service/providers/openai_compat.py; the local
# provider has none, so no series)
AI_POOL_IN_USE = _g("ai_pool_connections_in_use", "Upstream connections serving a request", ("provider",),
                    mode="livesum")
AI_POOL_LIMIT = _g("ai_pool_max_connections", "Upstream connection pool size (ai.max_connections)", ("provider",),
                   mode="livesum")
AI_POOL_WAITING = _g("ai_pool_waiting_requests", "AI requests waiting for an upstream connection", ("provider",),
                     mode="livesum")
AI_POOL_WAIT = _h("ai_pool_wait_seconds", "Time an AI request waited for an upstream connection (a reused one: 0)",
                  ("provider",), (0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
# usage per configured key name (request["key_name"]), and what the cache saved
CLIENT_REQUESTS = _c("client_requests", "Text API requests by key name and operation", ("key_name", "operation"))
CACHE_SAVED_TOKENS = _c("cache_saved_tokens", "Tokens the original calls of cache hits spent (not spent again)",
                        ("model", "operation"))
CACHE_SAVED_COST = _c("cache_saved_cost_usd", "Cost in USD the original calls of cache hits spent",
                      ("model", "operation"))

# ---- cache ---------------------------------------------------------------
CACHE_HITS = _c("cache_hits", "Cache hits by tier and operation", ("tier", "operation"))
CACHE_MISSES = _c("cache_misses", "Cache misses by operation", ("operation",))
CACHE_EVICTIONS = _c("cache_evictions", "Cache evictions by reason", ("reason",))
CACHE_ENTRIES = _g("cache_entries", "Entries in the cache", ("tier",), mode="livesum")
CACHE_MEMORY = _g("cache_memory_bytes", "Bytes held by the in-memory cache tier", mode="livesum")

# ---- resilience ----------------------------------------------------------
BREAKER_STATES = ("closed", "half-open", "open")  # pybreaker's names, as in the transitions counter
BREAKER_STATE = _g("circuit_breaker_state", "1 for the breaker's current state, 0 for the others",
                   ("breaker", "state"), mode="livemax")
BREAKER_TRANSITIONS = _c("circuit_breaker_transitions", "Breaker state changes", ("breaker", "state"))
RETRIES = _c("resilience_retries", "Retries of AI calls", ("operation",))
FALLBACKS = _c("resilience_fallbacks", "Fallback answers by kind", ("operation", "kind"))

# ---- middleware ----------------------------------------------------------
RATE_LIMIT_DECISIONS = _c("rate_limit_decisions", "Rate-limit decisions", ("decision", "tier"))
# reason: missing (no key, 401), invalid (unknown key, 401), forbidden (a key without the scope, 403);
# scope: the scope the route needs (text, admin, metrics, health).  Never a key or its name: bounded labels.
AUTH_REJECTIONS = _c("auth_rejections", "Requests refused by API-key auth", ("reason", "scope"))
COMPRESSION_IN = _c("compression_input_bytes", "Bytes before response compression", ("algorithm",))
COMPRESSION_OUT = _c("compression_output_bytes", "Bytes after response compression", ("algorithm",))
REQUEST_SIZE_REJECTIONS = _c("request_size_rejections", "Requests rejected for size", ("content_type",))
API_VERSION_REQUESTS = _c("api_version_requests", "Requests by detected API version", ("version", "source"))
ADMISSION_SHED = _c("admission_shed", "Requests shed by admission control", ("reason",))

# ---- process / runtime ---------------------------------------------------
CPU_LIMIT = _g("cpu_limit_cores", "CPU cores available to the process (cgroup limit or host)", mode="livemax")
MEMORY_LIMIT = _g("memory_limit_bytes", "Memory available to the process (cgroup limit or host)", mode="livemax")
EVENT_LOOP_LAG = _g("event_loop_lag_seconds", "Event-loop scheduling lag, worst of the last sampling period",
                    mode="livemax")
BUILD_INFO = _g("build_info", "Build information", ("version", "python"), mode="livemax")
# Process CPU and RSS under the llmapi_ prefix, summed over workers (the
# default process_* metrics only describe the process that answers a scrape)
PROCESS_CPU = _c("process_cpu_seconds", "CPU time (user + system) used by the service processes")
PROCESS_RSS = _g("process_resident_memory_bytes", "Resident memory of the service processes", mode="livesum")
PROCESS_WORKERS = _g("process_workers", "Service worker processes alive", mode="livesum")

# added by exporter/handler.py as the last family of each scrape: the series of that scrape, itself included
SCRAPE_SERIES = f"{PREFIX}_scrape_series"

# ---- redis ---------------------------------------------------------------
REDIS_UP = _g("redis_up", "1 when Redis answers, else 0", mode="livemin")
REDIS_CONFIGURED = _g("redis_configured", "1 when REDIS_URL is set (so redis_up 0 is an outage)", mode="livemax")
REDIS_LATENCY = _h("redis_command_duration_seconds", "Redis command latency", ("command",),
                   (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0))

# ---- KPI thresholds (from exporter/kpis.py, moved live by configure-alerts)
KPI_THRESHOLD = _g("kpi_threshold", "KPI thresholds by kpi and level (good, target, critical) in base units",
                   ("kpi", "level"), mode="livemostrecent")

# ---- runtime config store (service/config/store.py) ---------------------
# actor: a configured key name, startup, rollback, peer, alertmanager; anything else "other"
CONFIG_CHANGES = _c("config_changes", "Runtime config changes by section and actor", ("section", "actor"))
CONFIG_VERSION = _g("config_version", "Version of the runtime config (each change adds one)", mode="livemax")

# ---- monitoring / admission / background tasks (service/monitoring) ---
ADMISSION_QUEUE_DEPTH = _g("admission_queue_depth", "Requests waiting for an admission slot", mode="livesum")
ADMISSION_ACTIVE = _g("admission_active_requests", "Requests holding an admission slot", mode="livesum")
ADMISSION_WAIT = _h("admission_wait_seconds", "Time queued requests waited for a slot", (),
                    (0.01, 0.1, 1.0, 5.0, 30.0))
BACKGROUND_TASKS = _c("background_tasks", "Background tasks by kind and result", ("kind", "result"))
BACKGROUND_QUEUE_DEPTH = _g("background_queue_depth", "Background tasks waiting for a worker", mode="livesum")
MONITORING_SNAPSHOTS = _g("monitoring_history_snapshots", "Minute snapshots held in the monitoring history", mode="livemax")
EMERGENCY_MODE = _g("emergency_mode", "1 while emergency mode is on", mode="livemax")

# ---- cache (service/cache): L2 availability, warming, pressure, single-flight
CACHE_L2_UP = _g("cache_l2_up", "1 while the cache uses Redis as L2, 0 during an outage or without Redis",
                 mode="livemin")
CACHE_L2_TRANSITIONS = _c("cache_l2_transitions", "Cache L2 availability changes: down = outage, up = recovery",
                          ("state",))
CACHE_L2_ERRORS = _c("cache_l2_errors", "Failed cache L2 (Redis) commands", ("command",))
CACHE_MAX_MEMORY = _g("cache_max_memory_bytes", "Memory cap of the in-memory cache tier", mode="livesum")
CACHE_WARMING = _c("cache_warming_refreshes", "Background cache warming refreshes by result", ("result",))
CACHE_PRESSURE = _c("cache_pressure_events", "Cache memory-pressure responses by level and response",
                    ("level", "response"))
CACHE_SINGLE_FLIGHT = _c("cache_single_flight_joins", "Cache misses that waited on an identical miss in flight")
CACHE_STALE_SERVED = _c("cache_stale_served", "Expired cache answers served as fallbacks, by tier", ("tier",))

# ---- resilience: breaker rejections, micro-batching (service/resilience) ----
BREAKER_REJECTIONS = _c("circuit_breaker_rejections", "Calls failed fast by an open (or full half-open) breaker",
                        ("breaker",))
AI_BATCHES = _c("ai_batches", "Micro-batches sent to the AI provider")
AI_BATCH_SIZE = _h("ai_batch_size", "Requests per micro-batch", (), (1, 4, 16, 64, 256))

# ---- middleware stack (service/middleware, service/ratelimit; issue 6) -------
COMPRESSION_SECONDS = _c("compression_seconds", "Time spent compressing responses", ("algorithm",))
DECOMPRESSION_REJECTIONS = _c("decompression_rejections", "Compressed request bodies stopped at the decoded-size cap",
                              ("encoding",))
RATE_LIMIT_LEASES = _c("rate_limit_leases", "Token leases asked of Redis by result (granted, partial, empty, error)",
                       ("result",))
RATE_LIMIT_FALLBACK = _g("rate_limit_fallback_active", "1 while rate limiting is local because Redis failed",
                         mode="livemax")
# a summary (count and sum: the mean), not a histogram: the service judges a middleware by its mean own time
# (middleware.middleware_warning_ms), and buckets would cost 5 series per middleware for a sampled profile
MIDDLEWARE_OVERHEAD = Summary(f"{PREFIX}_middleware_overhead_seconds",
                              "Own time of each middleware (or group) in sampled requests", ("middleware",),
                              registry=REGISTRY)
# ---- end of middleware stack metrics (issue 6) ------------------------------

# ---- answers (service/text): the quality SLO (exporter/slos.py) ---------------
TEXT_DEGRADED = _c("text_degraded_responses", "API responses carrying a degraded answer (a stale cached copy "
                   "served because the AI service failed), once per response", ("operation", "reason"))

# ---- remediation loop (service/remediation; playbook exporter/playbook.py) -----
REMEDIATION_ACTIONS = _c("remediation_actions", "Playbook actions by entry, remedy, mode and outcome "
                         "(applied, dry_run, reverted, ineffective, global_cap, ...)",
                         ("entry", "action", "mode", "outcome"))
REMEDIATION_ACTIVE = _g("remediation_active", "Enforced playbook actions applied and not yet reverted, by entry",
                        ("entry",), mode="livemax")
