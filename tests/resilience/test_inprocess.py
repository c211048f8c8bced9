"""Resilience.call in-process against the fake upstream (a real HTTP server): cancellation, merging."""
import asyncio

import pytest

from service.config.sections import SECTIONS
from service.config.store import ConfigStore
from service.context import Context
from service.providers.base import ProviderError, TextRequest
from service.providers.fake_upstream import FakeUpstream
from service.providers.manager import ProviderManager
from service.resilience import AIUnavailable, Resilience

TEXT = "Circuit breakers stop calls to a failing service so that callers fail fast instead of waiting."


@pytest.fixture
async def stack():
    made = []

    async def make(**upstream):
        up = await FakeUpstream(**upstream).start()
        env = {"AI_PROVIDER": "openai", "OPENAI_BASE_URL": up.base_url, "OPENAI_API_KEY": "sk-test",
               "AI_TIMEOUT_SECONDS": "5", "AI_MAX_RETRIES": "0", "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1"}
        store = ConfigStore(SECTIONS, env=env)
        ctx = Context(settings=None, store=store)
        ctx.providers = ProviderManager(store, env)
        ctx.resilience = Resilience(ctx)
        await ctx.resilience.start()
        made.append((up, ctx))
        return up, ctx

    yield make
    for up, ctx in made:
        await ctx.resilience.close()
        await ctx.providers.close()
        await up.stop()


async def test_cancelled_call_is_not_a_failure(stack):
    up, ctx = await stack(latency_ms=2000)
    res = ctx.resilience
    br = res.breaker("openai", "summarize")
    task = asyncio.create_task(res.call(TextRequest("summarize", TEXT)))
    await asyncio.sleep(0.3)
    assert up.state.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # threshold is 1: a counted failure would have opened the breaker
    assert br.state == "closed" and br.cb.fail_counter == 0
    assert br.counts["cancelled"] == 1 and res.stats.ops["summarize"].cancelled == 1
    assert res.stats.in_flight == 0
    up.state.update({"latency_ms": 0})
    result = await res.call(TextRequest("summarize", TEXT))
    assert result.provider == "openai"


async def test_a_timeout_is_a_failure(stack):
    up, ctx = await stack(latency_ms=2000)
    await ctx.store.update("ai", {"timeout_seconds": 0.3})
    with pytest.raises(AIUnavailable) as ei:
        await ctx.resilience.call(TextRequest("summarize", TEXT))
    assert ei.value.error_code == "AI_TIMEOUT"
    assert ctx.resilience.breaker("openai", "summarize").state == "open"


async def test_cancelled_waiter_leaves_its_batch(stack):
    up, ctx = await stack()
    await ctx.store.update_many({"ai": {"batch_processing": True},
                                 "batching": {"batch_size": 10, "batch_timeout_ms": 300}})
    res = ctx.resilience
    tasks = [asyncio.create_task(res.call(TextRequest("summarize", f"{TEXT} Number {i}."))) for i in range(3)]
    await asyncio.sleep(0.05)
    tasks[0].cancel()
    out = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(out[0], asyncio.CancelledError)
    assert all(r.provider == "openai" for r in out[1:])
    assert up.state.calls == 2 and res.batcher.dropped == 1
    assert res.breaker("openai", "summarize").counts["failures"] == 0


async def test_identical_requests_in_a_batch_make_one_upstream_call(stack):
    up, ctx = await stack(latency_ms=50)
    await ctx.store.update_many({"ai": {"batch_processing": True},
                                 "batching": {"batch_size": 8, "batch_timeout_ms": 100}})
    out = await asyncio.gather(*(ctx.resilience.call(TextRequest("sentiment", TEXT)) for _ in range(8)))
    assert len({id(r) for r in out}) == 1
    assert up.state.calls == 1
    assert ctx.resilience.batcher.merged == 7


async def test_switching_batching_off_sends_what_waits(stack):
    up, ctx = await stack()
    await ctx.store.update_many({"ai": {"batch_processing": True},
                                 "batching": {"batch_size": 50, "batch_timeout_ms": 10_000}})
    task = asyncio.create_task(ctx.resilience.call(TextRequest("summarize", TEXT)))
    await asyncio.sleep(0.05)
    assert not task.done()
    await ctx.store.update("ai", {"batch_processing": False})
    result = await asyncio.wait_for(task, 3)
    assert result.provider == "openai"


