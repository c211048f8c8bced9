"""The middleware stack, outermost first.

1. errors      request id, JSON errors, access log
2. metrics     HTTP RED metrics (sees every status, including errors)
3. security    security headers, CORS
4. auth        API keys
5. admission   admission control / load shedding (503 + Retry-After beyond the queue)
"""
from service.middleware import admission, auth, errors, metrics, security

ORDER = (errors, metrics, security, auth, admission)


def build_stack(ctx) -> list:
    return [m.make(ctx) for m in ORDER]
