"""OpenAIProvider against the fake upstream over real loopback HTTP."""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time

import pytest

from service.providers import OpenAIProvider
from service.providers.base import ProviderError, ProviderResult, TextRequest
from service.providers.fake_upstream import FakeUpstream
from service.providers.local import LocalProvider
from service.providers.openai_compat import _CallParts, build_prompt, chat_body, parse_prompt

from .helpers import TEXT, control, get_json, reset

KEY = "sk-test-secret-0123456789"
OPS = [TextRequest("summarize", TEXT, {"max_length": 40}),
       TextRequest("sentiment", "I love this phone, the camera is excellent."),
       TextRequest("key_points", TEXT, {"max_points": 3}),
       TextRequest("questions", TEXT, {"num_questions": 4}),
       TextRequest("qa", TEXT, {}, "Who coined the name machine learning?")]


@pytest.fixture
async def provider(openai_store):
    p = OpenAIProvider(openai_store, env={"OPENAI_API_KEY": KEY})
    yield p
    await p.close()


async def stats(up):
    return await get_json(f"{up.url}/_stats")


async def failure(p, req=OPS[0]) -> ProviderError:
    with pytest.raises(ProviderError) as e:
        await p.process(req)
    return e.value


# ---- success ----------------------------------------------------------------------
async def test_every_operation_matches_the_local_answer(provider, upstream):
    local = LocalProvider()
    for req in OPS:
        r = await provider.process(req)
        assert isinstance(r, ProviderResult) and r.provider == "openai"
        assert r.payload == local.run(req).payload, req.operation
    assert (await stats(upstream))["calls"] == len(OPS)


async def test_token_usage_is_recorded_from_the_usage_field(provider, upstream):
    r1 = await provider.process(OPS[0])
    r2 = await provider.process(OPS[2])
    for r in (r1, r2):
        assert r.tokens["prompt"] > 0 and r.tokens["completion"] > 0
        assert r.tokens["total"] == r.tokens["prompt"] + r.tokens["completion"]
    # the fake counts ~4/3 tokens per word of every message: prompt tokens exceed the text's
    assert r1.tokens["prompt"] > len(TEXT.split())
    assert provider.usage["calls"] == 2
    assert provider.usage["total"] == r1.tokens["total"] + r2.tokens["total"]
    assert provider.usage["prompt"] == r1.tokens["prompt"] + r2.tokens["prompt"]


async def test_request_carries_model_temperature_json_mode_and_key(provider, upstream, openai_store):
    await provider.process(OPS[1])
    last = await get_json(f"{upstream.url}/_last")
    body = last["body"]
    assert last["authorization"] is True
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.0
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "system" and "JSON" in body["messages"][0]["content"]
    assert "JSON object" in body["messages"][1]["content"]
    # live: the next call uses the new values
    await openai_store.update("ai", {"model": "other-model", "temperature": 0.7})
    r = await provider.process(OPS[1])
    body = (await get_json(f"{upstream.url}/_last"))["body"]
    assert body["model"] == "other-model" and body["temperature"] == 0.7
    assert r.model == "other-model"


async def test_no_key_no_authorization_header(openai_store, upstream):
    p = OpenAIProvider(openai_store, env={})
    try:
        await p.process(OPS[1])
        assert (await get_json(f"{upstream.url}/_last"))["authorization"] is False
    finally:
        await p.close()


@pytest.mark.parametrize("json_mode", [True, False])
def test_the_rendered_body_is_the_json_of_the_chat_request(json_mode):
    ai = {"base_url": "http://upstream/v1/", "model": 'm "quoted" \\ é', "temperature": 0.25,
          "timeout_seconds": 30.0, "pool_timeout": 5.0}
    parts = _CallParts(ai, json_mode)
    assert (parts.total, parts.connect) == (30.0, 5.0)
    for prompt in (build_prompt(OPS[4]), 'quotes " \\ \x00 \n \u2713 é', ""):
        assert parts.body(prompt) == json.dumps(chat_body(ai["model"], 0.25, prompt, json_mode)).encode()


def test_prompt_round_trip():
    for req in OPS:
        back = parse_prompt(build_prompt(req))
        assert back == req
    tricky = TextRequest("qa", "Text:\n<<<\nnested >>> markers\n>>>", {}, "what about >>> this?")
    assert parse_prompt(build_prompt(tricky)) == tricky


