"""Hostile-input generators: strings, JSON values and bodies, schema-derived bodies, headers, query values.

Bodies are generated as bytes, so the generators can say what a JSON encoder
would not: NaN and Infinity literals, 5,000-digit integers, lone surrogates
as escapes or as raw (invalid UTF-8) bytes, nesting thousands deep.
"""
from __future__ import annotations

import gzip
import json
import zlib

import brotli
from hypothesis import strategies as st

# ---- strings --------------------------------------------------------------------------------
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
COMBINING = st.characters(categories=("Mn", "Me"))
ODD_CHARS = st.sampled_from(["\x00", "\x01", "\x1b", "\x7f", "\u0085", "\u2028", "\u2029", "\u200b", "\u200d",
                             "\u202e", "\ufeff", "\ufffd", "\uffff", "\U0001f600", "\U0010ffff", "\\", '"',
                             "\u0301", "\u0338", "\t", "\n", "\r"])
ANY_CHAR = st.one_of(st.characters(), SURROGATES, COMBINING, ODD_CHARS)


@st.composite
def long_run(draw) -> str:
    c = draw(st.one_of(ODD_CHARS, COMBINING, st.sampled_from(["a", " ", "\u0301", "\U0001f600", "."])))
    return c * draw(st.sampled_from([100, 1000, 5000, 10_001, 20_000]))


HOSTILE_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.builds(lambda a, b, c: a + b + c, st.text(max_size=30), st.text(ANY_CHAR, min_size=1, max_size=3),
              st.text(max_size=30)),
    long_run(),
    st.builds(lambda base, marks: base + marks, st.sampled_from(["word " * 5, "e", "Z"]),
              st.text(COMBINING, min_size=1, max_size=200)),
)

# text that passes the length checks, with something hostile inside
PLAUSIBLE_TEXT = st.builds(lambda a, bad, b: a + bad + b,
                           st.just("Prometheus scrapes metrics from jobs. "),
                           st.text(ANY_CHAR, max_size=5), st.just(" It stores samples and evaluates rules."))


# ---- numbers, as JSON literals ------------------------------------------------------------
class Raw(str):
    """A JSON literal put into the body as it is (NaN, 1e400, 5,000 digits)."""


NUMBER_LITERALS = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000, "-0", "-0.0", "0.0", "1e-400",
     "4.9e-324", "1.7976931348623157e308", "9007199254740993", "-9223372036854775809", "18446744073709551616",
     "1E2", "0e0"]).map(Raw)
NUMBERS = st.one_of(st.integers(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                    NUMBER_LITERALS, st.sampled_from([0, -1, 1, 2**31, 2**63, -2**63]))


# ---- JSON values ------------------------------------------------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, HOSTILE_TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(HOSTILE_TEXT, children, max_size=5)), max_leaves=20)


def dumps(value, raw_surrogates: bool = False) -> bytes:
    """JSON bytes of value; Raw strings become bare literals.  raw_surrogates: non-ASCII as UTF-8
    bytes (a lone surrogate then is an invalid byte sequence) instead of \\u escapes."""
    def enc(v) -> str:
        if isinstance(v, Raw):
            return str(v)
        if isinstance(v, dict):
            return "{" + ",".join(f"{json.dumps(k, ensure_ascii=not raw_surrogates)}:{enc(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=not raw_surrogates)
        return json.dumps(v)
    return enc(value).encode("utf-8", "surrogatepass")


@st.composite
def deep_body(draw) -> bytes:
    depth = draw(st.sampled_from([31, 32, 33, 64, 257, 999, 1000, 3000, 20_000]))
    kind = draw(st.sampled_from(["array", "object", "mixed", "in_text", "in_batch", "unclosed"]))
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "mixed":
        return b'{"a":[' * (depth // 2) + b"0" + b"]}" * (depth // 2)
    if kind == "in_text":
        return b'{"text":' + b"[" * depth + b"]" * depth + b"}"
    if kind == "in_batch":
        return b'{"requests":[{"operation":"summarize","text":"x","options":' + b'{"a":' * depth + b"1" + \
            b"}" * depth + b"}]}"
    return b"[" * depth


# ---- bodies derived from a JSON schema (the OpenAPI components) ---------------------------------
def _resolve(schema: dict, components: dict) -> dict:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _wrong_type(t: str | None):
    others = {"string": st.one_of(NUMBERS, st.booleans(), st.none(), st.lists(st.integers(), max_size=2)),
              "integer": st.one_of(st.floats(), NUMBER_LITERALS, st.text(max_size=5), st.booleans(), st.none()),
              "number": st.one_of(NUMBER_LITERALS, st.text(max_size=5), st.booleans(), st.none()),
              "boolean": st.one_of(st.integers(), st.sampled_from(["true", "false", "1", ""]), st.none()),
              "array": st.one_of(st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
              "object": st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=5), st.integers())}
    return others.get(t, JSON_VALUES)


def from_schema(schema: dict, components: dict, depth: int = 0):
    """Instances of schema, mostly valid, with boundary values, wrong types and extra fields mixed in."""
    schema = _resolve(schema, components)
    t = schema.get("type")
    if "enum" in schema:
        good = st.sampled_from(schema["enum"])
    elif t == "string":
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 200)
        sizes = sorted({max(0, lo - 1), lo, min(hi, lo + 50), hi, hi + 1})
        good = st.one_of(st.builds(lambda n, c: (c * n), st.sampled_from(sizes), st.sampled_from(["a", "é", " ", "\U0001f600"])),
                         PLAUSIBLE_TEXT, HOSTILE_TEXT)
    elif t == "integer":
        lo, hi = schema.get("minimum", -2**31), schema.get("maximum", 2**31)
        good = st.one_of(st.integers(lo, hi), st.sampled_from([lo - 1, lo, hi, hi + 1]),
                         st.sampled_from([float(lo), float(hi) + 0.5]), NUMBER_LITERALS)
    elif t == "number":
        good = st.one_of(st.floats(allow_nan=False), NUMBER_LITERALS)
    elif t == "boolean":
        good = st.booleans()
    elif t == "array":
        item = from_schema(schema.get("items", {}), components, depth + 1)
        lo, hi = schema.get("minItems", 0), min(schema.get("maxItems", 5), 60)
        good = st.one_of(st.lists(item, min_size=lo, max_size=min(hi, lo + 3)),
                         st.lists(item, min_size=max(0, hi - 1), max_size=hi + 1), st.just([]))
    elif t == "object" and depth < 4:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))

        @st.composite
        def obj(draw):
            out = {}
            for name, sub in props.items():
                if name in required or draw(st.booleans()):
                    out[name] = draw(from_schema(sub, components, depth + 1))
            if draw(st.integers(0, 4)) == 0:  # an extra field
                out[draw(st.one_of(st.sampled_from(["extra", "Text", "text ", "__proto__"]), HOSTILE_TEXT))] = \
                    draw(SCALARS)
            return out
        good = obj()
    else:
        good = JSON_VALUES
    return st.one_of(good, good, good, _wrong_type(t))


