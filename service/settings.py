"""Process-level settings read once from the environment.

Runtime tunables live in the config store (service/config/sections.py);
this holds only what must be known before the store exists or cannot change
while the process runs: bind address, workers, keys, Redis URL, file paths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def _keys(env) -> tuple[str, ...]:
    keys = [env.get("API_KEY", "").strip()]
    keys += [k.strip() for k in env.get("ADDITIONAL_API_KEYS", "").split(",")]
    return tuple(k for k in keys if k)


def _int(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"env {name} must be an integer, got {raw!r}")


def _float(env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"env {name} must be a number, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    redis_url: str | None = None
    config_file: str | None = None
    state_dir: str = ".state"
    graceful_timeout: float = 30.0
    keepalive_timeout: float = 75.0

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            host=env.get("HOST", "127.0.0.1"),
            port=_int(env, "PORT", 8000),
            workers=max(1, _int(env, "WORKERS", 1)),
            api_keys=_keys(env),
            redis_url=env.get("REDIS_URL") or None,
            config_file=env.get("CONFIG_FILE") or None,
            state_dir=env.get("STATE_DIR", ".state"),
            graceful_timeout=_float(env, "GRACEFUL_TIMEOUT", 30.0),
            keepalive_timeout=_float(env, "KEEPALIVE_TIMEOUT", 75.0),
        )
