"""The memory's state: plain data that says how the stored history is summarized.

The full history stays in the user's own store, untouched; the state is a
view over it (summaries of the messages before ``folded``, the key facts,
and a digest of every folded message so a history that was edited,
redacted or cleared anywhere in its folded part is noticed). It serialises
to a JSON-able dict, so adapters can keep it next to the history (a
sidecar key, message metadata) or drop it and rebuild it from the history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from costopt_core.errors import ConfigurationError
from costopt_core.types import Message

__all__ = ["STATE_VERSION", "MemoryState", "SummaryEntry", "history_digest", "message_fingerprint"]

#: Bumped when the serialised layout changes; older layouts are rebuilt.
#: 2: ``anchor`` digests every folded message (1 fingerprinted only the last one,
#: so an edit of an earlier message went unnoticed).
STATE_VERSION = 2


def message_fingerprint(message: Message) -> str:
    """A short stable hash of a message (role, name, content, tool calls)."""
    payload = json.dumps(
        [
            message.role,
            message.name,
            message.content,
            message.tool_call_id,
            [json.dumps(c, sort_keys=True, default=str) for c in message.tool_calls],
        ]
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def history_digest(messages: Sequence[Message]) -> str:
    """A stable hash of a run of messages, in order (what a state's ``anchor`` holds).

    Every message counts (role, name, content, tool call id, tool calls), so
    an edit, a redaction, an insertion or a removal anywhere in the run
    changes it.

    Args:
        messages: the messages, oldest first (``history[:folded]``).

    Returns:
        32 hex characters.
    """
    h = hashlib.sha256()
    for m in messages:
        # Runs on every read over the whole folded part: fields are fed
        # directly (no JSON round trip but for tool calls), each one
        # length-prefixed so field boundaries cannot shift.
        calls = json.dumps(m.tool_calls, sort_keys=True, default=str) if m.tool_calls else ""
        for part in (m.role, m.name or "", m.content, m.tool_call_id or "", calls):
            data = part.encode()
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
    return h.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class SummaryEntry:
    """One summary: of the history messages ``[start, end)``, at ``level``.

    Level 0 summarizes turns (one entry per flush); level ``n + 1``
    summarizes ``level_fanout`` entries of level ``n``.
    """

    level: int
    start: int
    end: int
    text: str
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "tokens": self.tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SummaryEntry:
        return cls(
            level=int(data["level"]),
            start=int(data["start"]),
            end=int(data["end"]),
            text=str(data["text"]),
            tokens=int(data["tokens"]),
        )


@dataclass(frozen=True, slots=True)
class MemoryState:
    """What has been folded into summaries so far. Immutable; a flush returns a new one.

    Attributes:
        entries: the summaries, oldest first (higher levels cover older turns).
        facts: key facts kept verbatim, in the order they were first seen.
        folded: history messages before this index are covered by
            ``entries`` (system messages among them are still sent as is).
        anchor: :func:`history_digest` of ``history[:folded]``; a history
            whose folded part differs anywhere (an edited or redacted
            message) is not the one this state summarizes, so a stale
            summary is never sent in place of the edited text.
        flushes: how many flushes made this state.
        summarizer_calls: chat-model calls the flushes made (0 when extractive).
        version: layout version (:data:`STATE_VERSION`).
    """

    entries: tuple[SummaryEntry, ...] = ()
    facts: tuple[str, ...] = ()
    folded: int = 0
    anchor: str | None = None
    flushes: int = 0
    summarizer_calls: int = 0
    version: int = field(default=STATE_VERSION)

    @property
    def summary_tokens(self) -> int:
        return sum(e.tokens for e in self.entries)

    def matches(self, history: Sequence[Message]) -> bool:
        """True when this state summarizes a prefix of ``history``.

        A state of another layout version, or with no ``anchor``, never
        matches: it cannot prove which messages it summarizes, so it is
        rebuilt rather than trusted.
        """
        if self.folded == 0:
            return True
        if self.version != STATE_VERSION or self.anchor is None or self.folded > len(history):
            return False
        return history_digest(history[: self.folded]) == self.anchor

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (see :meth:`from_dict`)."""
        return {
            "version": self.version,
            "entries": [e.to_dict() for e in self.entries],
            "facts": list(self.facts),
            "folded": self.folded,
            "anchor": self.anchor,
            "flushes": self.flushes,
            "summarizer_calls": self.summarizer_calls,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MemoryState:
        """Read a state written by :meth:`to_dict`.

        ``None``, an empty dict or an older layout give the empty state (the
        next flush rebuilds the summary from the history, which is never lost).

        Raises:
            ConfigurationError: the dict is not a memory state.
        """
        if not data or data.get("version") != STATE_VERSION:
            return cls()
        try:
            return cls(
                entries=tuple(SummaryEntry.from_dict(e) for e in data.get("entries", ())),
                facts=tuple(str(f) for f in data.get("facts", ())),
                folded=int(data.get("folded", 0)),
                anchor=data.get("anchor"),
                flushes=int(data.get("flushes", 0)),
                summarizer_calls=int(data.get("summarizer_calls", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"not a memory state ({exc!r}); pass what MemoryState.to_dict() returned, "
                "or None to start over"
            ) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> MemoryState:
        return cls.from_dict(json.loads(text) if text else None)
