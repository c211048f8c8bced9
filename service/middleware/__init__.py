"""The middleware stack, outermost first.

1. security      security headers on every response (also errors), CORS preflights,
                 starts the sampled timing of the stack (stackperf.py)
2. errors        request id, JSON errors, access log
3. metrics       HTTP RED metrics (sees every status, including errors)
4. request_size  413 by content type from Content-Length, and while the body streams
5. compression   response compression by Accept-Encoding; decoded request bodies capped
6. versioning    API version from header/path/query/Accept; /vN/... served by the /v1 routes
7. auth          API keys
8. rate_limit    per-client limits and the global throttle (needs the client from auth)
9. admission     admission control / load shedding (503 + Retry-After beyond the queue)

Each optional middleware (security headers, cors, request_size, compression,
versioning, rate_limit) has an `enabled` switch in its config section and
passes requests straight through when it is off.  The probed middlewares
(PROBED = True) take part in the per-middleware timing sample; the time of
the others is reported for the group between two probed ones.
"""
from service.middleware import (admission, auth, compression, errors, metrics, rate_limit, request_size, security,
                                versioning)
from service.middleware.stackperf import StackProfiler

ORDER = (security, errors, metrics, request_size, compression, versioning, auth, rate_limit, admission)


def build_stack(ctx) -> list:
    if "stackperf" not in ctx.extras:
        ctx.extras["stackperf"] = StackProfiler(ctx.store, ORDER)
    stack = [m.make(ctx) for m in ORDER]
    # re-routed /vN/... requests run the middlewares inside versioning again on the resolved route
    ctx.extras["versioning"].inner = stack[ORDER.index(versioning) + 1:]
    return stack
