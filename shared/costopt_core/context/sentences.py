"""Sentence splitting for extractive summarization, without a model and without losing text.

Extractive summarization keeps or drops whole sentences, so a bad split either
cuts a fact in half ("born in the U." / "S. in 1950") or glues two sentences
into one that cannot be dropped separately. A regex splitter is enough when it
knows the usual traps: abbreviations ("Dr.", "U.S.", "Inc."), initials
("J. K. Rowling"), decimals and version numbers ("3.5", "v1.2"), ellipses and
closing quotes or brackets after the final stop. Splits are returned as
character spans of the original text, so nothing is rewritten: every
non-whitespace character of the input lies in exactly one sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Sentence", "split_sentences"]

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
# A candidate end: a run of stops, then optional closing quotes/brackets.
_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*")
# What may open the next sentence: a capital letter or digit, possibly after
# opening quotes/brackets. Lower-case starts are taken as a continuation.
_NEXT_START = re.compile(r"\s+[\"'\u201c\u2018(\[]*[A-Z0-9\u00c0-\u00de]")
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


def _is_false_stop(text: str, stop_at: int) -> bool:
    """True when the period at ``stop_at`` belongs to an abbreviation, initial or acronym."""
    if text[stop_at] != ".":
        return False
    m = _WORD_BEFORE.search(text, 0, stop_at)
    if m is None:
        return False
    word = m.group(1)
    last = word.rsplit(".", 1)[-1] if "." in word else word
    if "." in word.strip("."):
        # "U.S", "e.g", "Ph.D": a dotted acronym; its final period ends the
        # sentence only when the next word could not continue it, which a
        # regex cannot know, so keep the acronym attached (the safer error).
        return True
    if len(last) == 1 and last.isupper():
        return True  # an initial ("J. K. Rowling")
    if last in _BEFORE_NUMBER and text[stop_at + 1 :].lstrip()[:1].isdigit():
        return True  # "c. 953", "b. 1920": circa, born, died, flourished, reigned
    return last.lower() in _ABBREVIATIONS


def _split_block(text: str, offset: int, out: list[Sentence]) -> None:
    start = 0
    for m in _END.finditer(text):
        nxt = _NEXT_START.match(text, m.end())
        if nxt is None:
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


def _append(text: str, start: int, end: int, offset: int, out: list[Sentence]) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return
    lead = len(piece) - len(piece.lstrip())
    s = offset + start + lead
    out.append(Sentence(stripped, s, s + len(stripped)))


def split_sentences(text: str) -> list[Sentence]:
    """Split ``text`` into sentences (blank lines always end one).

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
        _split_block(text[pos : brk.start()], pos, out)
        pos = brk.end()
    _split_block(text[pos:], pos, out)
    return out