# ---- failures -> kinds ------------------------------------------------------------
async def test_latency_above_timeout_is_a_timeout(provider, upstream, openai_store):
    await control(upstream.url, latency_ms=600)  # (the call would succeed after it: the failure is the timeout's)
    await openai_store.update("ai", {"timeout_seconds": 0.15})
    e = await failure(provider)
    assert e.kind == "timeout" and e.retryable and "timed out after 0.15s" in str(e)
    # the timeout is read live: a longer one lets the same call succeed
    await openai_store.update("ai", {"timeout_seconds": 3.0})
    assert (await provider.process(OPS[0])).payload["result"]


async def test_a_callers_deadline_bounds_the_call_as_a_plain_timeout(provider, upstream, openai_store):
    """process(req, until=...) (the resilience layer's attempt deadline): past it a plain TimeoutError, which
    the caller words itself, and the connection is not reused; past timeout_seconds first, ProviderError."""
    await control(upstream.url, latency_ms=600)
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError) as ei:  # (the call would succeed after 600 ms: the deadline ended it)
        await provider.process(OPS[0], until=loop.time() + 0.15)
    assert not isinstance(ei.value, ProviderError)
    assert provider.usage["errors"] == 0  # not the provider's failure: the caller gave up
    assert provider._pool.inflight == 0 and provider._pool.wire.used == 0 and not provider._pool.wire._idle
    await openai_store.update("ai", {"timeout_seconds": 0.15})
    with pytest.raises(ProviderError) as ep:  # its own bound is the earlier one
        await provider.process(OPS[0], until=loop.time() + 3.0)
    assert ep.value.kind == "timeout" and "timed out after 0.15s" in str(ep.value)
    await openai_store.update("ai", {"timeout_seconds": 3.0})
    assert (await provider.process(OPS[0], until=loop.time() + 2.0)).payload["result"]


def test_the_prompt_reads_each_operations_option_or_its_default():
    assert "at most 7 words" in build_prompt(TextRequest("summarize", "t", {"max_length": 7}))
    for bad in (None, {}, {"max_length": 0}, {"max_length": True}, {"max_length": "7"}):
        assert "at most 100 words" in build_prompt(TextRequest("summarize", "t", bad))
    assert "at most 3 key points" in build_prompt(TextRequest("key_points", "t", {"max_points": 3.9}))
    assert "Write 5 distinct" in build_prompt(TextRequest("questions", "t", {"num_questions": -1}))
    qa = build_prompt(TextRequest("qa", "the text", {}, "why?"))
    assert qa.startswith("Task: qa\nAnswer the question") and "Question:\n<<<\nwhy?\n>>>\nText:\n<<<\nthe text\n>>>" in qa


async def test_429_with_retry_after_seconds(provider, upstream):
    await control(upstream.url, error_rate=1.0, error_status=429, retry_after=7)
    e = await failure(provider)
    assert e.kind == "rate_limited" and e.status == 429 and e.retryable
    assert e.retry_after == 7.0


async def test_429_with_retry_after_http_date(provider, upstream):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    await control(upstream.url, error_rate=1.0, error_status=429, retry_after=when)
    e = await failure(provider)
    assert e.kind == "rate_limited"
    assert 25 <= e.retry_after <= 31


async def test_429_without_retry_after(provider, upstream):
    await control(upstream.url, error_rate=1.0, error_status=429)
    e = await failure(provider)
    assert e.kind == "rate_limited" and e.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_server(provider, upstream, status):
    await control(upstream.url, error_rate=1.0, error_status=status)
    e = await failure(provider)
    assert e.kind == "server" and e.status == status and e.retryable
    assert f"injected error {status}" in str(e)


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_other_4xx_is_client(provider, upstream, status):
    await control(upstream.url, error_rate=1.0, error_status=status)
    e = await failure(provider)
    assert e.kind == "client" and e.status == status and not e.retryable


