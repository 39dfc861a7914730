"""One whitespace normalisation of prompt text, for everything that compares prompts.

The cache's exact key, the cache's semantic text and the router's text all
read a prompt through :func:`normalize_text`, so that stray spaces do not
defeat the exact tier, and so that a prompt the router embedded is the very
string the cache embeds (the embedder's LRU then computes its vector once).

It keeps a prompt's layout: line breaks and each line's indentation stay,
because in code they are meaning. "Is this valid?" over two snippets that
differ only in indentation asks two questions; folding all whitespace made
them one key.
"""

from __future__ import annotations

import re

__all__ = ["layout", "normalize_text"]

#: Whitespace other than a line break.
_SPACES = re.compile(r"[^\S\n]+")
#: Characters that open a literal, where every space is meaning ('a  b' is not 'a b').
_QUOTES = frozenset("'\"`")


#: An apostrophe inside a word ("What's", "don't"): no quote.
_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")
#: A quoted literal or code span on one line.
_LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")


def _fold_spaces(body: str) -> str:
    """A line's runs of spaces and tabs made one space, outside quoted literals.

    Inside a quoted string or a code span the spaces are the value itself
    (``len('a  b')`` is 4, ``len('a b')`` 3): they are kept as written. A
    quote that closes nothing (a possessive "students'", "rock 'n' roll"'s
    outside) and an apostrophe inside a word quote nothing.
    """
    if _QUOTES.isdisjoint(body):
        return _SPACES.sub(" ", body)
    # Found on a copy whose in-word apostrophes are blanked (same length).
    probe = _APOSTROPHE.sub("\0", body)
    out: list[str] = []
    last = 0
    for m in _LITERAL.finditer(probe):
        out += [_SPACES.sub(" ", body[last : m.start()]), body[m.start() : m.end()]]
        last = m.end()
    out.append(_SPACES.sub(" ", body[last:]))
    return "".join(out)


def _shared_indent(leads: list[str]) -> str:
    """The leading whitespace every line starts with, character for character."""
    shared = min(leads, key=len)
    for lead in leads:
        while not lead.startswith(shared):
            shared = shared[:-1]
    return shared


def normalize_text(text: str) -> str:
    """``text`` with runs of spaces and tabs inside a line made one space (unless
    the line quotes a literal: see :func:`_fold_spaces`), trailing whitespace
    and blank lines removed, line endings made ``\\n``, and the indentation
    the lines share (and the first line's) removed; line breaks and the other
    lines' own indentation stay as written (a tab is not four spaces in a
    Makefile or YAML).

    Examples:
        >>> normalize_text("  How do I   reset my password? ")
        'How do I reset my password?'
        >>> normalize_text("def f():\\r\\n\\n    return  1\\n")
        'def f():\\n    return 1'
        >>> normalize_text("all:\\n\\tgcc main.c")  # a tab stays a tab
        'all:\\n\\tgcc main.c'
    """
    if "\n" not in text and "\r" not in text:
        return _fold_spaces(text.strip())  # one line (most prompts): nothing to lay out
    rows: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        body = line.strip()
        if not body:
            continue
        rows.append((line[: len(line) - len(line.lstrip())], _fold_spaces(body)))
    if not rows:
        return ""
    # The first line's own indent is dropped: it is typing, not structure (code
    # pasted under a question starts on a line of its own).
    shared = _shared_indent([lead for lead, _ in rows])
    rest = (lead[len(shared) :] + body for lead, body in rows[1:])
    return "\n".join([rows[0][1], *rest])


def layout(text: str) -> tuple[str, ...]:
    """The indentation of each line of a normalised text, as written: its shape,
    words aside (a tab and four spaces are two shapes)."""
    return tuple(line[: len(line) - len(line.lstrip(" \t"))] for line in text.split("\n"))
