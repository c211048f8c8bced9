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
