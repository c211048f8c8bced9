"""API keys with names, scopes and rate-limit tiers: the key ring.

Where keys come from (names are unique over all of them):

    API_KEY               name `operator`, scopes text + admin
    ADDITIONAL_API_KEYS   client keys, scope text: `client-1`, `client-2`, ... by position
    ADMIN_API_KEYS        scope admin: `admin-1`, `admin-2`, ... by position
    API_KEYS_FILE         a YAML list of {name, key | sha256, scopes, tier}; re-read on SIGHUP

Scopes: `text` (/v1/text/*), `admin` (every /internal route, reads included;
implies `metrics` and `health`), `metrics` (/metrics when auth.protect_metrics),
`health` (/v1/health when auth.protect_health).

Only the SHA-256 digest of a key is kept.  A presented key is hashed and its
digest compared with every entry's in constant time (hmac.compare_digest, no
early exit), so neither timing nor the number of entries tells which matched.
Names, never keys or digests, go to logs, labels, the audit and Redis key names;
error messages about a bad file never quote its values, only entry numbers and
valid names.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass, field

import yaml

log = logging.getLogger("service.keys")

SCOPES = ("text", "admin", "metrics", "health")
ALL_SCOPES = frozenset(SCOPES)
IMPLIED = {"admin": ("metrics", "health")}
NAME_RE = re.compile(r"^[a-z0-9_.-]{1,64}$")
NAME_PATTERN = "[a-z0-9_.-]{1,64}"
ANONYMOUS = "anonymous"   # open-on-loopback mode (no keys configured), and public routes
BENCHMARK = "benchmark"   # the service's own load generator (X-Benchmark, service/secret.py)
RESERVED = frozenset({ANONYMOUS, BENCHMARK})
FILE_FIELDS = frozenset({"name", "key", "sha256", "scopes", "tier"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


try:  # CPython's own SHA-256: the same digest, a quarter fewer instructions than OpenSSL's for a key's few bytes
    from _sha256 import sha256 as _sha256
except ImportError:  # (named _sha2 from 3.12)
    _sha256 = hashlib.sha256


class KeyConfigError(ValueError):
    """A key source is invalid; the message names entries and fields, never key material."""


def digest(key: str) -> bytes:
    try:
        raw = key.encode()  # (half the instructions of an encode with an error handler)
    except UnicodeEncodeError:  # a header's undecodable bytes, as aiohttp gives them (surrogates)
        raw = key.encode("utf-8", "surrogatepass")
    return _sha256(raw).digest()


def effective_scopes(scopes) -> frozenset:
    out = set(scopes)
    for s in scopes:
        out.update(IMPLIED.get(s, ()))
    return frozenset(out)


@dataclass(frozen=True)
class Key:
    name: str
    digest: bytes = field(repr=False)
    scopes: frozenset
    tier: str | None = None
    source: str = "env"

    def describe(self) -> dict:
        return {"name": self.name, "scopes": sorted(self.scopes), "tier": self.tier, "source": self.source}


def _split(raw: str) -> list[str]:
    return [k.strip() for k in (raw or "").split(",") if k.strip()]


def env_keys(env) -> tuple[Key, ...]:
    """The keys named by API_KEY, ADDITIONAL_API_KEYS and ADMIN_API_KEYS (digests only)."""
    out = []
    op = (env.get("API_KEY") or "").strip()
    if op:
        out.append(Key("operator", digest(op), effective_scopes(("text", "admin")), None, "API_KEY"))
    for i, k in enumerate(_split(env.get("ADDITIONAL_API_KEYS", "")), 1):
        out.append(Key(f"client-{i}", digest(k), frozenset({"text"}), None, "ADDITIONAL_API_KEYS"))
    for i, k in enumerate(_split(env.get("ADMIN_API_KEYS", "")), 1):
        out.append(Key(f"admin-{i}", digest(k), effective_scopes(("admin",)), None, "ADMIN_API_KEYS"))
    _check_unique(out)
    return tuple(out)


def _check_unique(keys: list[Key]) -> None:
    names: dict[str, Key] = {}
    digests: dict[bytes, Key] = {}
    for k in keys:
        if k.name in names:
            raise KeyConfigError(f"two keys are named {k.name!r} ({names[k.name].source} and {k.source})")
        other = digests.get(k.digest)
        if other is not None:
            raise KeyConfigError(f"keys {other.name!r} ({other.source}) and {k.name!r} ({k.source}) are the same key")
        names[k.name] = k
        digests[k.digest] = k


def _yaml_error(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}"  # the parser's own message may quote the line, which may hold a key


def parse_entries(doc, tiers) -> list[Key]:
    """Validate the parsed API_KEYS_FILE document strictly; raises KeyConfigError."""
    if not isinstance(doc, list):
        raise KeyConfigError("must be a YAML list of {name, key | sha256, scopes, tier}")
    out = []
    for i, item in enumerate(doc):
        where = f"entry {i}"
        if not isinstance(item, dict):
            raise KeyConfigError(f"{where}: must be a mapping of {sorted(FILE_FIELDS)}")
        if any(f not in FILE_FIELDS for f in item):  # (not quoted: a misplaced key would land in the log)
            raise KeyConfigError(f"{where}: unknown field; known: {sorted(FILE_FIELDS)}")
        name = item.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise KeyConfigError(f"{where}: name must match {NAME_PATTERN}")
        where = f"entry {i} ({name})"
        if name in RESERVED:
            raise KeyConfigError(f"{where}: the name is reserved ({sorted(RESERVED)})")
        has_key, has_hash = "key" in item, "sha256" in item
        if has_key == has_hash:
            raise KeyConfigError(f"{where}: needs exactly one of key, sha256")
        if has_key:
            if not isinstance(item["key"], str) or not item["key"].strip():
                raise KeyConfigError(f"{where}: key must be a non-empty string")
            d = digest(item["key"].strip())
        else:
            h = item["sha256"]
            if not isinstance(h, str) or not _HEX64.match(h.strip().lower()):
                raise KeyConfigError(f"{where}: sha256 must be 64 hex digits (sha256sum of the key)")
            d = bytes.fromhex(h.strip())
        scopes = item.get("scopes")
        if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
            raise KeyConfigError(f"{where}: scopes must be a non-empty list of {list(SCOPES)}")
        if any(s not in ALL_SCOPES for s in scopes):
            raise KeyConfigError(f"{where}: unknown scope; known: {list(SCOPES)}")
        tier = item.get("tier")
        if tier in ("", "~", "null", "Null", "NULL"):
            tier = None
        if tier is not None and (not isinstance(tier, str) or tier not in tiers):
            raise KeyConfigError(f"{where}: tier must be one of {sorted(tiers)} (rate_limit.client_tier_limits)")
        out.append(Key(name, d, effective_scopes(scopes), tier, "API_KEYS_FILE"))
    return out


def read_file(path: str, tiers) -> list[Key]:
    try:
        with open(path, encoding="utf-8") as fh:
            # every scalar a string: a sha256 of digits only, or a key like `0x1f` or `yes`, stays as written
            doc = yaml.load(fh, Loader=yaml.BaseLoader)
    except OSError as e:
        raise KeyConfigError(f"cannot be read: {e.strerror or type(e).__name__}")
    except UnicodeDecodeError:
        raise KeyConfigError("is not UTF-8 text")
    except yaml.YAMLError as e:
        raise KeyConfigError(_yaml_error(e))
    return parse_entries([] if doc is None else doc, tiers)


def _stamp(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class KeyRing:
    """The configured keys; `authenticate` finds the entry of a presented key."""

    def __init__(self, env_entries: tuple[Key, ...] = (), file_path: str | None = None, tiers=lambda: ()):
        self.env_entries = tuple(env_entries)
        self.file_path = file_path
        self.tiers = tiers
        self.entries: tuple[Key, ...] = self.env_entries
        self.reloads = {"ok": 0, "refused": 0}
        self._stamp = None
        if file_path:
            try:
                self._stamp = _stamp(file_path)
                self.entries = self._combine(read_file(file_path, set(self.tiers())))
            except KeyConfigError as e:
                raise SystemExit(f"refusing to start: API_KEYS_FILE {file_path!r} {e}")

    @property
    def configured(self) -> bool:
        """Keys are required (any source set, even a file that holds no keys right now)."""
        return bool(self.env_entries) or bool(self.file_path)

    def _combine(self, file_entries: list[Key]) -> tuple[Key, ...]:
        out = list(self.env_entries) + file_entries
        _check_unique(out)
        return tuple(out)

    def authenticate(self, presented: str) -> Key | None:
        """The entry whose digest matches; every entry is compared, in constant time each."""
        d = digest(presented)
        found = None
        for k in self.entries:
            if hmac.compare_digest(d, k.digest):
                found = k
        return found

    def names(self) -> list[str]:
        return [k.name for k in self.entries]

    def get(self, name: str) -> Key | None:
        for k in self.entries:
            if k.name == name:
                return k
        return None

    def describe(self) -> list[dict]:
        return [k.describe() for k in self.entries]

    def reload(self) -> bool:
        """Re-read API_KEYS_FILE (SIGHUP).  A bad file keeps the current keys and logs why."""
        if not self.file_path:
            log.info("api keys: SIGHUP without API_KEYS_FILE, nothing to reload")
            return False
        try:
            stamp = _stamp(self.file_path)
            entries = self._combine(read_file(self.file_path, set(self.tiers())))
        except KeyConfigError as e:
            self._stamp = _stamp(self.file_path)
            self.reloads["refused"] += 1
            log.warning("api keys: API_KEYS_FILE reload refused, keeping the current %d key(s): %s",
                        len(self.entries), e, extra={"api_keys_file": self.file_path})
            return False
        before = set(self.names())
        self.entries = entries
        self._stamp = stamp
        after = set(self.names())
        self.reloads["ok"] += 1
        log.info("api keys reloaded", extra={"api_keys": self.describe(), "added": sorted(after - before),
                                             "removed": sorted(before - after)})
        return True

    def reload_if_changed(self) -> bool:
        """Reload when the file changed since it was read (a SIGHUP sent while the process started is lost)."""
        if self.file_path and _stamp(self.file_path) != self._stamp:
            return self.reload()
        return False
