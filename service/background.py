"""Stopping the background tasks a part of the process owns.

`cancel_and_wait` is how every owner stops its tasks: cancelled, then awaited,
so nothing still runs (or logs "Task was destroyed but it is pending") once
its owner's close() returned.  (The one pub/sub follower is
service/redis_client.py:follow.)
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Future | None]) -> None:
    """Cancel every task and wait until each has finished; their errors are dropped.

    A cancellation of the caller itself still propagates."""
    live = [t for t in tasks if t is not None]
    for t in live:
        t.cancel()
    if live:
        await asyncio.gather(*live, return_exceptions=True)
