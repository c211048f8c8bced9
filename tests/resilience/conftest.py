"""The service on the openai provider against a fresh fake OpenAI-compatible upstream, as real processes."""
import aiohttp
import pytest


@pytest.fixture
def start(request, service_factory, fake_upstream_factory):
    """await start(upstream_args=(), **env): a fake upstream started with upstream_args and the service
    pointed at it, wrapped in the test module's `Env` class (service, upstream, client session); the
    module's SERVICE_ENV (if any) is added to env."""
    wrap = request.module.Env
    defaults = getattr(request.module, "SERVICE_ENV", {})

    async def make(upstream_args=(), **env):
        up = fake_upstream_factory(*upstream_args)
        svc = service_factory(AI_PROVIDER="openai", OPENAI_BASE_URL=f"{up.url}/v1", OPENAI_API_KEY="sk-test",
                              **{**defaults, **env})
        return wrap(svc, up, aiohttp.ClientSession())
    return make
