"""The middleware stack, outermost first.

1. security      security headers on every response (also errors), CORS preflights
2. errors        request id, JSON errors, access log
3. metrics       HTTP RED metrics (sees every status, including errors)
4. request_size  413 by content type from Content-Length, and while the body streams
5. compression   response compression by Accept-Encoding; decoded request bodies capped
6. versioning    API version from header/path/query/Accept; /vN/... served by the /v1 routes
7. auth          API keys
8. rate_limit    per-client limits and the global throttle (needs the client from auth)
9. admission     admission control / load shedding (503 + Retry-After beyond the queue)

Each module's layer (service/middleware/stack.py: enter, leave, fail) runs
inside one aiohttp middleware, in this order on the way in and the reverse
on the way out.  Each optional layer (security headers, cors, request_size,
compression, versioning, rate_limit) has an `enabled` switch in its config
section and passes requests straight through when it is off.  Every layer's
own time is sampled (service/middleware/stackperf.py).
"""
from service.middleware import (admission, auth, compression, errors, metrics, rate_limit, request_size, security,
                                stack, versioning)
from service.middleware.stackperf import StackProfiler

ORDER = (security, errors, metrics, request_size, compression, versioning, auth, rate_limit, admission)


def build_layers(ctx) -> list:
    """Every module's layer, in ORDER; their domain objects land in ctx (ctx.extras, ctx.ratelimiter, ...)."""
    return [m.make(ctx) for m in ORDER]


def build_stack(ctx, only: tuple[str, ...] | None = None) -> list:
    """The app's middlewares: one, running the layers (`only`: those named, for bench/stackless.py)."""
    if "stackperf" not in ctx.extras:
        ctx.extras["stackperf"] = StackProfiler(ctx.store, ORDER)
    layers = build_layers(ctx)
    if only is not None:
        layers = [layer for layer in layers if layer.name in only]
    return [stack.build(layers, ctx.extras["stackperf"])]
