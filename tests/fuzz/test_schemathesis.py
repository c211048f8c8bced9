"""Schemathesis over the live OpenAPI document (every route), against the real service process.

Each example picks an operation and a case schemathesis generates for it,
fitting the schema (positive) or not (negative).  The examples are bounded by
the fuzz profile (conftest.py): `ci` keeps the run under a minute, `long`
(`make fuzz`) runs many more.  Beyond schemathesis's own not_a_server_error:
every 4xx is the error shape with an error_code, a rejected /internal call
leaves the config version unchanged, and an accepted one is rolled back.

(schemathesis.pytest.from_fixture is not used: its lazy loader reads
pytest's removed Node._nodeid.)
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.fuzz.client import Answer, check_answer
from tests.fuzz.conftest import PROFILE
from tests.helpers import API_KEY

EXAMPLES = {"ci": 300, "long": 10_000}[PROFILE]


@pytest.fixture(scope="module")
def operations(fuzz_service):
    schema = schemathesis.openapi.from_url(f"{fuzz_service.url}/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) > 80
    return ops


@given(data=st.data(), mode=st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]))
@settings(max_examples=EXAMPLES)
def test_schemathesis(client, operations, fuzz_service, data, mode):
    op = data.draw(st.sampled_from(operations), label="operation")
    case = data.draw(op.as_strategy(generation_mode=mode), label="case")
    before = client.config_version()
    r = case.call(base_url=fuzz_service.url, headers={"X-API-Key": API_KEY}, timeout=30)
    case.validate_response(r, checks=[not_a_server_error])
    a = Answer(r.status_code, {k.lower(): v[0] if isinstance(v, list) else v for k, v in r.headers.items()}, r.content)
    check_answer(a, f"{case.method} {case.formatted_path} {case.body!r:.300}")
    if a.status >= 400 and case.path.startswith("/internal"):
        assert client.config_version() == before, f"rejected {case.method} {case.formatted_path} changed the config"
    elif case.method == "POST" and case.path.startswith("/internal"):
        client.restore()
