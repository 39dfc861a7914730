"""Fewer input tokens per call: relevance filtering, context summarization, prompt layout.

Pure functions over plain data (chunk texts and the scores the store already
returned); the LangChain and LlamaIndex adapters only translate documents and
nodes to and from them. Tokens kept out of a call are booked as
``compression`` savings with ``CostEngine.record_removed_tokens``.
"""

from costopt_core.context.prefix import (
    MIN_CACHEABLE_TOKENS,
    Breakpoint,
    PrefixPlan,
    VolatileSpan,
    find_volatile,
    min_cacheable_tokens,
    plan_prefix_cache,
    prompt_cache_key,
    provider_for,
)
from costopt_core.context.prompt import (
    DAYS_PER_MONTH,
    CacheProjection,
    DuplicateInstruction,
    ExampleBlock,
    PromptReport,
    SectionCost,
    analyze_prompt,
)
from costopt_core.context.relevance import (
    RelevanceConfig,
    RelevanceResult,
    ScoredChunk,
    normalize_scores,
    select_relevant,
)
from costopt_core.context.summarize import (
    AbstractiveConfig,
    AbstractiveSummary,
    ChunkSummary,
    SummarizerConfig,
    SummaryResult,
    asummarize_abstractive,
    asummarize_extractive,
    blank_question,
    summarize_abstractive,
    summarize_extractive,
)

__all__ = [
    "DAYS_PER_MONTH",
    "MIN_CACHEABLE_TOKENS",
    "AbstractiveConfig",
    "AbstractiveSummary",
    "Breakpoint",
    "CacheProjection",
    "ChunkSummary",
    "DuplicateInstruction",
    "ExampleBlock",
    "PrefixPlan",
    "PromptReport",
    "RelevanceConfig",
    "RelevanceResult",
    "ScoredChunk",
    "SectionCost",
    "SummarizerConfig",
    "SummaryResult",
    "VolatileSpan",
    "analyze_prompt",
    "asummarize_abstractive",
    "asummarize_extractive",
    "blank_question",
    "find_volatile",
    "min_cacheable_tokens",
    "normalize_scores",
    "plan_prefix_cache",
    "prompt_cache_key",
    "provider_for",
    "select_relevant",
    "summarize_abstractive",
    "summarize_extractive",
]
