"""Lexical features of text: words, content words, numbers and names.

Shared by the context summarizer and the conversation memory, which both
score sentences by the rare words, numbers and names they share with a
question, without a model call.
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


_WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")
_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.,])\d+(?:\.\d+)?")
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


def words(text: str) -> list[str]:
    return [w.lower().rstrip(".") for w in _WORD.findall(text)]


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOPWORDS and (len(w) > 2 or w.isdigit())}


def numbers(text: str) -> set[str]:
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


def contains(haystack: str, needle: str) -> bool:
    # Word-bounded, so "1969" does not match "19690" nor "art" match "party".
    i = haystack.find(needle)
    while i >= 0:
        before = haystack[i - 1] if i > 0 else " "
        j = i + len(needle)
        after = haystack[j] if j < len(haystack) else " "
        if not before.isalnum() and not after.isalnum():
            return True
        i = haystack.find(needle, i + 1)
    return False


@functools.cache
def _porter() -> Any:
    # nltk's top-level imports take most of a second: paid on the first stem,
    # not when a plugin is imported.
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """``word`` without its inflection, for matching only ("opened", "opens" -> "open").

    A question asks "when did it open?" of a text that says "it opened":
    exact word forms would not match. Only step 1 of Porter's algorithm is
    applied (plurals, -ed, -ing, a final -y): its later steps strip
    derivational endings and merge unrelated words (experiment / experience,
    university / universe). Its rules keep a short stem from taking another
    word's place ("times" -> "time", not "tim"; "plane" stays "plane").
    Words of three letters or fewer and anything but letters (numbers,
    codes) are left as they are.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    p = _porter()
    return str(p._step1c(p._step1b(p._step1a(word))))


def terms(text: str) -> set[str]:
    """The content words of ``text``, stemmed: what a question and a text are matched on."""
    return {stem(w) for w in content_words(text)}
