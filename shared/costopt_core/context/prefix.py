"""Provider prefix caching: lay a request out so its static prefix is reused.

Anthropic and OpenAI bill a prompt prefix they have seen recently at a
fraction of the input price (Anthropic: 0.1x on a read, 1.25x on a 5-minute
write; OpenAI: 0.1x-0.5x on a read, writes free). Both match the prefix
byte for byte, so a request only profits when its static part (tools, system
prompt) comes first and never changes: one date stamp or request id inside
the system prompt makes every request a miss. This module plans the layout;
it decides nothing about content.

* The stable order is: system messages first, then the conversation in its
  own order (turns are never reordered). Tools are a separate request field
  that both providers place before the system prompt.
* Volatile text in the system prompt (dates, times, UUIDs, long numbers, hex
  ids) is reported. With ``move_volatile=True`` the lines holding it leave
  the system prompt and are sent as a separate ``user`` message at the end of
  the request, verbatim; the rest of the system prompt stays byte-identical.
  A fixed date ("knowledge cutoff: 2024-06-01") is reported too: only the
  caller knows whether it changes between calls.
* Anthropic: explicit ``cache_control`` breakpoints, at most 4 per request,
  at the end of the tools, the end of the system prompt and the end of the
  stable history (the message before the newest user turn), each only when
  the prefix up to it reaches the model's minimum cacheable length (a
  shorter prefix is silently not cached, so the breakpoint would be wasted).
* OpenAI: caching is automatic from 1,024 tokens (then in 128-token steps);
  ``prompt_cache_key`` routes requests with the same key to the same cache
  shard, so it is derived from a hash of the static prefix (system + tools,
  volatile spans masked) plus an optional namespace such as the tenant.

Token counts use :class:`~costopt_core.tokens.TokenCounter`; for Anthropic
models that is ``cl100k_base``, an estimate (the plan says so).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from costopt_core.errors import ConfigurationError
from costopt_core.tokens import TokenCounter, default_counter
from costopt_core.types import Message

__all__ = [
    "ANTHROPIC_MAX_BREAKPOINTS",
    "MIN_CACHEABLE_TOKENS",
    "OPENAI_MIN_CACHEABLE_TOKENS",
    "Breakpoint",
    "BreakpointKind",
    "PrefixPlan",
    "Provider",
    "VolatileSpan",
    "find_volatile",
    "message_tokens",
    "min_cacheable_tokens",
    "openai_cached_tokens",
    "plan_prefix_cache",
    "prompt_cache_key",
    "provider_for",
    "tool_tokens",
]

Provider = Literal["anthropic", "openai"]
BreakpointKind = Literal["tools", "system", "history"]

#: Anthropic rejects a request with more explicit breakpoints than this.
ANTHROPIC_MAX_BREAKPOINTS = 4
#: OpenAI caches prompts of at least this many tokens, then in 128-token steps.
OPENAI_MIN_CACHEABLE_TOKENS = 1024
_OPENAI_CACHE_STEP = 128
#: Unknown Claude models: the smallest documented minimum. A breakpoint below
#: the real minimum costs nothing (the provider just does not cache), so
#: erring low never loses a saving; projections may then be optimistic.
_ANTHROPIC_DEFAULT_MIN = 1024

#: Minimum cacheable prompt length per Claude model family, first match wins.
#: Source: Anthropic, "Prompt caching - cache limitations"
#: (https://platform.claude.com/docs/en/build-with-claude/prompt-caching), as
#: reproduced in docs.orq.ai/docs/proxy/prompt-caching (checked 2026): Opus
#: 4.5+/Haiku 4.5 4,096; Sonnet 4.6 2,048 (one secondary source lists 1,024:
#: the higher value keeps projections from overstating the saving); Haiku 3 /
#: 3.5 2,048; Opus 4 / 4.1, Sonnet 3.5 / 3.7 / 4 / 4.5, Opus 3 1,024.
MIN_CACHEABLE_TOKENS: tuple[tuple[str, int], ...] = (
    (r"claude-(?:opus|haiku)-4-[5-9](?!\d)", 4096),
    (r"claude-sonnet-4-[6-9](?!\d)", 2048),
    (r"claude-(?:3-5-|3-)haiku|claude-haiku-3", 2048),
    (r"claude", _ANTHROPIC_DEFAULT_MIN),
)
_MIN_PATTERNS = tuple((re.compile(p), n) for p, n in MIN_CACHEABLE_TOKENS)
_OPENAI_MODEL = re.compile(r"(?:^|/)(?:gpt-|chatgpt-|o1|o3|o4|text-embedding)")

# Chat framing per message, as TokenCounter.count_messages counts it.
_PER_MESSAGE = 3
_PER_NAME = 1


def provider_for(model: str | None) -> Provider | None:
    """The provider whose prefix cache serves ``model``, from its name; ``None`` if unknown."""
    name = (model or "").lower()
    if "claude" in name:
        return "anthropic"
    if _OPENAI_MODEL.search(name):
        return "openai"
    return None


def min_cacheable_tokens(model: str | None, provider: Provider | None = None) -> int:
    """The shortest prefix ``provider`` caches for ``model`` (see :data:`MIN_CACHEABLE_TOKENS`)."""
    provider = provider or provider_for(model)
    if provider == "openai":
        return OPENAI_MIN_CACHEABLE_TOKENS
    name = (model or "").lower()
    for pattern, tokens in _MIN_PATTERNS:
        if pattern.search(name):
            return tokens
    return _ANTHROPIC_DEFAULT_MIN


def openai_cached_tokens(prefix_tokens: int) -> int:
    """Tokens OpenAI caches of a stable ``prefix_tokens``: 0 below 1,024, then 128-token steps."""
    if prefix_tokens < OPENAI_MIN_CACHEABLE_TOKENS:
        return 0
    steps = (prefix_tokens - OPENAI_MIN_CACHEABLE_TOKENS) // _OPENAI_CACHE_STEP
    return OPENAI_MIN_CACHEABLE_TOKENS + steps * _OPENAI_CACHE_STEP


# -- token counting -----------------------------------------------------------
def message_tokens(counter: TokenCounter, message: Message, model: str | None) -> int:
    """Tokens of one message, framing included (the per-message part of ``count_messages``)."""
    total = (
        _PER_MESSAGE + counter.count(message.content, model) + counter.count(message.role, model)
    )
    if message.name:
        total += _PER_NAME + counter.count(message.name, model)
    for call in message.tool_calls:
        total += counter.count(str(call), model)
    return total


def canonical_tool(tool: Mapping[str, Any]) -> str:
    """One tool definition as canonical JSON (sorted keys): what hashing and counting see."""
    return json.dumps(tool, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def tool_tokens(
    counter: TokenCounter, tools: Iterable[Mapping[str, Any]], model: str | None
) -> int:
    """Tokens of the tool definitions, counted over their canonical JSON (an estimate:
    providers render tools in their own internal format)."""
    return sum(counter.count(canonical_tool(t), model) for t in tools)


# -- volatile text ------------------------------------------------------------
_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
# Most specific first: a span claimed by one pattern is not reported again.
_VOLATILE: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "uuid",
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
    ),
    (
        "iso_datetime",
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?(?![\d-])"
        ),
    ),
    (
        "date",
        re.compile(
            rf"\b(?:\d{{1,2}}/\d{{1,2}}/\d{{2,4}}|{_MONTHS}\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}"
            rf"|\d{{1,2}} {_MONTHS} \d{{4}})\b",
            re.I,
        ),
    ),
    ("time", re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?(?![\d:])", re.I)),
    ("hex_id", re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{16,}\b", re.I)),
    ("long_number", re.compile(r"(?<![\d.])\d{6,}(?![\d.])")),
)


@dataclass(frozen=True, slots=True)
class VolatileSpan:
    """Text that probably changes between calls and so breaks the cached prefix.

    ``message_index`` is the message's index in the request as given (``None``
    for a tool definition, then ``tool_index`` says which); ``start``/``end``
    are character offsets into that message's content (or the tool's JSON).
    """

    kind: str
    text: str
    start: int
    end: int
    message_index: int | None = None
    tool_index: int | None = None


def find_volatile(text: str) -> list[tuple[str, int, int]]:
    """Volatile spans in ``text`` as ``(kind, start, end)``, in text order.

    Kinds: ``uuid``, ``iso_datetime``, ``date``, ``time``, ``hex_id``,
    ``long_number`` (6+ digits: timestamps, request and order ids).
    """
    found: list[tuple[str, int, int]] = []
    for kind, pattern in _VOLATILE:
        for m in pattern.finditer(text):
            start, end = m.span()
            if not any(start < e and s < end for _, s, e in found):
                found.append((kind, start, end))
    return sorted(found, key=lambda span: span[1])


def _mask_volatile(text: str) -> str:
    """``text`` with each volatile span replaced by its kind: stable across calls."""
    out: list[str] = []
    pos = 0
    for kind, start, end in find_volatile(text):
        out.append(text[pos:start])
        out.append(f"<{kind}>")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _split_volatile_lines(text: str) -> tuple[str, list[str]]:
    """(``text`` without its volatile lines, those lines without line ends)."""
    kept: list[str] = []
    moved: list[str] = []
    for line in text.splitlines(keepends=True):
        if find_volatile(line):
            moved.append(line.rstrip("\r\n"))
        else:
            kept.append(line)
    return "".join(kept), moved


# -- the plan -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Breakpoint:
    """One Anthropic ``cache_control`` breakpoint.

    ``kind`` ``tools`` marks the last tool definition (``message_index`` is
    ``None``); ``system`` and ``history`` mark the last content block of the
    message at ``message_index`` of the planned request
    (:meth:`PrefixPlan.apply`). ``prefix_tokens`` is the cumulative prefix the
    breakpoint caches, in Anthropic's order (tools, system, messages).
    """

    kind: BreakpointKind
    message_index: int | None
    prefix_tokens: int


@dataclass(frozen=True, slots=True)
class PrefixPlan:
    """How to send a request so the provider's prefix cache hits.

    Attributes:
        provider: whose cache the plan targets; ``None`` for an unknown model
            (the plan then only reorders and reports).
        model: the model planned for.
        order: indices of the original messages in the stable order.
        breakpoints: Anthropic ``cache_control`` breakpoints (empty for OpenAI).
        prompt_cache_key: OpenAI's cache routing key (``None`` for Anthropic).
        min_cacheable_tokens: the provider's minimum prefix for this model.
        tools_tokens, system_tokens, history_tokens: the prefix parts; history
            is the stable history (everything before the newest user turn).
        static_prefix_tokens: tools + system, the part shared across requests.
        cacheable_tokens: what the provider would cache per request at best:
            the longest breakpoint prefix (Anthropic) or the stable prefix in
            OpenAI's 128-token steps.
        volatile: volatile spans found in the system prompt and tools.
        moved_volatile: ``apply`` moves volatile system lines to the end.
        moved_lines: those lines, as sent in the trailing message.
        notes: why a breakpoint or key was not placed, and other advice.
        estimated: token counts are not the model's own tokenizer.
    """

    provider: Provider | None
    model: str | None
    order: tuple[int, ...]
    breakpoints: tuple[Breakpoint, ...]
    prompt_cache_key: str | None
    min_cacheable_tokens: int
    tools_tokens: int
    system_tokens: int
    history_tokens: int
    static_prefix_tokens: int
    cacheable_tokens: int
    volatile: tuple[VolatileSpan, ...] = ()
    moved_volatile: bool = False
    moved_lines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    estimated: bool = True
    _system_indices: frozenset[int] = field(default=frozenset(), repr=False)

    @property
    def cache_tools(self) -> bool:
        """True when the last tool definition gets a breakpoint."""
        return any(b.kind == "tools" for b in self.breakpoints)

    @property
    def breakpoint_messages(self) -> tuple[int, ...]:
        """Indices (in :meth:`apply`'s output) of messages whose last block gets a breakpoint."""
        return tuple(b.message_index for b in self.breakpoints if b.message_index is not None)

    def apply(self, messages: Sequence[Message]) -> list[Message]:
        """``messages`` in the planned order, volatile system lines moved if planned.

        Message content is never altered, except that with ``moved_volatile``
        the volatile lines leave the system messages and follow the request
        as one ``user`` message, verbatim, joined by newlines.
        """
        ordered = [messages[i] for i in self.order]
        if not self.moved_volatile:
            return ordered
        out: list[Message] = []
        for i, m in zip(self.order, ordered, strict=True):
            if i in self._system_indices:
                kept, _ = _split_volatile_lines(m.content)
                m = Message(role=m.role, content=kept, name=m.name)
            out.append(m)
        if self.moved_lines:
            out.append(Message(role="user", content="\n".join(self.moved_lines)))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "provider": self.provider,
            "model": self.model,
            "order": list(self.order),
            "breakpoints": [
                {"kind": b.kind, "message_index": b.message_index, "prefix_tokens": b.prefix_tokens}
                for b in self.breakpoints
            ],
            "prompt_cache_key": self.prompt_cache_key,
            "min_cacheable_tokens": self.min_cacheable_tokens,
            "tools_tokens": self.tools_tokens,
            "system_tokens": self.system_tokens,
            "history_tokens": self.history_tokens,
            "static_prefix_tokens": self.static_prefix_tokens,
            "cacheable_tokens": self.cacheable_tokens,
            "volatile": [
                {"kind": v.kind, "text": v.text, "message_index": v.message_index}
                for v in self.volatile
            ],
            "moved_volatile": self.moved_volatile,
            "notes": list(self.notes),
            "estimated": self.estimated,
        }


