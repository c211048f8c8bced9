"""An in-process app with the KPI routes (registered here until service/app.py lists them)."""
from __future__ import annotations

import pytest

from service.context import CTX
from tests.helpers import API_KEY


def has_route(app, path: str) -> bool:
    return any(getattr(r.resource, "canonical", None) == path for r in app.router.routes())


@pytest.fixture
async def kpi_client(aiohttp_client, tmp_path):
    from service.app import create_app
    from service.internal import kpi
    from service.settings import Settings

    env = {"API_KEY": API_KEY, "STATE_DIR": str(tmp_path / "state"), "LOG_LEVEL": "WARNING"}
    app = create_app(Settings.from_env(env), env=env)
    if not has_route(app, "/internal/monitoring/performance"):
        kpi.register(app, app[CTX])
    client = await aiohttp_client(app)
    client.session.headers.update({"X-API-Key": API_KEY})
    return client
