"""Where a prompt's input tokens go, what they cost per month, and what could go.

``analyze_prompt`` splits one representative request into sections (system,
tools, history, retrieved context, the question), prices each at the
catalog's input rate for a monthly volume, and lists the cheap wins:
instructions said more than once, few-shot examples that could be cut, and
how much of the prompt is a static prefix the provider could cache (with the
projected monthly saving at the catalog's cache read and write prices). It
only reads: nothing is rewritten and nothing is recorded.

Money: a month is :data:`DAYS_PER_MONTH` (30) days, so 1M requests/day x
1,000 input tokens on a $5/M-token model is $150,000 of input per month.
Only input tokens are priced (output does not depend on the prompt layout),
at the base tier (long-context tiers are not applied).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from costopt_core.context.prefix import (
    PrefixPlan,
    Provider,
    VolatileSpan,
    message_tokens,
    openai_cached_tokens,
    plan_prefix_cache,
    provider_for,
    tool_tokens,
)
from costopt_core.errors import ConfigurationError
from costopt_core.pricing import ModelPrice, PriceCatalog
from costopt_core.tokens import TokenCounter, default_counter
from costopt_core.types import ChatRequest, Message, money_str

if TYPE_CHECKING:
    from costopt_core.engine import CostEngine

__all__ = [
    "DAYS_PER_MONTH",
    "SECTIONS",
    "CacheProjection",
    "DuplicateInstruction",
    "ExampleBlock",
    "PromptReport",
    "Section",
    "SectionCost",
    "analyze_prompt",
]

#: Days in the month used for monthly projections.
DAYS_PER_MONTH = 30
Section = Literal["system", "tools", "history", "context", "question"]
SECTIONS: tuple[Section, ...] = ("system", "tools", "history", "context", "question")

_MTOK = Decimal(1_000_000)
_SECONDS_PER_MONTH = DAYS_PER_MONTH * 86_400
# The reply priming TokenCounter.count_messages adds once per request.
_REPLY_PRIMING = 3
# A line or sentence shorter than this (normalized) is too generic to flag.
_MIN_INSTRUCTION_CHARS = 12


@dataclass(frozen=True, slots=True)
class SectionCost:
    """Tokens and input cost of one section of the prompt.

    ``usd_per_request``/``usd_per_month`` are ``None`` when the model has no price.
    """

    section: Section
    tokens: int
    share: float
    usd_per_request: Decimal | None
    usd_per_month: Decimal | None


@dataclass(frozen=True, slots=True)
class DuplicateInstruction:
    """A line or sentence that appears more than once in the prompt.

    ``occurrences`` are ``(section, message index)`` pairs (index ``-1`` for
    a text passed as ``context=``); ``wasted_tokens`` counts the extra copies.
    """

    text: str
    normalized: str
    occurrences: tuple[tuple[Section, int], ...]
    tokens_each: int
    wasted_tokens: int
    wasted_usd_per_month: Decimal | None


@dataclass(frozen=True, slots=True)
class ExampleBlock:
    """A few-shot example that could be cut (or shortened).

    ``kind`` is ``inline`` (an "Example:", Q:/A:, Input:/Output: or
    ``<example>`` block inside a message) or ``messages`` (example
    user/assistant messages: named ``example_*``, OpenAI's convention, or
    passed as ``example_messages``).
    """

    kind: Literal["inline", "messages"]
    section: Section
    message_indices: tuple[int, ...]
    preview: str
    tokens: int
    usd_per_month: Decimal | None


@dataclass(frozen=True, slots=True)
class CacheProjection:
    """The monthly input cost with and without the provider's prefix cache.

    The hit rate follows from the volume: with requests arriving at random
    (Poisson) and every hit refreshing the entry's TTL (as both providers
    do), a request misses only when none came in the TTL before it, so
    ``hit_rate = 1 - exp(-requests per TTL)``. A miss pays the cache write
    price (Anthropic 5 m: 1.25x input; 1 h when ``cache_ttl_seconds`` > 300;
    OpenAI: plain input), a hit the cache read price.

    Attributes:
        provider: whose cache; ``None`` for a model without one.
        min_cacheable_tokens: the provider's minimum prefix for the model.
        static_prefix_tokens: tools + system (+ leading example messages).
        cacheable_tokens: the part of it the provider would cache per request
            (0 below the minimum; OpenAI in 128-token steps).
        hit_rate: expected share of requests that read the cache.
        usd_per_month_without_cache: input cost, nothing cached.
        usd_per_month_with_cache: input cost with the prefix cached.
        cache_write_usd_per_month: the part of the latter spent on writes.
        saving_usd_per_month: without minus with.
    """

    provider: Provider | None
    min_cacheable_tokens: int
    static_prefix_tokens: int
    cacheable_tokens: int
    hit_rate: float
    usd_per_month_without_cache: Decimal | None
    usd_per_month_with_cache: Decimal | None
    cache_write_usd_per_month: Decimal | None
    saving_usd_per_month: Decimal | None


@dataclass(frozen=True, slots=True)
class PromptReport:
    """The result of :func:`analyze_prompt`. ``str(report)`` is a table."""

    model: str
    requests_per_month: Decimal
    sections: tuple[SectionCost, ...]
    overhead_tokens: int
    total_tokens: int
    usd_per_request: Decimal | None
    usd_per_month: Decimal | None
    duplicates: tuple[DuplicateInstruction, ...]
    examples: tuple[ExampleBlock, ...]
    cache: CacheProjection
    plan: PrefixPlan
    volatile: tuple[VolatileSpan, ...] = ()
    estimated: bool = True
    notes: tuple[str, ...] = field(default=())

    def section(self, name: Section) -> SectionCost:
        """The cost of section ``name``."""
        for s in self.sections:
            if s.section == name:
                return s
        raise KeyError(name)

    @property
    def cacheable_share(self) -> float:
        """Share of the prompt's tokens the provider would cache per request."""
        return self.cache.cacheable_tokens / self.total_tokens if self.total_tokens else 0.0

    @property
    def duplicate_tokens(self) -> int:
        """Tokens spent on repeated instructions (extra copies only)."""
        return sum(d.wasted_tokens for d in self.duplicates)

    @property
    def example_tokens(self) -> int:
        """Tokens spent on few-shot examples."""
        return sum(e.tokens for e in self.examples)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (money as strings)."""
        return {
            "model": self.model,
            "requests_per_month": format(self.requests_per_month, "f"),
            "sections": {
                s.section: {
                    "tokens": s.tokens,
                    "share": s.share,
                    "usd_per_request": money_str(s.usd_per_request),
                    "usd_per_month": money_str(s.usd_per_month),
                }
                for s in self.sections
            },
            "overhead_tokens": self.overhead_tokens,
            "total_tokens": self.total_tokens,
            "usd_per_request": money_str(self.usd_per_request),
            "usd_per_month": money_str(self.usd_per_month),
            "duplicates": [
                {
                    "text": d.text,
                    "occurrences": [list(o) for o in d.occurrences],
                    "wasted_tokens": d.wasted_tokens,
                    "wasted_usd_per_month": money_str(d.wasted_usd_per_month),
                }
                for d in self.duplicates
            ],
            "examples": [
                {
                    "kind": e.kind,
                    "section": e.section,
                    "message_indices": list(e.message_indices),
                    "preview": e.preview,
                    "tokens": e.tokens,
                    "usd_per_month": money_str(e.usd_per_month),
                }
                for e in self.examples
            ],
            "provider_cache": {
                "provider": self.cache.provider,
                "min_cacheable_tokens": self.cache.min_cacheable_tokens,
                "static_prefix_tokens": self.cache.static_prefix_tokens,
                "cacheable_tokens": self.cache.cacheable_tokens,
                "hit_rate": self.cache.hit_rate,
                "usd_per_month_without_cache": money_str(self.cache.usd_per_month_without_cache),
                "usd_per_month_with_cache": money_str(self.cache.usd_per_month_with_cache),
                "cache_write_usd_per_month": money_str(self.cache.cache_write_usd_per_month),
                "saving_usd_per_month": money_str(self.cache.saving_usd_per_month),
            },
            "volatile": [{"kind": v.kind, "text": v.text} for v in self.volatile],
            "estimated": self.estimated,
            "notes": list(self.notes),
        }

    def to_table(self) -> str:
        """A plain-text table for notebooks and logs."""
        lines = [
            f"Prompt analysis: {self.model}, {_count(self.requests_per_month)} requests/month "
            f"({DAYS_PER_MONTH}-day month){' - token counts estimated' if self.estimated else ''}",
            f"{'section':<10} {'tokens':>8} {'share':>7} {'$/request':>12} {'$/month':>14}",
        ]
        for s in self.sections:
            lines.append(
                f"{s.section:<10} {s.tokens:>8} {s.share:>7.1%} {_usd(s.usd_per_request, 6):>12} "
                f"{_usd(s.usd_per_month, 2):>14}"
            )
        if self.overhead_tokens:
            lines.append(f"{'framing':<10} {self.overhead_tokens:>8}")
        lines.append(
            f"{'total':<10} {self.total_tokens:>8} {'':>7} {_usd(self.usd_per_request, 6):>12} "
            f"{_usd(self.usd_per_month, 2):>14}"
        )
        c = self.cache
        lines.append("")
        if c.provider is None:
            lines.append("Provider cache: none known for this model")
        else:
            lines.append(
                f"Provider cache ({c.provider}, min {c.min_cacheable_tokens} tokens): "
                f"{c.cacheable_tokens} of {self.total_tokens} tokens cacheable "
                f"({self.cacheable_share:.1%}), hit rate {c.hit_rate:.1%}"
            )
            lines.append(
                f"  $/month without cache {_usd(c.usd_per_month_without_cache, 2)}, with cache "
                f"{_usd(c.usd_per_month_with_cache, 2)} (writes "
                f"{_usd(c.cache_write_usd_per_month, 2)}), saving "
                f"{_usd(c.saving_usd_per_month, 2)}"
            )
        if self.duplicates:
            lines.append("")
            lines.append(
                f"Duplicate instructions ({self.duplicate_tokens} tokens of extra copies):"
            )
            for d in self.duplicates:
                where = ", ".join(
                    f"{s}[{i}]" + (f" x{k}" if k > 1 else "")
                    for (s, i), k in Counter(d.occurrences).items()
                )
                lines.append(
                    f"  x{len(d.occurrences)} {_preview(d.text)!r} ({where}): "
                    f"{d.wasted_tokens} tokens, {_usd(d.wasted_usd_per_month, 2)}/month"
                )
        if self.examples:
            lines.append("")
            lines.append(f"Few-shot examples ({self.example_tokens} tokens):")
            for e in self.examples:
                lines.append(
                    f"  {e.kind} in {e.section}{list(e.message_indices)} {e.preview!r}: "
                    f"{e.tokens} tokens, {_usd(e.usd_per_month, 2)}/month"
                )
        if self.volatile:
            lines.append("")
            lines.append("Volatile text in the static prefix (breaks byte-identity across calls):")
            for v in self.volatile:
                lines.append(f"  {v.kind}: {v.text!r}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def _usd(amount: Decimal | None, places: int) -> str:
    if amount is None:
        return "n/a"
    return f"${amount:,.{places}f}"


def _count(n: Decimal) -> str:
    return f"{n:,.0f}" if n == n.to_integral_value() else f"{n:,}"


def _preview(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


# -- pricing ------------------------------------------------------------------
def _rate(value: Decimal | None) -> Decimal | None:
    return None if value is None else value / _MTOK


def _tokens_usd(tokens: int | Decimal, rate: Decimal | None) -> Decimal | None:
    return None if rate is None else tokens * rate


# -- duplicate instructions ---------------------------------------------------
_BULLET = re.compile(r"^\s*(?:[-*\u2022>]+|\d+[.)]|[a-z][.)])\s+", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _normalize(text: str) -> str:
    text = _BULLET.sub("", text)
    return " ".join(text.lower().split()).strip(" .!?;:,")


def _instructions(text: str) -> Iterable[str]:
    """Lines, and the sentences of each line, as written (stripped)."""
    for line in text.splitlines():
        parts = [p.strip() for p in _SENTENCE_END.split(line.strip()) if p.strip()]
        yield from parts


def _find_duplicates(
    units: Sequence[tuple[Section, int, str]],
    counter: TokenCounter,
    model: str,
    monthly_rate: Decimal | None,
) -> list[DuplicateInstruction]:
    seen: dict[str, list[tuple[Section, int, str]]] = {}
    for section, index, text in units:
        for sentence in _instructions(text):
            key = _normalize(sentence)
            if len(key) >= _MIN_INSTRUCTION_CHARS:
                seen.setdefault(key, []).append((section, index, _BULLET.sub("", sentence)))
    out: list[DuplicateInstruction] = []
    for key, hits in seen.items():
        if len(hits) < 2:
            continue
        each = counter.count(hits[0][2], model)
        wasted = each * (len(hits) - 1)
        out.append(
            DuplicateInstruction(
                text=hits[0][2],
                normalized=key,
                occurrences=tuple((s, i) for s, i, _ in hits),
                tokens_each=each,
                wasted_tokens=wasted,
                wasted_usd_per_month=_tokens_usd(wasted, monthly_rate),
            )
        )
    return sorted(out, key=lambda d: -d.wasted_tokens)


# -- few-shot examples ----------------------------------------------------------
_EXAMPLE_HEAD = re.compile(
    r"^\s*(?:#+\s*|\*\*)?(?:examples?|for example|sample(?: (?:input|output|answer))?)"
    r"(?:\s*#?\d+)?\s*(?:\*\*)?\s*[:\-]",
    re.I,
)
_ASK = re.compile(r"^\s*(?:q|question|input|user|human|customer)\s*\d*\s*:", re.I | re.M)
_ANSWER = re.compile(r"^\s*(?:a|answer|output|assistant|ai|agent|response)\s*\d*\s*:", re.I | re.M)
_XML_EXAMPLE = re.compile(r"<example\b[^>]*>.*?</example>", re.I | re.S)
_PARAGRAPH = re.compile(r"\n[ \t]*\n")


def _inline_examples(text: str) -> list[str]:
    """Example blocks inside one message's text, as written."""
    blocks = [m.group(0) for m in _XML_EXAMPLE.finditer(text)]
    rest = _XML_EXAMPLE.sub("\n\n", text)
    paragraphs = [p for p in _PARAGRAPH.split(rest) if p.strip()]
    i = 0
    while i < len(paragraphs):
        para = paragraphs[i]
        if _EXAMPLE_HEAD.match(para):
            # A bare heading ("Examples:") belongs with the paragraph after it.
            if "\n" not in para.strip() and i + 1 < len(paragraphs):
                para = para + "\n\n" + paragraphs[i + 1]
                i += 1
            blocks.append(para)
        elif _ASK.search(para) and _ANSWER.search(para):
            blocks.append(para)
        i += 1
    return blocks


