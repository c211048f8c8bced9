"""`python -m service`: run the service on HOST:PORT with WORKERS processes.

With WORKERS > 1 this process supervises N workers that share the port
through SO_REUSEPORT, sets PROMETHEUS_MULTIPROC_DIR so /metrics sums
over all of them, hands them one deployment secret (service/secret.py) and
passes SIGHUP (re-read API_KEYS_FILE) on to each.  A worker that refuses its
config before the service ever listened stops them all (exit 2); a later
replacement that refuses (a keys file broken since) is retried every
RESPAWN_RETRY seconds while the others keep serving.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def run_worker() -> None:
    _ignore_sighup()  # until the app's handler (API_KEYS_FILE reload) is installed at start-up
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    from aiohttp import web

    from service.app import create_app, reload_keys_on_sighup
    from service.settings import Settings

    try:
        settings = Settings.from_env()
        app = create_app(settings)
        reload_keys_on_sighup(app)
    except SystemExit as e:  # configuration refused: say why, exit 2 so a supervisor stops
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            sys.exit(2)
        raise
    app.on_startup.append(tune_gc)  # last: after every other start-up step
    app.on_cleanup.append(stop_idle_collector)
    web.run_app(app, host=settings.host, port=settings.port, reuse_port=settings.workers > 1,
                shutdown_timeout=settings.graceful_timeout, keepalive_timeout=settings.keepalive_timeout,
                access_log=None, print=lambda *a: None, handle_signals=True)


# The collector's young generation is collected after this many more tracked allocations than frees
# (CPython's default: 700).  An uncached request holds ~130 tracked objects while it waits for the
# upstream, so at 256 concurrent calls ~35,000 young objects are alive, allocated and freed in waves as
# the answers come back together: with 700 (or 10,000) a wave crossed the threshold every few hundred
# requests and each collection traversed everything in flight again (10,000: 37 collections in 16 s of
# c=256, 29 ms each on average, 99 ms at worst).  The threshold sits above a wave.  What a collection
# would walk at once is what lives, plus what dies in reference cycles: a failed request's traceback
# was such a cycle (~40 objects with its request and response), so after the seed replay's load tests
# one collection at this threshold freed 52,889 objects in 92 ms; service/middleware/stack.py and the
# resilience layer now cut those cycles, and the same replay runs without a single collection.
# The bench (2026-12-02), young threshold against proxy_capacity (c=256):
#     700: 0.71x proxy_floor;  10,000: 0.76x;  50,000: 0.85x
GC_YOUNG_THRESHOLD = 50_000


# While the process is idle (under IDLE_CPU_SHARE of a core over the last IDLE_CHECK_SECONDS), a young
# generation over IDLE_COLLECT_AT is collected then, not later in the middle of a request: with the
# threshold at 50,000 what a busy period left alive (the seed replay: ~38,000 young objects, mostly tuples
# of numbers and strings, which a collection untracks) would otherwise wait for the next burst of traffic
# and cost it one long collection.
IDLE_CHECK_SECONDS = 1.0
IDLE_CPU_SHARE = 0.05
IDLE_COLLECT_AT = 10_000


def idle_collect(cpu_share: float) -> bool:
    """One check: collect the young generation if the process was idle and it holds enough; True if it did.
    The middle one with it when CPython would take it too (10 young collections since its last), so that
    those collections are not left for a busy moment either; the oldest stays CPython's choice."""
    import gc
    if cpu_share >= IDLE_CPU_SHARE or gc.get_count()[0] < IDLE_COLLECT_AT:
        return False
    gc.collect(1 if gc.get_count()[1] >= gc.get_threshold()[1] else 0)
    return True


async def _idle_collector() -> None:
    import asyncio
    last = time.process_time()
    while True:
        await asyncio.sleep(IDLE_CHECK_SECONDS)
        now = time.process_time()
        idle_collect((now - last) / IDLE_CHECK_SECONDS)
        last = time.process_time()


