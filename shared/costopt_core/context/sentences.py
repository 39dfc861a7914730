"""Sentence splitting for extractive summarization, without a model and without losing text.

Extractive summarization keeps or drops whole sentences, so a bad split either
cuts a fact in half ("born in the U." / "S. in 1950") or glues two sentences
into one that cannot be dropped separately. A regex splitter is enough when it
knows the usual traps: abbreviations ("Dr.", "U.S.", "Inc."), initials
("J. K. Rowling"), decimals and version numbers ("3.5", "v1.2"), ellipses and
closing quotes or brackets after the final stop. Splits are returned as
character spans of the original text, so nothing is rewritten: every
non-whitespace character of the input lies in exactly one sentence.

The splitter is script-agnostic: a sentence may start with a lower-case
letter (chat, lower-cased text), a letter of any alphabet (Cyrillic, Greek)
or a symbol (emoji), and the full-width stops of Chinese and Japanese
(。！？) end one without a following space. Lines of a list, a table or a
heading are sentences of their own even without a stop; other single line
breaks (hard-wrapped prose) do not end one. What the splitter still cannot
split (a single sentence longer than a budget) :func:`cut_to_tokens` cuts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Sentence", "cut_to_tokens", "split_sentences"]

# Words that end with a period without ending the sentence (lower-cased, no dot).
_ABBREVIATIONS = frozenset(
    str.split(
        """
    mr mrs ms dr prof sr jr st mt ft rev hon gen col lt sgt capt cmdr adm gov sen rep pres
    supt insp det messrs mme mlle
    inc ltd co corp llc plc bros dept univ assn est approx ca cf vs etc al viz
    no nos vol vols pp pg ch sec fig figs eq eqs ed eds op
    jan feb mar apr jun jul aug sep sept oct nov dec
    mon tue tues wed thu thur thurs fri sat sun
    ave blvd rd hwy
    """
    )
)
# Lower-case abbreviations that stand before a year or number ("c. 953 – c. 1029").
_BEFORE_NUMBER = frozenset({"c", "ca", "b", "d", "fl", "r"})
# Stops that end a sentence only before whitespace ("3.5", "v1.2" do not):
# Latin, ellipsis, Arabic question mark, Devanagari danda.
_STOPS = ".!?\u2026\u203c\u2047-\u2049\u061f\u0964\u0965"
# Full-width stops of scripts written without spaces (Chinese, Japanese):
# the next sentence follows them directly.
_WIDE_STOPS = "\u3002\uff01\uff1f\uff61"
_CLOSERS = "\"'\u201d\u2019)\\]\u00bb\u300d\u300f\u3011\u300b\uff09"
# A candidate end: a run of stops, then optional closing quotes/brackets.
_END = re.compile(f"[{_STOPS}{_WIDE_STOPS}]+[{_CLOSERS}]*")
# What may open the next sentence: any character that cannot continue the
# one before (not a comma, colon, closing mark or another stop). Letters of
# any script count, and symbols (emoji): a rule of Latin capitals only never
# split Cyrillic, Greek, Chinese or lower-cased text, and a chunk that is one
# "sentence" is too long for any budget. (Lower-case starts count only in
# text that does not capitalise its sentences: see _split_block.)
_CONTINUES = f",;:%{_STOPS}{_WIDE_STOPS}{_CLOSERS}\u3001\uff0c\uff1b\uff1a"
_OPENERS = "\"'\u201c\u2018\u201e\u00ab\u00bf\u00a1(\\[\u300c\u300e\u3010"
_NEXT_START = re.compile(f"\\s+[{_OPENERS}]*[^\\s{_CONTINUES}]")
_NEXT_AFTER_WIDE = re.compile(f"\\s*[{_OPENERS}]*[^\\s{_CONTINUES}]")
# A line of a list, a table or a heading: "- item", "* item", "• item",
# "1. step", "a) option", "| cell |", "# Title", "> quote". Such lines rarely
# end with a stop, so the line break ends their sentence.
_STRUCTURED_LINE = re.compile(
    r"[ \t]*(?:[-*+\u2022\u2023\u25aa\u25e6\u00b7\u2013\u2014][ \t]|\d{1,3}[.)][ \t]"
    r"|[a-z][.)][ \t]|\||#{1,6}[ \t]|>)"
)
_FIRST_LETTER = re.compile(r"[^\W\d_]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_WORD_BEFORE = re.compile(r"([\w.\-]+)$")


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence as a span of the text it was split from.

    Attributes:
        text: the sentence, without surrounding whitespace.
        start: offset of its first character in the source text.
        end: offset just past its last character.
    """

    text: str
    start: int
    end: int