# -- the analysis -------------------------------------------------------------
def _hit_rate(requests_per_month: Decimal, ttl_seconds: float) -> float:
    per_ttl = float(requests_per_month) / _SECONDS_PER_MONTH * ttl_seconds
    return 1.0 - math.exp(-per_ttl)


def _project_cache(
    plan: PrefixPlan,
    price: ModelPrice | None,
    *,
    static_tokens: int,
    total_tokens: int,
    requests_per_month: Decimal,
    ttl_seconds: float,
    hit_rate: float | None,
) -> CacheProjection:
    provider = plan.provider
    if provider == "anthropic":
        reusable = [
            b.prefix_tokens
            for b in plan.breakpoints
            if b.kind != "history" and b.prefix_tokens <= static_tokens
        ]
        cacheable = min(max(reusable, default=0), plan.cacheable_tokens)
    elif provider == "openai":
        cacheable = min(openai_cached_tokens(static_tokens), plan.cacheable_tokens)
    else:
        cacheable = 0
    rate = 0.0 if provider is None else hit_rate
    if rate is None:
        rate = _hit_rate(requests_per_month, ttl_seconds)
    if price is None:
        return CacheProjection(
            provider, plan.min_cacheable_tokens, static_tokens, cacheable, rate, *(None,) * 4
        )
    r_in = price.usd_per_mtok_input / _MTOK
    r_read = (price.usd_per_mtok_cache_read or price.usd_per_mtok_input) / _MTOK
    write = price.usd_per_mtok_cache_write_5m
    if ttl_seconds > 300 and price.usd_per_mtok_cache_write_1h is not None:
        write = price.usd_per_mtok_cache_write_1h
    r_write = (write or price.usd_per_mtok_input) / _MTOK
    hit = Decimal(repr(rate))
    without = total_tokens * r_in * requests_per_month
    writes = cacheable * r_write * (1 - hit) * requests_per_month
    reads = cacheable * r_read * hit * requests_per_month
    rest = (total_tokens - cacheable) * r_in * requests_per_month
    with_cache = rest + reads + writes
    return CacheProjection(
        provider=provider,
        min_cacheable_tokens=plan.min_cacheable_tokens,
        static_prefix_tokens=static_tokens,
        cacheable_tokens=cacheable,
        hit_rate=rate,
        usd_per_month_without_cache=without,
        usd_per_month_with_cache=with_cache,
        cache_write_usd_per_month=writes,
        saving_usd_per_month=without - with_cache,
    )


