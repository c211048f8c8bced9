"""Any OpenAI-compatible /v1/chat/completions server (OpenAI, vLLM, Ollama,
llama.cpp server, the bundled fake upstream).

- One connection pool (wire.py: HTTP/1.1 keep-alive on asyncio protocols); it follows the "ai" config section
  (max_connections, keepalive_connections, connection_pooling) and is rebuilt
  when those change.  pool_timeout bounds the wait for a pooled connection and
  timeout_seconds the whole call; both are read live on every call.
- One prompt per operation, asking for a JSON object (response_format
  json_object when the server accepts it); the answer is parsed tolerantly:
  JSON, JSON inside ``` fences, or plain text (bullets, label words).
- Failures are ProviderError kinds: timeout, connection, rate_limited (with
  retry_after), server, client, parse.  No retries here: the resilience layer
  decides.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import re
import time
from typing import Any

from exporter.metrics import AI_UPSTREAM_REMAINING
from service.jsonc import loads, quote
from service.providers.base import OPERATIONS, Provider, ProviderError, ProviderResult, TextRequest
from service.providers.local import truncate_words, estimate_tokens
from service.providers.poolmeter import PoolMeter
from service.providers.wire import WireDeadline, WireError, WirePool, WireTimeout

log = logging.getLogger("service.providers.openai")

POOL_FIELDS = ("max_connections", "keepalive_connections", "connection_pooling")
USER_AGENT = "llmapi/0.1"
KEEPALIVE_IDLE_SECONDS = 30.0   # how long an idle keep-alive connection is kept
HEALTH_CACHE_SECONDS = 5.0
HEALTH_PROBE_SECONDS = 0.8      # below the 1 s bound of /v1/health
DEFAULT_BATCH_CONCURRENCY = 5

# ---------------------------------------------------------------------------
# prompts (the fake upstream reads them back with parse_prompt)
# ---------------------------------------------------------------------------
SYSTEM_PROMPT = ("You are a precise text-analysis engine. Follow the task exactly and answer with "
                 "one JSON object and nothing else: no prose, no code fences.")

SHAPES = {
    "summarize": '{"summary": "<the summary>"}',
    "sentiment": '{"label": "positive|negative|neutral", "confidence": <number 0..1>, '
                 '"explanation": "<which words or phrases drove the label>"}',
    "key_points": '{"key_points": ["<point>", ...]}',
    "questions": '{"questions": ["<question>", ...]}',
    "qa": '{"answer": "<the answer>"}',
}
TEXT_OPEN, TEXT_CLOSE = "Text:\n<<<\n", "\n>>>"
QUESTION_OPEN, QUESTION_CLOSE = "Question:\n<<<\n", "\n>>>\n"


# per operation: the instruction (with "{}" for the option's value), the option and its default
INSTRUCTIONS = {
    "summarize": ("Summarize the text below in at most {} words, keeping its key facts.", "max_length", 100),
    "sentiment": ("Classify the overall sentiment of the text below as positive, negative or neutral, give "
                  "a confidence between 0 and 1, and explain which words or phrases drove it.", None, 0),
    "key_points": ("List at most {} key points of the text below, each as one short sentence, most important "
                   "first.", "max_points", 5),
    "questions": ("Write {} distinct questions that the text below answers or raises.", "num_questions", 5),
    "qa": ("Answer the question using only the text below, in one or two sentences. If the text does not "
           "answer it, say so.", None, 0),
}
# each operation's prompt up to its instruction, and from it to the text: what build_prompt joins around them
_PROMPT_HEADS = {op: f"Task: {op}\n" for op in OPERATIONS}
_PROMPT_SHAPES = {op: f"\nRespond with only a JSON object of the form {SHAPES[op]}.\n" for op in OPERATIONS}


def instruction(req: TextRequest) -> str:
    text, key, default = INSTRUCTIONS[req.operation]
    return text if key is None else text.format(_opt_value(req.options or {}, key, default))


def build_prompt(req: TextRequest) -> str:
    """The user message of an operation: its task line, instruction, answer shape, question (qa) and text,
    one per line.  (One function: it runs on every uncached request.)"""
    op = req.operation
    text, key, default = INSTRUCTIONS[op]
    if key is not None:
        v = (req.options or {}).get(key, default)
        text = text.format(int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1
                           else default)
    if op == "qa":
        return (f"{_PROMPT_HEADS[op]}{text}{_PROMPT_SHAPES[op]}{QUESTION_OPEN}{req.question or ''}"
                f"{QUESTION_CLOSE.rstrip()}\n{TEXT_OPEN}{req.text}{TEXT_CLOSE}")
    return f"{_PROMPT_HEADS[op]}{text}{_PROMPT_SHAPES[op]}{TEXT_OPEN}{req.text}{TEXT_CLOSE}"


_OPTION_PATTERNS = {
    "summarize": ("max_length", re.compile(r"at most (\d+) words")),
    "key_points": ("max_points", re.compile(r"at most (\d+) key points")),
    "questions": ("num_questions", re.compile(r"Write (\d+) distinct questions")),
}


def parse_prompt(content: str) -> TextRequest | None:
    """Read a prompt made by build_prompt back into a TextRequest (None if it is not one)."""
    m = re.match(r"Task: (\w+)\n", content)
    if not m or m.group(1) not in OPERATIONS:
        return None
    op = m.group(1)
    start = content.find(TEXT_OPEN)
    end = content.rfind(TEXT_CLOSE)
    if start < 0 or end < start + len(TEXT_OPEN) - 1:
        return None
    head, text = content[:start], content[start + len(TEXT_OPEN):end]
    options: dict = {}
    if op in _OPTION_PATTERNS:
        key, pat = _OPTION_PATTERNS[op]
        om = pat.search(head)
        if om:
            options[key] = int(om.group(1))
    question = None
    qs = head.find(QUESTION_OPEN)
    if qs >= 0:
        qe = head.rfind(QUESTION_CLOSE.rstrip())
        question = head[qs + len(QUESTION_OPEN):qe] if qe > qs else head[qs + len(QUESTION_OPEN):]
    return TextRequest(op, text, options, question)


def render_answer(op: str, payload: dict) -> dict:
    """A provider payload in the JSON shape the prompt for `op` asks for."""
    if op == "sentiment":
        return dict(payload["sentiment"])
    if op in ("key_points", "questions"):
        return {op: list(payload[op])}
    return {"answer" if op == "qa" else "summary": payload.get("result", "")}


# ---------------------------------------------------------------------------
# tolerant output parsing
# ---------------------------------------------------------------------------
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.S)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\(?\d+[.):]|[a-z][.)])\s+(.+?)\s*$")
_HAS_WORD = re.compile(r"[^\W\d_]{2,}")
_LABEL = re.compile(r"\b(positive|negative|neutral|mixed)\b", re.I)
_CONFIDENCE = re.compile(r"(?:confidence|certainty|probability|score)\D{0,20}?(\d+(?:\.\d+)?)\s*(%)?", re.I)
_LEAD_LABEL = re.compile(r"^\s*(?:summary|answer|result)\s*:\s*", re.I)


def extract_json(content: str) -> Any:
    s = content.strip()
    if s[:1] in "{[":  # the usual answer (JSON mode): no fence scan, no slices
        try:
            return loads(s)
        except ValueError:
            pass
    candidates = [m.group(1).strip() for m in _FENCE.finditer(s)]
    for open_c, close_c in (("{", "}"), ("[", "]")):
        i, j = s.find(open_c), s.rfind(close_c)
        if 0 <= i < j:
            candidates.append(s[i:j + 1])
    for c in candidates:
        if c[:1] in "{[":
            try:
                return json.loads(c)
            except ValueError:
                continue
    return None


def _first(d: dict, *keys: str) -> Any:
    for k in keys:
        if k in d and d[k] not in (None, ""):
            return d[k]
    lower = {str(k).lower(): v for k, v in d.items()}
    for k in keys:
        if k.lower() in lower and lower[k.lower()] not in (None, ""):
            return lower[k.lower()]
    return None


def _as_text(v: Any) -> str | None:
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, list):
        parts = [p for p in (_as_text(x) for x in v) if p]
        return " ".join(parts) if parts else None
    if isinstance(v, dict):
        for x in v.values():
            t = _as_text(x)
            if t:
                return t
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def _words_ok(s: str | None) -> bool:
    return bool(s) and _HAS_WORD.search(s) is not None


def _plain(content: str) -> str:
    s = content.strip()
    fences = _FENCE.findall(s)
    if fences:
        s = fences[0].strip()
    s = _LEAD_LABEL.sub("", s).strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1].strip()
    return s


def _list_from_text(content: str, questions: bool) -> list[str]:
    s = content.strip()
    fences = _FENCE.findall(s)
    if fences:
        s = "\n".join(f.strip() for f in fences)
    lines = [ln.strip() for ln in s.splitlines() if ln.strip()]
    items = [m.group(1) for m in (_BULLET.match(ln) for ln in lines) if m]
    if not items and questions:
        items = [q.strip() for q in re.findall(r"[^?\n.!]*\?", s) if q.strip()]
    if not items:
        items = [ln for ln in lines if not ln.endswith(":")]
    return items


def _confidence(v: Any) -> float | None:
    if isinstance(v, str):
        m = re.search(r"\d+(?:\.\d+)?", v)
        if not m:
            return None
        f = float(m.group(0))
        if "%" in v:
            f /= 100
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        f = float(v)
    else:
        return None
    if 1 < f <= 100:
        f /= 100
    if not 0 <= f <= 1 or math.isnan(f):
        return None
    return round(f, 3)


def _label(v: Any) -> str | None:
    if not isinstance(v, str):
        return None
    m = _LABEL.search(v)
    if not m:
        return None
    lab = m.group(1).lower()
    return "neutral" if lab == "mixed" else lab


_TEXT_KEYS = {"summarize": ("summary", "result", "text", "answer"), "qa": ("answer", "result", "text", "response", "summary")}


def parse_output(op: str, content: str, options: dict | None = None) -> dict:
    """Turn a model's answer into the operation's payload, or raise ProviderError("parse")."""
    options = options or {}
    if not isinstance(content, str) or not content.strip():
        raise ProviderError("parse", "upstream returned empty content")
    data = None
    if content[:1] in "{[":  # JSON mode's answer: extract_json's first step, without its call
        try:
            data = loads(content)
        except ValueError:
            pass
    if data is None:
        data = extract_json(content)
    if op in ("summarize", "qa"):
        text = None
        if isinstance(data, dict):
            keys = _TEXT_KEYS[op]
            v = data.get(keys[0])  # the key the prompt asks for, holding a string: what _first would find
            text = v.strip() if type(v) is str and v else _as_text(_first(data, *keys))
        elif isinstance(data, (list, str)):
            text = _as_text(data)
        if text is None:
            text = _plain(content)
        if not (text and _HAS_WORD.search(text)):  # (_words_ok)
            raise ProviderError("parse", f"no {op} text in upstream answer")
        if op == "summarize":
            text = truncate_words(text, _opt_value(options, "max_length", 100))
        return {"result": text}
    if op == "sentiment":
        label = conf = expl = None
        if isinstance(data, dict):
            inner = data.get("sentiment")
            d = inner if isinstance(inner, dict) else data
            label = _label(_first(d, "label", "sentiment", "polarity", "classification"))
            conf = _confidence(_first(d, "confidence", "score", "probability"))
            expl = _as_text(_first(d, "explanation", "reason", "reasoning", "rationale"))
        if label is None:
            label = _label(content)
            if label is None:
                raise ProviderError("parse", "no sentiment label in upstream answer")
            if conf is None:
                m = _CONFIDENCE.search(content)
                if m:
                    conf = _confidence(m.group(1) + (m.group(2) or ""))
            expl = expl or truncate_words(_plain(content), 80)
        return {"sentiment": {"label": label, "confidence": 0.5 if conf is None else conf,
                              "explanation": expl or ""}}
    if op in ("key_points", "questions"):
        key, opt, default = ("key_points", "max_points", 5) if op == "key_points" else \
            ("questions", "num_questions", 5)
        items: Any = None
        if isinstance(data, dict):
            items = _first(data, key, "points" if op == "key_points" else "items", "keyPoints", "items")
        elif isinstance(data, list):
            items = data
        if isinstance(items, str):
            items = _list_from_text(items, op == "questions")
        if not isinstance(items, list):
            items = _list_from_text(content, op == "questions")
        clean = []
        for it in items:
            t = _as_text(it)
            if _words_ok(t) and t not in clean:
                clean.append(t)
        if not clean:
            raise ProviderError("parse", f"no {op} in upstream answer")
        return {key: clean[:_opt_value(options, opt, default)]}
    raise ProviderError("client", f"unknown operation {op!r}")


def _opt_value(options: dict, key: str, default: int) -> int:
    v = options.get(key, default)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1 else default


def parse_retry_after(headers) -> float | None:
    """Retry-After as seconds or an HTTP date; retry-after-ms as OpenAI sends it."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    v = headers.get("Retry-After")
    if not v:
        return None
    v = v.strip()
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


