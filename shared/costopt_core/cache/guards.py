"""Lexical guards that veto false semantic-cache hits.

Embedding similarity is blind to the small words that change an answer: two
questions that differ only in a number ("Is 7 prime?" / "Is 9 prime?"), a name
("learn Python" / "learn Java"), a negation, an opposite ("buy" / "sell") or
the question word ("why" / "how") can sit at cosine 0.95 and still need
different answers. Serving the cached answer then is worse than a miss: the
user gets a confident wrong answer. Each guard is a cheap, explainable check
of the two prompt texts that rejects one class of those near misses; with the
similarity threshold they make the cache's accept decision (:func:`decide`).

Everything here is pure (strings in, a reason out): no I/O, no model calls,
regexes compiled once at import and per-text features memoised, so a decision
costs microseconds and the engine can run it on every candidate of a lookup.
``benchmarks/cache_quality.py`` measures what each guard buys on Quora
question pairs; ``costopt_core.cache.defaults`` records the shipped choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costopt_core.errors import config_error
from costopt_core.text import layout

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
REASONS: tuple[str, ...] = (
    "below_threshold",
    "layout_mismatch",
    "too_short",
    "number_mismatch",
    "date_mismatch",
    "negation_mismatch",
    "polarity_mismatch",
    "question_word_mismatch",
    "entity_mismatch",
    "order_mismatch",
    "content_mismatch",
)


class GuardConfig(BaseModel):
    """Which guards run, and how strict they are.

    Each guard switches off on its own. ``GuardConfig()`` equals the shipped
    defaults (``costopt_core.cache.defaults.DEFAULT_GUARDS``); the one-sided
    variants and the content-word rule are stricter options that cost more
    recall than they buy precision on Quora question pairs.

    Attributes:
        numbers: reject when both prompts contain numbers and the numbers
            differ ("Is 7 prime?" / "Is 9 prime?"); digits, number words
            ("seven"), ordinals ("7th") and thousands separators are
            normalised first.
        numbers_one_sided: also reject when only one prompt has a number
            ("best phone" / "best phone under 200").
        dates: reject when both prompts name months or weekdays and they
            differ.
        entities: reject when each prompt has a name-like token the other
            lacks (a substitution: "learn Python" / "learn Java"). Name-like:
            capitalised inside a sentence, an acronym ("IIT"), mixed case
            ("iPhone"), letters with digits ("A320", "C++"), or a quoted
            string. A multi-word name matches when its last word occurs in
            the other prompt ("Donald Trump" / "Trump").
        entities_one_sided: also reject when only one prompt has an
            unmatched name ("visa" / "US visa").
        negation: reject when exactly one prompt is negated (not, never,
            n't, without, ...).
        polarity: reject when the prompts use opposite words of a built-in
            antonym pair (best/worst, buy/sell, advantages/disadvantages,
            faster/slower, landlord/tenant, briefly/in detail...), quantify
            differently ("all" / "some", "usually" / "rarely"), or join the
            same terms with "and" against "or".
        question_word: reject when both prompts have a question word and they
            ask different things (who / when / where / why / how / how many /
            how much / how long ...). "What" and "which" are compatible with
            every kind, since "what is the best way to" asks "how".
        min_query_words: a query with fewer words than this only hits a
            prompt with the same words (case and punctuation aside): a short
            query carries too little meaning for similarity to be safe.
            ``0`` switches the rule off.
        layout: reject when either prompt is indented text (code, YAML) and
            their line layouts differ, or its indented lines (and their block
            header) differ in any token: the same words indented differently
            can be valid and invalid code, one changed token is another
            program, and embeddings see neither.
        order: reject when the prompts have the same words but two of them
            (or two phrases) trade places across words that make the
            relation one-way: "flights from Paris to London" / "from London
            to Paris", "Does Alice owe Bob?" / "Does Bob owe Alice?", "10 - 4"
            / "4 - 10". Embeddings barely see word order (these pairs score
            above 0.99). A swap across "and", "or", "vs", "+" ("TCP and UDP"
            / "UDP and TCP"), of two adjacent words, or a word moved
            elsewhere ("quickly learn" / "learn ... quickly") passes.
        max_unmatched_content_words: reject when more than this many content
            words (stopwords removed, crudely stemmed) appear in one prompt
            and not the other, both directions counted. ``None`` (default)
            switches the rule off.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self).__name__, exc) from None

    numbers: bool = True
    numbers_one_sided: bool = False
    dates: bool = True
    entities: bool = True
    entities_one_sided: bool = False
    negation: bool = True
    polarity: bool = True
    question_word: bool = True
    layout: bool = True
    order: bool = True
    min_query_words: int = Field(default=3, ge=0, le=64)
    max_unmatched_content_words: int | None = Field(default=None, ge=0, le=64)


