"""The baseline: a bare aiohttp app answering a constant JSON body of a given size."""
import argparse

from aiohttp import web


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--size", type=int, default=600, help="bytes of the constant JSON answer")
    a = ap.parse_args()
    pad = max(0, a.size - len('{"result":""}'))
    body = ('{"result":"' + "x" * pad + '"}').encode()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/text/summarize", handler)
    app.router.add_get("/v1/health", handler)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=a.port, access_log=None, print=lambda *x: None)


if __name__ == "__main__":
    main()
