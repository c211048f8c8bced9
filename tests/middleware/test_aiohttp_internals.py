"""The hot path reads aiohttp's attributes behind its properties (a property costs ~500 instructions, the
attribute ~50): each one used must still be what the public name returns, in the pinned aiohttp."""
from __future__ import annotations

import zlib

from aiohttp import web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from service.middleware.metrics import _body_bytes


async def test_request_attributes_are_what_the_properties_return(aiohttp_client):
    seen = {}

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        seen.update(method=(request._method, request.method), headers=(request._headers, request.headers),
                    raw_path=(request._message.path, request.raw_path), info=(request._match_info, request.match_info),
                    route=(request._match_info._route, request.match_info.route),
                    matched=type(request._match_info) is UrlMappingMatchInfo, body=(request._read_bytes, body),
                    content=(request._payload, request.content),
                    prepare=(request.app._on_response_prepare, request.app.on_response_prepare))
        resp = web.Response(text="ok", status=201)
        seen.update(status=(resp._status, resp.status), resp_headers=(resp._headers, resp.headers),
                    resp_body=(resp._body, resp.body))
        return resp

    @web.middleware
    async def unmatched(request, handler):
        if request.path == "/nowhere":
            seen["unmatched"] = type(request._match_info) is UrlMappingMatchInfo
        return await handler(request)

    app = web.Application(middlewares=[unmatched])
    app.router.add_post("/x", handler)
    client = await aiohttp_client(app)
    r = await client.post("/x?version=2", data=b"hello", headers={"X-Thing": "1"})
    assert r.status == 201
    assert seen["method"] == ("POST", "POST")
    assert seen["headers"][0] is seen["headers"][1] and seen["headers"][0]["X-Thing"] == "1"
    assert seen["raw_path"] == ("/x?version=2", "/x?version=2")
    assert seen["info"][0] is seen["info"][1] and seen["route"][0] is seen["route"][1] and seen["matched"]
    assert seen["body"] == (b"hello", b"hello")
    assert seen["status"] == (201, 201) and seen["resp_headers"][0] is seen["resp_headers"][1]
    assert seen["content"][0] is seen["content"][1] and seen["prepare"][0] is seen["prepare"][1]
    assert seen["resp_body"][0] is seen["resp_body"][1] == b"ok"
    assert (await client.get("/nowhere")).status == 404
    assert seen["unmatched"] is False  # a 404's match info is a MatchInfoError


def test_body_bytes_is_content_length_for_every_kind_of_response():
    plain = web.Response(body=b"x" * 300)
    text = web.Response(text="héllo")
    declared = web.Response(body=b"abc", headers={"Content-Length": "3"})
    compressed = web.Response(body=b"y" * 1000)
    compressed._compressed_body = zlib.compress(b"y" * 1000)
    chunked = web.Response(body=b"z" * 10)
    chunked.enable_chunked_encoding()
    empty = web.Response(status=204)
    for resp in (plain, text, declared, compressed, chunked, empty):
        assert _body_bytes(resp) == resp.content_length
    assert _body_bytes(web.StreamResponse()) is None
