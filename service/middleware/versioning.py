"""API version detection for the versioned routes (paths starting /v<digit>).

Sources, tried in the order `detection_strategy` gives (X_first: X, then the
others in the order header, path, query, accept; X alone: only X):

    header  X-API-Version: v2
    path    /v2/text/summarize
    query   ?version=2 (`query_param`)
    accept  Accept: application/vnd.llmapi.v2+json  or  application/json; version=2

"2", "v2", "V2" and "2.0" all name v2; "v2.1" names a minor of v2.  A
version not in `supported_versions` is answered 400 listing the supported
ones, except that with `fallback_enabled` an unsupported minor (v1.3) is
served by its supported major (v1).  Nothing named: `default_version`.

The routes live under /v1.  A request to /v2/... (v2 supported) is routed
to the /v1 handler of the same path and still answered as v2; the rest of
the stack (auth, rate limiting) then sees the /v1 path, so nothing is
bypassed.  Every answer carries X-API-Version; a deprecated version also
carries Deprecation and Sunset.

Detection results are cached (bounded by `cache_size`, expiring after
`cache_ttl`) by the raw inputs; paths under `fast_path_versions` with no
other hint skip even that.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from email.utils import format_datetime

from aiohttp import web
from aiohttp.hdrs import ACCEPT
from multidict import istr

from exporter.metrics import API_VERSION_REQUESTS
from service.context import ROUTE
from service.errors import ApiError, safe_field
from service.middleware.around import inner
from service.middleware.stack import Layer, Rerouted, Wait
from exporter.tally import Tally

NAME = "versioning"

ROUTE_VERSION = "v1"  # the prefix the handlers are registered under
ROUTE_PREFIX = f"/{ROUTE_VERSION}/"
SOURCES = ("header", "path", "query", "accept")
DEFAULT_SOURCE = "default"  # the source label when the request named no version
HEADER = istr("X-API-Version")
_VERSION = re.compile(r"^v?(\d{1,4})(?:\.(\d{1,4}))?$", re.I)
_ACCEPT_VND = re.compile(r"application/vnd\.llmapi\.(v?\d{1,4}(?:\.\d{1,4})?)(?:\+json)?", re.I)
_ACCEPT_PARAM = re.compile(r";\s*(?:api-)?version\s*=\s*\"?(v?\d{1,4}(?:\.\d{1,4})?)\"?", re.I)


def normalize(raw: str) -> tuple[str, str | None] | None:
    """'2' -> ('v2', None); 'v2.1' -> ('v2.1', 'v2'); '2.0' -> ('v2', None); junk -> None."""
    m = _VERSION.match(raw.strip())
    if not m:
        return None
    major = f"v{int(m.group(1))}"
    minor = m.group(2)
    if minor is None or int(minor) == 0:
        return major, None
    return f"{major}.{int(minor)}", major


def order_for(strategy: str) -> tuple[str, ...]:
    if strategy.endswith("_first"):
        first = strategy[:-6]
        return (first,) + tuple(s for s in SOURCES if s != first)
    return (strategy,)


def accept_version(accept: str) -> str | None:
    m = _ACCEPT_VND.search(accept) or _ACCEPT_PARAM.search(accept)
    return m.group(1) if m else None


def sunset_header(value: str) -> str | None:
    if not value:
        return None
    try:
        d = datetime.strptime(value.strip()[:10], "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return format_datetime(d, usegmt=True)


class Versioning:
    def __init__(self, store):
        self.store = store
        self.cache: dict = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.fast_path = 0
        self.counts = Tally(lambda key: API_VERSION_REQUESTS.labels(*key))  # (version, source) -> requests
        self.unsupported = 0
        self.fallbacks = 0
        self.rewrites = 0
        self._build()
        store.subscribe(self._on_config)

    def _on_config(self, section: str, new: dict, old: dict) -> None:
        if section == "versioning":
            self._build()

    def _build(self) -> None:
        cfg = self.store.get("versioning")
        self.enabled = cfg["enabled"]
        self.metrics_enabled = cfg["metrics_enabled"]
        self.order = order_for(cfg["detection_strategy"])
        self.supported = frozenset(cfg["supported_versions"])
        self.supported_list = sorted(self.supported)
        self.default = cfg["default_version"]
        use_path = "path" in self.order
        self.fast = {f"/{v}/": (v, "path", None) for v in cfg["fast_path_versions"]
                     if v in self.supported and use_path}
        self.query_param = cfg["query_param"]
        self.deprecation = {}  # version -> extra headers
        for v, date in cfg["deprecated_versions"].items():
            h = {"Deprecation": "true"}
            sunset = sunset_header(date)
            if sunset:
                h["Sunset"] = sunset
            self.deprecation[v] = h
        self.cache = {}
        self.routes = {}  # fixed route (service/middleware/stack.py) -> its /vN/ fast-path answer and count cell
        if cfg["metrics_enabled"]:  # every (version, source) this config can count, at 0
            for v in self.supported_list:
                for source in self.order:
                    self.counts.child_for((v, source))
            self.counts.child_for((self.default, DEFAULT_SOURCE))

    # ---- detection -------------------------------------------------------------
    def raw_inputs(self, request: web.Request, path: str) -> tuple:
        headers = request.headers
        query = request.query.get(self.query_param) if "?" in request.raw_path else None
        accept = headers.get("Accept")
        if accept is not None and "version" not in accept and "vnd." not in accept:
            accept = None
        return headers.get(HEADER), path[1:].split("/", 1)[0], query, accept

    def detect(self, inputs: tuple) -> tuple[str, str, str | None]:
        """(version, source, requested) or raises ApiError 400."""
        header, seg, query, accept = inputs
        found = {"header": header, "path": seg, "query": query,
                 "accept": accept_version(accept) if accept is not None else None}
        for source in self.order:
            raw = found[source]
            if raw is None or raw == "":
                continue
            norm = normalize(raw)
            if norm is None:
                if source == "path":  # a path like /v1x/... is not a version claim
                    continue
                shown = safe_field(raw, 32)
                raise ApiError(400, "INVALID_API_VERSION", f"{shown!r} is not an API version (use e.g. v1)",
                               {"field": source, "requested": shown, "supported_versions": self.supported_list})
            version, major = norm
            if version in self.supported:
                return version, source, None
            if major is not None and major in self.supported and self.store.get("versioning")["fallback_enabled"]:
                return major, source, version
            raise ApiError(400, "UNSUPPORTED_API_VERSION",
                           f"API version {version} is not supported; supported: {', '.join(self.supported_list)}",
                           {"field": source, "requested": version, "source": source,
                            "supported_versions": self.supported_list, "default_version": self.default})
        return self.default, DEFAULT_SOURCE, None

    def resolve(self, request: web.Request, path: str, cfg: dict) -> tuple[str, str, str | None]:
        inputs = self.raw_inputs(request, path)
        if inputs[0] is None and inputs[2] is None and inputs[3] is None:
            hit = self.fast.get(path[:len(inputs[1]) + 2])
            if hit is not None:
                self.fast_path += 1
                return hit
        if not cfg["enable_caching"]:
            return self.detect(inputs)
        now = time.monotonic()
        hit = self.cache.get(inputs)
        if hit is not None and hit[1] > now:
            self.hits += 1
            return hit[0]
        self.misses += 1
        result = self.detect(inputs)
        if len(self.cache) >= cfg["cache_size"]:
            self.cache.pop(next(iter(self.cache)))
            self.evictions += 1
        self.cache[inputs] = (result, now + cfg["cache_ttl"])
        return result

    def no_hint(self, request: web.Request) -> bool:
        """No version named anywhere but the path: no header, no query string, no Accept naming one."""
        headers = request._headers  # (aiohttp's attributes: see service/middleware/stack.py)
        if HEADER in headers or "?" in request._message.path:
            return False
        accept = headers.get(ACCEPT)
        return accept is None or ("version" not in accept and "vnd." not in accept)

    def route_fast(self, path: str):
        """(the fast-path answer, its count cell or None) of a fixed route's path, or None when it has none."""
        if not _versioned(path):
            return None
        i = path.find("/", 1)
        hit = self.fast.get(path[:i + 1]) if i > 0 else None
        if hit is None:
            return NO_FAST
        return hit, (self.counts.cell((hit[0], hit[1])) if self.metrics_enabled else None)

    def fast_resolve(self, request: web.Request, path: str):
        """The common case without building the cache key: a /vN/ path and no other hint."""
        if not self.no_hint(request):
            return None
        i = path.find("/", 1)
        hit = self.fast.get(path[:i + 1]) if i > 0 else None
        if hit is not None:
            self.fast_path += 1
        return hit

    # ---- re-routing /vN/... onto the /v1 handlers ------------------------------
    async def reroute(self, request: web.Request, path: str):
        """(the request on its /v1 route, that route's handler), or None when /v1 has no such route."""
        rest = path.split("/", 2)[2] if path.count("/") >= 2 else ""
        new = request.clone(rel_url=request.rel_url.with_path(f"{ROUTE_PREFIX}{rest}"))
        app = request.app
        match_info = await app.router.resolve(new)
        if match_info.http_exception is not None:
            return None
        match_info.add_app(app)
        match_info.freeze()
        new._match_info = match_info
        request._match_info = match_info  # the outer layers (metrics) see the real route
        self.rewrites += 1
        return new, inner(match_info.handler)  # (the route's own handler: the stack is already running)

    def stats(self) -> dict:
        total = self.hits + self.misses
        by_version: dict[str, int] = {}
        by_source: dict[str, int] = {}
        counts = self.counts.totals()
        for (v, s), n in counts.items():
            by_version[v] = by_version.get(v, 0) + n
            by_source[s] = by_source.get(s, 0) + n
        return {"requests": sum(counts.values()), "by_version": by_version, "by_source": by_source,
                "path_versions": sorted({v for (v, s) in counts if s == "path"}),
                "unsupported_rejections": self.unsupported, "minor_fallbacks": self.fallbacks,
                "rerouted": self.rewrites, "fast_path": self.fast_path,
                "cache": {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                          "size": len(self.cache), "hit_ratio": round(self.hits / total, 4) if total else None}}


