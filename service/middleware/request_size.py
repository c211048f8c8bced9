"""Request body limits by content type: json, form, file, streaming.

A declared Content-Length above the limit is refused with 413 before a byte
of the body is read.  For chunked bodies (and for compressed bodies, whose
decoded size the header does not tell) the limit is enforced while the body
is read: the request's read cap (`_client_max_size`, what aiohttp's
read()/post() check as the body streams in) is set to the limit, and the 413
aiohttp raises is turned into the service's error shape.  With
`check_async = false` the body is read and checked here, before the handler,
`chunk_size` bytes at a time: an oversized body is refused once the bytes
read pass the limit, holding at most limit + chunk_size of it.

A Content-Length that understates the body cannot smuggle bytes in: the
HTTP parser reads exactly Content-Length bytes and treats the rest as the
next request (which fails to parse and closes the connection).

Every 413 names the limit and closes the connection, so an unread oversized
body is not drained.
"""
from __future__ import annotations

from time import perf_counter

from aiohttp import web

from exporter.metrics import REQUEST_SIZE_REJECTIONS
from service.errors import ApiError, error_response
from service.http import read_request
from service.middleware.stackperf import SAMPLE, timed_inner

NAME = "request_size"
PROBED = True

CLASSES = ("json", "form", "file", "streaming", "other")
STREAMING_TYPES = {"application/octet-stream", "application/x-ndjson", "application/jsonl", "application/x-jsonlines",
                   "text/event-stream", "application/stream+json"}
LIMIT_FIELD = {"json": "max_json_size", "form": "max_form_size", "file": "max_request_size",
               "streaming": "max_streaming_size", "other": "max_request_size"}


def classify(content_type: str) -> str:
    ct = content_type.split(";", 1)[0].strip().lower()
    if ct == "application/json" or ct.endswith("+json") or ct == "text/json":
        return "json"
    if ct == "application/x-www-form-urlencoded":
        return "form"
    if ct.startswith("multipart/"):
        return "file"
    if ct in STREAMING_TYPES:
        return "streaming"
    if ct == "":
        return "json"  # the text API accepts a body without a content type as JSON
    return "other"


class RequestSize:
    def __init__(self, store):
        self.store = store
        self._classes: dict[str, str] = {}
        self.limits: dict[str, int] = {}
        self.sizes = {c: [0] * 40 for c in CLASSES}      # log2 histogram of accepted body sizes
        self.max_seen = dict.fromkeys(CLASSES, 0)
        self.accepted = dict.fromkeys(CLASSES, 0)
        self.rejected = dict.fromkeys(CLASSES, 0)
        self.rejected_sizes = {c: [] for c in CLASSES}   # last few declared sizes of rejected requests
        self.rejected_streaming = 0
        self.checked = {"bodies": 0, "reads": 0}         # bodies read before the handler, in chunk_size reads
        self._rejection_metric = {c: REQUEST_SIZE_REJECTIONS.labels(c) for c in CLASSES}
        self._build()
        store.subscribe(self._on_config)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section in ("request_size", "middleware"):
            self._build()

    def _build(self) -> None:
        cfg = self.store.get("request_size")
        self.lookups = self.store.get("middleware")["lookup_cache_size"]  # bound of the Content-Type memo
        self.limits = {c: cfg[f] for c, f in LIMIT_FIELD.items()}

    def classify(self, content_type: str) -> str:
        c = self._classes.get(content_type)
        if c is None:
            c = classify(content_type)
            if len(self._classes) >= self.lookups:
                self._classes.clear()
            self._classes[content_type] = c
        return c

    def record(self, cls: str, size: int) -> None:
        self.accepted[cls] += 1
        self.sizes[cls][min(39, size.bit_length())] += 1
        if size > self.max_seen[cls]:
            self.max_seen[cls] = size

    def reject(self, request: web.Request, cls: str, limit: int, declared: int | None, while_reading: bool,
               encoded: bool = False) -> web.Response:
        self.rejected[cls] += 1
        if while_reading:
            self.rejected_streaming += 1
        if declared is not None:
            rs = self.rejected_sizes[cls]
            rs.append(declared)
            if len(rs) > 100:
                del rs[:50]
        self._rejection_metric[cls].inc()
        what = "decoded request body" if encoded else "request body"
        details = {"limit_bytes": limit, "content_class": cls, "field": "body",
                   "checked": "while reading" if while_reading else "Content-Length"}
        if declared is not None:
            details["content_length"] = declared
        resp = error_response(request, 413, "PAYLOAD_TOO_LARGE",
                              f"{what} exceeds the {cls} limit of {limit} bytes", details)
        resp.force_close()  # do not drain what is left of an oversized body
        return resp

    def percentile(self, cls: str, q: float) -> int | None:
        """Upper bound (power of two) of the q-quantile of accepted sizes."""
        hist = self.sizes[cls]
        n = sum(hist)
        if not n:
            return None
        target = q * n
        acc = 0
        for b, c in enumerate(hist):
            acc += c
            if acc >= target:
                return (1 << b) - 1 if b else 0
        return self.max_seen[cls]

    def stats(self) -> dict:
        return {c: {"limit_bytes": self.limits[c], "accepted": self.accepted[c], "rejected": self.rejected[c],
                    "max_seen_bytes": self.max_seen[c], "p99_bytes_upper_bound": self.percentile(c, 0.99)}
                for c in CLASSES}


def make(ctx):
    rs = ctx.extras.get("request_size")
    if rs is None:
        rs = ctx.extras["request_size"] = RequestSize(ctx.store)
    get = ctx.store.get

    @web.middleware
    async def request_size_middleware(request: web.Request, handler):
        rec = SAMPLE.get()
        if rec is not None:
            rec.append(perf_counter())
        cfg = get("request_size")
        headers = request.headers
        cl = headers.get("Content-Length")
        if not cfg["enabled"] or (cl is None and "Transfer-Encoding" not in headers):
            if rec is None:
                return await handler(request)
            resp = await timed_inner(rec, handler, request)
            rec.append(perf_counter())
            return resp
        cls = rs.classify(headers.get("Content-Type", ""))
        limit = rs.limits[cls]
        declared = None
        if cl is not None:
            try:
                declared = int(cl)
            except ValueError:
                raise ApiError(400, "INVALID_CONTENT_LENGTH", "Content-Length is not a number",
                               field="Content-Length")
            if declared > limit:
                return rs.reject(request, cls, limit, declared, False)
        elif not cfg["enable_streaming"]:
            raise ApiError(411, "LENGTH_REQUIRED", "chunked request bodies are not accepted; send Content-Length",
                           {"field": "Content-Length", "limit_bytes": limit})
        request._client_max_size = limit  # aiohttp's read()/post() enforce it as the body streams in
        try:
            if not cfg["check_async"]:
                rs.checked["bodies"] += 1
                await read_request(request, cfg["chunk_size"], rs.checked)
            resp = await handler(request) if rec is None else await timed_inner(rec, handler, request)
        except web.HTTPRequestEntityTooLarge:
            return rs.reject(request, cls, request._client_max_size, declared, True,
                             encoded="Content-Encoding" in headers)
        if declared is not None:
            rs.record(cls, declared)
        elif request._read_bytes is not None:
            rs.record(cls, len(request._read_bytes))
        if rec is not None:
            rec.append(perf_counter())
        return resp

    return request_size_middleware