# ---- config-section bodies (the schema of every /internal tuning body) ----------------------------
def field_values(f) -> st.SearchStrategy:
    """Boundary, just-outside, non-finite and wrong-type values for one config Field."""
    t = f.type.__name__
    options = [_wrong_type({"int": "integer", "float": "number", "str": "string", "bool": "boolean",
                            "list": "array", "dict": "object"}.get(t))]
    if t in ("int", "float"):
        edges = [v for v in (f.min, f.max) if v is not None]
        near = [e + d for e in edges for d in (-1, -0.001, 0, 0.001, 1)]
        options += [st.sampled_from(near or [0, -1]), NUMBER_LITERALS]
        if t == "int":
            options.append(st.sampled_from([int(e) for e in edges] or [0]))
    if f.choices:
        options.append(st.sampled_from([*f.choices, "", f.choices[0].upper(), f.choices[0] + "\x00"]))
    if t == "str":
        options.append(HOSTILE_TEXT)
    if t in ("list", "dict"):
        options.append(JSON_VALUES)
    return st.one_of(options)


@st.composite
def section_body(draw, section) -> dict:
    names = list(section.fields)
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    body = {n: draw(field_values(section.fields[n])) for n in chosen}
    if draw(st.integers(0, 5)) == 0:
        body[draw(HOSTILE_TEXT)] = draw(SCALARS)
    return body


# ---- Content-Type x Content-Encoding -----------------------------------------------------------
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
                 "application/vnd.llmapi.v1+json", "text/plain", "application/octet-stream", "",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/json",
                 "application/x-ndjson", "application/json;;;", "*/*", "application/json\x7f", "x" * 300]
ENCODINGS = ["gzip", "br", "deflate", "identity", "x-gzip", "zstd", "compress", "gzip, br", "GZIP", " br ",
             "gzip;q=1", "", "unknown"]


def encode(body: bytes, how: str) -> bytes:
    """how: the real coding of the bytes sent (which may not be what Content-Encoding says)."""
    if how == "gzip":
        return gzip.compress(body)
    if how == "deflate":
        return zlib.compress(body)
    if how == "raw-deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(body) + c.flush()
    if how == "br":
        return brotli.compress(body)
    if how == "truncated-gzip":
        return gzip.compress(body)[:-6]
    if how == "gzip-then-junk":
        return gzip.compress(body) + b"junk"
    return body  # "plain": not compressed at all


CODINGS = ["plain", "gzip", "deflate", "raw-deflate", "br", "truncated-gzip", "gzip-then-junk"]


# ---- query values and header values -------------------------------------------------------------
QUERY_VALUES = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-0", "0", "-1", "1", "0.5", "1e-400",
                     "9" * 5000, "1_000", " 5 ", "0x10", "", "true", "false", "yes", "all", "this", "api",
                     "lineno", "traceback", "%00", "%ED%A0%80", "%FF", "%C3%A9", "a%20b", "%", "%%", "+",
                     "1" * 100, "\u00e9", "v1", "v2", "v9999", "v1.1"]),
    st.text(st.characters(codec="ascii", exclude_characters="#&=%\r\n"), max_size=20),
    st.integers().map(str), st.floats().map(repr))

HEADER_VALUES = st.one_of(
    st.sampled_from(["", " ", "x" * 129, "x" * 4000, "v1", "V1", "1", "1.0", "v1.1", "v2", "v0", "v99999", "vv1",
                     "v1,v2", "nan", "\x7f", "\u00e9", "\u00ff\u00fe", "\x00", "a\x01b", "\t"]),
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40))
ACCEPT_ENCODINGS = st.one_of(
    st.sampled_from(["gzip;q=nan", "br;q=2", "gzip;q=inf", "gzip;q=-1", "*;q=nan", "gzip;q=", "gzip;q",
                     ";q=1", ",,,", "gzip;q=0.5;q=0.9", "identity;q=0", "*;q=0", "br;level=11",
                     ", ".join(["gzip;q=0.5"] * 300), ",".join(f"c{i}" for i in range(1500))]),
    st.lists(st.tuples(st.sampled_from(["gzip", "br", "deflate", "*", "identity", "x-gzip", "zstd", "GZIP"]),
                       st.one_of(st.none(), st.floats(),
                                 st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=4))),
             max_size=6).map(
        lambda parts: ", ".join(c if q is None else f"{c};q={q}" for c, q in parts)))
