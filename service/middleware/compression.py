"""Response compression (br, gzip, deflate) and compressed request bodies.

Responses: the algorithm is negotiated from Accept-Encoding q-values among
`allowed_algorithms`; on a tie the configured `algorithm` wins, then br,
gzip, deflate.  A body is compressed only when it is at least
`minimum_size`, its content type is not excluded, and the result is
smaller; then Content-Encoding is set and Vary gets Accept-Encoding.  Large
bodies compress in a worker thread.  Everything is measured: bytes in/out
and compression seconds per algorithm and per size band, from which
`average_compression_ratio`, `bandwidth_savings_bytes` and
`cpu_overhead_percentage` (share of the process's CPU time spent
compressing) are computed.

Requests: aiohttp's parser decodes a body sent with Content-Encoding gzip,
deflate or br incrementally as it is read.  This middleware caps the decoded
size at `max_decompressed_size` (and the request_size limit of the content
type, whichever is lower) so a decompression bomb is stopped after that many
bytes with a 413; a body that does not decode as its encoding gets 400
INVALID_CONTENT_ENCODING (service/http.py read_request); unknown encodings
get 415.  `x-gzip` is not among them: aiohttp's parser does not decode it.
"""
from __future__ import annotations

import asyncio
import time
import zlib
from time import perf_counter

import brotli
from aiohttp import web
from aiohttp.hdrs import ACCEPT_ENCODING, CONTENT_ENCODING

from exporter.metrics import COMPRESSION_IN, COMPRESSION_OUT, COMPRESSION_SECONDS, DECOMPRESSION_REJECTIONS
from service.answer import WHOLE
from service.errors import ApiError, safe_field
from service.middleware.security import add_vary
from service.middleware.stack import Layer

NAME = "compression"

ALGORITHMS = ("br", "gzip", "deflate")
REQUEST_ENCODINGS = {"gzip", "deflate", "br", "identity"}  # what aiohttp's parser decodes (and identity)
# size bands (upper bounds, bytes) the stats are kept by; auto-optimize reads them
BANDS = (512, 1024, 2048, 4096, 16384, 65536, 262144, float("inf"))
_TEXTUAL = ("text/", "application/json", "application/javascript", "application/xml", "+json", "+xml")


MAX_CODINGS = 64  # codings of one Accept-Encoding looked at; the rest are ignored


def _qvalue(v: str) -> float:
    """An RFC 9110 qvalue (0 to 1); anything else (nan, inf, 2, -1, junk) counts as 0: not acceptable."""
    try:
        q = float(v)
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 else 0.0


def parse_accept_encoding(header: str) -> dict[str, float]:
    """{coding: q} from an Accept-Encoding header (lower-cased codings, the first MAX_CODINGS)."""
    out: dict[str, float] = {}
    for part in header.split(",", MAX_CODINGS)[:MAX_CODINGS]:
        part = part.strip()
        if not part:
            continue
        coding, _, params = part.partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                q = _qvalue(v.strip())
        out[coding.strip().lower()] = q
    return out


def negotiate(header: str, allowed, preferred: str) -> str | None:
    """The allowed algorithm with the highest q (ties: preferred first); None if none is acceptable."""
    q = parse_accept_encoding(header)
    star = q.get("*")
    order = [preferred] + [a for a in ALGORITHMS if a != preferred]
    best, best_q = None, 0.0
    for alg in order:
        if alg not in allowed:
            continue
        v = q.get(alg, q.get("x-gzip") if alg == "gzip" else None)
        if v is None:
            v = star if star is not None else 0.0
        if v > best_q:
            best, best_q = alg, v
    return best


def compress(alg: str, body: bytes, level: int, textual: bool = True) -> bytes:
    if alg == "gzip":
        c = zlib.compressobj(level, zlib.DEFLATED, 31)  # gzip container, mtime 0
        return c.compress(body) + c.flush()
    if alg == "deflate":
        return zlib.compress(body, level)  # HTTP 'deflate' is the zlib format (RFC 1950)
    if alg == "br":
        return brotli.compress(body, mode=brotli.MODE_TEXT if textual else brotli.MODE_GENERIC, quality=level)
    raise ValueError(alg)


def _band(n: int) -> int:
    for i, edge in enumerate(BANDS):
        if n < edge:
            return i
    return len(BANDS) - 1