async def test_wrong_key_is_client_and_never_logged(openai_store, caplog):
    async with FakeUpstream(api_key="the-right-key") as up:
        await openai_store.update("ai", {"base_url": up.base_url})
        p = OpenAIProvider(openai_store, env={"OPENAI_API_KEY": KEY})
        try:
            with caplog.at_level(logging.DEBUG):
                e = await failure(p)
                h = await p.health()
            assert e.kind == "client" and e.status == 401
            assert h["status"] == "unhealthy"
            assert KEY not in caplog.text and KEY not in repr(p) and KEY not in str(h)
        finally:
            await p.close()


async def test_refused_connection_is_connection(openai_store):
    async with FakeUpstream() as up:
        dead = up.base_url
    await openai_store.update("ai", {"base_url": dead})
    p = OpenAIProvider(openai_store, env={})
    try:
        e = await failure(p)
        assert e.kind == "connection" and e.retryable
        pool = p.pool_info()  # the slot was taken (an acquisition that waited for nothing) and given back
        assert pool["acquisitions"] == 1 and pool["queued"] == 0 and pool["in_use"] == 0 and pool["waiting"] == 0
        h = await p.health()
        assert h["status"] == "degraded" and "unreachable" in h["detail"]
    finally:
        await p.close()


# ---- tolerant parsing ---------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fenced", "plain"])
async def test_fenced_and_plain_answers_parse(provider, upstream, mode):
    await control(upstream.url, mode=mode)
    local = LocalProvider()
    for req in OPS:
        got = (await provider.process(req)).payload
        want = local.run(req).payload
        if req.operation == "sentiment" and mode == "plain":
            assert got["sentiment"]["label"] == want["sentiment"]["label"]
            assert got["sentiment"]["confidence"] == want["sentiment"]["confidence"]
            assert "excellent" in got["sentiment"]["explanation"]
        else:
            assert got == want, (mode, req.operation)


@pytest.mark.parametrize("mode", ["garbage", "no_choices", "not_json"])
async def test_unusable_answers_are_parse_errors(provider, upstream, mode):
    await control(upstream.url, mode=mode)
    for req in OPS:
        e = await failure(provider, req)
        assert e.kind == "parse" and not e.retryable, (mode, req.operation)


async def test_server_without_json_mode_falls_back_to_prompt_only(provider, upstream):
    await control(upstream.url, reject_json_mode=True)
    r = await provider.process(OPS[1])
    assert r.payload["sentiment"]["label"] == "positive"
    body = (await get_json(f"{upstream.url}/_last"))["body"]
    assert "response_format" not in body
    await provider.process(OPS[1])  # remembered: no second rejection
    s = await stats(upstream)
    assert s["calls"] == 3 and s["errors"] == 1


# ---- batch and pool ---------------------------------------------------------------
async def test_process_batch_bounds_concurrency(provider, upstream):
    await control(upstream.url, latency_ms=80)
    reqs = [TextRequest("sentiment", f"Item {i} is good.") for i in range(10)] + \
           [TextRequest("qa", TEXT)]  # no question: a client error in its slot
    out = await provider.process_batch(reqs, concurrency=3)
    assert len(out) == 11
    assert all(isinstance(r, ProviderResult) for r in out[:10])
    assert isinstance(out[10], ProviderError) and out[10].kind == "client"
    s = await stats(upstream)
    assert s["calls"] == 10 and s["max_in_flight"] == 3


async def test_process_batch_default_concurrency_is_5(provider, upstream):
    await control(upstream.url, latency_ms=80)
    await provider.process_batch([TextRequest("sentiment", f"Item {i} is good.") for i in range(12)])
    assert (await stats(upstream))["max_in_flight"] == 5


async def test_pool_size_limits_upstream_concurrency_and_follows_the_store(provider, upstream, openai_store):
    await openai_store.update("ai", {"max_connections": 2})
    await control(upstream.url, latency_ms=80)
    reqs = [TextRequest("sentiment", f"Item {i} is fine.") for i in range(8)]
    out = await provider.process_batch(reqs, concurrency=8)
    assert all(isinstance(r, ProviderResult) for r in out)
    assert (await stats(upstream))["max_in_flight"] == 2
    old_pool = provider._pool
    # a pool change rebuilds the pool and the new limit applies at once
    await openai_store.update("ai", {"max_connections": 6})
    assert provider.pool_info() == {"open": False}
    assert (await reset(upstream.url))["stats"]["calls"] == 0
    await control(upstream.url, latency_ms=80)
    await provider.process_batch(reqs, concurrency=8)
    assert (await stats(upstream))["max_in_flight"] == 6
    assert provider.pool_info()["max_connections"] == 6
    await asyncio.sleep(0.05)
    assert old_pool.closed


