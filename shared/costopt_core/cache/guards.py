"""Lexical guards that veto false semantic-cache hits.

Embedding similarity is blind to the small words that change an answer: two
questions that differ only in a number ("Is 7 prime?" / "Is 9 prime?"), a name
("learn Python" / "learn Java"), a negation, or the question word ("why" /
"how") can sit at cosine 0.95 and still need different answers. Serving the
cached answer to such a query is worse than a miss, because the user gets a
confident wrong answer. Each guard here is a cheap, explainable check of the
two prompt texts that rejects one class of those near-miss pairs; together
with the similarity threshold they make the cache's accept decision
(:func:`decide`).

Everything here is pure (strings in, a reason out): no I/O, no model calls,
regexes compiled once at import, so a decision costs tens of microseconds and
the engine can run it on every candidate of a lookup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "REASONS",
    "GuardConfig",
    "PromptFeatures",
    "SemanticDecision",
    "check_guards",
    "decide",
    "extract_features",
]

#: Every rejection reason :func:`decide` can return (stable, machine-readable).
REASONS = (
    "below_threshold",
    "too_short",
    "number_mismatch",
    "date_mismatch",
    "entity_mismatch",
    "negation_mismatch",
    "polarity_mismatch",
    "question_word_mismatch",
    "content_mismatch",
)


class GuardConfig(BaseModel):
    """Which guards run, and how strict they are.

    Every guard can be switched off on its own; the defaults the cache ships
    with are in ``costopt_core.cache.defaults.DEFAULT_GUARDS``.

    Attributes:
        numbers: reject when the numbers in the two prompts differ ("Is 7
            prime?" / "Is 9 prime?"); digits and number words count alike.
        numbers_require_both: only compare numbers when both prompts contain
            some; with ``False`` a number on one side only also rejects.
        dates: reject when month or weekday names differ.
        entities: reject when a name-like token of one prompt (a capitalised
            word inside the sentence, an acronym, a mixed-case or
            letter+digit token, a quoted string) does not occur in the other.
        negation: reject when exactly one of the prompts is negated (not,
            never, n't, without, ...).
        polarity: reject when the prompts use opposite words of a known
            antonym pair (best/worst, advantages/disadvantages, buy/sell...).
        question_word: reject when the prompts ask different kinds of
            question (who / when / where / why / how many / how much / how);
            "what" and "which" are compatible with every kind.
        min_query_words: a query with fewer words than this only hits a
            prompt with the same words (after case and punctuation folding):
            short queries carry too little meaning for similarity to be safe.
            ``0`` switches the rule off.
        max_unmatched_content_words: reject when more than this many content
            words (not stopwords, stemmed) of one prompt are missing from the
            other, counting both directions. ``None`` switches the rule off.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    numbers: bool = True
    numbers_require_both: bool = False
    dates: bool = True
    entities: bool = True
    negation: bool = True
    polarity: bool = True
    question_word: bool = True
    min_query_words: int = Field(default=3, ge=0, le=64)
    max_unmatched_content_words: int | None = Field(default=None, ge=0, le=64)


# --- tokenization ---------------------------------------------------------

# A word keeps inner apostrophes, dots and hyphens ("don't", "U.S.", "e-mail")
# so acronyms and contractions survive as one token.
_TOKEN = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*\.?", re.UNICODE)
_QUOTED = re.compile(r"\"([^\"]{2,60})\"|“([^”]{2,60})”|(?<!\w)'([^']{2,60})'(?!\w)")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:st|nd|rd|th|s|k|m)?(?![\w])", re.I)
_SENT_END = frozenset('.?!:;"“(')

_NUMBER_WORDS = {
    "zero": "0",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
    "half": "0.5",
    "twice": "2",
    "double": "2",
    "triple": "3",
}

_MONTHS = {
    "january": "jan",
    "february": "feb",
    "march": "mar",
    "april": "apr",
    "june": "jun",
    "july": "jul",
    "august": "aug",
    "september": "sep",
    "october": "oct",
    "november": "nov",
    "december": "dec",
    "jan": "jan",
    "feb": "feb",
    "apr": "apr",
    "jun": "jun",
    "jul": "jul",
    "aug": "aug",
    "sept": "sep",
    "oct": "oct",
    "nov": "nov",
    "dec": "dec",
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
    "weekday": "weekday",
    "weekend": "weekend",
    "yesterday": "yesterday",
    "today": "today",
    "tomorrow": "tomorrow",
}

_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "cannot",
        "cant",
        "can't",
        "won't",
        "don't",
        "doesn't",
        "didn't",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "shouldn't",
        "wouldn't",
        "couldn't",
        "haven't",
        "hasn't",
        "hadn't",
        "mustn't",
        "needn't",
        "without",
        "none",
        "nothing",
        "nobody",
        "nowhere",
        "neither",
        "nor",
    ]
)

