"""Cache keys: a hash of the normalized operation, text, options and question.

A key is "<operation>:<hex digest>".  Raw text never goes into a key; the
operation stays readable so invalidation can match it.  The Redis key is
REDIS_PREFIX + key ("{llmapi}:cache:summarize:3f2a...", one cluster slot).

The strategy (normalization flags, digest, metadata) comes from the "cache"
config section; `KeyBuilder.configure` is called on every change of it.
"""
from __future__ import annotations

import hashlib
import json
import unicodedata

from service.providers.base import TextRequest

REDIS_PREFIX = "{llmapi}:cache:"
_SEP = "\x1f"
_SIMPLE = (str, int, float, bool, type(None))


def options_repr(options: dict) -> str:
    """A stable text form of the options (order-independent)."""
    if not options:
        return ""
    if len(options) == 1:
        for k, v in options.items():
            if type(v) in _SIMPLE:
                return f"{k}={v!r}"
    if all(type(v) in _SIMPLE for v in options.values()):
        return "|".join(f"{k}={v!r}" for k, v in sorted(options.items()))
    return json.dumps(options, sort_keys=True, separators=(",", ":"), default=str)


def normalize(text: str, whitespace: bool, case: bool, unicode: bool) -> str:
    if unicode and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if whitespace:
        text = " ".join(text.split())
    if case:
        text = text.casefold()
    return text


def text_tier(length: int, tiers: list[tuple[int, str]]) -> str:
    for bound, name in tiers:
        if length < bound:
            return name
    return "xlarge"


class KeyBuilder:
    def __init__(self, cfg: dict, ai_cfg: dict | None = None):
        self.configure(cfg, ai_cfg)

    def configure(self, cfg: dict, ai_cfg: dict | None = None) -> None:
        on = cfg["enable_normalization"]
        self.ws = on and cfg["normalize_whitespace"]
        self.case = on and cfg["normalize_case"]
        self.nfc = on and cfg["normalize_unicode"]
        self.short = cfg["use_content_hash"]
        ai = ai_cfg or {}
        self.meta = f"{ai.get('provider', '')}/{ai.get('model', '')}" if cfg["include_metadata"] else ""
        self.strategy = {"enable_normalization": on, "normalize_whitespace": self.ws, "normalize_case": self.case,
                         "normalize_unicode": self.nfc, "use_content_hash": self.short,
                         "include_metadata": cfg["include_metadata"],
                         "digest": "blake2b-128" if self.short else "sha256"}

    def key_for(self, req: TextRequest) -> str:
        text = req.text
        q = req.question or ""
        if self.nfc and not text.isascii():
            text = unicodedata.normalize("NFC", text)
        if self.ws and not (text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " "):
            # (a printable text without double, leading or trailing spaces is already normalized:
            # every whitespace character but " " is non-printable)
            text = " ".join(text.split())
        if self.ws:
            if q:
                q = " ".join(q.split())
        if self.case:
            text = text.casefold()
            q = q.casefold()
        head = f"{req.operation}{_SEP}{options_repr(req.options)}{_SEP}{q}{_SEP}{self.meta}{_SEP}"
        if self.short:
            h = hashlib.blake2b(head.encode("utf-8", "surrogatepass"), digest_size=16)
        else:
            h = hashlib.sha256(head.encode("utf-8", "surrogatepass"))
        h.update(text.encode("utf-8", "surrogatepass"))
        return f"{req.operation}:{h.hexdigest()}"


def fingerprint(req: TextRequest) -> bytes:
    """The request under full normalization (whitespace, case, NFC): equal
    fingerprints with different keys are duplicates normalization would remove."""
    text = normalize(req.text, True, True, True)
    q = normalize(req.question or "", True, True, True)
    head = f"{req.operation}{_SEP}{options_repr(req.options)}{_SEP}{q}{_SEP}"
    h = hashlib.blake2b(head.encode("utf-8", "surrogatepass"), digest_size=12)
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.digest()
