"""The fake upstream as users run it: a real subprocess, controlled over HTTP."""
from __future__ import annotations

import subprocess
import sys

import aiohttp
import pytest

from service.providers.fake_upstream import FakeUpstream

from .helpers import TEXT, get_json

PROMPTLESS = {"model": "any", "messages": [{"role": "user", "content": TEXT}]}


@pytest.fixture
def proc_upstream():
    p = subprocess.Popen([sys.executable, "-m", "service.providers.fake_upstream", "--host", "127.0.0.1",
                          "--port", "0", "--latency-ms", "20", "--error-rate", "0", "--error-status", "429",
                          "--retry-after", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), (line, p.stderr.read() if p.poll() else "")
        yield line.split("listening on ", 1)[1]
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def test_subprocess_serves_controls_and_counts(proc_upstream):
    url = proc_upstream
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/v1/chat/completions", json=PROMPTLESS) as r:
            assert r.status == 200
            body = await r.json()
        assert body["object"] == "chat.completion"
        content = body["choices"][0]["message"]["content"]
        # a free-form prompt gets a plain extractive summary of the message
        assert content.startswith("Machine learning is a field") and len(content) < len(TEXT)
        u = body["usage"]
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0
        # live control: every call now fails with the start-up status and Retry-After
        async with s.post(f"{url}/_control", json={"error_rate": 1.0}) as r:
            assert (await r.json())["error_rate"] == 1.0
        async with s.post(f"{url}/v1/chat/completions", json=PROMPTLESS) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "3"
            assert (await r.json())["error"]["type"] == "rate_limit_exceeded"
        st = await get_json(f"{url}/_stats")
        assert st["calls"] == 2 and st["errors"] == 1 and st["in_flight"] == 0 and st["max_in_flight"] == 1
        async with s.post(f"{url}/_reset") as r:
            assert (await r.json())["settings"]["error_rate"] == 0
        assert (await get_json(f"{url}/_stats"))["calls"] == 0
        async with s.post(f"{url}/v1/chat/completions", json=PROMPTLESS) as r:
            assert r.status == 200


async def test_control_rejects_bad_settings(upstream):
    async with aiohttp.ClientSession() as s:
        for bad in ({"error_rate": 2}, {"latency_ms": -1}, {"mode": "nope"}, {"error_status": 200},
                    {"unknown": 1}, {"latency_ms": "fast"}, [1, 2]):
            async with s.post(f"{upstream.url}/_control", json=bad) as r:
                assert r.status == 400, bad
        assert (await get_json(f"{upstream.url}/_control"))["error_rate"] == 0


async def test_bad_chat_requests_are_400(upstream):
    async with aiohttp.ClientSession() as s:
        for body in ({"messages": []}, {"model": "x"}, {"messages": [{"role": "user", "content": "hi"}],
                                                        "stream": True}):
            async with s.post(f"{upstream.url}/v1/chat/completions", json=body) as r:
                assert r.status == 400
        async with s.post(f"{upstream.url}/v1/chat/completions", data=b"{not json") as r:
            assert r.status == 400


async def test_jitter_and_latency_delay_answers(upstream):
    import time
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{upstream.url}/_control", json={"latency_ms": 100, "jitter_ms": 50, "seed": 1}):
            pass
        t0 = time.monotonic()
        async with s.post(f"{upstream.url}/v1/chat/completions", json=PROMPTLESS) as r:
            assert r.status == 200
        assert time.monotonic() - t0 >= 0.1


async def test_models_lists_the_fake_model():
    async with FakeUpstream() as up:
        d = await get_json(f"{up.base_url}/models")
        assert d["data"][0]["id"].startswith("fake-")
