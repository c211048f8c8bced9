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
    assert len(ctx.extras["request_size"]._classes) <= 16