@pytest.mark.parametrize("mode", ["garbage", "no_choices"])
async def test_tokens_of_an_answer_that_failed_to_parse_are_counted(stack, mode):
    """The upstream billed the call (its usage says so) even though its answer was unusable."""
    from exporter.metrics import REGISTRY
    from exporter.tally import flush_all

    def tokens(kind):  # gen_ai_client_token_usage_sum of the openai provider (input = prompt, output = completion)
        flush_all()
        t = {"prompt": "input", "completion": "output"}[kind]
        return sum(s.value for f in REGISTRY.collect() if f.name == "gen_ai_client_token_usage" for s in f.samples
                   if s.name.endswith("_sum") and s.labels["gen_ai_provider_name"] == "openai"
                   and s.labels["gen_ai_token_type"] == t)

    up, ctx = await stack(mode=mode)
    before = {k: tokens(k) for k in ("prompt", "completion")}
    provider = ctx.providers.current
    usage_before = dict(provider.usage)
    with pytest.raises(ProviderError) as e:
        await ctx.resilience.call(TextRequest("summarize", TEXT))
    assert e.value.kind == "parse"
    assert provider.usage["prompt"] > usage_before["prompt"]
    assert tokens("prompt") > before["prompt"]
    spent = provider.usage["total"] - usage_before["total"]
    assert ctx.resilience.stats.ops["summarize"].tokens["total"] == spent > 0
    if mode == "garbage":  # an answer came back: its completion tokens were billed too
        assert tokens("completion") > before["completion"]


async def test_a_failed_attempt_is_freed_without_the_garbage_collector(stack):
    # the call's frame holds the attempt's error, whose traceback holds that frame (and the error it chains
    # may be in a cycle of its own): cut, they die with the call
    import gc
    import weakref

    up, ctx = await stack()
    await ctx.store.update_many({"ai": {"max_retries": 1}, "resilience": {"failure_threshold": 5}})
    provider = ctx.providers.current
    real, refs = provider.process, []

    class Refused(OSError):
        pass

    async def flaky(req):
        if not refs:
            try:
                raise Refused("connect call failed")
            except Refused as inner:
                kept = inner  # a frame holding the error it chains, as aiohttp's connector's do
                e = ProviderError("connection", "injected")
                refs.extend((weakref.ref(e), weakref.ref(kept)))
                raise e from None
        return await real(req)
    provider.process = flaky
    gc.disable()
    try:
        result = await ctx.resilience.call(TextRequest("summarize", TEXT))
        assert result.provider == "openai" and refs
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()


async def test_the_meters_one_step_of_a_success_adds_what_its_parts_add(stack):
    """AiMeter.success (cells added to in place) against attempt() + call(add_tokens()) of a second meter:
    the same counts, sums and exemplars pending in every tally."""
    from service.log import request_id_var
    from service.resilience.meter import AiMeter

    up, ctx = await stack()
    await ctx.store.update("pricing", {"input_usd_per_million": {"gpt-4o-mini": 0.15},
                                       "output_usd_per_million": {"gpt-4o-mini": 0.6}})
    a, b = AiMeter(ctx), AiMeter(ctx)
    model = a.model()
    token = request_id_var.set("req-1")
    try:
        for billed, tokens in ((None, {"prompt": 30, "completion": 7, "total": 37}),
                               ({"prompt": 4, "completion": 2}, {"prompt": 30, "completion": 7}),
                               ({"prompt": 4, "completion": 2}, None), (None, None)):
            a.attempt("openai", model, "success", 0.21)
            ua = a.call("summarize", "openai", model, 0.43, "", a.add_tokens(billed, tokens))
            ub = b.success(b.keys("summarize", "openai", model), 0.21, 0.43, billed, tokens)
            assert ua == ub
    finally:
        request_id_var.reset(token)
    assert ub is None and ua is None  # (no tokens known: no Usage)
    for t in ("_attempts", "_durations", "_tokens", "_costs"):
        ca, cb = getattr(a, t).cells, getattr(b, t).cells
        assert {k: v for k, v in ca.items() if any(v)} == {k: v for k, v in cb.items() if any(v)}, t
    assert sum(b._costs.cells[(model, "summarize")]) > 0


async def test_a_price_or_provider_change_acts_on_the_next_call(stack):
    """The per-operation plan of Resilience.call is made again when a section object or the provider changes."""
    up, ctx = await stack()
    res = ctx.resilience
    first = await res.call(TextRequest("summarize", TEXT))
    assert first.usage.cost == 0.0
    model = first.usage.model
    await ctx.store.update("pricing", {"input_usd_per_million": {model: 1000.0}})
    priced = await res.call(TextRequest("summarize", TEXT))
    assert priced.usage.cost > 0
    assert res._plans["summarize"].eff.strategy != "aggressive"
    await ctx.store.update("resilience", {"preset": "aggressive"})
    await res.call(TextRequest("summarize", TEXT))
    assert res._plans["summarize"].eff.strategy == "aggressive"
    await ctx.store.update("ai", {"provider": "local"})
    local = await res.call(TextRequest("summarize", TEXT))
    assert local.provider == ctx.providers.current.name == "local"
    assert res._plans["summarize"].br.name == "local.summarize"