#: Signs and operators: they change what a prompt asks but are no words.
_SYMBOLS = re.compile(r"[-+*/<>=%^#&|~±×÷≤≥≠√]")


#: What two swapped phrases may have between them and mean the same.
_SYMMETRIC = frozenset({"and", "or", "nor", "vs", "vs.", "versus", "v", "plus", "&", "+", "*"})
_SYMMETRIC |= frozenset({"×", "=", "≠", "|"})
#: Longest differing stretch the order guard searches for a swap (quadratic in it).
_MAX_SWAP_SPAN = 40


def _swapped_across(a: str, b: str) -> bool:
    """True when ``b`` is ``a`` with two phrases traded across a one-way relation.

    The stretch where the two token sequences differ must read ``X C Y`` in
    one and ``Y C X`` in the other, with ``C`` non-empty and not only
    symmetric words ("and", "or", "vs", "+"). A reordering of any other shape
    (a word moved, an adjacent pair swapped) is not one.
    """
    ta = _ORDER_TOKEN.findall(a.lower())
    tb = _ORDER_TOKEN.findall(b.lower())
    if ta == tb or len(ta) != len(tb) or sorted(ta) != sorted(tb):
        return False
    start = 0
    while ta[start] == tb[start]:
        start += 1
    end = len(ta)
    while ta[end - 1] == tb[end - 1]:
        end -= 1
    ma, mb = ta[start:end], tb[start:end]
    n = len(ma)
    if n > _MAX_SWAP_SPAN:
        return False
    for x in range(1, n - 1):  # X = ma[:x], Y = ma[y:], C = ma[x:y] (non-empty)
        for y in range(x + 1, n):
            if mb == ma[y:] + ma[x:y] + ma[:x]:
                return not set(ma[x:y]) <= _SYMMETRIC
    return False


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- vocabulary -------------------------------------------------------------

# A word keeps inner apostrophes, dots, hyphens and a trailing "++"/"#"
# ("don't", "U.S.", "e-mail", "C++", "C#") so acronyms, contractions and
# language names survive as one token.
_TOKEN = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*(?:\+\+|#)?")
#: Words and signs in order, for the order guard (signs count: "10 - 4" / "4 - 10").
_ORDER_TOKEN = re.compile(_TOKEN.pattern + r"|[-+*/<>=%^&|~±×÷≤≥≠√]")
_QUOTED = re.compile(r"\"([^\"]{2,60})\"|“([^”]{2,60})”|(?<![\w'])'([^']{2,60})'(?![\w'])")
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:st|nd|rd|th|s|k)?(?!\w)",
    re.IGNORECASE,
)
# Tokens that are numbers (the number guard owns them), not names.
_NUMERIC_TOKEN = re.compile(r"[-+]?[\d,.]+(?:st|nd|rd|th|s|k)?", re.IGNORECASE)
_SENT_END = frozenset('.?!:;"“(')

_NUMBER_WORDS: dict[str, str] = {
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
    "fifteen": "15",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
    "first": "1",
    "second": "2",
    "third": "3",
    "fourth": "4",
    "fifth": "5",
    "sixth": "6",
    "seventh": "7",
    "eighth": "8",
    "ninth": "9",
    "tenth": "10",
}

# Month and weekday names, folded to one spelling. "may" and "march" are
# also ordinary words, so they only count when capitalised.
_DATES: dict[str, str] = {
    "january": "jan",
    "february": "feb",
    "march": "mar",
    "april": "apr",
    "may": "may",
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
}
_DATES_ONLY_CAPITALISED = _words("march may jan feb apr aug sept oct nov dec")

_NEGATIONS = _words(
    "not no never cannot without none nothing nobody nowhere neither nor "
    "cant dont doesnt didnt isnt arent wasnt werent wont shouldnt wouldnt couldnt"
)

