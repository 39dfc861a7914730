"""Lexical features of text: words, content words, numbers and names.

Shared by the context summarizer and the conversation memory, which both
score sentences by the rare words, numbers and names they share with a
question, without a model call.

Chinese and Japanese are written without spaces (and Korean joins particles
to its words), so a "word" of those scripts found between spaces or
punctuation is a whole clause that no question repeats. Their text is
matched on overlapping character bigrams of each run of such characters
("埃菲尔铁塔" -> "埃菲", "菲尔", "尔铁", "铁塔"), the usual way of matching CJK
text without a word segmenter (Lucene's CJK bigram filter does the same),
and a number beside one of their characters ("于1889年") is a number of its
own. Text without those characters is handled exactly as before.
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = [
    "contains",
    "content_words",
    "name_tokens",
    "names",
    "numbers",
    "stem",
    "terms",
    "words",
]


# Characters of the scripts matched on bigrams: kana, CJK ideographs (with
# the iteration marks 々〆〇), Hangul syllables and half-width katakana.
_CJK = (
    "\u3005-\u3007\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
_CJK_CHAR = re.compile(f"[{_CJK}]")
_CJK_PIECES = re.compile(f"[{_CJK}]+|[^{_CJK}]+")
_WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")
# A number starts after anything but a letter, digit, "_" or "." of a script
# written with spaces: a CJK character beside it is a word of its own
# ("于1889年"), while "v12" or "x1.5" is no number.
_NOT_AFTER = f"(?<![^\\W{_CJK}])(?<!\\.)"
_NUMBER = re.compile(
    f"{_NOT_AFTER}\\d{{1,3}}(?:,\\d{{3}})+(?:\\.\\d+)?|{_NOT_AFTER}(?<!,)\\d+(?:\\.\\d+)?"
)
# A number written with thousands separators ("12,000"), matched as _NUMBER does.
_GROUPED = re.compile(f"{_NOT_AFTER}\\d{{1,3}}(?:,\\d{{3}})+")
# A name: capitalised words, optionally joined by a few lower-case connectors
# ("Bank of America", "Leonardo da Vinci").
_NAME = re.compile(
    r"[A-Z\u00c0-\u00de][\w'’.\-]*(?:\s+(?:(?:of|the|de|da|di|del|von|van|la|le|and|&)\s+)*"
    r"[A-Z\u00c0-\u00de][\w'’.\-]*)*"
)
_STOPWORDS = frozenset(
    str.split(
        """
    a an and are as at be been being but by can could did do does doing for from had has have
    having he her hers him his how i if in into is it its itself just me more most my no nor
    not of off on once only or other our out over own same she should so some such than that
    the their them then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours also after
    before about against between both each few further here again any all am s t
    many much name named whose year years one first same another kind type
    """
    )
)
# Capitalised at the start of a question for grammar, not because they are names.
_NOT_NAMES = frozenset(
    str.split(
        """
    what which who whom whose when where why how is are was were do does did the a an in on
    of for to and or by from at with as this that these those name it there
    """
    )
)


def _is_cjk(ch: str) -> bool:
    """Whether ``ch`` (one character, or "") is of a script matched on bigrams."""
    return _CJK_CHAR.match(ch) is not None


def _split_cjk(word: str) -> list[str]:
    """A word holding CJK characters as the bigrams of its CJK runs and its other parts.

    "1889年作为" -> "1889", "年作", "作为"; a run of one character is itself.
    """
    out: list[str] = []
    for piece in _CJK_PIECES.findall(word):
        if _is_cjk(piece[0]):
            out += [piece] if len(piece) == 1 else [piece[i : i + 2] for i in range(len(piece) - 1)]
        elif part := piece.strip("'’.-"):  # a joiner left at a script change
            out.append(part)
    return out


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``; CJK text as character bigrams (see the module doc)."""
    found = [w.lower().rstrip(".") for w in _WORD.findall(text)]
    if _CJK_CHAR.search(text) is None:
        return found
    return [part for w in found for part in _split_cjk(w)]


