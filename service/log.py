"""Structured JSON logs carrying the request id."""
from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from aiohttp.http_exceptions import HttpProcessingError

from service.errors import parse_reason

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        rid = request_id_var.get()
        if rid:
            doc["request_id"] = rid
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                doc[k] = v
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request its HTTP parser rejects at ERROR, with a traceback
    whose message quotes the offending header line: an API key with a stray
    control character would land in the log.  Such a record becomes one
    WARNING line that names the reason only (the client got its 400)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = parse_reason(exc)
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg, record.args = "malformed HTTP request from %s: %s (%s)", (peer, reason, exc.code)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return logging.getLogger().isEnabledFor(logging.WARNING)
        return True


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter())
    root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server.filters):
        server.addFilter(MalformedRequestFilter())