class Compression:
    def __init__(self, store):
        self.store = store
        self._negotiated: dict[str, str | None] = {}
        self._excluded: dict[str, bool] = {}
        self.reset_stats()
        self._build()
        store.subscribe(self._on_config)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section in ("compression", "middleware"):
            self._build()

    def _build(self) -> None:
        cfg = self.store.get("compression")
        self.enabled = cfg["enabled"]  # (read by every answer's leave)
        self.lookups = self.store.get("middleware")["lookup_cache_size"]  # bound of the two memos below
        self.preferred = "br" if cfg["algorithm"] == "brotli" else cfg["algorithm"]
        self.allowed = frozenset(cfg["allowed_algorithms"])
        self.exact_excluded = frozenset(t.lower() for t in cfg["exclude_content_types"] if not t.endswith("/*"))
        self.family_excluded = tuple(t[:-1].lower() for t in cfg["exclude_content_types"] if t.endswith("/*"))
        self._negotiated = {}
        self._excluded = {}

    def reset_stats(self) -> None:
        self.started = time.time()
        self.cpu_start = time.process_time()
        self.by_alg = {a: [0, 0, 0, 0.0] for a in ALGORITHMS}    # count, bytes in, bytes out, seconds
        self.bands = [[0, 0, 0, 0.0] for _ in BANDS]            # same, by size band of the input
        self.skipped = {"too_small": 0, "excluded_type": 0, "not_acceptable": 0,
                        "not_smaller": 0, "already_encoded": 0, "streamed": 0}
        self.requests = {"count": 0, "encoded_bytes": 0, "decoded_bytes": 0, "rejected": 0, "unsupported": 0,
                         "undecodable": 0}

    # ---- decisions -----------------------------------------------------------
    def choose(self, accept_encoding: str) -> str | None:
        alg = self._negotiated.get(accept_encoding, "")
        if alg == "":
            alg = negotiate(accept_encoding, self.allowed, self.preferred)
            if len(self._negotiated) >= self.lookups:
                self._negotiated.clear()
            self._negotiated[accept_encoding] = alg
        return alg

    def excluded(self, content_type: str) -> bool:
        ex = self._excluded.get(content_type)
        if ex is None:
            ct = content_type.lower()
            ex = ct in self.exact_excluded or ct.startswith(self.family_excluded)
            if len(self._excluded) >= self.lookups:
                self._excluded.clear()
            self._excluded[content_type] = ex
        return ex

    def maybe_compress(self, resp, accept_encoding: str, cfg: dict):
        """Compress resp's body in place; None, or an awaitable when a large body compresses in a thread."""
        if type(resp) not in WHOLE or resp._status < 200 or resp._status in (204, 304):  # (attributes, not properties)
            self.skipped["streamed"] += 1
            return None
        body = resp._body
        if not isinstance(body, (bytes, bytearray)):
            self.skipped["streamed"] += 1
            return None
        n = len(body)
        if n < cfg["minimum_size"]:
            self.skipped["too_small"] += 1
            return None
        if "Content-Encoding" in resp.headers:
            self.skipped["already_encoded"] += 1
            return None
        ctype = resp.content_type
        if self.excluded(ctype):
            self.skipped["excluded_type"] += 1
            return None
        add_vary(resp, "Accept-Encoding")
        alg = self.choose(accept_encoding)
        if alg is None:
            self.skipped["not_acceptable"] += 1
            return None
        level = cfg["level"]
        textual = ctype.startswith(_TEXTUAL) or ctype.endswith(("+json", "+xml"))
        if n >= cfg["executor_threshold"]:
            return self._in_thread(resp, alg, bytes(body), level, textual)
        t0 = perf_counter()
        out = compress(alg, body, level, textual)
        self._use(resp, alg, n, out, perf_counter() - t0)
        return None

    async def _in_thread(self, resp, alg: str, body: bytes, level: int, textual: bool):
        t0 = perf_counter()
        out = await asyncio.get_running_loop().run_in_executor(None, compress, alg, body, level, textual)
        self._use(resp, alg, len(body), out, perf_counter() - t0)
        return resp

    def _use(self, resp, alg: str, n: int, out: bytes, seconds: float) -> None:
        self._account(alg, n, len(out), seconds)
        if len(out) >= n:
            self.skipped["not_smaller"] += 1
            return
        resp.body = out
        resp.headers["Content-Encoding"] = alg

    def _account(self, alg: str, n_in: int, n_out: int, seconds: float) -> None:
        kept = n_out < n_in
        a = self.by_alg[alg]
        b = self.bands[_band(n_in)]
        for s in (a, b):
            s[0] += 1
            s[1] += n_in
            s[2] += n_out if kept else n_in
            s[3] += seconds
        COMPRESSION_IN.labels(alg).inc(n_in)
        COMPRESSION_OUT.labels(alg).inc(n_out if kept else n_in)
        COMPRESSION_SECONDS.labels(alg).inc(seconds)

    # ---- views ---------------------------------------------------------------
    def stats(self) -> dict:
        count = sum(a[0] for a in self.by_alg.values())
        b_in = sum(a[1] for a in self.by_alg.values())
        b_out = sum(a[2] for a in self.by_alg.values())
        secs = sum(a[3] for a in self.by_alg.values())
        cpu = max(1e-9, time.process_time() - self.cpu_start)
        return {
            "responses_compressed": count - self.skipped["not_smaller"],
            "responses_attempted": count,
            "average_compression_ratio": round(b_out / b_in, 4) if b_in else 1.0,
            "space_saving_ratio": round(1 - b_out / b_in, 4) if b_in else 0.0,
            "bandwidth_savings_bytes": b_in - b_out,
            "bytes_in": b_in, "bytes_out": b_out,
            "compression_seconds": round(secs, 6),
            "average_compression_ms": round(secs / count * 1000, 4) if count else 0.0,
            "cpu_overhead_percentage": round(100 * secs / cpu, 3),
            "process_cpu_seconds": round(cpu, 3),
            "since": self.started,
            "skipped": dict(self.skipped),
            "by_algorithm": {a: {"responses": v[0], "bytes_in": v[1], "bytes_out": v[2],
                                 "ratio": round(v[2] / v[1], 4) if v[1] else None,
                                 "average_ms": round(v[3] / v[0] * 1000, 4) if v[0] else None}
                             for a, v in self.by_alg.items()},
            "by_size": [{"below_bytes": None if e == float("inf") else e, "responses": v[0],
                         "ratio": round(v[2] / v[1], 4) if v[1] else None,
                         "average_ms": round(v[3] / v[0] * 1000, 4) if v[0] else None}
                        for e, v in zip(BANDS, self.bands)],
            "requests": dict(self.requests),
        }