#: Characters searched before a stop for the word it ends; doubled while the
#: word fills the window.
_WINDOW = 64


def _word_before(text: str, stop_at: int) -> re.Match[str] | None:
    """``_WORD_BEFORE`` searched in ``text[:stop_at]``, in time bounded by the word's length.

    Searching the whole prefix tries every start from 0 (the ``$`` anchor
    fails at each) at every stop, which made splitting quadratic in the
    text's length. The word lies in a window before the stop; the window
    grows only while the match reaches its start (the word may go on).
    """
    size = _WINDOW
    while True:
        lo = max(0, stop_at - size)
        m = _WORD_BEFORE.search(text, lo, stop_at)
        if lo == 0 or m is None or m.start(1) > lo:
            return m
        size *= 2


def _line_blank_before(text: str, at: int) -> bool:
    """Whether ``text[:at]`` is only whitespace since its last line break."""
    i = at - 1
    while i >= 0 and text[i] != "\n":
        if not text[i].isspace():
            return False
        i -= 1
    return True


def _next_visible(text: str, at: int) -> str:
    """The first non-whitespace character of ``text[at:]`` ("" when there is none)."""
    n = len(text)
    while at < n and text[at].isspace():
        at += 1
    return text[at] if at < n else ""


def _is_false_stop(text: str, stop_at: int) -> bool:
    """True when the period at ``stop_at`` belongs to an abbreviation, initial or acronym.

    Reads only around the stop (never a copy of the text before or after it),
    so a text splits in time linear in its length.
    """
    if text[stop_at] != ".":
        return False
    m = _word_before(text, stop_at)
    if m is None:
        return False
    word = m.group(1)
    if word.isdigit() and len(word) <= 3 and _line_blank_before(text, m.start(1)):
        return True  # "1. open the page": a numbered list item's marker, not a stop
    last = word.rsplit(".", 1)[-1] if "." in word else word
    if "." in word.strip("."):
        # "U.S", "e.g", "Ph.D": a dotted acronym; its final period ends the
        # sentence only when the next word could not continue it, which a
        # regex cannot know, so keep the acronym attached (the safer error).
        return True
    if len(last) == 1 and last.isupper():
        return True  # an initial ("J. K. Rowling")
    if last in _BEFORE_NUMBER and _next_visible(text, stop_at + 1).isdigit():
        return True  # "c. 953", "b. 1920": circa, born, died, flourished, reigned
    return last.lower() in _ABBREVIATIONS


def _split_block(text: str, offset: int, out: list[Sentence]) -> None:
    ends = []
    for m in _END.finditer(text):
        wide = any(ch in _WIDE_STOPS for ch in m.group())
        nxt = (_NEXT_AFTER_WIDE if wide else _NEXT_START).match(text, m.end())
        if nxt is not None:
            ends.append((m, nxt.group()[-1]))
    # In text that starts its sentences with capitals, a lower-case word after
    # a stop continues the sentence ('"Teen Titans Go!" is a series', "(etc.)
    # reduced"); text that never does (chat, lower-cased text) has no other
    # sign of a new sentence. Text in a caseless script (Chinese, Arabic) is
    # not cased, but a caseless word inside cased text continues it too.
    lead = _FIRST_LETTER.search(text)
    cased = any(first.isupper() for _, first in ends) or bool(lead and lead.group().isupper())
    start = 0
    for m, first in ends:
        if cased and first.isalpha() and not first.isupper():
            continue
        if (
            m.group().startswith(".")
            and m.end() - m.start() == 1
            and _is_false_stop(text, m.start())
        ):
            continue
        _append(text, start, m.end(), offset, out)
        start = m.end()
    _append(text, start, len(text), offset, out)