async def tune_gc(app=None) -> None:
    """After start-up: what start-up built (modules, config, metric children, ...) lives as long as the
    process, so it moves to the collector's permanent generation (gc.freeze) and no full collection walks
    it again; the young generation's threshold rises to GC_YOUNG_THRESHOLD, and an idle process collects it
    (idle_collect).  /internal/monitoring/memory-analysis shows both (gc.frozen, gc.thresholds)."""
    import asyncio
    import gc
    gc.freeze()  # O(1): no gc.collect() first, which held start-up (and so listening) for 30-100 ms; it found ~60 objects
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    if app is not None:
        _idle_task[0] = asyncio.get_running_loop().create_task(_idle_collector(), name="gc-idle-collector")


_idle_task: list = [None]


async def stop_idle_collector(app=None) -> None:
    import asyncio
    task, _idle_task[0] = _idle_task[0], None
    if task is not None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


RESPAWN_RETRY = 5.0    # seconds between attempts to replace a worker that refused to start


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # (inherited across exec, unlike a handler)


def _listening(settings) -> bool:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    try:
        with socket.create_connection((host, settings.port), timeout=0.2):
            return True
    except OSError:
        return False


def supervise(settings) -> None:
    workers, shared = settings.workers, settings.redis_url is not None
    if not shared:
        print(f"warning: WORKERS={workers} without REDIS_URL: each worker keeps its own config, cache and rate "
              "limits, so a change through /internal reaches only the worker that answers it; set REDIS_URL to "
              "share them", file=sys.stderr, flush=True)
    from service.secret import ENV as SECRET_ENV, new_secret

    mp_dir = tempfile.mkdtemp(prefix="llmapi-metrics-")
    # one deployment secret for all workers (service/secret.py), even without Redis
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=mp_dir, LLMAPI_WORKER="1", **{SECRET_ENV: new_secret()})
    procs: dict[int, subprocess.Popen] = {}
    up = False                        # the port has answered once: later refusals are not a bad first config
    retry_at: dict[int, float] = {}   # slots waiting to respawn a worker that refused to start
    stopping = False

    def spawn(i: int) -> None:
        # SIGHUP ignored until the worker's own handler is installed: a reload while it starts must not kill it
        procs[i] = subprocess.Popen([sys.executable, "-m", "service"], env=dict(env, WORKER_ID=str(i)),
                                    preexec_fn=_ignore_sighup)

    def stop(signum, frame):
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def reload(signum, frame):  # SIGHUP: every worker re-reads API_KEYS_FILE
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, reload)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(workers):
        spawn(i)
    try:
        while True:
            time.sleep(0.2)
            if stopping:
                if all(p.poll() is not None for p in procs.values()):
                    break
                continue
            now = time.monotonic()
            if not up:
                up = _listening(settings)
            for i, p in list(procs.items()):
                if p.poll() is None:
                    continue
                if p.returncode == 2 and not up:  # refused to start (bad config): do not loop
                    stop(None, None)
                    break
                if p.returncode == 2:
                    # a replacement refused its config (say API_KEYS_FILE was broken after the others loaded it):
                    # the running workers keep serving with what they loaded; retry until the config is fixed
                    if i not in retry_at:
                        print(f"worker {i} refused to start; the others keep serving; retrying every "
                              f"{RESPAWN_RETRY:g} s", file=sys.stderr, flush=True)
                        retry_at[i] = now + RESPAWN_RETRY
                    if now < retry_at[i]:
                        continue
                    retry_at[i] = now + RESPAWN_RETRY
                else:
                    retry_at.pop(i, None)
                spawn(i)
    finally:
        shutil.rmtree(mp_dir, ignore_errors=True)
    sys.exit(max((p.returncode or 0) for p in procs.values()) if any(p.returncode not in (0, -15) for p in procs.values()) else 0)


def main() -> None:
    from service.settings import Settings

    settings = Settings.from_env()
    if settings.workers > 1 and not os.environ.get("LLMAPI_WORKER"):
        supervise(settings)
    else:
        run_worker()


if __name__ == "__main__":
    main()