# Opposite words: a prompt using one side and its match using the other asks
# the opposite question. Kept short and unambiguous on purpose.
_ANTONYM_PAIRS = (
    ("best", "worst"),
    ("good", "bad"),
    ("better", "worse"),
    ("advantage", "disadvantage"),
    ("advantages", "disadvantages"),
    ("pro", "con"),
    ("pros", "cons"),
    ("benefit", "drawback"),
    ("benefits", "drawbacks"),
    ("increase", "decrease"),
    ("gain", "lose"),
    ("buy", "sell"),
    ("before", "after"),
    ("more", "less"),
    ("most", "least"),
    ("start", "stop"),
    ("male", "female"),
    ("men", "women"),
    ("man", "woman"),
    ("boy", "girl"),
    ("boys", "girls"),
    ("boyfriend", "girlfriend"),
    ("husband", "wife"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("true", "false"),
    ("cheap", "expensive"),
    ("rich", "poor"),
    ("easy", "hard"),
    ("easiest", "hardest"),
    ("fast", "slow"),
    ("fastest", "slowest"),
    ("love", "hate"),
    ("happy", "sad"),
    ("positive", "negative"),
    ("win", "lose"),
    ("success", "failure"),
    ("old", "new"),
    ("upper", "lower"),
    ("high", "low"),
    ("higher", "lower"),
    ("import", "export"),
    ("input", "output"),
    ("online", "offline"),
    ("introvert", "extrovert"),
    ("introverts", "extroverts"),
    ("private", "public"),
    ("similarities", "differences"),
)
_ANTONYM: dict[str, frozenset[str]] = {}
for _a, _b in _ANTONYM_PAIRS:
    _ANTONYM[_a] = _ANTONYM.get(_a, frozenset()) | {_b}
    _ANTONYM[_b] = _ANTONYM.get(_b, frozenset()) | {_a}

# Words with a capital that are not names (pronoun, interjections, Quora
# title case of function words).
_NOT_ENTITIES = frozenset(
    [
        "i",
        "i'm",
        "i've",
        "i'd",
        "i'll",
        "ok",
        "okay",
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "for",
        "is",
        "are",
        "what",
        "why",
        "how",
        "who",
        "when",
        "where",
        "which",
        "can",
        "do",
        "does",
        "should",
        "would",
        "will",
        "my",
        "me",
    ]
)

# Abbreviations that users write interchangeably with the full name.
_ALIASES = {
    "us": "usa",
    "u.s.": "usa",
    "u.s": "usa",
    "u.s.a.": "usa",
    "u.s.a": "usa",
    "america": "usa",
    "american": "usa",
    "americans": "usa",
    "states": "usa",
    "uk": "britain",
    "u.k.": "britain",
    "u.k": "britain",
    "british": "britain",
    "england": "britain",
    "english": "english",
    "eu": "europe",
    "european": "europe",
    "indian": "india",
    "indians": "india",
    "chinese": "china",
    "ai": "artificial",
    "ml": "machine",
    "pc": "computer",
    "tv": "television",
}

_STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "one",
        "ones",
        "get",
        "got",
        "getting",
        "also",
        "really",
        "ever",
        "much",
        "many",
        "way",
        "ways",
        "best",
        "good",
        "better",
        "thing",
        "things",
        "people",
        "someone",
        "something",
        "anyone",
        "anything",
        "make",
        "makes",
        "made",
        "like",
        "know",
        "use",
        "using",
        "used",
        "go",
        "going",
        "want",
        "need",
        "whats",
        "it's",
        "i'm",
        "i've",
        "don't",
        "doesn't",
        "isn't",
        "aren't",
        "can't",
        "cannot",
        "shall",
        "may",
        "might",
        "must",
        "since",
        "yet",
        "still",
        "even",
        "s",
        "t",
    ]
)

_QWORDS: dict[str, str] = {
    "who": "who",
    "whom": "who",
    "whose": "who",
    "when": "when",
    "where": "where",
    "why": "why",
    "how": "how",
}