# Opposites: a prompt using one side, matched to a prompt using the other,
# asks the opposite question. Short and unambiguous on purpose.
_ANTONYM_PAIRS: tuple[tuple[str, str], ...] = (
    ("best", "worst"),
    ("better", "worse"),
    ("advantage", "disadvantage"),
    ("advantages", "disadvantages"),
    ("pros", "cons"),
    ("benefits", "drawbacks"),
    ("increase", "decrease"),
    ("buy", "sell"),
    ("buying", "selling"),
    ("before", "after"),
    ("most", "least"),
    ("male", "female"),
    ("men", "women"),
    ("boy", "girl"),
    ("boys", "girls"),
    ("boyfriend", "girlfriend"),
    ("husband", "wife"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("cheapest", "expensive"),
    ("cheap", "expensive"),
    ("rich", "poor"),
    ("easiest", "hardest"),
    ("fastest", "slowest"),
    ("love", "hate"),
    ("positive", "negative"),
    ("win", "lose"),
    ("import", "export"),
    ("introvert", "extrovert"),
    ("introverts", "extroverts"),
    ("similarities", "differences"),
    ("gain", "loss"),
    ("up", "down"),
    ("north", "south"),
    ("east", "west"),
    # Where a limit or a direction sits: "return within 30 days" / "after 30 days".
    ("within", "after"),
    ("above", "below"),
    ("inside", "outside"),
    ("internal", "external"),
    ("maximum", "minimum"),
    ("max", "min"),
    ("highest", "lowest"),
    ("higher", "lower"),
    ("largest", "smallest"),
    ("biggest", "smallest"),
    ("first", "last"),
    # Operations and their inverses: a how-to for one is wrong for the other.
    ("add", "remove"),
    ("install", "uninstall"),
    ("enable", "disable"),
    ("encrypt", "decrypt"),
    ("upload", "download"),
    ("send", "receive"),
    ("input", "output"),
    ("true", "false"),
    # Comparatives, and how much detail or what register the answer takes.
    ("faster", "slower"),
    ("stronger", "weaker"),
    ("heavier", "lighter"),
    ("bigger", "smaller"),
    ("harder", "easier"),
    ("longer", "shorter"),
    ("longest", "shortest"),
    ("older", "younger"),
    ("oldest", "youngest"),
    ("hotter", "colder"),
    ("hottest", "coldest"),
    ("earlier", "later"),
    ("cheaper", "expensive"),
    ("short", "long"),
    ("brief", "detailed"),
    ("briefly", "detail"),
    ("concise", "comprehensive"),
    ("high-level", "low-level"),
    ("formal", "informal"),
    ("ascending", "descending"),
    ("uppercase", "lowercase"),
    ("public", "private"),
    # Two sides of one relation: "can my landlord ..." asks about the other party.
    ("employer", "employee"),
    ("landlord", "tenant"),
    ("buyer", "seller"),
    ("sender", "recipient"),
    ("lender", "borrower"),
    ("host", "guest"),
    # More operations and their inverses.
    ("open", "close"),
    ("start", "stop"),
    ("lock", "unlock"),
    ("subscribe", "unsubscribe"),
    ("connect", "disconnect"),
    ("compress", "decompress"),
    ("encode", "decode"),
    ("accept", "reject"),
    ("include", "exclude"),
    ("deposit", "withdraw"),
    ("hire", "fire"),
    # When and how often.
    ("yesterday", "tomorrow"),
    ("today", "tomorrow"),
    ("today", "yesterday"),
    ("last", "next"),
    ("daily", "weekly"),
    ("daily", "monthly"),
    ("weekly", "monthly"),
    ("morning", "evening"),
    # Units and formats an answer is given in.
    ("celsius", "fahrenheit"),
    ("miles", "kilometers"),
    ("feet", "meters"),
    ("metric", "imperial"),
    ("json", "yaml"),
    ("csv", "xml"),
    # Spanish, German, French.
    ("antes", "después"),
    ("mejor", "peor"),
    ("comprar", "vender"),
    ("abrir", "cerrar"),
    ("aumentar", "reducir"),
    ("activar", "desactivar"),
    ("ventajas", "desventajas"),
    ("vor", "nach"),
    ("beste", "schlechteste"),
    ("kaufen", "verkaufen"),
    ("vorteile", "nachteile"),
    ("gestern", "morgen"),
    ("hochladen", "herunterladen"),
    ("meilleur", "pire"),
    ("acheter", "vendre"),
    ("ouvrir", "fermer"),
    ("augmenter", "réduire"),
    ("avantages", "inconvénients"),
    ("demain", "hier"),
)
_AND_OR = {frozenset({"and"}), frozenset({"or"})}
#: Quantifiers by what they claim. One prompt's "all" where the other has "some"
#: asks another question ("Are all dogs colorblind?"). "most" and "many" are left
#: out: "the most interesting facts" is a superlative, and asks for "some".
_QUANTIFIER_KIND: dict[str, str] = {
    w: kind
    for kind, words in {
        "all": "all every each always",
        "some": "some any several few sometimes ever",
        "usually": "usually often mostly",
        "rarely": "rarely seldom",
    }.items()
    for w in words.split()
}
_ANTONYM: dict[str, frozenset[str]] = {}
for _a, _b in _ANTONYM_PAIRS:
    _ANTONYM[_a] = _ANTONYM.get(_a, frozenset()) | {_b}
    _ANTONYM[_b] = _ANTONYM.get(_b, frozenset()) | {_a}

# Capitalised words that are not names: the pronoun, and function words of
# prompts typed in Title Case.
_NOT_NAMES = _words(
    "i i'm i've i'd i'll ok okay a an the and or but of to in on at for from by with is are "
    "was were be what why how who when where which can could do does did should would will "
    "my me your you we our it its if vs"
)

# Names users write interchangeably; both sides fold to the right-hand form.
_ALIASES: dict[str, str] = {
    "us": "usa",
    "u.s": "usa",
    "u.s.a": "usa",
    "america": "usa",
    "american": "usa",
    "americans": "usa",
    "uk": "britain",
    "u.k": "britain",
    "british": "britain",
    "england": "britain",
    "english": "britain",
    "indian": "india",
    "indians": "india",
    "chinese": "china",
    "ww1": "wwi",
    "ww2": "wwii",
    "tv": "television",
}

_STOPWORDS = _words(
    "a about above after again against all am an and any are as at be because been being "
    "below between both but by can could did do does doing down during each few for from "
    "further had has have having he her here hers herself him himself his how i if in into "
    "is it its itself just me more most my myself no nor not of off on once only or other "
    "our ours ourselves out over own same she should so some such than that the their "
    "theirs them themselves then there these they this those through to too under until "
    "up very was we were what when where which while who whom why will with would you your "
    "yours yourself yourselves one ones get got getting also really ever much many way ways "
    "best good better thing things people someone something anyone anything make makes made "
    "like know use using used go going want need what's it's i'm i've don't doesn't isn't "
    "aren't can't cannot shall may might must since yet still even s t"
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
# "how many" and "how much" ask for a quantity, "how long" for a duration...
_HOW_KINDS = _words("many much long often old far big")


@dataclass(frozen=True)
class PromptFeatures:
    """The lexical facts of one prompt that the guards compare.

    Built by :func:`extract_features` and memoised per text, so the stored
    prompt of a popular entry is analysed once.

    Attributes:
        words: the prompt's words, lower-cased, in order.
        vocab: every form a word of the prompt matches under: itself, its
            crude stem, its alias.
        content: stems of the content words (stopwords removed).
        numbers: normalised number values.
        dates: month and weekday names, folded.
        names: runs of name-like tokens (lower-cased), quoted strings included.
        negated: the prompt contains a negation.
        polar: words of the prompt that have a built-in antonym.
        qclass: the first question word's kind, if any.
    """

    words: tuple[str, ...]
    vocab: frozenset[str]
    content: frozenset[str]
    numbers: frozenset[str]
    dates: frozenset[str]
    names: tuple[tuple[str, ...], ...]
    negated: bool
    polar: frozenset[str]
    qclass: str | None = field(default=None)


@lru_cache(maxsize=16384)
def _stem(word: str) -> str:
    # A deliberately crude suffix stripper: enough to match plural/singular
    # and verb forms ("learns"/"learning"/"learn"), cheap and predictable.
    w = word[:-2] if word.endswith("'s") else word
    if len(w) > 5 and w.endswith("ies"):
        return w[:-3] + "y"
    for suf in ("ing", "ed", "es", "s", "ly"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def _number_value(raw: str) -> str:
    s = raw.lower().replace(",", "").lstrip("+")
    mult = 1
    if s.endswith(("st", "nd", "rd", "th")):
        s = s[:-2]
    elif s.endswith("k"):
        s, mult = s[:-1], 1000
    elif s.endswith("s"):
        s = s[:-1]  # "1990s" -> the decade 1990, "40s" -> 40
    try:
        value = float(s) * mult
        return str(int(value)) if value == int(value) else repr(value)
    except (ValueError, OverflowError):  # not a number after all, or too long for a float
        return s


def _name_strength(tok: str) -> int:
    """2: name-like anywhere; 1: name-like unless it starts a sentence; 0: not."""
    if tok.islower() and tok.isalpha():
        return 0  # the common case, decided without counting characters
    if _NUMERIC_TOKEN.fullmatch(tok) or tok.lower() in _NOT_NAMES:
        return 0
    if tok.endswith(("++", "#")):
        return 2
    uppers = sum(1 for ch in tok if ch.isupper())
    if uppers >= 2 or (uppers == 1 and not tok[0].isupper()):
        return 2  # acronyms ("IIT", "U.S.") and mixed case ("iPhone")
    if any(ch.isdigit() for ch in tok) and any(ch.isalpha() for ch in tok):
        return 2  # model names and codes ("A320", "ww2")
    return 1 if tok[0].isupper() and len(tok) > 1 else 0


def _sentence_start(text: str, pos: int) -> bool:
    j = pos - 1
    while j >= 0 and text[j].isspace():
        j -= 1
    return j < 0 or text[j] in _SENT_END


@dataclass(frozen=True)
class _Special:
    # What one word of the built-in vocabularies means; one dict lookup per
    # token instead of one per vocabulary keeps extraction fast.
    number: str | None = None
    date: str | None = None
    date_needs_capital: bool = False
    negation: bool = False
    polar: bool = False
    qword: str | None = None
    alias: str | None = None


def _build_special() -> dict[str, _Special]:
    words = (
        set(_NUMBER_WORDS) | set(_DATES) | _NEGATIONS | set(_ANTONYM) | set(_QWORDS) | set(_ALIASES)
    )
    return {
        w: _Special(
            number=_NUMBER_WORDS.get(w),
            date=_DATES.get(w),
            date_needs_capital=w in _DATES_ONLY_CAPITALISED,
            negation=w in _NEGATIONS,
            polar=w in _ANTONYM,
            qword=_QWORDS.get(w),
            alias=_ALIASES.get(w),
        )
        for w in words
    }


_SPECIAL = _build_special()


@lru_cache(maxsize=4096)
def extract_features(text: str) -> PromptFeatures:
    """Tokenize one prompt and pull out what the guards compare.

    Args:
        text: the prompt as the user wrote it.

    Returns:
        The prompt's :class:`PromptFeatures` (memoised per text).
    """
    numbers = {_number_value(m.group(0)) for m in _NUMBER.finditer(text)}
    dates: set[str] = set()
    polar: set[str] = set()
    vocab: set[str] = set()
    content: set[str] = set()
    negated = False
    qclass: str | None = None
    pending_how = False
    lower: list[str] = []
    # Per token: 2 = name-like anywhere, 1 = name-like unless it starts a
    # sentence (decided below, once Title Case is known), 0 = not a name.
    strength: list[int] = []
    capitalised = 0
    for m in _TOKEN.finditer(text):
        tok = m.group(0).rstrip(".").replace("’", "'")
        w = tok.lower()
        lower.append(w)
        if tok[0].isupper():
            capitalised += 1
        st = 0
        if tok != w or not tok.isalpha():  # plain lower-case words are never names
            st = _name_strength(tok)
            if st == 1 and _sentence_start(text, m.start()):
                st = 0
        strength.append(st)

        stem = _stem(w)
        vocab.add(w)
        vocab.add(stem)
        if w not in _STOPWORDS and not w.isdigit():
            content.add(stem)
        if pending_how:
            pending_how = False
            if w in _HOW_KINDS:
                qclass = f"how_{w}"
        if w.endswith("n't"):
            negated = True
        sp = _SPECIAL.get(w)
        if sp is None:
            continue
        if sp.number is not None:
            numbers.add(sp.number)
        if sp.date is not None and (not sp.date_needs_capital or tok[0].isupper()):
            dates.add(sp.date)
        if sp.negation:
            negated = True
        if sp.polar:
            polar.add(w)
        if sp.alias is not None:
            vocab.add(sp.alias)
        if qclass is None and sp.qword is not None:
            qclass = sp.qword
            pending_how = sp.qword == "how"

    # Names: runs of name-like tokens. In a Title Case prompt capitals carry
    # no signal, so only the strong kinds (acronyms, mixed case, digits) count.
    title_case = len(lower) >= 4 and capitalised > 0.6 * len(lower)
    names: list[tuple[str, ...]] = []
    run: list[str] = []
    for w, st in zip(lower, strength, strict=True):
        if st == 2 or (st == 1 and not title_case):
            run.append(w)
        elif run:
            names.append(tuple(run))
            run = []
    if run:
        names.append(tuple(run))
    if '"' in text or "'" in text or "“" in text:
        for qm in _QUOTED.finditer(text):
            quoted = next(g for g in qm.groups() if g is not None)
            inner = tuple(t.lower().rstrip(".") for t in _TOKEN.findall(quoted))
            if inner:
                names.append(inner)

    return PromptFeatures(
        words=tuple(lower),
        vocab=frozenset(vocab),
        content=frozenset(content),
        numbers=frozenset(numbers),
        dates=frozenset(dates),
        names=tuple(names),
        negated=negated,
        polar=frozenset(polar),
        qclass=qclass,
    )


def _name_missing(names: tuple[tuple[str, ...], ...], other: PromptFeatures) -> bool:
    """Whether some name of one prompt is absent from the other."""
    vocab = other.vocab
    for name in names:
        # The head (last word) carries the identity: "Donald Trump" matches
        # "Trump", but "New York" does not match "New Delhi".
        head = name[-1]
        if head in vocab or _stem(head) in vocab or _ALIASES.get(head, head) in vocab:
            continue
        if len(head) >= 7 and any(
            v.startswith(head[:6]) and not _versions_differ(head, v) for v in vocab
        ):
            continue  # "Psychology" / "psychological", not "iPhone14" / "iPhone15"
        return True
    return False


_DIGIT_RUNS = re.compile(r"\d+")


def _versions_differ(a: str, b: str) -> bool:
    """Whether two words sharing a prefix carry other numbers ("python2" / "python3").

    Such words name other versions or models, not forms of one word; a word
    without digits ("iphone" / "iphone14") is the generic name, not another one.
    """
    if a.isalpha() or b.isalpha():
        return False  # the common case, decided without a regex
    da, db = _DIGIT_RUNS.findall(a), _DIGIT_RUNS.findall(b)
    return bool(da) and bool(db) and da != db


_CODE_HEADER = re.compile(
    r"[(){}\[\]=;]|^\s*(def|class|for|if|elif|else|while|with|try|except|finally|async|"
    r"function|fn|func|switch|case|do|public|private|protected|static)\b"
)


def _code_differs(a: str, b: str, shape: tuple[str, ...]) -> bool:
    """True when two prompts of one indented layout differ inside the code.

    The code runs from the line before the first indented one (its block
    header) to the last indented one; the words around it may differ
    ("Explain this code:" / "What does this code do?"), one token inside it
    may not: ``o.amount`` / ``o.price``, ``return user`` / ``return users``
    embed alike (0.99+) and are other programs.
    """
    lines_a, lines_b = a.split("\n"), b.split("\n")
    indented = [i for i, indent in enumerate(shape) if indent]
    start, end = indented[0], indented[-1] + 1
    # The line above is the block's header when it reads as code ("def f(x):",
    # "for (...) {"), not when it is the user's words ("Explain this code:").
    if start and (
        _CODE_HEADER.search(lines_a[start - 1]) or _CODE_HEADER.search(lines_b[start - 1])
    ):
        start -= 1
    return lines_a[start:end] != lines_b[start:end]


def _claims_differ(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """True when the prompts differ in what they claim and little else: "all" /
    "some", "always" / "ever", "usually" / "rarely" with at most one other word
    changed, or "and" / "or" with nothing else changed ("admins and active" /
    "admins or active"). Questions reworded around them ("Trump or Clinton?" /
    "Between Trump and Clinton, who?") say the same and pass.
    """
    only_a, only_b = frozenset(a) - frozenset(b), frozenset(b) - frozenset(a)
    if {only_a, only_b} == _AND_OR:
        return True
    rest = (only_a | only_b) - _QUANTIFIER_KIND.keys()
    kinds_a = {_QUANTIFIER_KIND[w] for w in only_a if w in _QUANTIFIER_KIND}
    kinds_b = {_QUANTIFIER_KIND[w] for w in only_b if w in _QUANTIFIER_KIND}
    return bool(kinds_a) and bool(kinds_b) and kinds_a != kinds_b and len(rest) <= 1


def _literal_spacing_differs(a: str, b: str) -> bool:
    """True when two texts of the same words differ in spacing, line breaks aside."""
    flat_a, flat_b = a.replace("\n", " "), b.replace("\n", " ")
    return flat_a != flat_b and flat_a.split() == flat_b.split()


def check_guards(query: str, candidate: str, config: GuardConfig) -> str | None:
    """Run the enabled guards on a query and the cached prompt it matched.

    Args:
        query: the incoming prompt.
        candidate: the stored prompt whose answer would be served.
        config: which guards run and how strict they are.

    Returns:
        ``None`` when no guard objects, else the first rejection reason (one
        of :data:`REASONS` except ``"below_threshold"``), checked in the
        order of that tuple.
    """
    if config.layout:
        q_shape, c_shape = layout(query), layout(candidate)
        if q_shape != c_shape and (any(q_shape) or any(c_shape)):
            return "layout_mismatch"
        if any(q_shape) and _code_differs(query, candidate, q_shape):
            return "layout_mismatch"
    q = extract_features(query)
    c = extract_features(candidate)
    if q.words == c.words:
        # normalize_text folded the spaces that mean nothing, and prose broken
        # over lines says the same: whitespace that still differs is inside a
        # quoted literal ('a  b' / 'a b').
        if config.layout and _literal_spacing_differs(query, candidate):
            return "layout_mismatch"
        # The words leave out signs and operators: "-40" / "40", "10 - 4" /
        # "10 + 4", "3 < 5" / "3 > 5", "C++" / "C#" have the same words.
        if _SYMBOLS.findall(query) == _SYMBOLS.findall(candidate):
            return None  # same words and symbols: nothing lexical tells them apart
        if q.numbers or c.numbers:
            return "number_mismatch" if config.numbers else None
        return "entity_mismatch" if config.entities else None
    if len(q.words) < config.min_query_words:
        return "too_short"
    if (
        config.numbers
        and q.numbers != c.numbers
        and ((q.numbers and c.numbers) or config.numbers_one_sided)
    ):
        return "number_mismatch"
    if config.dates and q.dates and c.dates and q.dates != c.dates:
        return "date_mismatch"
    if config.negation and q.negated != c.negated:
        return "negation_mismatch"
    if config.polarity and q.polar != c.polar:
        for w in q.polar - c.polar:
            if _ANTONYM[w] & (c.polar - q.polar):
                return "polarity_mismatch"
    if config.polarity and _claims_differ(q.words, c.words):
        return "polarity_mismatch"
    if config.question_word and q.qclass and c.qclass and q.qclass != c.qclass:
        return "question_word_mismatch"
    if config.entities and (q.names or c.names):
        q_missing = _name_missing(q.names, c)
        c_missing = _name_missing(c.names, q)
        if (q_missing and c_missing) or (config.entities_one_sided and (q_missing or c_missing)):
            return "entity_mismatch"
    # Same words in another order (memoised features first: most pairs differ there).
    if config.order and sorted(q.words) == sorted(c.words) and _swapped_across(query, candidate):
        return "order_mismatch"
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

    The threshold is checked first: it is the cheapest test and rejects most
    candidates, so the guards only run on pairs similar enough to be served.

    Args:
        query: the incoming prompt.
        candidate: the stored prompt of the candidate entry.
        similarity: cosine similarity of their embeddings.
        threshold: lowest similarity that may be served.
        config: the guards to apply.

    Returns:
        ``None`` to serve the cached answer, else why not:
        ``"below_threshold"`` or a guard's reason.
    """
    if not similarity >= threshold:  # NaN too: it compares as nothing
        return "below_threshold"
    return check_guards(query, candidate, config)


@dataclass(frozen=True)
class SemanticDecision:
    """A threshold and a guard configuration bundled as one callable policy.

    Attributes:
        threshold: lowest cosine similarity that may be served.
        config: the guards applied above it.
    """

    threshold: float
    config: GuardConfig = field(default_factory=GuardConfig)

    def __call__(self, query: str, candidate: str, similarity: float) -> str | None:
        """Decide one candidate; see :func:`decide`."""
        return decide(query, candidate, similarity, threshold=self.threshold, config=self.config)
