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
