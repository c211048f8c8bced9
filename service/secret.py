"""The deployment secret: a random value only the service's own processes know.

It is made at start (32 random bytes).  The supervisor of WORKERS > 1 makes
one and hands it to its workers in the environment (LLMAPI_DEPLOYMENT_SECRET),
so the workers of one host share it without Redis.  With REDIS_URL the first
process stores its value (SET NX on `{llmapi}:deployment-secret`) and every
process and replica adopts the stored one, so all of them agree.

What is derived from it (each with its own HMAC label, so one never reveals another):
    benchmark_token   the X-Benchmark value of the service's own load generator
                      (service/monitoring/loadgen.py): exempt from rate limits
    client_ip_id      the rate-limit client id of a request without a key: a keyed
                      hash of the address, not reversible without the secret
No client can compute either.  The address -> client id table holds at most
rate_limit.client_id_cache_size ids (oldest out first), read live from the config store.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets

log = logging.getLogger("service.secret")

ENV = "LLMAPI_DEPLOYMENT_SECRET"
REDIS_KEY = "{llmapi}:deployment-secret"
RETRY_SECONDS = 5.0      # after a failed attempt
REFRESH_SECONDS = 60.0   # after a successful one


def new_secret() -> str:
    return secrets.token_hex(32)


class DeploymentSecret:
    def __init__(self, env=None, store=None):
        self.max_ids = 4096 if store is None else store.get("rate_limit")["client_id_cache_size"]
        raw = (env or {}).get(ENV) or ""
        try:
            value = bytes.fromhex(raw) if len(raw) >= 32 else b""
        except ValueError:
            value = b""
        self.source = "supervisor" if value else "random"
        self.failed = False
        self._set(value or secrets.token_bytes(32))
        if store is not None:
            store.subscribe(self._on_config)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section == "rate_limit" and new["client_id_cache_size"] != self.max_ids:
            self.max_ids = new["client_id_cache_size"]
            ids = self._ids
            for addr in list(ids)[:max(0, len(ids) - self.max_ids)]:
                del ids[addr]

    def _set(self, value: bytes) -> None:
        self._value = value
        self.benchmark_token = hmac.new(value, b"llmapi-benchmark", hashlib.sha256).hexdigest()
        self._ip_key = hmac.new(value, b"llmapi-client-ip", hashlib.sha256).digest()
        self._ids: dict[str, str] = {}

    def is_benchmark_token(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), self.benchmark_token.encode())

    def client_ip_id(self, address: str | None) -> str:
        """`ip:` and 16 hex digits of HMAC(secret, address): stable within the deployment, not reversible."""
        addr = address or "unknown"
        cid = self._ids.get(addr)
        if cid is None:
            cid = "ip:" + hmac.new(self._ip_key, addr.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]
            ids = self._ids
            while len(ids) >= self.max_ids:
                del ids[next(iter(ids))]
            ids[addr] = cid
        return cid

    def memory_stats(self) -> dict:
        """What memory-analysis reports for the client id table."""
        return {"entries": len(self._ids), "max_entries": self.max_ids}

    # ---- sharing through Redis ---------------------------------------------------------------
    async def share(self, redis, timeout: float = 2.0, quiet: bool = False) -> bool:
        """Store ours unless one is stored (SET NX), then adopt the stored one.  False when Redis failed."""
        try:
            await asyncio.wait_for(redis.set(REDIS_KEY, self._value.hex(), nx=True), timeout)
            stored = await asyncio.wait_for(redis.get(REDIS_KEY), timeout)
        except Exception as e:  # keep ours, retry in the background
            if not quiet:
                log.warning("deployment secret: Redis unavailable (%s); using this process's own until it answers",
                            type(e).__name__)
            self.failed = True
            return False
        self.failed = False
        if stored is not None:
            if isinstance(stored, bytes):
                stored = stored.decode()
            try:
                value = bytes.fromhex(stored)
            except ValueError:
                value = b""
            if len(value) >= 16 and value != self._value:
                if self.source == "redis":
                    log.warning("deployment secret: the one stored in Redis changed; adopting it")
                self._set(value)
            self.source = "redis"
        return True

    async def keep_shared(self, redis) -> None:
        """Share again now and then: after an outage at start, and after Redis lost the key (a flush, a new
        primary without it), every process ends up with the same secret again."""
        while True:
            await asyncio.sleep(RETRY_SECONDS if self.failed else REFRESH_SECONDS)
            await self.share(redis, quiet=self.failed)
