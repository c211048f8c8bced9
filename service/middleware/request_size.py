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

from aiohttp import web
from aiohttp.hdrs import CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING

from exporter.metrics import REQUEST_SIZE_REJECTIONS
from service.errors import ApiError
from service.http import read_request
from service.middleware.stack import Layer, Wait

NAME = "request_size"

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
        self.lookups = self.store.get("middleware")["lookup_cache_size"]  # bound of the two memos
        self.limits = {c: cfg[f] for c, f in LIMIT_FIELD.items()}
        self.enabled, self.streaming, self.check_async = cfg["enabled"], cfg["enable_streaming"], cfg["check_async"]
        self.lengths: dict[str, int] = {}  # Content-Length value -> its number (int() costs 1,100 instructions)
        self.classes: dict[str, tuple[str, int]] = {}  # Content-Type value -> (its class, the class's limit)

    def classify(self, content_type: str) -> tuple[str, int]:
        """(the content class, its limit) of a Content-Type value, memoised until the config changes."""
        c = self.classes.get(content_type)
        if c is None:
            cls = classify(content_type)
            c = (cls, self.limits[cls])
            if len(self.classes) >= self.lookups:
                self.classes.clear()
            self.classes[content_type] = c
        return c

    def length(self, value: str) -> int:
        """A Content-Length header's number (aiohttp's parser accepts only digits there), memoised."""
        try:
            n = int(value)
        except ValueError:
            raise ApiError(400, "INVALID_CONTENT_LENGTH", "Content-Length is not a number",
                           field="Content-Length") from None
        if len(self.lengths) >= self.lookups:
            self.lengths.clear()
        self.lengths[value] = n
        return n

    def record(self, cls: str, size: int) -> None:
        self.accepted[cls] += 1
        b = size.bit_length()
        self.sizes[cls][b if b < 40 else 39] += 1  # (min() costs 1,000 instructions)
        if size > self.max_seen[cls]:
            self.max_seen[cls] = size

    def reject(self, cls: str, limit: int, declared: int | None, while_reading: bool,
               encoded: bool = False) -> ApiError:
        """The 413 to raise (counted); it closes the connection: what is left of the body is not drained."""
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
        return ApiError(413, "PAYLOAD_TOO_LARGE", f"{what} exceeds the {cls} limit of {limit} bytes", details,
                        close=True)

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


class RequestSizeLayer(Layer):
    name = NAME

    def __init__(self, rs: RequestSize, store):
        self.rs = rs
        self.get = store.get

    def enter(self, request):
        """None (not checked) or (content class, declared length or None); Wait when the body is read here."""
        rs = self.rs
        headers = request._headers  # (aiohttp's attribute behind `headers`: see service/middleware/stack.py)
        cl = headers.get(CONTENT_LENGTH)
        if not rs.enabled or (cl is None and TRANSFER_ENCODING not in headers):
            return None
        ct = headers.get(CONTENT_TYPE, "")
        cls, limit = rs.classes.get(ct) or rs.classify(ct)
        declared = None
        if cl is not None:
            declared = rs.lengths.get(cl)
            if declared is None:
                declared = rs.length(cl)
            if declared > limit:
                raise rs.reject(cls, limit, declared, False)
        elif not rs.streaming:
            raise ApiError(411, "LENGTH_REQUIRED", "chunked request bodies are not accepted; send Content-Length",
                           {"field": "Content-Length", "limit_bytes": limit})
        request._client_max_size = limit  # aiohttp's read()/post() enforce it as the body streams in
        if not rs.check_async:
            return Wait((cls, declared, self.get("request_size")["chunk_size"]))
        return cls, declared

    async def wait(self, request, state):
        """check_async off: the body is read here, chunk_size bytes at a time, before the handler."""
        cls, declared, chunk_size = state
        self.rs.checked["bodies"] += 1
        try:
            await read_request(request, chunk_size, self.rs.checked)
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large(request, cls, declared) from None
        return cls, declared

    def leave(self, request, resp, state):
        if state is not None:
            cls, declared = state
            if declared is not None:
                self.rs.record(cls, declared)
            elif request._read_bytes is not None:
                self.rs.record(cls, len(request._read_bytes))

    def fail(self, request, exc, state):
        if state is not None and isinstance(exc, web.HTTPRequestEntityTooLarge):
            raise self._too_large(request, state[0], state[1]) from None

    def _too_large(self, request, cls: str, declared: int | None) -> ApiError:
        return self.rs.reject(cls, request._client_max_size, declared, True,
                              encoded="Content-Encoding" in request.headers)


def make(ctx):
    rs = ctx.extras.get("request_size")
    if rs is None:
        rs = ctx.extras["request_size"] = RequestSize(ctx.store)
    return RequestSizeLayer(rs, ctx.store)
