"""The service with only its errors middleware: the baseline for the whole-stack cost.

bench/middleware.py (scenario middleware_stack_whole) drives this process and
the full service alternately.  The text handlers need the request id the
errors middleware sets, so that one stays; security, metrics, request_size,
compression, versioning, auth, rate_limit and admission are left out.  Every
middleware's state is still built (other components read it), only the
request path skips them.
"""
from __future__ import annotations

from service import app as service_app
from service import middleware


def errors_only(ctx) -> list:
    return middleware.build_stack(ctx, only=("errors",))


def main() -> None:
    service_app.build_stack = errors_only
    from service.__main__ import run_worker
    run_worker()


if __name__ == "__main__":
    main()