class CompressionLayer(Layer):
    name = NAME

    def __init__(self, comp: Compression, store):
        self.comp = comp
        self.get = store.get

    def enter(self, request):
        """None, or the request's Content-Encoding (the decoded size capped for gzip, deflate, br)."""
        encoding = request._headers.get(CONTENT_ENCODING)
        if encoding is None:
            return None
        encoding = encoding.strip().lower()
        comp = self.comp
        cfg = self.get("compression")
        if encoding not in REQUEST_ENCODINGS or (encoding != "identity" and not cfg["decompress_requests"]):
            comp.requests["unsupported"] += 1
            raise ApiError(415, "UNSUPPORTED_CONTENT_ENCODING",
                           f"request Content-Encoding {safe_field(encoding, 32)!r} is not accepted",
                           {"field": "Content-Encoding",
                            "supported": sorted(REQUEST_ENCODINGS) if cfg["decompress_requests"] else ["identity"]})
        if encoding == "identity":
            return None
        cap = cfg["max_decompressed_size"]
        current = request._client_max_size
        request._client_max_size = min(cap, current) if current else cap  # read() stops at the cap
        comp.requests["count"] += 1
        return encoding

    def leave(self, request, resp, encoding):
        comp = self.comp
        if encoding is not None:
            content = request.content
            comp.requests["encoded_bytes"] += getattr(content, "total_compressed_bytes", None) or 0
            comp.requests["decoded_bytes"] += getattr(content, "total_bytes", 0)
        if comp.enabled:
            ae = request._headers.get(ACCEPT_ENCODING)
            if ae is not None:
                return comp.maybe_compress(resp, ae, self.get("compression"))
        return None

    def fail(self, request, exc, encoding):
        if encoding is None:
            return None
        comp = self.comp
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            comp.requests["rejected"] += 1
            DECOMPRESSION_REJECTIONS.labels(encoding).inc()
            limit = request._client_max_size
            raise ApiError(413, "DECOMPRESSED_BODY_TOO_LARGE",
                           f"decoded request body exceeds the limit of {limit} bytes",
                           {"field": "body", "limit_bytes": limit, "content_encoding": encoding},
                           close=True) from None
        if isinstance(exc, ApiError) and exc.error_code == "INVALID_CONTENT_ENCODING":
            comp.requests["undecodable"] += 1
        return None


def make(ctx):
    comp = ctx.extras.get("compression")
    if comp is None:
        comp = ctx.extras["compression"] = Compression(ctx.store)
    for alg in ALGORITHMS:  # known label values at 0: rate() reads 0 before the first response
        for m in (COMPRESSION_IN, COMPRESSION_OUT, COMPRESSION_SECONDS, DECOMPRESSION_REJECTIONS):
            m.labels(alg)  # (request Content-Encodings are the same three names)
    return CompressionLayer(comp, ctx.store)
