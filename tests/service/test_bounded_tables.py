"""Tables keyed by what clients send (methods, header values, keys) are bounded, by config where they grow."""
from exporter.metrics import REGISTRY
from exporter.tally import flush_all
from service.context import CTX


async def test_an_unknown_method_is_one_label_not_one_per_token(make_client):
    client = await make_client()
    for method in ("PROPFIND", "MKCOL", "LOCK"):
        r = await client.request(method, "/v1/nowhere")
        assert r.status in (404, 405)
    flush_all()
    labels = {s.labels["method"] for m in REGISTRY.collect() if m.name == "llmapi_http_requests"
              for s in m.samples if "method" in s.labels}
    assert "OTHER" in labels and not labels & {"PROPFIND", "MKCOL", "LOCK"}
    routes = client.server.app[CTX].extras["analytics"].routes
    assert all(m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER") for m, _ in routes)


async def test_header_keyed_memos_hold_at_most_lookup_cache_size(make_client):
    client = await make_client()
    assert (await client.post("/internal/config/middleware", json={"lookup_cache_size": 16})).status == 200
    ctx = client.server.app[CTX]
    for i in range(40):
        r = await client.get("/v1/text/operations", headers={"Accept-Encoding": f"gzip;q=0.{i % 9 + 1}, x-{i}"})
        assert r.status == 200
        await client.post("/v1/text/sentiment", data=b"{}", headers={"Content-Type": f"application/x-{i}+json"})
    assert len(ctx.extras["compression"]._negotiated) <= 16
    assert len(ctx.extras["request_size"].classes) <= 16


async def test_the_access_log_keeps_at_most_access_log_shapes_rendered_live(make_client):
    client = await make_client(LOG_LEVEL="INFO")
    ctx = client.server.app[CTX]
    al = ctx.access_log
    for i in range(6):
        assert (await client.get(f"/v1/nowhere/{i}")).status == 404
    al.flush()  # (a batch is rendered when it is written)
    assert len(al._shapes) == 6
    r = await client.post("/internal/config/logging", json={"access_log_shapes": 3})
    assert r.status == 200
    assert al.max_shapes == 3 and len(al._shapes) == 3  # lowered: trimmed at once
    for i in range(6, 12):
        assert (await client.get(f"/v1/nowhere/{i}")).status == 404
    al.flush()
    assert len(al._shapes) == 3 and len(al._names) <= 3
    mem = await (await client.get("/internal/monitoring/memory-analysis")).json()
    reported = mem["subsystems"]["access_log"]["reported"]
    assert {k: reported[k] for k in ("entries", "key_names", "max_entries")} == {
        "entries": 3, "key_names": len(al._names), "max_entries": 3}
    assert reported["pending_bytes"] >= 0 and reported["max_pending_bytes"] == 8 * 1024 * 1024
    al.flush()  # (the memory-analysis GET's line, rendered while the bound is 3)
    assert (await client.post("/internal/config/logging", json={"access_log_shapes": 100})).status == 200
    for i in range(12, 20):
        await client.get(f"/v1/nowhere/{i}")
    al.flush()
    assert len(al._shapes) == 3 + 8 + 1  # raised: new shapes are kept again (+ the POST's own line)


async def test_the_client_id_table_holds_at_most_client_id_cache_size_live(make_client):
    client = await make_client()
    secret = client.server.app[CTX].secret
    ids = [secret.client_ip_id(f"10.0.0.{i}") for i in range(50)]
    assert len(secret._ids) == 50
    r = await client.post("/internal/config/rate_limit", json={"client_id_cache_size": 8})
    assert r.status == 200
    assert len(secret._ids) == 8 and list(secret._ids) == [f"10.0.0.{i}" for i in range(42, 50)]  # oldest out
    for i in range(50, 60):
        secret.client_ip_id(f"10.0.0.{i}")
    assert list(secret._ids) == [f"10.0.0.{i}" for i in range(52, 60)]  # evicted at the new bound
    assert secret.client_ip_id("10.0.0.3") == ids[3]  # an evicted id is computed again, the same
    mem = await (await client.get("/internal/monitoring/memory-analysis")).json()
    assert mem["subsystems"]["client_ids"]["reported"] == {"entries": 8, "max_entries": 8}
