"""`Answer`: the service's JSON response, sent in one write.

An aiohttp `web.Response` is built through the generic constructor (content
type and charset checks, a body setter that looks for a payload class) and
sent through a chain of coroutines (`prepare`, `_start`, `_prepare_headers`,
`_prepare_hook`, `_write_headers`, `write_headers`, `write_eof`,
`_send_headers_with_payload`, `_writelines`, `drain`).  An Answer is a
`web.Response` (every middleware reads and changes it the same way: status,
headers, body), made directly from its bytes, and its `prepare` sends the
usual head (the headers set on it, then Content-Length, Date and Server, as
aiohttp adds them, serialised and checked for header injection by aiohttp's
own `_serialize_headers`) and the body in one write, when the answer is the
plain case: HTTP/1.1 kept alive, a bytes body, no compression, chunking or
cookies set through aiohttp, no Content-Length or Transfer-Encoding set by
hand, a status with a body, no `on_response_prepare` handler.  Anything else
is sent by aiohttp's own `prepare`, unchanged.  `send` is that one write
(prepare's, and the fast path's, service/fastpath.py, which knows from its
route table whether an app of the request has a prepare hook).  The private attributes used
here are pinned in tests/service/test_aiohttp_internals.py (aiohttp is pinned
in pyproject.toml).
"""
from __future__ import annotations

import time

from aiohttp import hdrs, web
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.http_writer import _serialize_headers
from aiohttp.web_response import MAX_SYNC_CHUNK_SIZE, REASON_PHRASES
from multidict import CIMultiDict

JSON = "application/json"
_CONTENT_TYPE, _CONTENT_LENGTH, _DATE, _SERVER = hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.DATE, hdrs.SERVER
_TRANSFER_ENCODING, _CONNECTION, _HEAD = hdrs.TRANSFER_ENCODING, hdrs.CONNECTION, hdrs.METH_HEAD
_date = [0, ""]  # (the second, and its Date header)
_time = time.time
_STATUS_LINES = {s: f"HTTP/1.1 {s} {r}" for s, r in REASON_PHRASES.items()}


class Answer(web.Response):
    """A JSON body as a web.Response, sent in one write (see the module's docstring)."""

    def __init__(self, body: bytes, status: int = 200, headers=None) -> None:
        # what web.Response(body=body, status=status, content_type=JSON, headers=headers) sets
        self._state = {}
        h = CIMultiDict(headers) if headers else CIMultiDict()
        h[_CONTENT_TYPE] = JSON
        self._headers = h
        self._status = status = int(status)
        self._reason = REASON_PHRASES.get(status, "")
        self._body = body
        self._compressed_body = None
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE
        self._zlib_executor = None

    async def prepare(self, request: web.BaseRequest):
        if not self.send(request, _has_prepare_hook(request)):
            return await super().prepare(request)
        writer = request._payload_writer
        if writer._protocol._paused:
            await writer.drain()
        return writer

    def send(self, request: web.BaseRequest, hooked: bool = False) -> bool:
        """The plain case's one write (True; the caller drains a paused writer); False, with nothing done, for
        anything else (aiohttp's prepare sends it).  hooked: an app of the request has on_response_prepare."""
        body, headers, status = self._body, self._headers, self._status
        if (hooked or self._payload_writer is not None or self._eof_sent or type(body) is not bytes
                or self._compression or self._chunked or self._cookies or self._keep_alive is False
                or status < 200 or status == 204 or status == 304 or request._method == _HEAD
                or request._message.should_close or request._message.version != HttpVersion11
                or _CONTENT_LENGTH in headers or _TRANSFER_ENCODING in headers or _CONNECTION in headers):
            return False
        headers[_CONTENT_LENGTH] = str(len(body))
        now = int(_time())  # (rfc822_formatted_time's own cache key: its value changes once a second)
        if now != _date[0]:
            _date[0], _date[1] = now, rfc822_formatted_time()
        headers[_DATE] = _date[1]
        headers[_SERVER] = SERVER_SOFTWARE
        line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} {self._reason}"
        writer = request._payload_writer
        self._keep_alive = True
        self._must_be_empty_body = False
        data = _serialize_headers(line, headers) + body
        transport = writer._protocol.transport  # (what writer._write does)
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("Cannot write to closing transport")
        writer.buffer_size += len(data)
        writer.output_size += len(data)
        transport.write(data)
        self._eof_sent = True
        self._body_length = writer.output_size
        writer._eof = True
        return True


def _has_prepare_hook(request: web.BaseRequest) -> bool:
    match_info = request._match_info
    if match_info is not None:
        for app in match_info._apps:
            if app._on_response_prepare:  # (the signal behind the property)
                return True
    return False


WHOLE = frozenset({web.Response, Answer})  # the response classes whose body is all in memory (type(resp) in WHOLE)
