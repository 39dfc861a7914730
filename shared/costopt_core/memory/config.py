"""Budgets and policy of the summarizing memory, checked once at the boundary.

Every budget is in tokens of the model's tokenizer (as counted by the
``count_tokens`` the caller passes, usually ``engine.tokens.count``). Together
they bound what one call can carry, whatever the conversation's length:
``max_context_tokens`` is that bound (the system prompts and the tool
schemas come on top).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from costopt_core.errors import config_error

__all__ = ["MemoryConfig"]


class MemoryConfig(BaseModel):
    """What the memory keeps verbatim, what it summarizes, and when.

    A call carries, in this order: the system prompts (never summarized),
    one summary message (summaries of older turns and key facts; it changes
    only at a flush, so the provider's prefix cache survives between
    flushes), the turns not yet folded into the summary (verbatim), and,
    just before the latest user message, the older sentences most relevant
    to that message (recall, from the full stored history).

    Attributes:
        window_tokens: the verbatim recent turns kept after a flush.
        flush_min_tokens: a flush happens once the turns beyond the window
            (not yet summarized) reach this many tokens, so summaries are
            written in large batches, not every turn.
        flush_max_tokens: the turns beyond the window are never allowed past
            this: a flush is forced here even when keeping the cached
            prefix would be cheaper, and a view whose flush was not applied
            leaves the oldest unfolded turns out (they stay recallable).
        summary_tokens: the budget of all summaries together.
        levels: summary levels. With 1, old summaries are re-summarized into
            one rolling summary; with more, ``level_fanout`` summaries of one
            level are merged into one of the next (summaries of summaries),
            so very long sessions keep recent detail and older gist.
        level_fanout: how many summaries a level holds before its oldest
            ones are merged into the next level.
        summary_ratio: a flush's summary gets at most this share of the
            tokens it folds (and at most its share of ``summary_tokens``).
        facts_tokens: budget of the key facts (names, numbers, dates,
            decisions, preferences) kept verbatim; 0 turns them off. They
            keep what a conversation states once and never recalls by
            wording; on LoCoMo's single-hop questions recall alone finds the
            same facts (90.4% kept either way, 83.2% fewer tokens at 0
            against 81.7%; ``benchmarks/memory.py`` sensitivity).
        recall_tokens: budget of the older sentences recalled for the latest
            user message; 0 turns recall off. It is what keeps old facts
            findable and most of each call's size: on LoCoMo 768 / 1,024 /
            1,536 / 2,048 tokens keep 86.1% / 88.0% / 90.4% / 91.6% of the
            single-hop facts for 86.6% / 84.9% / 81.7% / 78.6% fewer tokens.
        recall_min_score: recalled sentences must score at least this
            (lexical overlap with the message), so an unrelated message
            recalls nothing instead of filling the budget.
        recall_embeddings: also score recall by embedding similarity when an
            ``embed`` function is given (``ConversationMemory`` passes the
            engine's). On by default: on LoCoMo it is what finds the turns
            whose facts single-hop questions need (62.2% kept with lexical
            scoring alone at the earlier budgets; ``benchmarks/memory.py``);
            each sentence is embedded once when the embedder caches (the
            engine's does).
        horizon_turns: how many further calls the flush trade-off assumes
            the current prefix would serve (see :func:`flush_tradeoff`).
        summary_role: role of the summary message. ``system`` places it
            right after the system prompts (providers merge consecutive
            system messages); ``user`` for models without system messages.
        summary_header: first line of the summary message.
        recall_header: first line of the recall message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_tokens: int = Field(default=256, ge=16, le=1_000_000)
    flush_min_tokens: int = Field(default=384, ge=1, le=1_000_000)
    flush_max_tokens: int = Field(default=768, ge=1, le=1_000_000)
    summary_tokens: int = Field(default=384, ge=16, le=1_000_000)
    levels: int = Field(default=2, ge=1, le=8)
    level_fanout: int = Field(default=4, ge=2, le=64)
    summary_ratio: float = Field(default=0.25, gt=0.0, le=1.0)
    facts_tokens: int = Field(default=192, ge=0, le=1_000_000)
    recall_tokens: int = Field(default=1536, ge=0, le=1_000_000)
    recall_min_score: float = Field(default=0.05, ge=0.0, le=10.0)
    recall_embeddings: bool = True
    horizon_turns: int = Field(default=8, ge=1, le=10_000)
    summary_role: Literal["system", "user"] = "system"
    summary_header: str = Field(
        default="Summary of the earlier conversation (the latest messages follow verbatim):",
        min_length=1,
    )
    recall_header: str = Field(
        default="Earlier in this conversation (recalled for the next message):", min_length=1
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self).__name__, exc) from None

    @model_validator(mode="after")
    def _ordered(self) -> MemoryConfig:
        if self.flush_max_tokens < self.flush_min_tokens:
            raise ValueError(
                f"flush_max_tokens ({self.flush_max_tokens}) must be >= flush_min_tokens "
                f"({self.flush_min_tokens}); raise flush_max_tokens or lower flush_min_tokens"
            )
        return self

    @property
    def entry_tokens(self) -> int:
        """Budget of one summary entry: every level holds at most ``level_fanout`` of them."""
        return max(8, self.summary_tokens // (self.levels * self.level_fanout))

    @property
    def max_context_tokens(self) -> int:
        """Upper bound of the memory's part of a call (system prompts and framing excluded)."""
        return (
            self.summary_tokens
            + self.facts_tokens
            + self.recall_tokens
            + self.window_tokens
            + self.flush_max_tokens
        )
