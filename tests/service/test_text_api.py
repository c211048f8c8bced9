"""The text API over real HTTP: every operation, and bad input for every field."""
import json

import pytest

from service.context import CTX

TEXT = ("Prometheus scrapes metrics from instrumented jobs. It stores all scraped samples locally and runs rules "
        "over this data to aggregate and record new time series or generate alerts. Grafana can be used to "
        "visualize the collected data. Operators love clear dashboards and reliable alerts.")


@pytest.mark.parametrize("op,extra,field", [
    ("summarize", {"options": {"max_length": 20}}, "result"),
    ("sentiment", {}, "sentiment"),
    ("key_points", {"options": {"max_points": 3}}, "key_points"),
    ("questions", {"options": {"num_questions": 2}}, "questions"),
    ("qa", {"question": "What does Grafana do?"}, "result"),
])
async def test_each_operation_answers(make_client, op, extra, field):
    client = await make_client()
    r = await client.post(f"/v1/text/{op}", json={"text": TEXT, **extra})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["operation"] == op and body["success"] is True
    assert field in body
    assert body["metadata"]["provider"] == "local"
    assert body["metadata"]["word_count"] == len(TEXT.split())
    assert set(body["metadata"]["tokens"]) >= {"prompt", "completion", "total"}
    assert body["cache_hit"] is False
    assert r.headers["X-Request-ID"] == body["request_id"]
    assert body["timestamp"].endswith("Z")
    again = await (await client.post(f"/v1/text/{op}", json={"text": TEXT, **extra})).json()
    assert again["cache_hit"] is True
    assert again[field] == body[field]
    if op == "key_points":
        assert 1 <= len(body["key_points"]) <= 3
    if op == "questions":
        assert 1 <= len(body["questions"]) <= 2
    if op == "sentiment":
        assert body["sentiment"]["label"] in ("positive", "negative", "neutral")


async def test_process_route_takes_operation_from_body(make_client):
    client = await make_client()
    r = await client.post("/v1/text/process", json={"text": TEXT, "operation": "sentiment"})
    assert r.status == 200
    assert (await r.json())["operation"] == "sentiment"