# ---------------------------------------------------------------------------
# connection pool
# ---------------------------------------------------------------------------
class _Pool:
    """One WirePool (wire.py) to the section's base URL, and the calls in flight through it."""

    def __init__(self, ai: dict, meter: PoolMeter, headers: dict):
        pooling = bool(ai["connection_pooling"]) and ai["keepalive_connections"] > 0
        self.settings = {k: ai[k] for k in POOL_FIELDS}
        self.wire = WirePool(ai["base_url"], limit=ai["max_connections"], max_idle=ai["keepalive_connections"],
                             keepalive_seconds=KEEPALIVE_IDLE_SECONDS, pooling=pooling, meter=meter,
                             user_agent=USER_AGENT)
        self.chat_head = self.wire.head("POST", "/chat/completions", headers)  # but for its Content-Length
        self.models_head = self.wire.head("GET", "/models", {k: v for k, v in headers.items() if k != "Content-Type"})
        self.inflight = 0
        self.retired = False
        self.closed = False
        self._drained: asyncio.Future | None = None  # what close() waits on while calls are in flight

    def done(self) -> None:
        """A call through this pool ended (no Event set and cleared on every call: only a closing pool waits)."""
        self.inflight -= 1
        if self._drained is not None:
            self.settle()

    def settle(self) -> None:
        """Wake a closing pool's wait once no call is left in flight."""
        d = self._drained
        if self.inflight <= 0 and d is not None and not d.done():
            d.set_result(None)

    async def close(self, grace: float = 0.0) -> None:
        if self.inflight and grace > 0:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._drained, grace)
            except asyncio.TimeoutError:
                pass
        self.closed = True
        await self.wire.close()


