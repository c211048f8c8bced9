"""LocalProvider: deterministic outputs, option limits, sentiment, qa."""
from __future__ import annotations

import pytest

from service.providers import LocalProvider
from service.providers.base import ProviderError, ProviderResult, TextRequest
from service.providers.local import analyze, estimate_tokens

from .helpers import TEXT

REVIEW_POS = "I love this phone. The camera is excellent and the battery life is amazing. Highly recommended!"
REVIEW_NEG = "This was a terrible purchase. The screen broke after two days and support was useless and rude."
NEUTRAL = "The meeting starts at nine in room four. The agenda has three items about the quarterly schedule."


@pytest.fixture
def p() -> LocalProvider:
    return LocalProvider()


def run(p, op, text=TEXT, question=None, **options):
    return p.run(TextRequest(op, text, options, question))


def sentences_of(text):
    return [s.text for s in analyze(text).sentences]


# ---- summarize -------------------------------------------------------------
def test_summarize_is_deterministic_and_extractive(p):
    a = run(p, "summarize", max_length=60)
    b = run(p, "summarize", max_length=60)
    assert a.payload == b.payload
    assert a.provider == "local" and a.model == "local-extractive-1"
    summary = a.payload["result"]
    sents = sentences_of(TEXT)
    picked = [s for s in sents if s in summary]
    assert picked, "summary must be made of sentences of the text"
    # kept in original order
    positions = [summary.index(s) for s in picked]
    assert positions == sorted(positions)
    assert [sents.index(s) for s in picked] == sorted(sents.index(s) for s in picked)
    # the opening definition is the most salient sentence here
    assert sents[0] in summary


@pytest.mark.parametrize("max_length", [10, 20, 35, 60, 100, 500])
def test_summarize_respects_max_length(p, max_length):
    summary = run(p, "summarize", max_length=max_length).payload["result"]
    assert 0 < len(summary.split()) <= max_length


def test_summarize_default_max_length_is_100_words(p):
    long_text = " ".join([TEXT] * 5)
    summary = run(p, "summarize", long_text).payload["result"]
    assert 0 < len(summary.split()) <= 100


def test_summarize_truncates_a_single_long_sentence(p):
    one = ("Machine learning is a field of artificial intelligence that uses statistical techniques to give "
           "computer systems the ability to learn from data.")
    summary = run(p, "summarize", one, max_length=10).payload["result"]
    assert len(summary.split()) == 10
    assert summary.endswith("...") and one.startswith(summary[:-3])
    # a budget that fits a shorter salient sentence uses it whole instead
    summary = run(p, "summarize", max_length=10).payload["result"]
    assert summary in sentences_of(TEXT)


def test_summary_is_shorter_than_the_text(p):
    assert len(run(p, "summarize").payload["result"]) < len(TEXT)


# ---- sentiment ---------------------------------------------------------------
def sentiment(p, text):
    return run(p, "sentiment", text).payload["sentiment"]


def test_sentiment_positive_names_its_words(p):
    s = sentiment(p, REVIEW_POS)
    assert s["label"] == "positive"
    assert 0.7 <= s["confidence"] <= 1
    for w in ("love", "excellent", "amazing"):
        assert w in s["explanation"]


def test_sentiment_negative_names_its_words(p):
    s = sentiment(p, REVIEW_NEG)
    assert s["label"] == "negative"
    assert 0.7 <= s["confidence"] <= 1
    assert "terrible" in s["explanation"] and "useless" in s["explanation"]


def test_sentiment_neutral_without_sentiment_words(p):
    s = sentiment(p, NEUTRAL)
    assert s["label"] == "neutral"
    assert 0 <= s["confidence"] <= 1
    assert "no sentiment-bearing words" in s["explanation"]


def test_sentiment_negation(p):
    s = sentiment(p, "The food was not good at all.")
    assert s["label"] == "negative"
    assert "not good" in s["explanation"]
    s = sentiment(p, "Honestly, the hotel was not bad.")
    assert s["label"] == "positive"
    assert "not bad" in s["explanation"]
    s = sentiment(p, "I don't like this design.")
    assert s["label"] == "negative"