def _split_lines(text: str, offset: int, out: list[Sentence]) -> None:
    """Split a paragraph, ending a sentence at the line break of a list, table or heading line.

    Other single line breaks are hard-wrapped prose and continue the sentence.
    """
    start = 0
    pos = 0
    prev_structured = False
    for line in text.splitlines(keepends=True):
        structured = _STRUCTURED_LINE.match(line) is not None
        if pos and (structured or prev_structured):
            _split_block(text[start:pos], offset + start, out)
            start = pos
        prev_structured = structured
        pos += len(line)
    _split_block(text[start:], offset + start, out)


def _append(text: str, start: int, end: int, offset: int, out: list[Sentence]) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return
    lead = len(piece) - len(piece.lstrip())
    s = offset + start + lead
    out.append(Sentence(stripped, s, s + len(stripped)))


def split_sentences(text: str) -> list[Sentence]:
    """Split ``text`` into sentences (blank lines always end one, and so do list and table lines).

    Args:
        text: any text; empty or blank text gives no sentences.

    Returns:
        The sentences in order, as spans of ``text``.

    Example:
        >>> [s.text for s in split_sentences("Dr. Smith paid $3.50 in the U.S. today. He left.")]
        ['Dr. Smith paid $3.50 in the U.S. today.', 'He left.']
    """
    out: list[Sentence] = []
    pos = 0
    for brk in _PARAGRAPH_BREAK.finditer(text):
        _split_lines(text[pos : brk.start()], pos, out)
        pos = brk.end()
    _split_lines(text[pos:], pos, out)
    return out


# Characters of scripts written without spaces between words (CJK ideographs,
# kana, Thai, full-width forms): a cut may fall after any of them.
_NO_SPACE_SCRIPT = re.compile(
    "[\u0e00-\u0e7f\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
)


def _prefix_ends(text: str) -> list[int]:
    """Where ``text`` may be cut: before whitespace, and after a character of a no-space script."""
    ends = [i for i in range(1, len(text)) if text[i].isspace() and not text[i - 1].isspace()]
    ends += [m.end() for m in _NO_SPACE_SCRIPT.finditer(text)]
    return sorted(set(ends))


def _longest_fit(text: str, ends: list[int], max_tokens: int, count: Callable[[str], int]) -> str:
    """The longest ``text[:end].rstrip()`` over ``ends`` (ascending) within ``max_tokens``."""
    lo, hi = 0, len(ends)  # ends[:lo] known to fit (token counts grow with the prefix)
    while lo < hi:
        mid = (lo + hi) // 2
        if count(text[: ends[mid]].rstrip()) <= max_tokens:
            lo = mid + 1
        else:
            hi = mid
    # A tokenizer may merge across the cut, so confirm the prefix found.
    for k in range(lo - 1, -1, -1):
        piece = text[: ends[k]].rstrip()
        if count(piece) <= max_tokens:
            return piece
    return ""


def cut_to_tokens(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """The longest beginning of ``text`` that counts at most ``max_tokens``.

    A sentence longer than the whole budget would otherwise be dropped and
    with it everything it says; its beginning is kept instead. The cut falls
    at a word boundary, or between any two characters of a script written
    without spaces (Chinese, Japanese, Thai); only a single word longer than
    the budget (a URL, a hash) is cut inside the word.

    Args:
        text: the text to shorten.
        max_tokens: the budget; 0 or less gives ``""``.
        count_tokens: text -> tokens, the counter the budget is in.

    Returns:
        ``text`` stripped when it fits, else its longest fitting prefix
        (``""`` when not even one character fits).

    Example:
        >>> cut_to_tokens("one two three four", 2, lambda t: len(t.split()))
        'one two'
    """
    text = text.strip()
    if max_tokens <= 0 or not text:
        return ""
    if count_tokens(text) <= max_tokens:
        return text
    piece = _longest_fit(text, _prefix_ends(text), max_tokens, count_tokens)
    if piece:
        return piece
    return _longest_fit(text, list(range(1, len(text))), max_tokens, count_tokens)
