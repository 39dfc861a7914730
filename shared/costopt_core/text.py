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


def normalize_text(text: str) -> str:
    """``text`` with runs of spaces and tabs inside a line made one space, trailing
    spaces and blank lines removed, line endings made ``\\n``, and the
    indentation the lines share (and the first line's) removed; line breaks and
    the other lines' relative indentation stay.

    Examples:
        >>> normalize_text("  How do I   reset my password? ")
        'How do I reset my password?'
        >>> normalize_text("def f():\\r\\n\\n\\treturn  1\\n")
        'def f():\\n    return 1'
    """
    if "\n" not in text and "\r" not in text:
        return _SPACES.sub(" ", text).strip()  # one line (most prompts): nothing to lay out
    rows: list[tuple[int, str]] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        body = line.strip()
        if not body:
            continue
        lead = line[: len(line) - len(line.lstrip())]
        rows.append((len(lead.expandtabs(4)), _SPACES.sub(" ", body)))
    if not rows:
        return ""
    shared = min(indent for indent, _ in rows)
    # The first line's own indent is dropped: it is typing, not structure (code
    # pasted under a question starts on a line of its own).
    rows[0] = (shared, rows[0][1])
    return "\n".join(" " * (indent - shared) + body for indent, body in rows)


def layout(text: str) -> tuple[int, ...]:
    """The indentation of each line of a normalised text: its shape, words aside."""
    return tuple(len(line) - len(line.lstrip(" ")) for line in text.split("\n"))