def _volume(requests_per_day: float | None, requests_per_month: float | None) -> Decimal:
    if (requests_per_day is None) == (requests_per_month is None):
        raise ConfigurationError(
            "give exactly one of requests_per_day or requests_per_month (e.g. "
            "requests_per_day=10_000)"
        )
    value = requests_per_day if requests_per_day is not None else requests_per_month
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal) or value < 0:
        raise ConfigurationError(f"request volume must be a number >= 0, got {value!r}")
    volume = Decimal(str(value))
    return volume * DAYS_PER_MONTH if requests_per_day is not None else volume


def analyze_prompt(
    request: ChatRequest | Sequence[Message],
    *,
    tools: Sequence[Mapping[str, Any]] = (),
    model: str | None = None,
    requests_per_day: float | None = None,
    requests_per_month: float | None = None,
    context: str | Sequence[str] = (),
    context_messages: Iterable[int] = (),
    example_messages: Iterable[int] = (),
    provider: Provider | Literal["auto"] = "auto",
    engine: CostEngine | None = None,
    catalog: PriceCatalog | None = None,
    counter: TokenCounter | None = None,
    cache_ttl_seconds: float = 300,
    cache_hit_rate: float | None = None,
) -> PromptReport:
    """Tokens and monthly input cost per prompt section, and what could be saved.

    Sections: ``system`` (system messages), ``tools`` (tool definitions, as
    canonical JSON), ``question`` (the last user message), ``context``
    (retrieved text: messages listed in ``context_messages`` and texts passed
    as ``context``), ``history`` (every other message). Each message's
    framing tokens count with its section; the reply priming is
    ``overhead_tokens``, so the message sections plus the overhead equal
    ``TokenCounter.count_messages`` and ``total_tokens`` adds the tools.

    Args:
        request: a ``ChatRequest`` (its ``model`` and ``tools`` are used) or messages.
        tools: tool definitions, when ``request`` is a message list.
        model: the model priced; ``request.model`` by default.
        requests_per_day: volume (a month is :data:`DAYS_PER_MONTH` days) ...
        requests_per_month: ... or the monthly volume directly; give one.
        context: retrieved texts. A text found inside a message is moved from
            that message's section to ``context``; one found nowhere is
            counted as sent on top of the messages.
        context_messages: indices of messages that are retrieved context.
        example_messages: indices of few-shot example messages (messages
            named ``example_*`` are found without this).
        provider: whose prefix cache to project: ``"anthropic"``, ``"openai"``
            or ``"auto"`` (from the model name, else the catalog's provider).
        engine: supplies catalog and token counter (else ``catalog`` /
            ``counter``, else the shipped catalog and the process counter).
        cache_ttl_seconds: provider cache TTL for the hit-rate model (300 =
            Anthropic's and OpenAI's default; > 300 prices Anthropic 1 h writes).
        cache_hit_rate: override the modelled hit rate (0-1).

    Returns:
        A :class:`PromptReport`; ``print(report)`` shows it as a table.

    Raises:
        ConfigurationError: no model, no or two volumes, out-of-range values.

    Example:
        >>> report = analyze_prompt(msgs, model="gpt-4o", requests_per_day=10_000)  # doctest: +SKIP
        >>> print(report)  # doctest: +SKIP
    """
    if isinstance(request, ChatRequest):
        messages: Sequence[Message] = request.messages
        tools = tuple(tools) or request.tools
        model = model or request.model
    else:
        messages = request
    if not model:
        raise ConfigurationError("analyze_prompt needs a model: pass model='gpt-4o' (for example)")
    if cache_ttl_seconds <= 0:
        raise ConfigurationError(f"cache_ttl_seconds must be > 0, got {cache_ttl_seconds!r}")
    if cache_hit_rate is not None and not 0.0 <= cache_hit_rate <= 1.0:
        raise ConfigurationError(f"cache_hit_rate must be within [0, 1], got {cache_hit_rate!r}")
    monthly = _volume(requests_per_day, requests_per_month)
    if engine is not None:
        catalog = catalog or engine.catalog
        counter = counter or engine.tokens
    catalog = catalog or PriceCatalog.default()
    counter = counter or default_counter()
    price = catalog.get(model, warn=False)
    notes: list[str] = []
    if price is None:
        notes.append(f"no price for {model!r}: costs are n/a (add it with with_overrides)")
    rate = _rate(price.usd_per_mtok_input) if price is not None else None
    monthly_rate = None if rate is None else rate * monthly

    n = len(messages)
    ctx_idx = set(context_messages)
    ex_idx = set(example_messages)
    for i in ctx_idx | ex_idx:
        if not isinstance(i, int) or not 0 <= i < n:
            raise ConfigurationError(f"message index {i!r} is out of range for {n} messages")
    question = next((i for i in range(n - 1, -1, -1) if messages[i].role == "user"), None)

    def section_of(i: int) -> Section:
        if i in ctx_idx:
            return "context"
        if messages[i].role == "system":
            return "system"
        return "question" if i == question else "history"

    tokens: dict[Section, int] = dict.fromkeys(SECTIONS, 0)
    per_message = [message_tokens(counter, m, model) for m in messages]
    for i in range(n):
        tokens[section_of(i)] += per_message[i]
    tokens["tools"] = tool_tokens(counter, tools, model)

    texts = [context] if isinstance(context, str) else list(context)
    dup_units: list[tuple[Section, int, str]] = []
    for text in texts:
        t = counter.count(text, model)
        host = next((i for i in range(n) if text and text in messages[i].content), None)
        if host is None:
            tokens["context"] += t  # not in any message: sent on top of them
        elif section_of(host) != "context":
            tokens["context"] += t
            tokens[section_of(host)] = max(0, tokens[section_of(host)] - t)
        # else: inside a context_messages message, whose tokens are in
        # "context" already; adding them again doubled the total and the cost.
        dup_units.append(("context", -1 if host is None else host, text))
    context_hosts = {i for _, i, _ in dup_units if i >= 0}

    total = sum(tokens.values()) + _REPLY_PRIMING
    sections = tuple(
        SectionCost(
            section=s,
            tokens=tokens[s],
            share=tokens[s] / total if total else 0.0,
            usd_per_request=_tokens_usd(tokens[s], rate),
            usd_per_month=_tokens_usd(tokens[s], monthly_rate),
        )
        for s in SECTIONS
    )

    # Instructions come from the system prompt, the user's turns and context;
    # assistant and tool messages are outputs, not instructions.
    for i, m in enumerate(messages):
        if m.role in ("system", "user") and i not in context_hosts:
            dup_units.append((section_of(i), i, m.content))
    duplicates = _find_duplicates(dup_units, counter, model, monthly_rate)

    examples: list[ExampleBlock] = []
    named = {i for i, m in enumerate(messages) if (m.name or "").lower().startswith("example")}
    for i in sorted(ex_idx | named):
        examples.append(
            ExampleBlock(
                kind="messages",
                section=section_of(i),
                message_indices=(i,),
                preview=_preview(messages[i].content),
                tokens=per_message[i],
                usd_per_month=_tokens_usd(per_message[i], monthly_rate),
            )
        )
    for i, m in enumerate(messages):
        if i in ex_idx or i in named or m.role not in ("system", "user") or i in ctx_idx:
            continue
        for block in _inline_examples(m.content):
            t = counter.count(block, model)
            examples.append(
                ExampleBlock(
                    kind="inline",
                    section=section_of(i),
                    message_indices=(i,),
                    preview=_preview(block),
                    tokens=t,
                    usd_per_month=_tokens_usd(t, monthly_rate),
                )
            )

    if provider == "auto" and provider_for(model) is None and price is not None:
        # A custom or aliased model name: the catalog knows who serves it.
        if price.provider == "anthropic":
            provider = "anthropic"
        elif price.provider == "openai":
            provider = "openai"
    plan = plan_prefix_cache(
        messages, tools, model=model, provider=provider, counter=counter, hoist_system=False
    )
    # Static: tools, the leading system messages and example messages right after them.
    static = tokens["tools"]
    i = 0
    while (
        i < n and (messages[i].role == "system" or i in ex_idx or i in named) and i not in ctx_idx
    ):
        static += per_message[i]
        i += 1
    cache = _project_cache(
        plan,
        price,
        static_tokens=static,
        total_tokens=total,
        requests_per_month=monthly,
        ttl_seconds=cache_ttl_seconds,
        hit_rate=cache_hit_rate,
    )
    if plan.provider is not None and cache.cacheable_tokens == 0 and static:
        notes.append(
            f"the static prefix (~{static} tokens) is not cached: "
            + ("it holds volatile text" if plan.volatile else "it is below the provider minimum")
            + f" ({plan.min_cacheable_tokens} tokens for {model})"
        )
    notes.extend(note for note in plan.notes if "volatile" in note)

    return PromptReport(
        model=model,
        requests_per_month=monthly,
        sections=sections,
        overhead_tokens=_REPLY_PRIMING,
        total_tokens=total,
        usd_per_request=_tokens_usd(total, rate),
        usd_per_month=_tokens_usd(total, monthly_rate),
        duplicates=tuple(duplicates),
        examples=tuple(examples),
        cache=cache,
        plan=plan,
        volatile=plan.volatile,
        estimated=plan.estimated or bool(tools),
        notes=tuple(notes),
    )