async def test_request_id_is_honoured(make_client):
    client = await make_client()
    r = await client.post("/v1/text/summarize", json={"text": TEXT}, headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    assert (await r.json())["request_id"] == "abc-123"


BAD = [
    ("/v1/text/summarize", {}, "text"),
    ("/v1/text/summarize", {"text": 123}, "text"),
    ("/v1/text/summarize", {"text": "short"}, "text"),
    ("/v1/text/summarize", {"text": "x" * 10001}, "text"),
    ("/v1/text/summarize", {"text": TEXT, "options": []}, "options"),
    ("/v1/text/summarize", {"text": TEXT, "options": {"max_length": 5}}, "options.max_length"),
    ("/v1/text/summarize", {"text": TEXT, "options": {"max_length": 501}}, "options.max_length"),
    ("/v1/text/summarize", {"text": TEXT, "options": {"max_length": "50"}}, "options.max_length"),
    ("/v1/text/summarize", {"text": TEXT, "options": {"max_points": 3}}, "options.max_points"),
    ("/v1/text/summarize", {"text": TEXT, "options": {"bogus": 1}}, "options.bogus"),
    ("/v1/text/key_points", {"text": TEXT, "options": {"max_points": 0}}, "options.max_points"),
    ("/v1/text/key_points", {"text": TEXT, "options": {"max_points": 21}}, "options.max_points"),
    ("/v1/text/questions", {"text": TEXT, "options": {"num_questions": 21}}, "options.num_questions"),
    ("/v1/text/questions", {"text": TEXT, "options": {"num_questions": True}}, "options.num_questions"),
    ("/v1/text/qa", {"text": TEXT}, "question"),
    ("/v1/text/qa", {"text": TEXT, "question": ""}, "question"),
    ("/v1/text/qa", {"text": TEXT, "question": 7}, "question"),
    ("/v1/text/sentiment", {"text": TEXT, "question": "why?"}, "question"),
    ("/v1/text/sentiment", {"text": TEXT, "surprise": 1}, "surprise"),
    ("/v1/text/sentiment", {"text": TEXT, "operation": "qa"}, "operation"),
    ("/v1/text/process", {"text": TEXT}, "operation"),
    ("/v1/text/process", {"text": TEXT, "operation": "translate"}, "operation"),
    ("/v1/text/summarize", ["not", "an", "object"], "body"),
]


@pytest.mark.parametrize("path,body,field", BAD)
async def test_bad_input_gets_422_naming_the_field(make_client, path, body, field):
    client = await make_client()
    r = await client.post(path, json=body)
    assert r.status == 422, await r.text()
    err = await r.json()
    assert err["error_code"] == "VALIDATION_ERROR"
    assert err["details"]["field"] == field
    assert err["message"] and err["request_id"]


async def test_malformed_json_is_400(make_client):
    client = await make_client()
    r = await client.post("/v1/text/summarize", data=b'{"text": ', headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert (await r.json())["error_code"] == "INVALID_JSON"


async def test_wrong_content_type_is_415(make_client):
    client = await make_client()
    r = await client.post("/v1/text/summarize", data=b"text=hello", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 415
    assert (await r.json())["details"]["field"] == "Content-Type"


async def test_unknown_route_404_and_wrong_method_405(make_client):
    client = await make_client()
    r = await client.get("/v1/text/nope")
    assert r.status == 404 and (await r.json())["error_code"] == "NOT_FOUND"
    r = await client.get("/v1/text/summarize")
    assert r.status == 405 and (await r.json())["error_code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in r.headers["Allow"]


async def test_text_limits_are_configurable_live(make_client):
    client = await make_client(TEXT_MAX_LENGTH=100)
    r = await client.post("/v1/text/summarize", json={"text": TEXT})
    assert r.status == 422  # TEXT is longer than 100
    r = await client.post("/internal/config/text", json={"max_text_length": 5000})
    assert r.status == 200
    r = await client.post("/v1/text/summarize", json={"text": TEXT})
    assert r.status == 200


async def test_batch_reports_status_per_item(make_client):
    client = await make_client()
    items = [{"operation": "summarize", "text": TEXT}, {"operation": "sentiment", "text": "tiny"},
             {"operation": "qa", "text": TEXT, "question": "What stores samples?"}]
    r = await client.post("/v1/text/batch", json={"requests": items})
    assert r.status == 200
    body = await r.json()
    assert body["total_requests"] == 3 and body["completed"] == 2 and body["failed"] == 1
    assert [x["status"] for x in body["results"]] == ["completed", "failed", "completed"]
    assert body["results"][1]["error"]["details"]["field"] == "requests[1].text"
    assert body["results"][2]["response"]["operation"] == "qa"


@pytest.mark.parametrize("body", [{"requests": []}, {"requests": [{"operation": "summarize", "text": TEXT}] * 51},
                                  {"requests": "x"}, {}])
async def test_batch_bounds(make_client, body):
    client = await make_client()
    r = await client.post("/v1/text/batch", json=body)
    assert r.status == 422
    assert (await r.json())["details"]["field"] == "requests"


async def test_operations_lists_all_five(make_client):
    client = await make_client()
    body = await (await client.get("/v1/text/operations")).json()
    assert [o["id"] for o in body["operations"]] == ["summarize", "sentiment", "key_points", "questions", "qa"]


async def test_health_reports_each_component(make_client):
    client = await make_client()
    r = await client.get("/v1/health", headers={"X-API-Key": ""})
    assert r.status == 200
    body = await r.json()
    assert body["status"] == "healthy" and body["live"] and body["ready"]
    assert set(body["checks"]) == {"ai_provider", "cache", "config_store"}


async def test_health_degraded_when_redis_unreachable(make_client):
    from tests.helpers import free_port
    client = await make_client(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_SOCKET_TIMEOUT=0.2)
    r = await client.get("/v1/health")
    assert r.status == 200
    body = await r.json()
    assert body["status"] == "degraded"
    assert body["checks"]["cache"]["status"] == "degraded"


async def test_fast_validation_mode_reuses_validated_bodies_and_respects_new_limits(make_client):
    client = await make_client(VALIDATION_MODE="strict")
    memo = client.server.app[CTX].text.memo
    body = {"text": TEXT}
    await client.post("/v1/text/summarize", json=body)
    assert memo.hits == 0 and memo.misses == 0  # strict: no memo
    r = await client.post("/internal/monitoring/optimize", json={"validation_mode": "fast"})
    assert r.status == 200
    for _ in range(3):
        assert (await client.post("/v1/text/summarize", json=body)).status == 200
    assert memo.hits == 2 and memo.misses == 1
    r = await client.post("/internal/monitoring/optimize", json={"validation_mode": "fast"})
    assert (await r.json())["validation_memo"] == {"enabled": True, "entries": 1, "hits": 2, "misses": 1}
    # same bytes, wrong content type: not served from the memo
    r = await client.post("/v1/text/summarize", data=json.dumps(body), headers={"Content-Type": "text/csv"})
    assert r.status == 415
    # a tightened limit applies at once, even to a body validated before
    assert (await client.post("/internal/config/text", json={"max_text_length": 50})).status == 200
    r = await client.post("/v1/text/summarize", json=body)
    assert r.status == 422


async def test_the_validation_memo_holds_at_most_its_byte_budget_and_memory_analysis_says_so(make_client):
    client = await make_client(VALIDATION_MEMO_MAX_BYTES="20000")
    memo = client.server.app[CTX].text.memo
    for i in range(40):
        r = await client.post("/v1/text/sentiment", json={"text": f"{TEXT} Body number {i}. " + "word " * 50})
        assert r.status == 200
    assert 0 < memo.bytes <= 20000 and memo.evictions > 0 and len(memo._memo) < 40
    mem = await (await client.get("/internal/monitoring/memory-analysis")).json()
    assert mem["subsystems"]["validation_memo"]["reported"] == memo.memory_stats()
    assert mem["subsystems"]["validation_memo"]["reported"]["max_bytes"] == 20000
    # the budget is live: lowered, the memo shrinks to it at the next change (it is cleared), and 0 keeps nothing
    assert (await client.post("/internal/config/monitoring", json={"validation_memo_max_bytes": 0})).status == 200
    await client.post("/v1/text/sentiment", json={"text": f"{TEXT} once more."})
    assert memo.bytes == 0 and len(memo._memo) == 0


def test_the_memo_accounts_for_the_memory_it_really_holds():
    import gc
    import tracemalloc

    from service.config.sections import SECTIONS
    from service.config.store import ConfigStore
    from service.text.memo import ValidationMemo
    from service.text.schemas import parse_text_request
    store = ConfigStore(SECTIONS, env={})
    memo = ValidationMemo(store)
    cfg = store.get("text")
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(1000):
            raw = json.dumps({"text": f"{TEXT} number {i} " + "word " * (i % 300), "options": {"max_length": 20}})
            req = parse_text_request(json.loads(raw), "summarize", cfg)
            memo.put(("summarize", "application/json"), raw.encode(), (req, f"summarize:{i:032x}"))
            del raw, req
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert abs(held - memo.bytes) <= 0.15 * memo.bytes, (held, memo.bytes)
