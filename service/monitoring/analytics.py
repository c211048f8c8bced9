"""Per-route request analytics, fed by the metrics middleware.

The hot path (`RequestAnalytics.record`) does a dict lookup, a few additions
and two C-level bisects into fixed bucket tables; nothing allocates once a
route has been seen.  Every snapshot interval the live accumulators are
swapped for fresh ones and turned into a plain, JSON-able, mergeable dict:

    {"n", "sum", "max", "lat": {bucket: count}, "status": {code: count},
     "req_n", "req_sum", "req": {bucket: count}, "resp_n", "resp_sum", "resp": {bucket: count}}

Latency buckets are geometric (8 % wide), so a quantile read back from them is
within 4 % of the exact value; histograms of any number of snapshots merge by
adding counts, which is what makes every time-window query exact up to that.
"""
from __future__ import annotations

from bisect import bisect_left

# latency bucket upper edges, seconds: 50 us .. ~150 s, 8 % apart
LAT_EDGES: tuple[float, ...] = tuple(50e-6 * 1.08 ** i for i in range(195))
# payload size bucket upper edges, bytes
SIZE_EDGES: tuple[int, ...] = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
SIZE_LABELS: tuple[str, ...] = ("<=64B", "<=256B", "<=1KiB", "<=4KiB", "<=16KiB", "<=64KiB", "<=256KiB",
                                "<=1MiB", "<=4MiB", "<=16MiB", ">16MiB")


class RouteAcc:
    """One (method, route)'s live interval.  The request counts (n, req_n, resp_n) are not kept apart: each is
    the sum of its histogram, worked out when the interval is read (to_dict)."""
    __slots__ = ("sum", "max", "lat", "status", "req_sum", "req", "resp_sum", "resp")

    def __init__(self):
        self.sum = 0.0
        self.max = 0.0
        self.lat = [0] * (len(LAT_EDGES) + 1)
        self.status: dict[int, int] = {}
        self.req_sum = 0
        self.req = [0] * (len(SIZE_EDGES) + 1)
        self.resp_sum = 0
        self.resp = [0] * (len(SIZE_EDGES) + 1)

    def to_dict(self) -> dict:
        return {"n": sum(self.lat), "sum": self.sum, "max": self.max,
                "lat": {str(i): c for i, c in enumerate(self.lat) if c},
                "status": {str(k): v for k, v in self.status.items()},
                "req_n": sum(self.req), "req_sum": self.req_sum,
                "req": {str(i): c for i, c in enumerate(self.req) if c},
                "resp_n": sum(self.resp), "resp_sum": self.resp_sum,
                "resp": {str(i): c for i, c in enumerate(self.resp) if c}}


class RequestAnalytics:
    """Live accumulators for the current snapshot interval.  `gen` counts the intervals: a caller holding
    an accumulator (acc()) takes a fresh one when it changed."""

    def __init__(self):
        self.routes: dict[tuple, RouteAcc] = {}
        self.ops: dict[str, int] = {}
        self.gen = 0

    def acc(self, method: str, route: str) -> RouteAcc:
        """The live accumulator of (method, route) in this interval."""
        key = (method, route)
        acc = self.routes.get(key)
        if acc is None:
            acc = self.routes[key] = RouteAcc()
        return acc

    def record(self, route: str, method: str, status: int, elapsed: float,
               req_bytes: int | None, resp_bytes: int | None, operation: str | None = None) -> None:
        add(self.acc(method, route), status, elapsed, req_bytes, resp_bytes)
        if operation is not None:
            self.ops[operation] = self.ops.get(operation, 0) + 1

    def peek(self) -> tuple[dict, dict]:
        """The live interval as snapshot dicts, without resetting."""
        return ({f"{m} {r}": acc.to_dict() for (m, r), acc in list(self.routes.items())}, dict(self.ops))

    def swap(self) -> tuple[dict, dict]:
        """End the interval: return it as snapshot dicts and start a new one."""
        routes, ops = self.routes, self.ops
        self.routes, self.ops = {}, {}
        self.gen += 1
        return ({f"{m} {r}": acc.to_dict() for (m, r), acc in routes.items()}, ops)