def test_sentiment_intensifiers_raise_confidence(p):
    plain = sentiment(p, "The service was good.")
    strong = sentiment(p, "The service was extremely good.")
    weak = sentiment(p, "The service was slightly good.")
    assert plain["label"] == strong["label"] == weak["label"] == "positive"
    assert weak["confidence"] < plain["confidence"] < strong["confidence"]
    assert "extremely good" in strong["explanation"]


def test_sentiment_contrast_weighs_the_clause_after_but(p):
    s = sentiment(p, "The food was good but the service was terrible.")
    assert s["label"] == "negative"
    assert "terrible" in s["explanation"] and "good" in s["explanation"]


def test_sentiment_mixed_is_neutral_with_lower_confidence(p):
    s = sentiment(p, "The screen is great. The battery is bad.")
    assert s["label"] == "neutral"
    assert s["confidence"] <= 0.7
    assert "great" in s["explanation"] and "bad" in s["explanation"]


def test_sentiment_is_deterministic(p):
    assert sentiment(p, REVIEW_POS) == sentiment(p, REVIEW_POS)


# ---- key points ------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_key_points_respects_max_points(p, n):
    pts = run(p, "key_points", max_points=n).payload["key_points"]
    assert len(pts) == n
    assert len(set(pts)) == n


def test_key_points_default_is_five_and_deterministic(p):
    a = run(p, "key_points").payload["key_points"]
    assert len(a) == 5
    assert a == run(p, "key_points").payload["key_points"]
    # each point comes from the text (leading connectives may be dropped)
    for pt in a:
        assert pt.rstrip(".")[-30:] in TEXT


def test_key_points_never_more_than_the_sentences(p):
    pts = run(p, "key_points", "One short sentence about cats and dogs.", max_points=10).payload["key_points"]
    assert len(pts) == 1


# ---- questions ------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 5, 8, 12])
def test_questions_count_and_shape(p, n):
    qs = run(p, "questions", num_questions=n).payload["questions"]
    assert len(qs) == n
    assert len({q.lower() for q in qs}) == n
    assert all(q.endswith("?") and q[0].isupper() for q in qs)


def test_questions_come_from_the_text(p):
    qs = run(p, "questions").payload["questions"]
    assert len(qs) == 5
    assert qs == run(p, "questions").payload["questions"]
    joined = " ".join(qs)
    assert "What is machine learning?" in qs
    assert "Arthur Samuel" in joined


def test_questions_on_a_tiny_text_still_fill_the_count(p):
    qs = run(p, "questions", "The cat sat on the mat.", num_questions=5).payload["questions"]
    assert len(qs) == 5


# ---- qa -------------------------------------------------------------------------------
@pytest.mark.parametrize("question, expected", [
    ("Who coined the name machine learning?", "coined in 1959 by Arthur Samuel"),
    ("When was the term machine learning coined?", "coined in 1959"),
    ("What do deep learning models require?", "large amounts of training data"),
    ("Which companies invested in deep learning research?", "Google and Microsoft"),
    ("What is deep learning based on?", "artificial neural networks"),
])
def test_qa_picks_the_answer_sentence(p, question, expected):
    r = run(p, "qa", question=question)
    assert expected in r.payload["result"]
    assert r.payload["result"] in sentences_of(TEXT)


def test_qa_without_an_answer_says_so(p):
    r = run(p, "qa", question="What colour is the ocean on Jupiter?")
    assert r.payload["result"] == "No answer found in the text."


def test_qa_needs_a_question(p):
    with pytest.raises(ProviderError) as e:
        run(p, "qa")
    assert e.value.kind == "client"


def test_unknown_operation_is_a_client_error(p):
    with pytest.raises(ProviderError) as e:
        run(p, "translate")
    assert e.value.kind == "client" and not e.value.retryable


