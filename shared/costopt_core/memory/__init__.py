"""Summarizing conversation memory: a flat token cost per turn instead of linear growth.

Naive chat apps resend the whole history every turn. This memory sends a
bounded view instead: the system prompts (never summarized), one summary
message of older turns plus key facts kept verbatim (rewritten only at a
flush, in a stable position, so the provider's prefix cache survives
between flushes), the recent turns verbatim (a tool call is never split
from its results), and the older sentences relevant to the latest user
message, recalled from the full history. The full history is never
modified: the summary is a view over it, and the :class:`MemoryState`
that describes it is plain JSON-able data.

Decisions are pure functions (:func:`plan_context`, :func:`flush_decision`,
:func:`flush`, :func:`flush_tradeoff`); :class:`ConversationMemory` is the
thin shell adapters wrap. Tokens kept out of a call are recorded as
``memory`` savings with ``CostEngine.record_removed_tokens``.
"""

from costopt_core.memory.config import MemoryConfig
from costopt_core.memory.conversation import ConversationMemory
from costopt_core.memory.extract import (
    Recalled,
    arecall_sentences,
    fact_score,
    key_fact_candidates,
    recall_query,
    recall_sentences,
    select_facts,
    summarize_lines,
)
from costopt_core.memory.flush import (
    SUMMARY_PROMPT,
    FlushResult,
    SummaryJob,
    aflush,
    flush,
    summary_job_messages,
)
from costopt_core.memory.plan import (
    FlushDecision,
    MemoryView,
    aplan_context,
    flush_decision,
    plan_context,
    summary_message,
)
from costopt_core.memory.state import STATE_VERSION, MemoryState, SummaryEntry, message_fingerprint
from costopt_core.memory.tradeoff import CachePrices, FlushTradeoff, cache_prices, flush_tradeoff
from costopt_core.memory.turns import Unit, message_tokens, render_turn, split_units

__all__ = [
    "STATE_VERSION",
    "SUMMARY_PROMPT",
    "CachePrices",
    "ConversationMemory",
    "FlushDecision",
    "FlushResult",
    "FlushTradeoff",
    "MemoryConfig",
    "MemoryState",
    "MemoryView",
    "Recalled",
    "SummaryEntry",
    "SummaryJob",
    "Unit",
    "aflush",
    "aplan_context",
    "arecall_sentences",
    "cache_prices",
    "fact_score",
    "flush",
    "flush_decision",
    "flush_tradeoff",
    "key_fact_candidates",
    "message_fingerprint",
    "message_tokens",
    "plan_context",
    "recall_query",
    "recall_sentences",
    "render_turn",
    "select_facts",
    "split_units",
    "summarize_lines",
    "summary_job_messages",
    "summary_message",
]