def add(acc: RouteAcc, status: int, elapsed: float, req_bytes: int | None, resp_bytes: int | None,
        i: int | None = None) -> None:
    """One request into an accumulator (`i`: its latency bucket, bisect_left(LAT_EDGES, elapsed), if known)."""
    acc.sum += elapsed
    if elapsed > acc.max:
        acc.max = elapsed
    acc.lat[bisect_left(LAT_EDGES, elapsed) if i is None else i] += 1
    st = acc.status
    st[status] = st.get(status, 0) + 1
    if req_bytes is not None:
        acc.req_sum += req_bytes
        acc.req[bisect_left(SIZE_EDGES, req_bytes)] += 1
    if resp_bytes is not None:
        acc.resp_sum += resp_bytes
        acc.resp[bisect_left(SIZE_EDGES, resp_bytes)] += 1


def bucket_map(bounds) -> tuple:
    """For each latency bucket of LAT_EDGES, the index of the bucket of `bounds` (a Prometheus histogram's
    upper bounds, +Inf last) that holds every value of it, or -1 when a bound splits it: then
    bisect_left(bounds, x) == table[bisect_left(LAT_EDGES, x)] for every x whose entry is not -1."""
    edges = (float("-inf"), *LAT_EDGES, float("inf"))
    return tuple(-1 if any(lo < b < hi for b in bounds) else sum(b <= lo for b in bounds)
                 for lo, hi in zip(edges, edges[1:]))


# ---- reading the dicts back --------------------------------------------
def merge_route(into: dict, add: dict) -> dict:
    if not into:
        into.update({"n": 0, "sum": 0.0, "max": 0.0, "lat": {}, "status": {}, "req_n": 0, "req_sum": 0, "req": {},
                     "resp_n": 0, "resp_sum": 0, "resp": {}})
    for k in ("n", "sum", "req_n", "req_sum", "resp_n", "resp_sum"):
        into[k] += add.get(k, 0)
    into["max"] = max(into["max"], add.get("max", 0.0))
    for k in ("lat", "status", "req", "resp"):
        d = into[k]
        for b, c in add.get(k, {}).items():
            d[b] = d.get(b, 0) + c
    return into


def quantile(hist: dict, q: float, vmax: float | None = None) -> float | None:
    """Quantile (seconds) of a sparse latency histogram {bucket: count}."""
    if not hist:
        return None
    items = sorted((int(b), c) for b, c in hist.items())
    total = sum(c for _, c in items)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for b, c in items:
        if seen + c >= rank:
            hi = LAT_EDGES[b] if b < len(LAT_EDGES) else LAT_EDGES[-1] * 1.08
            lo = LAT_EDGES[b - 1] if b > 0 else 0.0
            frac = (rank - seen) / c if c else 1.0
            # geometric interpolation inside the bucket (linear for the first one)
            v = lo * (hi / lo) ** frac if lo > 0 else hi * frac
            if vmax is not None and vmax > 0:
                v = min(v, vmax)
            return v
        seen += c
    return vmax


def size_summary(hist: dict, n: int, total: int) -> dict:
    buckets = {SIZE_LABELS[int(b)]: c for b, c in sorted(hist.items(), key=lambda x: int(x[0]))}
    return {"count": n, "total_bytes": total, "avg_bytes": round(total / n, 1) if n else 0.0,
            "distribution": buckets}


def route_summary(d: dict, seconds: float | None = None) -> dict:
    n = d.get("n", 0)
    vmax = d.get("max", 0.0)
    status = d.get("status", {})
    e5 = sum(c for s, c in status.items() if s.startswith("5"))
    e4 = sum(c for s, c in status.items() if s.startswith("4"))

    def ms(v):
        return None if v is None else round(v * 1000, 3)

    out = {"requests": n,
           "avg_ms": ms(d["sum"] / n) if n else None,
           "p50_ms": ms(quantile(d.get("lat", {}), 0.50, vmax)),
           "p95_ms": ms(quantile(d.get("lat", {}), 0.95, vmax)),
           "p99_ms": ms(quantile(d.get("lat", {}), 0.99, vmax)),
           "max_ms": ms(vmax) if n else None,
           "error_rate": round(e5 / n, 6) if n else 0.0,
           "client_error_rate": round(e4 / n, 6) if n else 0.0,
           "status": dict(sorted(status.items()))}
    if seconds:
        out["requests_per_second"] = round(n / seconds, 4)
    return out

