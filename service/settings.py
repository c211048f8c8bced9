"""Process-level settings read once from the environment.

Runtime tunables live in the config store (service/config/sections.py);
this holds only what must be known before the store exists or cannot change
while the process runs: bind address, workers, keys, Redis URL, file paths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from service.keys import KeyConfigError, env_keys


# Every process-level env var, once: name -> (default, meaning).  Read at start;
# the README table is generated from this (service/docgen.py).  Runtime tunables
# live in the config store instead (service/config/sections.py).
PROCESS_ENV: dict[str, tuple[str, str]] = {
    "HOST": ("127.0.0.1", "bind address; without API keys only loopback is allowed"),
    "PORT": ("8000", "listen port"),
    "WORKERS": ("1", "worker processes sharing the port (SO_REUSEPORT); /metrics sums over them"),
    "API_KEY": ("", "the operator's key (name `operator`, scopes text + admin), sent as X-API-Key or "
                    "Authorization: Bearer"),
    "ADDITIONAL_API_KEYS": ("", "client keys, comma-separated: scope text only, named client-1, client-2, ..."),
    "ADMIN_API_KEYS": ("", "admin keys, comma-separated: scope admin (/internal, /metrics, /v1/health) only, "
                           "named admin-1, admin-2, ..."),
    "API_KEYS_FILE": ("", "YAML list of {name, key | sha256, scopes, tier}; re-read on SIGHUP (README: Keys and scopes)"),
    "REDIS_URL": ("", "Redis for the L2 cache, rate limits, config propagation, history (unset: memory only): "
                      "redis[s]://host:port/db, redis[s]+cluster://h1:p1,h2:p2, "
                      "redis[s]+sentinel://h1:p1,h2:p2/primary[/db]"),
    "REDIS_MAX_CONNECTIONS": ("20", "Redis connection pool cap (per node on a cluster)"),
    "REDIS_POOL_SIZE": ("10", "Redis connections opened at start"),
    "CONFIG_FILE": ("", "optional YAML file: {section: {field: value}} seeding the config store"),
    "STATE_DIR": (".state", "where runtime config changes and history persist without Redis"),
    "GRACEFUL_TIMEOUT": ("30", "seconds to finish in-flight requests on SIGTERM"),
    "SHUTDOWN_DRAIN_SECONDS": ("0", "on SIGTERM, keep serving this long with /v1/health/ready answering 503 "
                                    "(load balancers stop routing), then close the listener and finish in-flight "
                                    "requests within GRACEFUL_TIMEOUT"),
    "KEEPALIVE_TIMEOUT": ("75", "HTTP keep-alive timeout, seconds"),
    "OPENAI_API_KEY": ("", "key for the OpenAI-compatible provider (never logged)"),
    "MONITORING_INSTANCE": ("", "name of this instance in the persisted monitoring history (default: host:port:worker)"),
    "RUNBOOK_BASE_URL": ("", "read by `make alerts dashboards`: where runbook links point"),
    "ALERT_WEBHOOK_TOKEN": ("", "credential Alertmanager sends to POST /internal/alerts/webhook (its "
                                "credentials_file holds the same); accepted for that route only (never logged)"),
    "ALERT_WEBHOOK_TOKEN_FILE": ("", "file holding that credential instead (e.g. a mounted secret)"),
    "ALERT_WEBHOOK_URL": ("", "read by deploy/alertmanager-entrypoint.sh: where Alertmanager sends notifications"),
}


def env_str(env, name: str) -> str:
    return env.get(name) or PROCESS_ENV[name][0]


def env_number(env, name: str, cast=int, lo: float | None = None, default: str | None = None):
    """A numeric process env var (default from PROCESS_ENV); refuses to start on a bad value."""
    raw = env.get(name) or default or PROCESS_ENV[name][0]
    try:
        v = cast(raw)
    except ValueError:
        raise SystemExit(f"env {name} must be a number, got {raw!r}")
    if lo is not None and v < lo:
        raise SystemExit(f"env {name} must be >= {lo}, got {raw!r}")
    return v


def _keys(env) -> tuple:
    try:
        return env_keys(env)
    except KeyConfigError as e:
        raise SystemExit(f"refusing to start: {e}")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_keys: tuple = field(default=(), repr=False)  # service.keys.Key of the env vars: names, scopes, digests
    api_keys_file: str | None = None
    redis_url: str | None = None
    config_file: str | None = None
    state_dir: str = ".state"
    graceful_timeout: float = 30.0
    drain_seconds: float = 0.0
    keepalive_timeout: float = 75.0
    alert_webhook_token: str = field(default="", repr=False)
    alert_webhook_token_file: str | None = None
    worker_id: int = 0  # which of the WORKERS this process is (set by the supervisor; 0 alone)

    @property
    def keys_configured(self) -> bool:
        return bool(self.api_keys) or bool(self.api_keys_file)

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    def state_file(self, kind: str) -> str:
        """STATE_DIR/KIND-PORT.json; with several workers each has its own (KIND-PORT-wN.json)."""
        worker = f"-w{self.worker_id}" if self.workers > 1 else ""
        return os.path.join(self.state_dir, f"{kind}-{self.port}{worker}.json")

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            host=env_str(env, "HOST"),
            port=env_number(env, "PORT", int, 0),
            workers=env_number(env, "WORKERS", int, 1),
            api_keys=_keys(env),
            api_keys_file=env_str(env, "API_KEYS_FILE") or None,
            redis_url=env_str(env, "REDIS_URL") or None,
            config_file=env_str(env, "CONFIG_FILE") or None,
            state_dir=env_str(env, "STATE_DIR"),
            graceful_timeout=env_number(env, "GRACEFUL_TIMEOUT", float, 0),
            drain_seconds=env_number(env, "SHUTDOWN_DRAIN_SECONDS", float, 0),
            keepalive_timeout=env_number(env, "KEEPALIVE_TIMEOUT", float, 0),
            alert_webhook_token=env.get("ALERT_WEBHOOK_TOKEN", "").strip(),
            alert_webhook_token_file=env_str(env, "ALERT_WEBHOOK_TOKEN_FILE") or None,
            worker_id=int(env.get("WORKER_ID") or 0),
        )
