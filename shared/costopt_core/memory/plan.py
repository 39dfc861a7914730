"""What one call sends: the pure read side of the memory (it never changes the state).

:func:`plan_context` lays a call out so the provider's prefix cache keeps
working: system prompts first, untouched; then one summary message that
changes only when a flush rewrites it; then the turns since the last flush,
verbatim, which only grow at the end between flushes; and last, just before
the latest user message, the older sentences recalled for it (the only part
that changes every call). :func:`flush_decision` says whether the
turns beyond the window are worth folding into the summary now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from costopt_core.memory.config import MemoryConfig
from costopt_core.memory.extract import Recalled, arecall_sentences, recall_sentences
from costopt_core.memory.state import MemoryState
from costopt_core.memory.tradeoff import CachePrices, FlushTradeoff, flush_tradeoff
from costopt_core.memory.turns import (
    REPLY_PRIMING_TOKENS,
    CountTokens,
    Unit,
    message_tokens,
    render_turn,
    split_units,
)
from costopt_core.types import Message

__all__ = [
    "FlushDecision",
    "MemoryView",
    "aplan_context",
    "flush_decision",
    "plan_context",
    "read_needs_flush",
    "summary_message",
]

Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]
AEmbed = Callable[[Sequence[str]], Awaitable[npt.NDArray[np.float32]]]


def summary_message(state: MemoryState, config: MemoryConfig) -> Message | None:
    """The summary-and-facts message of ``state`` (``None`` before the first flush).

    Its text depends on the state alone, so it is byte-identical on every
    call between two flushes.
    """
    if not state.entries and not state.facts:
        return None
    parts = [config.summary_header]
    if state.entries:
        parts.append("\n\n".join(e.text for e in state.entries if e.text))
    if state.facts:
        parts.append("Key facts:\n" + "\n".join(f"- {f}" for f in state.facts))
    return Message(config.summary_role, "\n\n".join(p for p in parts if p))


@dataclass(frozen=True, slots=True)
class FlushDecision:
    """Whether to fold the turns beyond the window now.

    Attributes:
        due: fold now (the flush step acts on this).
        forced: the hard cap was reached: the turns beyond the window reach
            ``flush_max_tokens``, or the unfolded turns no longer fit a view
            (``window_tokens + flush_max_tokens``).
        fold_end: history index the summary would cover up to after a flush:
            the start of a user turn, so the next view (which opens with one)
            sends every turn not folded; inside an agent run with no user
            turn left to end at, the start of an assistant turn.
        overflow_tokens: tokens of the turns a flush would fold.
        reason: a short human-readable why.
        tradeoff: the price comparison, when prices were given and it applied.
    """

    due: bool
    forced: bool
    fold_end: int
    overflow_tokens: int
    reason: str
    tradeoff: FlushTradeoff | None = None


def _effective(state: MemoryState, history: Sequence[Message]) -> MemoryState:
    # A state for another history (edited, cleared, replaced) is ignored, never trusted.
    return state if state.matches(history) else MemoryState()


def _window_start(units: Sequence[Unit], budget: int) -> int:
    """Index of the first unit of the trailing run that fits ``budget`` (at least one unit)."""
    used = 0
    k = len(units)
    while k > 0 and (k == len(units) or used + units[k - 1].tokens <= budget):
        used += units[k - 1].tokens
        k -= 1
    return k


def _opens_with_user(units: Sequence[Unit], history: Sequence[Message], k: int) -> bool:
    return history[units[k].start].role == "user"


def _fold_start(units: Sequence[Unit], history: Sequence[Message], k: int, cap: int) -> int:
    """The unit a flush folds up to, given the window start ``k`` (0: nothing to fold).

    The view opens at a user turn (see :func:`_view_start`), so a fold that
    ended at an assistant turn would leave that turn (and its tool calls and
    results) in neither the summary nor the messages sent. The fold ends at
    the first user turn from ``k`` on (folding the assistant's side before
    it). With none (the turns since the last user turn fill the window: a
    long reply or an agent run), it ends at that last user turn, folding
    less, if the turns from there fit the view's ``cap``; else at ``k``
    itself, and the next view opens with that assistant turn rather than
    lose it.
    """
    if k == 0:
        return 0
    after = next((j for j in range(k, len(units)) if _opens_with_user(units, history, j)), None)
    if after is not None:
        return after
    before = next((j for j in range(k - 1, 0, -1) if _opens_with_user(units, history, j)), None)
    if before is not None and sum(u.tokens for u in units[before:]) <= cap:
        return before
    return k


def _view_start(units: Sequence[Unit], history: Sequence[Message], k: int) -> int:
    """The first verbatim unit of a view whose budget fits ``units[k:]``.

    Providers such as Anthropic want the conversation to open with a user
    turn, so a window cut at an assistant turn opens at the next user turn
    instead; the turns skipped are beyond the hard cap anyway (reported in
    ``dropped_indices``; they stay recallable and the forced flush folds
    them). With ``k == 0`` nothing is over the cap: every unfolded turn is
    sent, since dropping one would lose it (a flush ends at a user turn, so
    this opens with the assistant only after a flush that found none to end
    at; see :func:`_fold_start`). With no user turn ahead the window stays
    at ``k``: skipping to the last unit would drop more for nothing.
    """
    if k == 0:
        return 0
    return next((j for j in range(k, len(units)) if _opens_with_user(units, history, j)), k)


def _decide(
    units: Sequence[Unit],
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    summary_tokens: int,
    prices: CachePrices | None,
) -> FlushDecision:
    cap = config.window_tokens + config.flush_max_tokens
    k = _fold_start(units, history, _window_start(units, config.window_tokens), cap)
    fold_end = units[k].start if k < len(units) else state.folded
    overflow = sum(u.tokens for u in units[:k])
    if overflow >= config.flush_max_tokens:
        return FlushDecision(True, True, fold_end, overflow, "flush_max_tokens reached")
    if k > 0 and _window_start(units, cap) > 0:
        # Past the cap the view leaves the oldest unfolded turns out: they must
        # be folded now, or they would be in neither the summary nor the call.
        reason = "unfolded turns exceed window_tokens + flush_max_tokens"
        return FlushDecision(True, True, fold_end, overflow, reason)
    if overflow < config.flush_min_tokens:
        return FlushDecision(False, False, fold_end, overflow, "below flush_min_tokens")
    if prices is None:
        return FlushDecision(True, False, fold_end, overflow, "flush_min_tokens reached")
    kept = sum(u.tokens for u in units[k:])
    new_summary = min(config.summary_tokens, summary_tokens + config.entry_tokens)
    tradeoff = flush_tradeoff(
        prices,
        prefix_keep_tokens=summary_tokens + overflow + kept,
        prefix_flush_tokens=new_summary + kept,
        summarizer_input_tokens=overflow if prices.summarizer_input_usd_per_mtok else 0,
        summarizer_output_tokens=config.entry_tokens
        if prices.summarizer_output_usd_per_mtok
        else 0,
        horizon_turns=config.horizon_turns,
    )
    reason = "cheaper than keeping the cached prefix" if tradeoff.flush else "cached prefix cheaper"
    return FlushDecision(tradeoff.flush, False, fold_end, overflow, reason, tradeoff)


def _sizes(history: Sequence[Message], count_tokens: CountTokens) -> list[int]:
    return [message_tokens(m, count_tokens) for m in history]


def flush_decision(
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    *,
    count_tokens: CountTokens,
    prices: CachePrices | None = None,
) -> FlushDecision:
    """Whether a flush is due for ``history`` (see :class:`FlushDecision`).

    A flush is due once the turns beyond ``window_tokens`` reach
    ``flush_min_tokens`` and, when ``prices`` are given, flushing is cheaper
    than keeping the cached prefix over ``horizon_turns`` calls; it is
    always due at ``flush_max_tokens``.
    """
    return _decision(history, _effective(state, history), config, count_tokens, prices)


def _decision(
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    count_tokens: CountTokens,
    prices: CachePrices | None,
) -> FlushDecision:
    """:func:`flush_decision` for a state already checked against ``history``."""
    units = split_units(history, state.folded, _sizes(history, count_tokens))
    summary = summary_message(state, config)
    summary_tokens = message_tokens(summary, count_tokens) if summary else 0
    return _decide(units, history, state, config, summary_tokens, prices)


def read_needs_flush(
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    *,
    count_tokens: CountTokens,
) -> bool:
    """Whether a view of ``history`` now would leave out turns that no summary covers.

    It would once the unfolded turns pass ``window_tokens + flush_max_tokens``
    (the view's ``dropped_indices``): e.g. the first read of a store that
    already holds a long conversation (a restart, a wrapped Redis/SQL history,
    no saved state). Sending that view would silently lose the oldest turns
    (a name, an order number), so a read must flush first. That flush is
    always due (the turns beyond the cap are beyond the window, so the
    decision is forced), hence a plain, unforced update makes the view whole;
    and a reader that finds a concurrent writer already flushed folds nothing
    more.
    """
    state = _effective(state, history)
    units = split_units(history, state.folded, _sizes(history, count_tokens))
    return _window_start(units, config.window_tokens + config.flush_max_tokens) > 0


@dataclass(frozen=True, slots=True)
class MemoryView:
    """The messages one call sends, and what they cost against the whole history.

    Attributes:
        parts: what to send, in order: an ``int`` is the index of a history
            message sent as it is stored (adapters send their own object),
            a :class:`Message` is one the memory wrote (summary, recall).
        messages: ``parts`` as engine messages.
        summary: the summary message, if any (also in ``parts``).
        recall: the recall message, if any (also in ``parts``).
        recalled_indices: history indices of the turns recall drew from.
        window_start: history index of the first verbatim turn.
        dropped_indices: unfolded turns left out because the hard cap was
            reached and the (forced) flush was not applied yet. Every other
            non-system turn is either folded into the summary or sent.
        tokens_sent: input tokens of ``messages`` (framing included).
        tokens_naive: input tokens of the whole history.
        flush: whether a flush is due (call the flush step after the call).
    """

    parts: tuple[int | Message, ...]
    messages: tuple[Message, ...]
    summary: Message | None
    recall: Message | None
    recalled_indices: tuple[int, ...]
    window_start: int
    dropped_indices: tuple[int, ...]
    tokens_sent: int
    tokens_naive: int
    flush: FlushDecision

    @property
    def removed_tokens(self) -> int:
        """Input tokens kept out of this call (what the ledger records as ``memory``)."""
        return max(0, self.tokens_naive - self.tokens_sent)


@dataclass(frozen=True, slots=True)
class _Layout:
    history: Sequence[Message]
    sizes: list[int]
    state: MemoryState
    summary: Message | None
    summary_tokens: int
    verbatim: list[Unit]
    dropped: tuple[int, ...]
    decision: FlushDecision
    query: str | None
    older: list[int]  # history indices recall may draw from


def _layout(
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    count_tokens: CountTokens,
    query: str | None,
    prices: CachePrices | None,
) -> _Layout:
    state = _effective(state, history)
    sizes = _sizes(history, count_tokens)
    units = split_units(history, state.folded, sizes)
    summary = summary_message(state, config)
    summary_tokens = message_tokens(summary, count_tokens) if summary else 0
    decision = _decide(units, history, state, config, summary_tokens, prices)
    k = _view_start(
        units, history, _window_start(units, config.window_tokens + config.flush_max_tokens)
    )
    verbatim = list(units[k:])
    dropped = tuple(
        i for u in units[:k] for i in range(u.start, u.end) if history[i].role != "system"
    )
    first = verbatim[0].start if verbatim else len(history)
    if query is None:
        query = next(
            (
                history[u.start + j].content
                for u in reversed(verbatim)
                for j in reversed(range(u.end - u.start))
                if history[u.start + j].role == "user"
            ),
            None,
        )
    older = [i for i in range(first) if history[i].role != "system"]
    return _Layout(
        history, sizes, state, summary, summary_tokens, verbatim, dropped, decision, query, older
    )


def _recall_message(recalled: Recalled, config: MemoryConfig) -> Message | None:
    if not recalled.lines:
        return None
    return Message("user", config.recall_header + "\n" + "\n".join(recalled.lines))


def _finish(
    layout: _Layout, recalled: Recalled, config: MemoryConfig, count_tokens: CountTokens
) -> MemoryView:
    history = layout.history
    parts: list[int | Message] = [i for i, m in enumerate(history) if m.role == "system"]
    if layout.summary is not None:
        parts.append(layout.summary)
    recall = _recall_message(recalled, config)
    verbatim = [i for u in layout.verbatim for i in range(u.start, u.end)]
    verbatim = [i for i in verbatim if history[i].role != "system"]
    if recall is not None:
        users = [p for p, i in enumerate(verbatim) if history[i].role == "user"]
        at = users[-1] if users else 0
        verbatim_parts: list[int | Message] = [*verbatim[:at], recall, *verbatim[at:]]
    else:
        verbatim_parts = list(verbatim)
    parts.extend(verbatim_parts)
    messages = tuple(p if isinstance(p, Message) else history[p] for p in parts)
    sent = REPLY_PRIMING_TOKENS + sum(
        layout.sizes[p] if isinstance(p, int) else message_tokens(p, count_tokens) for p in parts
    )
    naive = REPLY_PRIMING_TOKENS + sum(layout.sizes)
    if sent > naive:
        # Summary and recall cost more than the turns they stand for (a short
        # history): the whole history is the cheaper call, and loses nothing.
        return MemoryView(
            parts=tuple(range(len(history))),
            messages=tuple(history),
            summary=None,
            recall=None,
            recalled_indices=(),
            window_start=0,
            dropped_indices=(),
            tokens_sent=naive,
            tokens_naive=naive,
            flush=layout.decision,
        )
    return MemoryView(
        parts=tuple(parts),
        messages=messages,
        summary=layout.summary,
        recall=recall,
        recalled_indices=tuple(layout.older[i] for i in recalled.indices),
        window_start=verbatim[0] if verbatim else len(history),
        dropped_indices=layout.dropped,
        tokens_sent=sent,
        tokens_naive=naive,
        flush=layout.decision,
    )


def _recall_lines(layout: _Layout) -> list[tuple[str, str]]:
    out = []
    for i in layout.older:
        m = layout.history[i]
        who, _, text = render_turn(m).partition(": ")
        out.append((who, text))
    return out


def _recall_budget(config: MemoryConfig, count_tokens: CountTokens) -> int:
    # The message's header and framing come out of the recall budget.
    header = message_tokens(Message("user", config.recall_header), count_tokens) + 1
    return max(0, config.recall_tokens - header)


def plan_context(
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    *,
    count_tokens: CountTokens,
    query: str | None = None,
    embed: Embed | None = None,
    prices: CachePrices | None = None,
) -> MemoryView:
    """The messages to send for the next call over ``history``. Pure: nothing is mutated.

    Args:
        history: the full stored conversation, oldest first (system prompts
            included, wherever they are: they are sent first, as they are).
        state: the memory state (``MemoryState()`` when nothing was flushed
            yet; a state for a different history is ignored).
        config: budgets and policy.
        count_tokens: text -> tokens (e.g. ``engine.tokens.count``).
        query: what recall looks for; the latest user message by default.
        embed: sentence embedder for recall, used only with
            ``config.recall_embeddings`` (e.g. ``engine.embedder.embed``).
        prices: the conversation model's prices, for the flush trade-off
            (see :func:`~costopt_core.memory.cache_prices`).

    Returns:
        The view: messages to send, token counts, and whether a flush is due.

    Example:
        >>> from costopt_core.memory import MemoryConfig, MemoryState
        >>> history = [Message("system", "Be brief."), Message("user", "Hi, I'm Ana.")]
        >>> view = plan_context(history, MemoryState(), MemoryConfig(),
        ...                     count_tokens=lambda t: len(t.split()))
        >>> [m.content for m in view.messages]
        ['Be brief.', "Hi, I'm Ana."]
    """
    layout = _layout(history, state, config, count_tokens, query, prices)
    recalled = Recalled((), (), 0)
    budget = _recall_budget(config, count_tokens)
    if layout.query and layout.older and budget > 0:
        recalled = recall_sentences(
            layout.query,
            _recall_lines(layout),
            budget,
            count_tokens,
            min_score=config.recall_min_score,
            embed=embed if config.recall_embeddings else None,
        )
    return _finish(layout, recalled, config, count_tokens)


async def aplan_context(
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    *,
    count_tokens: CountTokens,
    query: str | None = None,
    aembed: AEmbed | None = None,
    prices: CachePrices | None = None,
) -> MemoryView:
    """Async twin of :func:`plan_context` (``aembed`` is awaited for recall embeddings)."""
    layout = _layout(history, state, config, count_tokens, query, prices)
    recalled = Recalled((), (), 0)
    budget = _recall_budget(config, count_tokens)
    if layout.query and layout.older and budget > 0:
        recalled = await arecall_sentences(
            layout.query,
            _recall_lines(layout),
            budget,
            count_tokens,
            min_score=config.recall_min_score,
            aembed=aembed if config.recall_embeddings else None,
        )
    return _finish(layout, recalled, config, count_tokens)