@dataclass(frozen=True)
class PromptFeatures:
    """The lexical facts of one prompt that the guards compare.

    Built by :func:`extract_features`; cached per text, so the stored prompt
    of a popular entry is analysed once.
    """

    norm: tuple[str, ...]
    words: frozenset[str]
    stems: frozenset[str]
    content: frozenset[str]
    numbers: frozenset[str]
    dates: frozenset[str]
    entities: tuple[tuple[str, ...], ...]
    negated: bool
    polar: frozenset[str]
    qclass: str | None
    alias_words: frozenset[str] = field(default=frozenset())


def _stem(word: str) -> str:
    # A deliberately crude suffix stripper: enough to match plural/singular
    # and verb forms ("learns"/"learning"/"learn"), cheap and predictable.
    w = word.rstrip(".").replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 5 and w.endswith("ies"):
        return w[:-3] + "y"
    for suf in ("ing", "ed", "es", "s", "ly"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def _number_value(raw: str) -> str:
    s = raw.lower().replace(",", "").lstrip("+")
    for suf in ("st", "nd", "rd", "th"):
        if s.endswith(suf):
            s = s[: -len(suf)]
            break
    mult = 1
    if s.endswith("k"):
        s, mult = s[:-1], 1000
    elif s.endswith("m"):
        s, mult = s[:-1], 1_000_000
    elif s.endswith("s") and len(s) >= 3:
        s = s[:-1]  # "1990s" -> the decade 1990
    try:
        value = float(s) * mult
    except ValueError:
        return s
    return str(int(value)) if value == int(value) else repr(value)


def _is_entity_token(tok: str) -> bool:
    core = tok.rstrip(".")
    if len(core) < 2 or core.lower() in _NOT_ENTITIES:
        return False
    upper = sum(c.isupper() for c in core)
    has_digit = any(c.isdigit() for c in core)
    has_alpha = any(c.isalpha() for c in core)
    if has_digit and has_alpha:
        return True  # model names and codes: "iPhone7", "A320", "MP3"
    if upper >= 2:
        return True  # acronyms ("IIT", "U.S.") and mixed case ("iPhone", "YouTube")
    return core[0].isupper()


@lru_cache(maxsize=8192)
def extract_features(text: str) -> PromptFeatures:
    """Tokenize one prompt and pull out what the guards compare.

    Args:
        text: the prompt as the user wrote it.

    Returns:
        The prompt's :class:`PromptFeatures` (memoised per text).
    """
    matches = list(_TOKEN.finditer(text))
    toks = [m.group(0) for m in matches]
    lower = [t.lower().rstrip(".").replace("’", "'") for t in toks]
    words = frozenset(lower)

    numbers: set[str] = set()
    for m in _NUMBER.finditer(text):
        numbers.add(_number_value(m.group(0)))
    for w in lower:
        n = _NUMBER_WORDS.get(w)
        if n is not None:
            numbers.add(n)

    dates: set[str] = set()
    for t, w in zip(toks, lower, strict=True):
        d = _MONTHS.get(w)
        # "March" / "Sept" only count when capitalised: "march" is a verb.
        if d is not None and (t[0].isupper() or len(w) > 5):
            dates.add(d)

    # Entities: runs of name-like tokens. The first token of a sentence is
    # capitalised anyway, so it only counts when it is name-like for another
    # reason (acronym, mixed case, digits). When most words are capitalised
    # the prompt is in Title Case and capitals carry no signal.
    caps = sum(1 for t in toks if t[:1].isupper())
    title_case = len(toks) >= 4 and caps > 0.6 * len(toks)
    entities: list[tuple[str, ...]] = []
    run: list[str] = []
    for i, t in enumerate(toks):
        before = text[: matches[i].start()].rstrip()
        at_start = not before or before[-1] in _SENT_END
        core = t.rstrip(".")
        strong = _is_entity_token(t) and (
            sum(c.isupper() for c in core) >= 2 or any(c.isdigit() for c in core)
        )
        name_like = strong or (
            _is_entity_token(t) and not at_start and not title_case and not t[:1].isdigit()
        )
        if name_like and not core.isdigit():
            run.append(lower[i])
        elif run:
            entities.append(tuple(run))
            run = []
    if run:
        entities.append(tuple(run))
    for m in _QUOTED.finditer(text):
        quoted = next(g for g in m.groups() if g is not None)
        words_q = tuple(w.lower() for w in _TOKEN.findall(quoted))
        if words_q:
            entities.append(words_q)

    negated = any(w in _NEGATIONS or w.endswith("n't") for w in lower)
    polar = frozenset(w for w in lower if w in _ANTONYM)
    qclass: str | None = None
    for i, w in enumerate(lower):
        q = _QWORDS.get(w)
        if q is None:
            continue
        if q == "how" and i + 1 < len(lower):
            nxt = lower[i + 1]
            if nxt in ("many", "much", "long", "often", "old", "far"):
                q = "how_" + nxt
        qclass = q
        break

    stems = frozenset(_stem(w) for w in lower)
    content = frozenset(_stem(w) for w in lower if w not in _STOPWORDS and not w.isdigit())
    alias_words = frozenset(_ALIASES.get(w, w) for w in lower) | stems
    return PromptFeatures(
        norm=tuple(lower),
        words=words,
        stems=stems,
        content=content,
        numbers=frozenset(numbers),
        dates=frozenset(dates),
        entities=tuple(entities),
        negated=negated,
        polar=polar,
        qclass=qclass,
        alias_words=alias_words,
    )


def _entity_missing(entities: tuple[tuple[str, ...], ...], other: PromptFeatures) -> bool:
    for ent in entities:
        # A multi-word name is present when its head (last word) is: "Donald
        # Trump" matches "Trump", but "New York" does not match "New Delhi".
        head = ent[-1]
        if head in other.words or _ALIASES.get(head, head) in other.alias_words:
            continue
        if _stem(head) in other.stems:
            continue
        if len(ent) > 1 and all(w in other.words for w in ent[:-1]):
            continue
        return True
    return False


def check_guards(query: str, candidate: str, config: GuardConfig) -> str | None:
    """Run the enabled guards on a query and the cached prompt it matched.

    Args:
        query: the incoming prompt.
        candidate: the stored prompt whose answer would be served.
        config: which guards run and how strict they are.

    Returns:
        ``None`` when no guard objects, else the first rejection reason (one
        of :data:`REASONS`, e.g. ``"number_mismatch"``).
    """
    q = extract_features(query)
    c = extract_features(candidate)
    if q.norm == c.norm:
        return None  # same words: nothing lexical can tell them apart
    if config.min_query_words and len(q.norm) < config.min_query_words:
        return "too_short"
    if config.numbers and q.numbers != c.numbers:
        if not config.numbers_require_both or (q.numbers and c.numbers):
            return "number_mismatch"
    if config.dates and q.dates != c.dates:
        return "date_mismatch"
    if config.negation and q.negated != c.negated:
        return "negation_mismatch"
    if config.polarity and q.polar != c.polar:
        for w in q.polar - c.polar:
            if _ANTONYM[w] & c.polar:
                return "polarity_mismatch"
    if config.question_word and q.qclass != c.qclass and q.qclass and c.qclass:
        return "question_word_mismatch"
    if config.entities and (_entity_missing(q.entities, c) or _entity_missing(c.entities, q)):
        return "entity_mismatch"
    limit = config.max_unmatched_content_words
    if limit is not None and len(q.content ^ c.content) > limit:
        return "content_mismatch"
    return None


def decide(
    query: str,
    candidate: str,
    similarity: float,
    *,
    threshold: float,
    config: GuardConfig,
) -> str | None:
    """The semantic tier's accept decision for one candidate.

    The threshold is checked first because it is the cheapest test and
    rejects most candidates; the guards only run on pairs that are similar
    enough to be served.

    Args:
        query: the incoming prompt.
        candidate: the stored prompt of the candidate entry.
        similarity: cosine similarity of their embeddings.
        threshold: lowest similarity that may be served.
        config: the guards to apply.

    Returns:
        ``None`` to serve the cached answer, else why not
        (``"below_threshold"`` or a guard's reason).
    """
    if similarity < threshold:
        return "below_threshold"
    return check_guards(query, candidate, config)


@dataclass(frozen=True)
class SemanticDecision:
    """A threshold and a guard configuration, bundled as one callable policy.

    Args:
        threshold: lowest cosine similarity that may be served.
        config: the guards to apply above it.
    """

    threshold: float
    config: GuardConfig = field(default_factory=GuardConfig)
    kind: Literal["semantic"] = "semantic"

    def __call__(self, query: str, candidate: str, similarity: float) -> str | None:
        """See :func:`decide`."""
        return decide(query, candidate, similarity, threshold=self.threshold, config=self.config)