# ---------------------------------------------------------------------------
# the request of a chat call
# ---------------------------------------------------------------------------
def chat_body(model: str, temperature: float, prompt: str, json_mode: bool) -> dict:
    """The chat-completions request for `prompt` (what _CallParts.body renders, as a dict)."""
    body = {"model": model, "temperature": temperature,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]}
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    return body


class _CallParts:
    """What every chat call of one "ai" section sends.  The body is json.dumps(chat_body(...)) with the
    part around the prompt rendered once: a call encodes only its prompt string."""

    __slots__ = ("ai", "json_mode", "total", "connect", "_head", "_tail")

    def __init__(self, ai: dict, json_mode: bool):
        self.ai = ai
        self.json_mode = json_mode
        self.total = float(ai["timeout_seconds"])
        self.connect = min(float(ai["pool_timeout"]), self.total)
        mark = "\x00prompt\x00"
        head, tail = json.dumps(chat_body(ai["model"], ai["temperature"], mark, json_mode)).split(json.dumps(mark))
        self._head, self._tail = head.encode(), tail.encode()

    def body(self, prompt: str) -> bytes:
        return self._head + quote(prompt).encode() + self._tail  # (quote(s) is json.dumps(s) for a str)


# ---------------------------------------------------------------------------
# the provider
# ---------------------------------------------------------------------------
class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, store, api_key: str | None = None, env: dict | None = None,
                 subscribe: bool = True, batch_concurrency: int = DEFAULT_BATCH_CONCURRENCY):
        self.store = store
        env = os.environ if env is None else env
        self._api_key = api_key if api_key is not None else (env.get("OPENAI_API_KEY") or "")
        self._json_mode = True
        self._call: _CallParts | None = None  # what every chat call of the current "ai" section sends
        self._pool: _Pool | None = None
        self._bg: set[asyncio.Task] = set()
        self._closed = False
        self._health_cache: tuple[float, dict] | None = None
        self.batch_concurrency = batch_concurrency
        self.usage = {"calls": 0, "errors": 0, "prompt": 0, "completion": 0, "total": 0}
        self.last_error: dict | None = None
        self.pool_meter = PoolMeter(self.name)
        if subscribe:
            store.subscribe(self.on_config_change)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIProvider(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def model(self) -> str:
        return self.store.get("ai")["model"]

    @property
    def base_url(self) -> str:
        return self.store.get("ai")["base_url"].rstrip("/")

    # ---- pool lifecycle -----------------------------------------------
    def on_config_change(self, section: str, new: dict, old: dict) -> None:
        if section != "ai" or self._closed:
            return
        if any(new.get(k) != old.get(k) for k in POOL_FIELDS + ("base_url",)) and self._pool is not None:
            old_pool, self._pool = self._pool, None
            self._retire(old_pool)
            log.info("openai provider: connection pool settings changed, session rebuilt",
                     extra={"pool": {k: new.get(k) for k in POOL_FIELDS}})

    def _retire(self, pool: _Pool) -> None:
        pool.retired = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        t = loop.create_task(pool.close(grace=float(self.store.get("ai")["timeout_seconds"])))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def _acquire(self) -> _Pool:
        if self._closed:
            raise ProviderError("connection", "provider is closed")
        if self._pool is None:
            try:
                self._pool = _Pool(self.store.get("ai"), self.pool_meter, self._headers())
            except ValueError as e:  # a base URL that is not http(s), a key with a line break
                raise ProviderError("client", f"the upstream cannot be called: {e}") from None
        pool = self._pool
        pool.inflight += 1
        return pool

    def pool_info(self) -> dict:
        p = self._pool
        if p is None:
            return {"open": False}
        return {"open": True, "in_flight": p.inflight, **p.settings,
                **self.pool_meter.stats(p.settings["max_connections"])}

    # ---- calls ----------------------------------------------------------
    def _headers(self) -> dict:
        h = {"Content-Type": "application/json"}
        if self._api_key:
            h["Authorization"] = f"Bearer {self._api_key}"
        return h

    def _parts(self, ai: dict) -> "_CallParts":
        """The timeouts and the body around the prompt of a chat call, built once per "ai" section."""
        c = self._call
        if c is None or c.ai is not ai or c.json_mode != self._json_mode:
            c = self._call = _CallParts(ai, self._json_mode)
        return c

    @staticmethod
    def _quota(headers, model: str) -> None:
        """llmapi_ai_upstream_remaining from the x-ratelimit-remaining-* headers, when the upstream sends them."""
        for kind in ("requests", "tokens"):
            v = headers.get(f"x-ratelimit-remaining-{kind}")
            if v is not None:
                try:
                    AI_UPSTREAM_REMAINING.labels(kind, model).set(float(v))
                except ValueError:
                    pass

    async def process(self, req: TextRequest, until: float | None = None) -> ProviderResult:
        """One call, bounded by ai.timeout_seconds and by `until` (loop time) when given: the wait for the
        answer is a timer on it (wire.py), not an asyncio.timeout around it.  A call past `until` raises a
        plain TimeoutError, one past timeout_seconds ProviderError("timeout")."""
        started = time.perf_counter()
        try:  # (the body in this one coroutine: a second one per call only to log its failure cost a frame)
            if req.operation not in OPERATIONS:
                raise ProviderError("client", f"unknown operation {req.operation!r}")
            if req.operation == "qa" and not (req.question and str(req.question).strip()):
                raise ProviderError("client", "qa needs a question")
            ai = self.store.values["ai"]  # (store.get("ai"))
            prompt = build_prompt(req)
            self.usage["calls"] += 1
            c = self._call
            if c is None or c.ai is not ai or c.json_mode != self._json_mode:  # (_parts, inline)
                c = self._parts(ai)
            own = asyncio.get_running_loop().time() + c.total
            theirs = until is not None and until <= own  # (past the caller's deadline: a plain TimeoutError,
            if not theirs:                                # which the resilience layer words itself)
                until = own
            while True:  # the chat call (in this coroutine: a second one per call cost a frame on the way back)
                body = c.body(prompt)
                pool = self._pool
                if pool is None or self._closed:
                    pool = self._acquire()
                else:  # (_acquire's usual case, inline: the pool is open)
                    pool.inflight += 1
                try:
                    a = await pool.wire.request(pool.chat_head + b"Content-Length: %d\r\n\r\n" % len(body), body,
                                                c.connect, until)
                except WireDeadline:
                    if theirs:
                        raise TimeoutError() from None
                    raise ProviderError("timeout", f"upstream call timed out after {ai['timeout_seconds']}s") from None
                except WireTimeout:
                    raise ProviderError("timeout", "upstream pool wait or connect timed out after "
                                                   f"{ai['timeout_seconds']}s") from None
                except WireError as e:
                    raise ProviderError("connection", f"upstream connection failed: {e}") from None
                finally:
                    pool.inflight -= 1  # (pool.done(), inline)
                    if pool._drained is not None:
                        pool.settle()
                status, headers = a.status, a.headers
                self._quota(headers, ai["model"])
                text = a.body.decode("utf-8", "replace")
                if status == 400 and self._json_mode and "response_format" in text:
                    # the server does not do JSON mode: the prompt still asks for JSON
                    self._json_mode = False
                    c = self._parts(ai)
                    continue
                break
            try:
                data = loads(text) if status == 200 else None
            except ValueError:
                data = None
            if status != 200:
                raise self._status_error(status, headers, text)
            if not isinstance(data, dict):
                raise ProviderError("parse", "upstream body is not a JSON object", status=status)
            try:
                content = data["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                content = None
            # the call was billed whether or not its answer is usable: count it first
            tokens = self._tokens(data.get("usage"), prompt, content if isinstance(content, str) else "")
            for k in ("prompt", "completion", "total"):
                self.usage[k] += tokens[k]
            if content is None:
                raise ProviderError("parse", "upstream body has no choices[0].message.content", status=status,
                                    tokens=tokens)
            try:
                payload = parse_output(req.operation, content, req.options)
            except ProviderError as e:
                e.tokens = tokens
                raise
            return ProviderResult(payload, self.name, str(data.get("model") or ai["model"]), tokens)
        except ProviderError as e:
            self.usage["errors"] += 1
            self.last_error = {"kind": e.kind, "status": e.status, "message": str(e), "time": time.time()}
            log.warning("openai provider call failed", extra={"kind": e.kind, "status": e.status,
                                                               "operation": req.operation,
                                                               "elapsed_s": round(time.perf_counter() - started, 4)})
            raise

    process.takes_deadline = True  # process(req, until=...): the resilience layer's attempt deadline (loop time)

    @staticmethod
    def _tokens(usage: Any, prompt: str, content: str) -> dict:
        if isinstance(usage, dict):
            try:
                p = int(usage.get("prompt_tokens") or 0)
                c = int(usage.get("completion_tokens") or 0)
                t = int(usage.get("total_tokens") or (p + c))
                return {"prompt": p, "completion": c, "total": t}
            except (TypeError, ValueError):
                pass
        p = estimate_tokens(SYSTEM_PROMPT) + estimate_tokens(prompt)
        c = estimate_tokens(content)
        return {"prompt": p, "completion": c, "total": p + c}

    @staticmethod
    def _status_error(status: int, headers, text: str) -> ProviderError:
        msg = _upstream_message(text)
        if status == 429:
            return ProviderError("rate_limited", f"upstream rate limited: {msg}", status=status,
                                 retry_after=parse_retry_after(headers))
        if status >= 500:
            return ProviderError("server", f"upstream error {status}: {msg}", status=status,
                                 retry_after=parse_retry_after(headers))
        return ProviderError("client", f"upstream rejected the request ({status}): {msg}", status=status)

    async def process_batch(self, reqs: list[TextRequest],
                            concurrency: int | None = None) -> list[ProviderResult | ProviderError]:
        sem = asyncio.Semaphore(max(1, concurrency or self.batch_concurrency))

        async def one(r: TextRequest):
            async with sem:
                try:
                    return await self.process(r)
                except ProviderError as e:
                    return e

        return list(await asyncio.gather(*(one(r) for r in reqs)))

    # ---- health / shutdown -----------------------------------------------
    async def health(self) -> dict:
        now = time.monotonic()
        if self._health_cache and now - self._health_cache[0] < HEALTH_CACHE_SECONDS:
            return dict(self._health_cache[1])
        ai = self.store.get("ai")
        info: dict = {"provider": self.name, "model": ai["model"], "base_url": self.base_url,
                      "api_key_set": bool(self._api_key), "usage": dict(self.usage),
                      "pool": self.pool_info()}
        if self.last_error:
            info["last_error"] = dict(self.last_error)
        try:
            pool = self._acquire()
        except ProviderError as e:
            return {**info, "status": "unhealthy", "detail": str(e)}
        probe = min(HEALTH_PROBE_SECONDS, float(ai["timeout_seconds"]))
        try:
            async with asyncio.timeout(probe):
                status = (await pool.wire.request(pool.models_head + b"\r\n", b"",
                                                  min(float(ai["pool_timeout"]), probe))).status
            if status == 200 or status == 404:  # some servers have no /models: reachable is enough
                info.update(status="healthy", upstream_status=status)
            elif status in (401, 403):
                info.update(status="unhealthy", upstream_status=status, detail="upstream rejects the API key")
            else:
                info.update(status="degraded", upstream_status=status)
        except asyncio.TimeoutError:
            # the service still answers from cache and fallbacks: degraded, not down
            info.update(status="degraded", detail="upstream did not answer in time")
        except WireError as e:
            info.update(status="degraded", detail=f"upstream unreachable: {e}")
        finally:
            pool.done()
        self._health_cache = (now, info)
        return dict(info)

    async def close(self, grace: float | None = None) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        g = float(self.store.get("ai")["timeout_seconds"]) if grace is None else grace
        if pool is not None:
            await pool.close(grace=g)
        if self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)


def _upstream_message(text: str) -> str:
    try:
        d = json.loads(text)
        err = d.get("error") if isinstance(d, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:200]
        if isinstance(err, str):
            return err[:200]
    except ValueError:
        pass
    return text.strip()[:200] or "no body"
