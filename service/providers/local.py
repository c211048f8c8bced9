"""The embedded provider: deterministic, offline, pure Python.

Every operation works from one analysis of the text (sentences, tokens, light
stems, term frequencies), cached by text so a batch of operations over the
same text tokenises it once.

- summarize: extractive; sentences scored by content-term frequency with a
  position bonus, chosen best-first within the word budget, kept in order.
- sentiment: lexicon with negation ("not good"), intensifiers ("very"),
  diminishers ("slightly"), contrast ("..., but ...") and emphasis.
- key_points: the top-scored distinct sentences, in document order.
- questions: from definitional sentences, named entities and key terms.
- qa: BM25 over sentences against the question, with answer-type hints.
"""
from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from service.providers.base import OPERATIONS, Provider, ProviderError, ProviderResult, TextRequest

BATCH_SLICE_SECONDS = 0.001   # process_batch yields to the event loop between items once it held it this long

# ---------------------------------------------------------------------------
# word lists
# ---------------------------------------------------------------------------
STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before being
below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down
during each either else etc even ever every few for from further get gets got had hadn't has hasn't have
haven't having he he'd he'll he's her here here's hers herself him himself his how how's however i i'd
i'll i'm i've if in into is isn't it it's its itself just let's like made make many may me might more
most much must mustn't my myself neither no nor not now of off often on once one only or other ought our
ours ourselves out over own per perhaps quite rather really same says said shall shan't she she'd she'll
she's should shouldn't since so some such than that that's the their theirs them themselves then there
there's these they they'd they'll they're they've this those though through thus to too under until up
upon us use used uses using very via was wasn't we we'd we'll we're we've were weren't what what's when
when's where where's whether which while who who's whom whose why why's will with within without won't
would wouldn't yet you you'd you'll you're you've your yours yourself yourselves
""".split())

# words that carry the question, not its topic
QUESTION_WORDS = frozenset("what which who whom whose when where why how does did do is are was were "
                           "can could would should will tell describe explain name list".split())

_POS = {
    3.0: """excellent outstanding amazing awesome superb wonderful fantastic brilliant exceptional love loved
        loves perfect perfectly phenomenal magnificent marvelous marvellous incredible delightful thrilled
        superior flawless stellar breathtaking masterpiece exquisite ecstatic best""",
    2.0: """good great nice happy pleased glad enjoy enjoyed enjoys enjoyable impressive impressed beautiful
        beneficial success successful effective efficient reliable recommend recommended satisfied
        satisfying pleasant positive favorite favourite helpful valuable awesome elegant robust powerful
        improve improved improvement improvements innovative exciting excited fun friendly fast smooth
        strong better win wins won winning gain gains benefit benefits advantage advantages like liked
        likes appreciate appreciated thank thanks grateful comfortable easy intuitive secure safe stable
        clean clear promising proud praise praised celebrate celebrated support supportive wow""",
    1.0: """fine okay ok decent adequate fair solid useful interesting convenient affordable calm correct
        accurate capable competent hope hopeful growth grow grows grew progress resolved fixed works working
        worked right well ready sure simple lively steady popular healthy rich""",
}
_NEG = {
    3.0: """terrible horrible awful worst hate hated hates disgusting atrocious abysmal dreadful appalling
        horrendous pathetic useless worthless disaster disastrous catastrophic catastrophe furious
        unacceptable nightmare garbage trash scam fraud miserable""",
    2.0: """bad poor disappointing disappointed disappointment sad angry annoying annoyed frustrating
        frustrated broken fail failed fails failure failures problem problems issue issues bug bugs buggy
        crash crashed crashes crashing error errors wrong difficult hard confusing confused slow unreliable
        expensive overpriced ugly dislike disliked hurt harmful dangerous unsafe weak worse negative rude
        unhappy upset complaint complain complained defective damaged mess messy lost loss losses lose
        losing decline declined dropped risk risky threat toxic stressful painful pain regret inferior
        lacking lack lacks flawed flaw flaws insecure unstable outage outages delay delayed delays
        shortage crisis poorly sucks inadequate""",
    1.0: """mediocre boring dull average meh okayish tedious clunky awkward odd strange concern concerns
        concerned worried worry doubt doubtful unclear limited minor noisy outdated bland cheap complex
        complicated tired uncomfortable inconvenient unfortunately unfortunate sadly""",
}
LEXICON: dict[str, float] = {}
for _w, _words in _POS.items():
    for _t in _words.split():
        LEXICON[_t] = _w
for _w, _words in _NEG.items():
    for _t in _words.split():
        LEXICON[_t] = -_w

NEGATORS = frozenset("not no never none nobody nothing neither nor without hardly barely scarcely "
                     "cannot cant dont doesnt didnt isnt wasnt arent werent wont wouldnt couldnt "
                     "shouldnt aint hasnt havent hadnt".split())
INTENSIFIERS = {
    "very": 1.3, "really": 1.3, "extremely": 1.5, "incredibly": 1.5, "so": 1.25, "too": 1.2,
    "absolutely": 1.5, "totally": 1.4, "truly": 1.3, "highly": 1.3, "super": 1.3, "remarkably": 1.4,
    "exceptionally": 1.5, "especially": 1.2, "most": 1.2, "utterly": 1.5, "deeply": 1.3,
    "completely": 1.4, "terribly": 1.4, "awfully": 1.4, "horribly": 1.4, "thoroughly": 1.3, "genuinely": 1.2, "particularly": 1.2, "such": 1.15,
    "slightly": 0.5, "somewhat": 0.6, "fairly": 0.8, "rather": 0.8, "little": 0.7, "marginally": 0.5,
    "mildly": 0.6, "partly": 0.6, "kinda": 0.6, "quite": 1.1, "pretty": 1.1,
}
CONTRAST = frozenset({"but", "however"})
NEGATION_WEIGHT = -0.74   # "not good" is mildly negative, "not bad" mildly positive
LABEL_THRESHOLD = 0.1

DISCOURSE_MARKERS = ("however, ", "moreover, ", "furthermore, ", "in addition, ", "additionally, ",
                     "also, ", "finally, ", "overall, ", "in conclusion, ", "therefore, ", "thus, ",
                     "consequently, ", "meanwhile, ", "as a result, ", "for example, ", "in fact, ")
_SUBJECT_GLUE = frozenset({"of", "and", "for", "in", "on"})
_PARTICIPLES = frozenset("known born made given seen taken written built found held done shown thought "
                         "being not also".split())
PRONOUN_SUBJECTS = frozenset("it this that there they he she we i you these those which what who one "
                             "here its such each".split())

# ---------------------------------------------------------------------------
# analysis
# ---------------------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)*")
_SENT_SPLIT = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
_PARA_SPLIT = re.compile(r"\n\s*\n")
_BULLET_LINE = re.compile(r"\n(?=\s*(?:[-*\u2022]|\d+[.)])\s)")
_BULLET_PREFIX = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_ABBREV = frozenset("mr mrs ms dr prof sr jr st vs etc inc ltd co corp e.g i.e fig no approx dept est "
                    "jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k".split())
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_YEAR = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b")


@lru_cache(maxsize=8192)
def stem(w: str) -> str:
    """A light suffix stripper: enough to match change/changes/changed/changing."""
    if len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if w.endswith("ing") and len(w) > 5:
        w = w[:-3]
    elif w.endswith("ed") and len(w) > 4:
        w = w[:-2]
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return w


def count_words(s: str) -> int:
    return len(s.split())


def estimate_tokens(s: str) -> int:
    """About 4 tokens per 3 words, the usual English rule of thumb."""
    n = count_words(s)
    return (n * 4 + 2) // 3


@dataclass(frozen=True)
class Sentence:
    index: int
    text: str
    words: tuple[str, ...]     # original case
    lower: tuple[str, ...]
    terms: tuple[str, ...]     # stems of content words, in order
    para_start: bool


@dataclass(frozen=True)
class Doc:
    sentences: tuple[Sentence, ...]
    tf: dict                    # stem -> count over the text
    surface: dict               # stem -> most common lowercase surface form
    word_count: int


def _split_sentences(text: str) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for para in _PARA_SPLIT.split(text.strip()):
        for block in _BULLET_LINE.split(para):
            block = _BULLET_PREFIX.sub("", block)
            block = " ".join(block.split())
            if not block:
                continue
            pieces = _SENT_SPLIT.split(block)
            merged: list[str] = []
            for p in pieces:
                if merged:
                    last = merged[-1].rsplit(None, 1)[-1].rstrip(".").lower()
                    if last in _ABBREV or (len(last) == 1 and last.isalpha()):
                        merged[-1] = merged[-1] + " " + p
                        continue
                merged.append(p)
            for i, s in enumerate(merged):
                out.append((s, i == 0))
    return out


@lru_cache(maxsize=256)
def analyze(text: str) -> Doc:
    sentences: list[Sentence] = []
    tf: Counter = Counter()
    forms: dict[str, Counter] = {}
    total = 0
    for i, (s, para_start) in enumerate(_split_sentences(text)):
        words = tuple(_WORD.findall(s))
        lower = tuple(w.lower().replace("\u2019", "'") for w in words)
        terms = []
        for w in lower:
            if w in STOPWORDS or len(w) < 2:
                continue
            st = stem(w)
            terms.append(st)
            forms.setdefault(st, Counter())[w] += 1
        tf.update(terms)
        total += len(words)
        sentences.append(Sentence(i, s, words, lower, tuple(terms), para_start))
    surface = {st: c.most_common(1)[0][0] for st, c in forms.items()}
    return Doc(tuple(sentences), dict(tf), surface, total)


def _score_sentences(doc: Doc) -> list[float]:
    if not doc.sentences:
        return []
    max_tf = max(doc.tf.values(), default=1)
    n = len(doc.sentences)
    scores = []
    for s in doc.sentences:
        if not s.terms:
            scores.append(0.0)
            continue
        base = sum(doc.tf[t] for t in s.terms) / max_tf / len(s.terms) ** 0.7
        if len(s.words) < 5:
            base *= 0.6
        if s.index == 0:
            base *= 1.3
        elif s.para_start:
            base *= 1.1
        elif s.index == n - 1 and n > 2:
            base *= 1.05
        scores.append(base)
    return scores


def _jaccard(a: set, b: set) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def _rank(doc: Doc) -> list[int]:
    scores = _score_sentences(doc)
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def truncate_words(s: str, n: int) -> str:
    words = s.split()
    if len(words) <= n:
        return s
    return " ".join(words[:n]).rstrip(",;:.") + "..."


def _opt_int(options: dict, key: str, default: int, lo: int, hi: int) -> int:
    v = (options or {}).get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return default
    return max(lo, min(hi, int(v)))


# ---------------------------------------------------------------------------
# operations
# ---------------------------------------------------------------------------
def summarize(text: str, max_length: int = 100) -> str:
    doc = analyze(text)
    if not doc.sentences:
        return ""
    n = len(doc.sentences)
    max_sentences = max(1, math.ceil(n / 3))
    budget = max_length
    chosen: list[int] = []
    chosen_terms: list[set] = []
    for i in _rank(doc):
        if len(chosen) >= max_sentences:
            break
        s = doc.sentences[i]
        wc = count_words(s.text)
        if wc > budget:
            continue
        terms = set(s.terms)
        if any(_jaccard(terms, t) > 0.6 for t in chosen_terms):
            continue
        chosen.append(i)
        chosen_terms.append(terms)
        budget -= wc
        if budget <= 0:
            break
    if not chosen:  # the best sentence alone is longer than the budget
        return truncate_words(doc.sentences[_rank(doc)[0]].text, max_length)
    return " ".join(doc.sentences[i].text for i in sorted(chosen))


def _strip_marker(s: str) -> str:
    low = s.lower()
    for m in DISCOURSE_MARKERS:
        if low.startswith(m) and len(s) > len(m) + 1:
            rest = s[len(m):]
            return rest[0].upper() + rest[1:]
    return s


def key_points(text: str, max_points: int = 5) -> list[str]:
    doc = analyze(text)
    chosen: list[int] = []
    chosen_terms: list[set] = []
    for i in _rank(doc):
        if len(chosen) >= max_points:
            break
        s = doc.sentences[i]
        terms = set(s.terms)
        if not terms or any(_jaccard(terms, t) > 0.5 for t in chosen_terms):
            continue
        chosen.append(i)
        chosen_terms.append(terms)
    return [truncate_words(_strip_marker(doc.sentences[i].text), 40) for i in sorted(chosen)]


def sentiment(text: str) -> dict:
    doc = analyze(text)
    contributions: dict[str, float] = {}
    total = 0.0
    all_caps_text = text.isupper()
    for s in doc.sentences:
        lower = s.lower
        contrast_at = max((i for i, w in enumerate(lower) if w in CONTRAST), default=-1)
        s_sum = 0.0
        for i, w in enumerate(lower):
            weight = LEXICON.get(w)
            if weight is None:
                weight = _lex_variant(w)
                if weight is None:
                    continue
            start = i
            # modifiers in the three words before: intensifiers and negators
            for j in range(i - 1, max(-1, i - 4), -1):
                m = lower[j]
                if m in INTENSIFIERS and j >= i - 2:
                    weight *= INTENSIFIERS[m]
                    start = j
                elif m in NEGATORS or m.endswith("n't"):
                    weight *= NEGATION_WEIGHT
                    start = j
                    break
                elif m in LEXICON or m in CONTRAST:
                    break
            if not all_caps_text and s.words[i].isupper() and len(w) > 1:
                weight *= 1.2
            if contrast_at >= 0:
                weight *= 1.5 if i > contrast_at else 0.5
            phrase = " ".join(lower[start:i + 1])
            contributions[phrase] = contributions.get(phrase, 0.0) + weight
            s_sum += weight
        if s_sum:
            s_sum *= 1 + 0.1 * min(3, s.text.count("!"))
        total += s_sum
    # long texts need more evidence for the same score
    alpha = 15.0 * max(1.0, len(doc.sentences) / 4)
    compound = total / math.sqrt(total * total + alpha) if total else 0.0
    pos = sum(v for v in contributions.values() if v > 0)
    neg = -sum(v for v in contributions.values() if v < 0)
    if not contributions:
        return {"label": "neutral", "confidence": 0.6,
                "explanation": "Neutral: no sentiment-bearing words were found."}

    def fmt(items):
        return ", ".join(f"'{p}' ({v:+.1f})" for p, v in items)

    ranked = sorted(contributions.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    positives = [kv for kv in ranked if kv[1] > 0][:4]
    negatives = [kv for kv in ranked if kv[1] < 0][:4]
    if compound >= LABEL_THRESHOLD or compound <= -LABEL_THRESHOLD:
        label = "positive" if compound > 0 else "negative"
        dominance = abs(pos - neg) / (pos + neg)
        confidence = 0.5 + 0.49 * abs(compound) * math.sqrt(dominance)
        drivers, opposing = (positives, negatives) if label == "positive" else (negatives, positives)
        expl = f"{label.capitalize()} (score {compound:+.2f}): driven by {fmt(drivers)}"
        if opposing:
            expl += f"; partly offset by {fmt(opposing[:2])}"
    else:
        label = "neutral"
        confidence = 0.5 + 0.2 * (1 - abs(compound) / LABEL_THRESHOLD)
        parts = []
        if positives:
            parts.append(f"positive {fmt(positives[:2])}")
        if negatives:
            parts.append(f"negative {fmt(negatives[:2])}")
        expl = f"Neutral (score {compound:+.2f}): " + " balanced by ".join(parts)
    return {"label": label, "confidence": round(min(0.99, max(0.0, confidence)), 3), "explanation": expl + "."}


def _lex_variant(w: str) -> float | None:
    for cut, add in (("s", ""), ("ed", ""), ("ed", "e"), ("d", ""), ("ly", ""), ("ing", ""), ("ing", "e")):
        if w.endswith(cut) and len(w) > len(cut) + 2:
            v = LEXICON.get(w[: -len(cut)] + add)
            if v is not None:
                return v
    return None


def answer(text: str, question: str) -> str:
    doc = analyze(text)
    if not doc.sentences:
        return "No answer found in the text."
    q_lower = [w.lower() for w in _WORD.findall(question)]
    q_terms = [stem(w) for w in q_lower if w not in STOPWORDS and w not in QUESTION_WORDS and len(w) > 1]
    if not q_terms:
        q_terms = [stem(w) for w in q_lower if w not in QUESTION_WORDS]
    n = len(doc.sentences)
    avgdl = sum(len(s.terms) for s in doc.sentences) / n or 1.0
    df: Counter = Counter()
    for s in doc.sentences:
        df.update(set(s.terms))
    k1, b = 1.5, 0.75
    q_set = set(q_terms)
    qtext = " ".join(q_lower)
    wants_number = qtext.startswith(("when", "how many", "how much", "what year", "how long", "how old"))
    wants_name = qtext.startswith(("who", "whom", "whose"))
    best, best_score = -1, 0.0
    for s in doc.sentences:
        tf = Counter(t for t in s.terms if t in q_set)
        if not tf:
            continue
        dl = len(s.terms)
        score = 0.0
        for t, f in tf.items():
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            score += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * dl / avgdl))
        if wants_number and (_NUMBER.search(s.text) or _YEAR.search(s.text)):
            score *= 1.25
        if wants_name and any(w[:1].isupper() for w in s.words[1:]):
            score *= 1.1
        if score > best_score:
            best, best_score = s.index, score
    if best < 0:
        return "No answer found in the text."
    return doc.sentences[best].text


def _entities(doc: Doc) -> list[str]:
    """Capitalised word runs; a sentence's first word counts only if it is
    capitalised somewhere else too (so "However" or "Machine" do not)."""
    mid_caps = {w for s in doc.sentences for w in s.words[1:] if w[:1].isupper()}
    counts: Counter = Counter()
    first_seen: dict[str, int] = {}
    for s in doc.sentences:
        run: list[str] = []
        for pos, w in enumerate(s.words + ("",)):
            if w[:1].isupper() and (pos > 0 or w in mid_caps) and w.lower() not in STOPWORDS:
                run.append(w)
                continue
            if run:
                name = " ".join(run)
                if len(name) > 1:
                    counts[name] += 1
                    first_seen.setdefault(name, s.index)
                run = []
    return sorted(counts, key=lambda e: (-counts[e], first_seen[e]))


_DEFINITION = re.compile(
    r"^(?P<det>(?:The|A|An)\s+)?(?P<subj>[A-Za-z0-9][\w\-']*(?:\s+[\w\-']+){0,3}?)\s+"
    r"(?P<verb>is|are|was|were)\s+(?P<rest>.+)$")


def _subject_case(subj: str, entities: set) -> str:
    first = subj.split()[0]
    if subj in entities or first in entities or (len(first) > 1 and first.isupper()):
        return subj
    return first[0].lower() + subj[1:]


def questions(text: str, num_questions: int = 5) -> list[str]:
    doc = analyze(text)
    ranked = _rank(doc)
    entities = _entities(doc)
    entity_set = set(entities)
    definitional: list[str] = []
    for i in ranked:
        m = _DEFINITION.match(doc.sentences[i].text)
        if not m:
            continue
        subj = m.group("subj")
        sw = subj.lower().split()
        if sw[0] in PRONOUN_SUBJECTS or any(w in STOPWORDS and w not in _SUBJECT_GLUE for w in sw):
            continue
        if m.group("rest").split()[0].lower() in _PARTICIPLES or m.group("rest").split()[0].endswith("ed"):
            continue  # passive ("... was coined by ..."): not a definition
        det = "the " if (m.group("det") or "").strip().lower() == "the" else ""
        verb = m.group("verb")
        definitional.append(f"What {verb} {det}{_subject_case(subj, entity_set)}?")
    entity_qs = [f"What role does {e} play in the text?" for e in entities[:10]]
    entity_words = {w.lower() for e in entities for w in e.split()}
    topics = _topics(doc, entity_words)
    defined = " ".join(definitional[:5]).lower()
    term_qs = [f"What is the significance of {t} in the text?" for t in topics[:5] if t not in defined]
    relation_qs = [f"How are {a} and {b} related?" for a, b in zip(topics[0::2], topics[1::2])]
    about_qs = [f"What does the text say about {t}?" for t in topics[5:]]
    generic = ["What is the main idea of the text?",
               "What evidence does the text give for its main claims?",
               "What conclusions can be drawn from the text?",
               "What questions does the text leave unanswered?"]
    out: list[str] = []
    seen: set = set()

    def add(q: str) -> None:
        k = q.lower()
        if k not in seen and len(out) < num_questions:
            seen.add(k)
            out.append(q)

    for group in zip_longest_all(definitional[:5], entity_qs, term_qs):
        for q in group:
            add(q)
    for q in relation_qs + about_qs + definitional[5:] + generic:
        add(q)
    return out


def _topics(doc: Doc, exclude: set) -> list[str]:
    """Key terms: repeated two-word phrases first, then frequent single words."""
    pairs: Counter = Counter()
    for s in doc.sentences:
        low = s.lower
        for a, b in zip(low, low[1:]):
            if (a not in STOPWORDS and b not in STOPWORDS and len(a) > 2 and len(b) > 2
                    and not a.isdigit() and not b.isdigit()):
                pairs[(a, b)] += 1
    bigrams = [p for p, c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0])) if c >= 2][:5]
    covered = {stem(w) for p in bigrams for w in p}
    out = [" ".join(p) for p in bigrams if not (set(p) <= exclude)]
    for t, _ in sorted(doc.tf.items(), key=lambda kv: (-kv[1], kv[0])):
        w = doc.surface.get(t, "")
        if t in covered or w in exclude or w.isdigit() or len(w) < 3:
            continue
        out.append(w)
        if len(out) >= 12:
            break
    return out


def zip_longest_all(*lists):
    for i in range(max((len(x) for x in lists), default=0)):
        yield [x[i] for x in lists if i < len(x)]


# ---------------------------------------------------------------------------
# the provider
# ---------------------------------------------------------------------------
class LocalProvider(Provider):
    name = "local"
    model = "local-extractive-1"

    def run(self, req: TextRequest) -> ProviderResult:
        """Synchronous core (fast: a 10,000-character text takes a few ms)."""
        op = req.operation
        opts = req.options or {}
        if op not in OPERATIONS:
            raise ProviderError("client", f"unknown operation {op!r}")
        if not isinstance(req.text, str) or not req.text.strip():
            raise ProviderError("client", "text is empty")
        if op == "summarize":
            out = summarize(req.text, _opt_int(opts, "max_length", 100, 1, 10_000))
            payload, completion = {"result": out}, out
        elif op == "sentiment":
            s = sentiment(req.text)
            payload, completion = {"sentiment": s}, f"{s['label']} {s['explanation']}"
        elif op == "key_points":
            pts = key_points(req.text, _opt_int(opts, "max_points", 5, 1, 100))
            payload, completion = {"key_points": pts}, " ".join(pts)
        elif op == "questions":
            qs = questions(req.text, _opt_int(opts, "num_questions", 5, 1, 100))
            payload, completion = {"questions": qs}, " ".join(qs)
        else:
            if not req.question or not str(req.question).strip():
                raise ProviderError("client", "qa needs a question")
            out = answer(req.text, str(req.question))
            payload, completion = {"result": out}, out
        prompt_t = estimate_tokens(req.text) + (estimate_tokens(req.question) if req.question else 0)
        comp_t = estimate_tokens(completion)
        return ProviderResult(payload, self.name, self.model,
                              {"prompt": prompt_t, "completion": comp_t, "total": prompt_t + comp_t})

    async def process(self, req: TextRequest) -> ProviderResult:
        return self.run(req)

    async def process_batch(self, reqs: list[TextRequest],
                            concurrency: int | None = None) -> list[ProviderResult | ProviderError]:
        """The whole list in one call; texts shared between items are analysed once.
        (`concurrency` is accepted for interface parity and not needed here.)

        The work is CPU on the event loop, so the batch gives the loop back between two items once it has
        held it for BATCH_SLICE_SECONDS: a batch of five short texts otherwise held it for several ms in one
        go (the stalls a probe saw during the seed replay's resilience benchmark).  An item is never split."""
        out: list[ProviderResult | ProviderError] = []
        last = len(reqs) - 1
        start = time.perf_counter()
        for i, r in enumerate(reqs):
            try:
                out.append(self.run(r))
            except ProviderError as e:
                out.append(e)
            if i < last and time.perf_counter() - start >= BATCH_SLICE_SECONDS:
                await asyncio.sleep(0)
                start = time.perf_counter()
        return out

    async def health(self) -> dict:
        return {"status": "healthy", "provider": self.name, "model": self.model}