def content_words(text: str) -> set[str]:
    """The words of ``text`` that say something: no stopwords, no words of one or two letters.

    Numbers of any length are kept, and so are CJK bigrams (two characters
    of Chinese are a word, not a fragment).
    """
    return {
        w
        for w in words(text)
        if w not in _STOPWORDS and (len(w) > 2 or w.isdigit() or _is_cjk(w[0]))
    }


def _ungroup(text: str) -> str:
    """``text`` with its numbers' thousands separators removed ("12,000" -> "12000")."""
    if "," not in text:
        return text
    return _GROUPED.sub(lambda m: m.group().replace(",", ""), text)


def numbers(text: str) -> set[str]:
    """The numbers in ``text``, without thousands separators ("12,000" -> "12000").

    :func:`contains` finds them in text that writes them either way.
    """
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def names(text: str) -> set[str]:
    """Lower-cased names in ``text``; a leading grammatical capital is trimmed."""
    out: set[str] = set()
    for m in _NAME.finditer(text):
        words = m.group().split()
        while words and words[0].lower().strip(".'’") in _NOT_NAMES:
            words = words[1:]
        name = " ".join(words).strip(".'’-").lower()
        if name and name not in _STOPWORDS:
            out.add(name)
    return out


def name_tokens(found: set[str]) -> set[str]:
    """The distinctive words of names ("adriana trigiani" -> {"adriana", "trigiani"})."""
    return {
        w
        for n in found
        for w in words(n)
        if w not in _STOPWORDS and w not in _NOT_NAMES and len(w) > 2
    }


def _bounded(neighbour: str, edge: str) -> bool:
    """Whether a word ends between ``edge`` (the needle's) and ``neighbour`` (the text's).

    Any character but a letter or digit ends one, and so does a CJK
    character on either side: those scripts put no space between words
    ("于1889年" names 1889, "铁塔是" names 铁塔).
    """
    return not neighbour.isalnum() or _is_cjk(neighbour) or _is_cjk(edge)


def contains(haystack: str, needle: str) -> bool:
    """Whether ``haystack`` mentions ``needle`` as a whole word (or number).

    Word-bounded, so "1969" does not match "19690" nor "art" match "party".
    Thousands separators are ignored on both sides, so the "12000" that
    :func:`numbers` gives is found in "12,000" (and "12,000" in "12000"); a
    list written without spaces ("rooms 101,102") still names each number,
    since the two cannot be told apart (it keeps a sentence, never drops one).
    """
    if _found(_ungroup(haystack), _ungroup(needle)):
        return True
    return "," in haystack and _found(haystack, needle)


def _found(haystack: str, needle: str) -> bool:
    """Whether ``needle`` is in ``haystack`` with a word ending on both sides."""
    i = haystack.find(needle)
    while i >= 0:
        before = haystack[i - 1] if i > 0 else " "
        j = i + len(needle)
        after = haystack[j] if j < len(haystack) else " "
        if _bounded(before, needle[:1]) and _bounded(after, needle[-1:]):
            return True
        i = haystack.find(needle, i + 1)
    return False


@functools.cache
def _porter() -> Any:
    # nltk's top-level imports take most of a second: paid on the first stem,
    # not when a plugin is imported.
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


#: Words ending in "s" that are not the plural of the word without it: "news"
#: is not "new" ("what is new in 3.12" asks no news), "goods" not "good".
_NOT_PLURALS = frozenset({"news", "goods"})


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """``word`` without its inflection, for matching only ("opened", "opens" -> "open").

    A question asks "when did it open?" of a text that says "it opened":
    exact word forms would not match. Only step 1 of Porter's algorithm is
    applied (plurals, -ed, -ing, a final -y): its later steps strip
    derivational endings and merge unrelated words (experiment / experience,
    university / universe). Its rules keep a short stem from taking another
    word's place ("times" -> "time", not "tim"; "plane" stays "plane").
    Words of three letters or fewer, anything but letters (numbers, codes)
    and a few words that only look plural ("news", "goods") are left as they
    are.
    """
    if len(word) <= 3 or not word.isalpha() or word in _NOT_PLURALS:
        return word
    p = _porter()
    return str(p._step1c(p._step1b(p._step1a(word))))


def terms(text: str) -> set[str]:
    """The content words of ``text``, stemmed: what a question and a text are matched on."""
    return {stem(w) for w in content_words(text)}
