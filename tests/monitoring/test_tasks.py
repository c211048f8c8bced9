"""Background task pool: BACKGROUND_WORKERS, TASK_QUEUE_SIZE, WORKER_TIMEOUT, async_processing."""
from __future__ import annotations

import asyncio

import pytest

from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.errors import ApiError
from service.monitoring.tasks import TaskPool
from tests.helpers import wait_until


async def make(**env):
    store = ConfigStore(SECTIONS, env={k: str(v) for k, v in env.items()})
    pool = TaskPool(store)
    pool.start()
    return store, pool


async def test_env_seeds_workers_queue_and_timeout():
    store, pool = await make(BACKGROUND_WORKERS=2, TASK_QUEUE_SIZE=1, WORKER_TIMEOUT=0.2)
    try:
        running = 0
        peak = 0

        async def job(d):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(d)
            running -= 1
            return d

        a = await pool.submit("t", job, 0.1)
        await asyncio.sleep(0.01)
        b = await pool.submit("t", job, 0.1)
        await asyncio.sleep(0.01)  # both picked up by the two workers
        q = await pool.submit("t", job, 0.1)  # waits in the queue (size 1)
        with pytest.raises(ApiError) as e:
            await pool.submit("t", job, 0.1)
        assert e.value.status == 503 and e.value.headers["Retry-After"]
        assert await a.future == 0.1 and await b.future == 0.1 and await q.future == 0.1
        assert peak == 2
        slow = await pool.submit("t", job, 1.0)
        with pytest.raises(asyncio.TimeoutError):
            await slow.future
        assert slow.state == "timeout"
        st = pool.status()
        assert st["stats"]["completed"] == 3 and st["stats"]["timeout"] == 1 and st["stats"]["rejected"] == 1
    finally:
        await pool.close()


async def _quick():
    await asyncio.sleep(0.01)


async def test_resize_live_and_inline_mode():
    store, pool = await make(BACKGROUND_WORKERS=1)
    try:
        running = 0
        all_running = asyncio.Event()

        async def job():  # each waits until four run at once: one worker alone would never get there
            nonlocal running
            running += 1
            if running == 4:
                all_running.set()
            await all_running.wait()

        recs = [await pool.submit("t", job) for _ in range(4)]
        assert await wait_until(lambda: running >= 1)
        await asyncio.sleep(0.05)
        assert running == 1  # one worker: one job started, three queued
        await store.update("monitoring", {"background_workers": 4})
        await asyncio.wait_for(asyncio.gather(*(r.future for r in recs)), 10)
        assert running == 4 and pool.status()["workers"] == 4
        await store.update("monitoring", {"async_processing": False})
        rec = await pool.submit("t", _quick)
        assert rec.state == "completed" and pool.stats["inline"] == 1
    finally:
        await pool.close()