def prompt_cache_key(
    system: Sequence[str], tools: Sequence[Mapping[str, Any]] = (), namespace: str | None = None
) -> str:
    """OpenAI ``prompt_cache_key`` for a static prefix: stable, short, content-derived.

    Volatile spans are masked first, so requests of one template share a key
    (and a cache shard) even when a date inside it changes. A change to the
    static text or the tools gives a new key.

    Args:
        system: the system prompt texts, in order.
        tools: the tool definitions.
        namespace: keeps tenants (or apps) apart: same prefix, other key.
    """
    payload = json.dumps(
        {
            "v": 1,
            "ns": namespace,
            "system": [_mask_volatile(s) for s in system],
            "tools": [_mask_volatile(canonical_tool(t)) for t in tools],
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return "costopt-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def _tokens_before_volatile(
    counter: TokenCounter, system: Sequence[Message], model: str | None
) -> int:
    """Tokens of the system messages up to their first volatile span: what still matches."""
    total = 0
    for m in system:
        spans = find_volatile(m.content)
        if spans:
            return total + counter.count(m.content[: spans[0][1]], model)
        total += message_tokens(counter, m, model)
    return total


def _newest_user_turn(messages: Sequence[Message]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i
    return None


def plan_prefix_cache(
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] = (),
    *,
    model: str | None,
    provider: Provider | Literal["auto"] = "auto",
    counter: TokenCounter | None = None,
    namespace: str | None = None,
    hoist_system: bool = True,
    move_volatile: bool = False,
    max_breakpoints: int = ANTHROPIC_MAX_BREAKPOINTS,
    marked_messages: Collection[int] = (),
    tools_marked: bool = False,
) -> PrefixPlan:
    """Plan a request's layout and cache markers for the provider's prefix cache.

    Pure: reads the messages and tools, returns a plan; nothing is sent.

    Args:
        messages: the request's messages as they would be sent.
        tools: its tool definitions (any provider format).
        model: the model the request goes to (picks the provider and the
            minimum cacheable length).
        provider: ``"anthropic"``, ``"openai"`` or ``"auto"`` (from the model name).
        counter: token counter; the process-wide one by default.
        namespace: mixed into OpenAI's ``prompt_cache_key`` (e.g. the tenant).
        hoist_system: move system messages that follow conversation turns to
            the front (their relative order kept). Turns are never reordered.
        move_volatile: move system-prompt lines with volatile text to a
            trailing ``user`` message (see :meth:`PrefixPlan.apply`).
        max_breakpoints: new Anthropic breakpoints to place, 0-4 (fewer when
            the caller already placed some: the provider allows 4 in total).
        marked_messages: indices (in the planned order) of messages whose
            last block already carries a breakpoint; ``tools_marked``: the
            last tool does. A planned breakpoint already there is not placed
            again (it uses no new slot) but still counts as cached.

    Returns:
        The plan; ``plan.apply(messages)`` gives the messages to send.

    Raises:
        ConfigurationError: unknown provider or ``max_breakpoints`` out of range.
    """
    if provider not in ("anthropic", "openai", "auto"):
        raise ConfigurationError(
            f"provider must be 'anthropic', 'openai' or 'auto', got {provider!r}"
        )
    if isinstance(max_breakpoints, bool) or not isinstance(max_breakpoints, int):
        raise ConfigurationError(f"max_breakpoints must be an int 0-4, got {max_breakpoints!r}")
    if not 0 <= max_breakpoints <= ANTHROPIC_MAX_BREAKPOINTS:
        raise ConfigurationError(
            f"max_breakpoints must be between 0 and {ANTHROPIC_MAX_BREAKPOINTS} (Anthropic's "
            f"limit per request), got {max_breakpoints}"
        )
    counter = counter or default_counter()
    resolved: Provider | None = provider_for(model) if provider == "auto" else provider
    notes: list[str] = []

    system_idx = [i for i, m in enumerate(messages) if m.role == "system"]
    other_idx = [i for i, m in enumerate(messages) if m.role != "system"]
    if hoist_system:
        order = tuple(system_idx + other_idx)
        if list(order) != list(range(len(messages))):
            notes.append("system messages that followed conversation turns were moved first")
    else:
        order = tuple(range(len(messages)))

    volatile: list[VolatileSpan] = []
    for i in system_idx:
        text = messages[i].content
        for kind, start, end in find_volatile(text):
            volatile.append(VolatileSpan(kind, text[start:end], start, end, message_index=i))
    for t, tool in enumerate(tools):
        text = canonical_tool(tool)
        for kind, start, end in find_volatile(text):
            volatile.append(VolatileSpan(kind, text[start:end], start, end, tool_index=t))

    moved_lines: list[str] = []
    if move_volatile:
        for i in system_idx:
            moved_lines.extend(_split_volatile_lines(messages[i].content)[1])
    moving = bool(move_volatile and moved_lines)

    plan_stub = PrefixPlan(
        provider=resolved,
        model=model,
        order=order,
        breakpoints=(),
        prompt_cache_key=None,
        min_cacheable_tokens=0,
        tools_tokens=0,
        system_tokens=0,
        history_tokens=0,
        static_prefix_tokens=0,
        cacheable_tokens=0,
        moved_volatile=moving,
        moved_lines=tuple(moved_lines),
        _system_indices=frozenset(system_idx),
    )
    sent = plan_stub.apply(messages)

    _, exact = counter.encoding_name(model)
    tools_tok = tool_tokens(counter, tools, model)
    n_system = sum(1 for m in sent if m.role == "system") if hoist_system else 0
    if not hoist_system:
        # Only a leading run of system messages is a static prefix.
        while n_system < len(sent) and sent[n_system].role == "system":
            n_system += 1
    system_tok = sum(message_tokens(counter, m, model) for m in sent[:n_system])
    newest = _newest_user_turn(sent)
    if moving:
        # The moved lines trail the request: the turn before them is the newest.
        newest = _newest_user_turn(sent[:-1])
    history_end = (newest - 1) if newest is not None else len(sent) - 2
    history_tok = sum(message_tokens(counter, m, model) for m in sent[n_system : history_end + 1])

    system_volatile = any(v.message_index is not None for v in volatile) and not moving
    tools_volatile = any(v.tool_index is not None for v in volatile)
    if volatile and not moving:
        notes.append(
            f"{len(volatile)} volatile span(s) in the static prefix (e.g. "
            f"{volatile[0].text!r}) make it differ between calls; move them out of the system "
            "prompt (move_volatile=True) unless they are fixed"
        )

    minimum = min_cacheable_tokens(model, resolved) if resolved else 0
    breakpoints: list[Breakpoint] = []
    key: str | None = None
    cacheable = 0
    if resolved == "anthropic":
        candidates: list[tuple[int, Breakpoint]] = []  # (priority, breakpoint)
        if tools:
            candidates.append((2, Breakpoint("tools", None, tools_tok)))
        if n_system:
            candidates.append((0, Breakpoint("system", n_system - 1, tools_tok + system_tok)))
        if history_end >= n_system:
            total = tools_tok + system_tok + history_tok
            candidates.append((1, Breakpoint("history", history_end, total)))
        eligible: list[tuple[int, Breakpoint]] = []
        last_tokens = 0
        for prio, bp in candidates:  # in prefix order
            if bp.prefix_tokens < minimum:
                notes.append(
                    f"no {bp.kind} breakpoint: the prefix up to it is ~{bp.prefix_tokens} tokens, "
                    f"below the {minimum}-token minimum of {model}"
                )
                continue
            if bp.prefix_tokens == last_tokens:
                continue
            last_tokens = bp.prefix_tokens
            eligible.append((prio, bp))

        def placed(bp: Breakpoint) -> bool:
            if bp.message_index is None:
                return tools_marked
            return bp.message_index in marked_messages

        present = [bp for _, bp in eligible if placed(bp)]
        fresh = [(prio, bp) for prio, bp in eligible if not placed(bp)]
        chosen = sorted(fresh, key=lambda pb: pb[0])[:max_breakpoints]
        if len(chosen) < len(fresh):
            notes.append(f"only {max_breakpoints} new breakpoint(s) allowed; kept the most reused")
        breakpoints = [bp for _, bp in sorted(chosen, key=lambda pb: pb[1].prefix_tokens)]
        reusable = [
            bp.prefix_tokens
            for bp in breakpoints + present
            if not (bp.kind != "tools" and system_volatile) and not tools_volatile
        ]
        cacheable = max(reusable, default=0)
    elif resolved == "openai":
        system_texts = [m.content for m in sent[:n_system]]
        key = prompt_cache_key(system_texts, tools, namespace)
        stable = tools_tok + system_tok + history_tok
        if tools_volatile:
            stable = 0  # where the provider renders the volatile span is unknown
        elif system_volatile:
            stable = tools_tok + _tokens_before_volatile(counter, sent[:n_system], model)
        cacheable = openai_cached_tokens(stable)
        if cacheable == 0:
            notes.append(
                f"the stable prefix is ~{tools_tok + system_tok + history_tok} tokens, below "
                f"OpenAI's {OPENAI_MIN_CACHEABLE_TOKENS}-token minimum: nothing is cached"
            )
    else:
        notes.append(f"no known prefix cache for model {model!r}: layout only")

    return PrefixPlan(
        provider=resolved,
        model=model,
        order=order,
        breakpoints=tuple(breakpoints),
        prompt_cache_key=key,
        min_cacheable_tokens=minimum,
        tools_tokens=tools_tok,
        system_tokens=system_tok,
        history_tokens=history_tok,
        static_prefix_tokens=tools_tok + system_tok,
        cacheable_tokens=cacheable,
        volatile=tuple(volatile),
        moved_volatile=moving,
        moved_lines=tuple(moved_lines),
        notes=tuple(notes),
        estimated=not exact,
        _system_indices=frozenset(system_idx),
    )
