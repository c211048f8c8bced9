"""service/jsonc.py: the C scanner and encoder made once give what json.loads and json.dumps give."""
import json
import math

import pytest

from service import jsonc

DOCS = [{"operation": "summarize", "success": True, "result": "é \"q\" \\ \n \u2713 \ud83d\ude00",
         "metadata": {"word_count": 3, "tokens": {"prompt": 1, "completion": 2}, "model": None}},
        [1, 2.5, -0.0, 1e300, True, False, None, "", [], {}], {"n": float("nan"), "i": float("inf"), 1: "int key"}]


@pytest.mark.parametrize("doc", DOCS)
def test_dumps_compact_is_json_dumps_with_compact_separators(doc):
    assert jsonc.dumps_compact(doc) == json.dumps(doc, separators=(",", ":"))


def test_dumps_compact_refuses_what_json_refuses():
    with pytest.raises(TypeError):
        jsonc.dumps_compact({"x": object()})


@pytest.mark.parametrize("s", ["prompt", 'quotes " \\ \x00 \n \u2713 é', ""])
def test_quote_is_json_dumps_of_a_string(s):
    assert jsonc.quote(s) == json.dumps(s)


@pytest.mark.parametrize("text", ['{"a":1}', ' {"a": [1, 2 ]}\n', "[1,2]", '"x"', "1", "-2.5e3", "null", "NaN",
                                  '{"a":{"b":[{"c":"\\u00e9"}]}}'])
def test_loads_is_json_loads(text):
    a, b = json.loads(text), jsonc.loads(text)
    assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("text", ["", " ", "nul", '{"a":1}x', '{"a":1} x', "\ufeff{}", "{", '{"a":}', "[1,]"])
def test_loads_refuses_what_json_loads_refuses(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsonc.loads(text)
