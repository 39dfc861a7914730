"""Turns as the memory cuts them: units that are kept or folded whole, and their token sizes.

An assistant message that calls tools and the tool results that answer it
are one unit: providers reject a tool result whose call is missing (and a
call without its result), so the window never starts between them and a
flush never folds one without the other. System messages are never part of
a unit: they are never summarized.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from costopt_core.types import Message

__all__ = [
    "MESSAGE_FRAMING_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "CountTokens",
    "Unit",
    "message_tokens",
    "render_turn",
    "split_units",
]

CountTokens = Callable[[str], int]
#: Per-message framing of the chat formats (role and separators), as ``TokenCounter`` counts it.
MESSAGE_FRAMING_TOKENS = 4
#: Tokens that prime the reply, once per call.
REPLY_PRIMING_TOKENS = 3


def message_tokens(message: Message, count_tokens: CountTokens) -> int:
    """Tokens one message adds to a call: content, name, tool calls and framing."""
    tokens = MESSAGE_FRAMING_TOKENS + count_tokens(message.content)
    if message.name:
        tokens += 1 + count_tokens(message.name)
    for call in message.tool_calls:
        tokens += count_tokens(json.dumps(call, sort_keys=True, default=str))
    return tokens


@dataclass(frozen=True, slots=True)
class Unit:
    """Consecutive non-system history messages ``[start, end)`` kept or folded together."""

    start: int
    end: int
    tokens: int


def split_units(
    history: Sequence[Message],
    start: int,
    sizes: Sequence[int],
) -> list[Unit]:
    """The units of ``history[start:]`` (system messages skipped), oldest first.

    Args:
        history: the full stored history.
        start: first index to consider.
        sizes: ``message_tokens`` of every history message (same length).
    """
    units: list[Unit] = []
    i = start
    n = len(history)
    while i < n:
        m = history[i]
        if m.role == "system":
            i += 1
            continue
        j = i + 1
        if (m.role == "assistant" and m.tool_calls) or m.role == "tool":
            # Tool results follow their call; a stray result joins the unit before it.
            while j < n and history[j].role == "tool":
                j += 1
        if m.role == "tool" and units and units[-1].end == i:
            prev = units.pop()
            units.append(Unit(prev.start, j, prev.tokens + _sum(sizes, i, j, history)))
        else:
            units.append(Unit(i, j, _sum(sizes, i, j, history)))
        i = j
    return units


def _sum(sizes: Sequence[int], i: int, j: int, history: Sequence[Message]) -> int:
    return sum(sizes[k] for k in range(i, j) if history[k].role != "system")


def render_turn(message: Message) -> str:
    """A message as one line of a transcript ("Alice: ..."), for summaries and recall."""
    who = message.name or message.role
    text = " ".join(message.content.split())
    if message.tool_calls:
        calls = ", ".join(str(c.get("name", "tool")) for c in message.tool_calls)
        text = f"{text} [called {calls}]".strip()
    return f"{who}: {text}"
