"""The write side of the memory: fold the turns that left the window into the summary.

A flush happens in one large batch once enough turns have left the window
(see :func:`~costopt_core.memory.plan.flush_decision`), so the summary
message, and with it the provider's cached prefix, changes rarely. Each
flush adds one level-0 summary of the folded turns and refreshes the key
facts; when a level holds more than ``level_fanout`` summaries, its oldest
ones are merged into one summary of the next level (summaries of
summaries), and the top level is merged into itself, so the summaries stay
within ``summary_tokens`` however long the session.

The steps are one generator shared by the sync and async drivers: it
yields a :class:`SummaryJob` whenever it needs a summary and receives the
text back. The default writer is extractive (no model call); a cheap chat
model can write them instead (``chat``: messages -> text). The model's own
calls are the caller's: a cost handler attached to that model
(``CostCallbackHandler`` / ``CostEventHandler``) records and prices them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from costopt_core.context.sentences import cut_to_tokens, split_sentences
from costopt_core.memory.config import MemoryConfig
from costopt_core.memory.extract import key_fact_candidates, select_facts, summarize_lines
from costopt_core.memory.plan import FlushDecision, _decision, _effective
from costopt_core.memory.state import MemoryState, SummaryEntry, history_digest
from costopt_core.memory.tradeoff import CachePrices
from costopt_core.memory.turns import CountTokens, render_turn
from costopt_core.overhead import overhead_of
from costopt_core.types import Message

__all__ = [
    "SUMMARY_PROMPT",
    "FlushResult",
    "SummaryJob",
    "aflush",
    "flush",
    "summary_job_messages",
]

Chat = Callable[[list[Message]], str]
AChat = Callable[[list[Message]], Awaitable[str]]

#: Instruction of the cheap model for a summary of turns or of summaries.
SUMMARY_PROMPT = (
    "You keep the memory of a long conversation. Summarize the {what} below in at most "
    "{max_tokens} tokens. Keep names, numbers, dates, decisions and preferences exactly as "
    "written and say who said what. Add nothing that is not in the text. Reply with the "
    "summary only."
)


@dataclass(frozen=True, slots=True)
class SummaryJob:
    """One summary to write.

    Attributes:
        kind: ``turns`` (a transcript) or ``summaries`` (older summaries to merge).
        lines: ``(speaker, text)`` pairs; for ``summaries`` the speaker is ``""``.
        budget_tokens: the summary must fit in this many tokens.
    """

    kind: Literal["turns", "summaries"]
    lines: tuple[tuple[str, str], ...]
    budget_tokens: int


def summary_job_messages(job: SummaryJob) -> list[Message]:
    """The chat request asking a model to write ``job``'s summary."""
    what = "conversation transcript" if job.kind == "turns" else "consecutive summaries"
    body = "\n".join(f"{w}: {t}" if w else t for w, t in job.lines)
    prompt = SUMMARY_PROMPT.format(what=what, max_tokens=job.budget_tokens)
    return [Message("system", prompt), Message("user", body)]


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What a flush did.

    Attributes:
        state: the new state (the input state when nothing was flushed).
        flushed: whether turns were folded.
        decision: the decision the flush acted on.
        folded_messages: history messages newly covered by the summary.
        summarizer_calls: chat-model calls made (0 when extractive).
    """

    state: MemoryState
    flushed: bool
    decision: FlushDecision
    folded_messages: int = 0
    summarizer_calls: int = 0


#: The least room left after the whole sentences that is filled with the
#: beginning of the next one (a few words of a cut sentence say little).
_MIN_CUT_TOKENS = 12


def _fit(text: str, budget: int, count_tokens: CountTokens) -> str:
    """A model's summary cut to fit the budget (models overrun).

    Whole sentences, list items and lines first, with the summary's own line
    breaks; the room they leave (all of it when the first sentence alone is
    over the budget: one long sentence, a run-on bullet) gets the beginning
    of the next sentence, cut at a word boundary. Cutting only at sentence
    ends stored an empty entry for a summary slightly over the budget, and
    the turns it covered vanished from the view.
    """
    text = text.strip()
    if count_tokens(text) <= budget:
        return text
    out = ""
    for s in split_sentences(text):
        candidate = text[: s.end]
        if count_tokens(candidate) > budget:
            if not out or budget - count_tokens(out) >= _MIN_CUT_TOKENS:
                cut = cut_to_tokens(candidate, budget, count_tokens)
                out = cut if len(cut) > len(out) else out
            break
        out = candidate
    return out


def _entry_lines(entries: Sequence[SummaryEntry]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for e in entries:
        for line in e.text.split("\n"):
            if not line.strip():
                continue
            who, sep, text = line.partition(": ")
            out.append((who, text) if sep and len(who) <= 40 else ("", line))
    return tuple(out)


def _steps(
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    decision: FlushDecision,
    count_tokens: CountTokens,
) -> Generator[SummaryJob, str, MemoryState]:
    start, end = state.folded, decision.fold_end
    folded = [history[i] for i in range(start, end) if history[i].role != "system"]
    lines = tuple((who, text) for who, _, text in (render_turn(m).partition(": ") for m in folded))
    budget = max(8, min(config.entry_tokens, int(decision.overflow_tokens * config.summary_ratio)))
    text = yield SummaryJob("turns", lines, budget)
    entries = [*state.entries, SummaryEntry(0, start, end, text, count_tokens(text))]
    facts = select_facts(
        [*state.facts, *key_fact_candidates(lines)], config.facts_tokens, count_tokens
    )
    for level in range(config.levels):
        same = [e for e in entries if e.level == level]
        if len(same) <= config.level_fanout:
            continue
        top = level == config.levels - 1
        # Below the top, the oldest fanout entries become one of the next level;
        # at the top, the oldest two merge so the level keeps at most fanout.
        group = same[: config.level_fanout] if not top else same[:2]
        merged_text = yield SummaryJob("summaries", _entry_lines(group), config.entry_tokens)
        merged = SummaryEntry(
            level if top else level + 1,
            group[0].start,
            group[-1].end,
            merged_text,
            count_tokens(merged_text),
        )
        gone = {id(e) for e in group}
        rest = [e for e in entries if id(e) not in gone]
        entries = sorted([*rest, merged], key=lambda e: (e.start, -e.level))
    return replace(
        state,
        entries=tuple(entries),
        facts=facts,
        folded=end,
        anchor=history_digest(history[:end]),
        flushes=state.flushes + 1,
    )


def _extractive(job: SummaryJob, count_tokens: CountTokens) -> str:
    return summarize_lines(job.lines, job.budget_tokens, count_tokens)


def _written(answer: object, job: SummaryJob, count_tokens: CountTokens) -> str:
    """The model's ``answer`` to ``job`` as the summary to store.

    A blank answer (a refusal, a content filter, ``content=None`` mapped to
    ``""``) is no summary: stored as one, the flush still advanced ``folded``
    and the turns it covered were sent neither summarized nor verbatim. The
    extractive summary of the same job stands in for it (no second model
    call), so the fold never loses what the user said.
    """
    text = _fit("" if answer is None else str(answer), job.budget_tokens, count_tokens)
    return text if text.strip() else _extractive(job, count_tokens)


def _prepare(
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    count_tokens: CountTokens,
    prices: CachePrices | None,
    force: bool,
) -> tuple[MemoryState, FlushDecision, bool]:
    state = _effective(state, history)
    # The state was just checked against the history: decide without a second check.
    decision = _decision(history, state, config, count_tokens, prices)
    go = decision.fold_end > state.folded and (decision.due or force)
    return state, decision, go


def _result(
    before: MemoryState, after: MemoryState, decision: FlushDecision, calls: int
) -> FlushResult:
    after = replace(after, summarizer_calls=before.summarizer_calls + calls)
    return FlushResult(after, True, decision, after.folded - before.folded, calls)


def flush(
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    *,
    count_tokens: CountTokens,
    chat: Chat | None = None,
    prices: CachePrices | None = None,
    force: bool = False,
) -> FlushResult:
    """Fold the turns beyond the window into the summary, if a flush is due.

    Args:
        history: the full stored conversation (never modified).
        state: the current state (a state for another history is ignored and
            the summary rebuilt).
        config: budgets and policy.
        count_tokens: text -> tokens.
        chat: a cheap chat model (messages -> text) to write the summaries;
            extractive summaries when ``None``. Its calls are recorded by the
            cost handler attached to that model. A blank answer is replaced
            by the extractive summary of the same turns.
        prices: the conversation model's prices for the flush trade-off.
        force: fold whatever is beyond the window even if no flush is due.

    Returns:
        The new state and what was done.
    """
    state, decision, go = _prepare(history, state, config, count_tokens, prices, force)
    if not go:
        return FlushResult(state, False, decision)
    steps = _steps(history, state, config, decision, count_tokens)
    calls = 0
    try:
        job = next(steps)
        while True:
            if chat is None:
                text = _extractive(job, count_tokens)
            else:
                with overhead_of("memory"):
                    answer = chat(summary_job_messages(job))
                text = _written(answer, job, count_tokens)
                calls += 1
            job = steps.send(text)
    except StopIteration as stop:
        return _result(state, stop.value, decision, calls)


async def aflush(
    history: Sequence[Message],
    state: MemoryState,
    config: MemoryConfig,
    *,
    count_tokens: CountTokens,
    achat: AChat | None = None,
    prices: CachePrices | None = None,
    force: bool = False,
) -> FlushResult:
    """Async twin of :func:`flush` (``achat`` is awaited for each summary)."""
    state, decision, go = _prepare(history, state, config, count_tokens, prices, force)
    if not go:
        return FlushResult(state, False, decision)
    steps = _steps(history, state, config, decision, count_tokens)
    calls = 0
    try:
        job = next(steps)
        while True:
            if achat is None:
                text = _extractive(job, count_tokens)
            else:
                with overhead_of("memory"):
                    answer = await achat(summary_job_messages(job))
                text = _written(answer, job, count_tokens)
                calls += 1
            job = steps.send(text)
    except StopIteration as stop:
        return _result(state, stop.value, decision, calls)