NO_FAST = ("no fast path",)  # a fixed /vN/ route outside fast_path_versions
_UNSEEN = object()


def _versioned(path: str) -> bool:
    """A /v<digit>... path: the ones versioning detects a version for."""
    return len(path) >= 3 and path[1] == "v" and path[2].isdigit()


class VersioningLayer(Layer):
    """The version of a /vN/... request (None for other paths); a supported /vN/ with no route of its
    own is re-routed onto /v1 (the inner layers and the handler then see the /v1 request)."""
    name = NAME

    def __init__(self, ver: Versioning, store):
        self.ver = ver
        self.get = store.get

    def skips(self, path: str, method: str) -> bool:
        return not self.ver.enabled or not _versioned(path)

    def enter(self, request):
        ver = self.ver
        if not ver.enabled:
            return None
        route = request._state.get(ROUTE)
        if route is not None:  # a fixed route: what its path says is looked up once (until the config changes)
            fast = ver.routes.get(route, _UNSEEN)
            if fast is _UNSEEN:
                fast = ver.routes[route] = ver.route_fast(route.resource.canonical)
            if fast is None:
                return None  # not a /vN/ path
            if fast is not NO_FAST and ver.no_hint(request):
                ver.fast_path += 1
                if fast[1] is not None:
                    fast[1][0] += 1
                return fast[0]
        path = request.path
        if not _versioned(path):
            return None
        result = ver.fast_resolve(request, path)
        if result is None:
            try:
                result = ver.resolve(request, path, self.get("versioning"))
            except ApiError:
                ver.unsupported += 1
                raise
            if result[2] is not None:
                ver.fallbacks += 1
        if ver.metrics_enabled:
            ver.counts.add((result[0], result[1]))
        if not path.startswith(ROUTE_PREFIX) and request.match_info.http_exception is not None:
            seg = normalize(path[1:].split("/", 1)[0])
            if seg is not None and seg[0] in ver.supported:
                return Wait(result)
        return result

    async def wait(self, request, result):
        routed = await self.ver.reroute(request, request.path)
        return result if routed is None else Rerouted(routed[0], routed[1], result)

    def leave(self, request, resp, result):
        if result is None:
            return
        if type(result) is Rerouted:
            result = result.state
        h = resp._headers
        version = result[0]
        h[HEADER] = version
        deprecation = self.ver.deprecation
        if deprecation and version in deprecation:
            h.update(deprecation[version])
        if result[2] is not None:
            h["X-API-Version-Requested"] = result[2]


def make(ctx):
    ver = ctx.extras.get("versioning")
    if ver is None:
        ver = ctx.extras["versioning"] = Versioning(ctx.store)
    return VersioningLayer(ver, ctx.store)