async def test_a_retired_pool_closes_once_its_calls_are_done(provider, upstream, openai_store):
    await control(upstream.url, latency_ms=300)
    task = asyncio.create_task(provider.process(OPS[0]))
    for _ in range(100):
        if provider._pool is not None and provider._pool.inflight:
            break
        await asyncio.sleep(0.01)
    old = provider._pool
    await openai_store.update("ai", {"max_connections": 7})  # rebuilds the pool: the old one drains first
    await asyncio.sleep(0.05)
    assert not old.closed and old.inflight == 1
    assert (await task).payload["result"]
    for _ in range(100):
        if old.closed:
            break
        await asyncio.sleep(0.01)
    assert old.closed and old.inflight == 0


async def test_pool_timeout_bounds_the_wait_for_a_connection(provider, upstream, openai_store):
    await openai_store.update("ai", {"max_connections": 1, "pool_timeout": 0.15, "timeout_seconds": 5.0})
    await control(upstream.url, latency_ms=500)
    out = await provider.process_batch([OPS[1], OPS[1]], concurrency=2)
    kinds = sorted(type(r).__name__ if isinstance(r, ProviderResult) else r.kind for r in out)
    assert kinds == ["ProviderResult", "timeout"]
    # the pool meter saw both: one acquisition found the slot, one gave up in the queue after ~0.15 s
    pool = provider.pool_info()
    assert pool["acquisitions"] == 2 and pool["queued"] == 1 and pool["queue_timeouts"] == 1
    assert pool["waiting"] == 0 and pool["in_use"] == 0
    assert 100 <= pool["wait_max_ms"] < 500


async def test_a_call_cancelled_in_the_pool_queue_leaves_it(provider, upstream, openai_store):
    await openai_store.update("ai", {"max_connections": 1})
    await control(upstream.url, latency_ms=300)
    first = asyncio.ensure_future(provider.process(OPS[1]))
    second = asyncio.ensure_future(provider.process(OPS[1]))
    await asyncio.sleep(0.1)
    assert provider.pool_info()["waiting"] == 1 and provider.pool_info()["in_use"] == 1
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    pool = provider.pool_info()
    assert pool["waiting"] == 0 and pool["queue_timeouts"] == 1
    await first
    pool = provider.pool_info()
    assert pool["in_use"] == 0 and pool["acquisitions"] == 2 and pool["queued"] == 1
    assert pool["recent"]["acquisitions"] == 2 and pool["recent"]["queued"] == 1


async def test_keep_alive_reuses_one_connection(provider, upstream):
    for _ in range(5):
        await provider.process(OPS[1])
    assert (await stats(upstream))["connections"] == 1


@pytest.mark.parametrize("changes", [{"connection_pooling": False}, {"keepalive_connections": 0}])
async def test_pooling_off_opens_a_connection_per_call(provider, upstream, openai_store, changes):
    await openai_store.update("ai", changes)
    for _ in range(4):
        await provider.process(OPS[1])
    assert (await stats(upstream))["connections"] == 4


async def test_keepalive_connections_caps_idle_connections(provider, upstream, openai_store):
    await openai_store.update("ai", {"keepalive_connections": 2})
    await control(upstream.url, latency_ms=50)
    reqs = [TextRequest("sentiment", f"Item {i} is fine.") for i in range(6)]
    await provider.process_batch(reqs, concurrency=6)  # 6 connections, only 2 kept
    first = (await stats(upstream))["connections"]
    assert first == 6
    await provider.process_batch(reqs, concurrency=6)  # reuses the 2, opens 4 more
    assert (await stats(upstream))["connections"] == first + 4


async def test_health_against_the_fake(provider):
    h = await provider.health()
    assert h["status"] == "healthy" and h["upstream_status"] == 200
    assert h["provider"] == "openai" and h["api_key_set"] is True


async def test_closed_provider_refuses_calls(openai_store):
    p = OpenAIProvider(openai_store, env={})
    await p.process(OPS[1])
    await p.close()
    e = await failure(p)
    assert e.kind == "connection"