# ---- tokens, async, batch ----------------------------------------------------------
def test_token_estimates(p):
    r = run(p, "summarize", max_length=30)
    words = len(TEXT.split())
    assert r.tokens["prompt"] == estimate_tokens(TEXT) == (words * 4 + 2) // 3
    assert r.tokens["completion"] == estimate_tokens(r.payload["result"]) > 0
    assert r.tokens["total"] == r.tokens["prompt"] + r.tokens["completion"]
    qa = run(p, "qa", question="Who coined machine learning?")
    assert qa.tokens["prompt"] == estimate_tokens(TEXT) + estimate_tokens("Who coined machine learning?")


async def test_process_is_the_same_as_run(p):
    req = TextRequest("key_points", TEXT, {"max_points": 2})
    assert (await p.process(req)).payload == p.run(req).payload


async def test_process_batch_handles_the_list_in_one_call(p):
    reqs = [TextRequest("summarize", TEXT, {"max_length": 40}),
            TextRequest("sentiment", REVIEW_NEG),
            TextRequest("qa", TEXT),  # no question: an error in its slot
            TextRequest("questions", TEXT, {"num_questions": 2}),
            TextRequest("qa", TEXT, {}, "Who coined the name machine learning?")]
    out = await p.process_batch(reqs)
    assert len(out) == 5
    assert isinstance(out[0], ProviderResult) and len(out[0].payload["result"].split()) <= 40
    assert out[1].payload["sentiment"]["label"] == "negative"
    assert isinstance(out[2], ProviderError) and out[2].kind == "client"
    assert len(out[3].payload["questions"]) == 2
    assert "Arthur Samuel" in out[4].payload["result"]
    for r, req in zip(out, reqs):
        if isinstance(r, ProviderResult):
            assert r.payload == p.run(req).payload


def test_a_10000_character_text_works_for_every_operation(p):
    big = (TEXT + "\n\n") * (10_000 // (len(TEXT) + 2))
    big = big[:10_000]
    for op in ("summarize", "sentiment", "key_points", "questions"):
        assert run(p, op, big).payload
    assert run(p, "qa", big, question="What do deep learning models require?").payload["result"]


async def test_health(p):
    h = await p.health()
    assert h["status"] == "healthy" and h["provider"] == "local"


async def test_a_batch_gives_the_loop_back_between_items_once_its_slice_is_used(p, monkeypatch):
    """Each item here holds the loop for at least 0.6 ms: a batch of 10 cannot run them all in one slice of
    1 ms, so another task gets turns in between; the results are those of run(), in order."""
    import time

    from service.providers import local

    real = p.run

    def slow_run(req):
        t = time.perf_counter()
        while time.perf_counter() - t < 0.0006:
            pass
        return real(req)
    monkeypatch.setattr(p, "run", slow_run)
    reqs = [TextRequest("sentiment", f"Item {i} is {'good' if i % 2 else 'bad'}.") for i in range(10)]
    reqs[3] = TextRequest("qa", TEXT)   # an error keeps its slot
    out, turns = await _turns_during(p.process_batch(reqs))
    assert turns >= 10 * 0.0006 // local.BATCH_SLICE_SECONDS - 1   # at least one turn per slice used
    assert isinstance(out[3], ProviderError)
    assert [o.payload for i, o in enumerate(out) if i != 3] == [real(r).payload for i, r in enumerate(reqs) if i != 3]


async def test_a_batch_within_its_slice_runs_in_one_go(p):
    """Short items: no turn for anyone else in between (yielding costs a loop iteration per slice)."""

    from service.providers import local
    reqs = [TextRequest("sentiment", "Fine.")] * 3
    local.BATCH_SLICE_SECONDS, saved = 60.0, local.BATCH_SLICE_SECONDS
    try:
        out, during = await _turns_during(p.process_batch(reqs))
    finally:
        local.BATCH_SLICE_SECONDS = saved
    assert during == 0 and len(out) == 3


async def _turns_during(coro):
    """(coro's result, how many turns another task got on the loop while it ran)."""
    import asyncio
    turns = 0
    done = False

    async def ticker():
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)
    t = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = turns
    try:
        out = await coro
    finally:
        done = True
        await t
    return out, turns - before
