from openapi_spec_validator import validate


async def test_openapi_document_is_valid_and_covers_every_route(make_client):
    client = await make_client()
    r = await client.get("/openapi.json")
    assert r.status == 200
    doc = await r.json()
    validate(doc)
    app = client.server.app
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        assert route.method.lower() in doc["paths"][route.resource.canonical], route.resource.canonical
    assert doc["paths"]["/v1/text/summarize"]["post"]["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/TextRequest"}


async def test_openapi_documents_scopes_and_the_403(make_client):
    doc = await (await (await make_client()).get("/openapi.json")).json()
    for path, method, scope in (("/internal/config", "get", "admin"), ("/v1/text/summarize", "post", "text"),
                                ("/metrics", "get", "metrics"), ("/v1/health", "get", "health")):
        op = doc["paths"][path][method]
        assert op["x-required-scope"] == scope
        assert {"401", "403"} <= set(op["responses"]) and scope in op["responses"]["403"]["description"]
        assert ({} in op["security"]) == (scope in ("metrics", "health"))   # optional unless protected
    assert "x-required-scope" not in doc["paths"]["/openapi.json"]["get"]                # public
    described = doc["components"]["securitySchemes"]["ApiKey"]["description"]
    for var in ("API_KEY", "ADDITIONAL_API_KEYS", "ADMIN_API_KEYS", "API_KEYS_FILE", "403"):
        assert var in described
