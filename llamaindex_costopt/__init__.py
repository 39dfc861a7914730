"""LlamaIndex adapters for costopt: thin translations onto ``costopt_core``."""

from llamaindex_costopt.batch import BatchRunner
from llamaindex_costopt.cached_llm import CachedLLM
from llamaindex_costopt.handler import CostEventHandler, track_costs
from llamaindex_costopt.local import LocalLLM
from llamaindex_costopt.memory import SummarizingMemory
from llamaindex_costopt.prefix import PrefixCachedLLM, add_cache_points
from llamaindex_costopt.relevance import RelevanceThresholdPostprocessor
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.summarizer import (
    AbstractiveSummarizerPostprocessor,
    ContextSummarizerPostprocessor,
)

__all__ = [
    "AbstractiveSummarizerPostprocessor",
    "BatchRunner",
    "CachedLLM",
    "ContextSummarizerPostprocessor",
    "CostEventHandler",
    "LocalLLM",
    "PrefixCachedLLM",
    "RelevanceThresholdPostprocessor",
    "RouterLLM",
    "SummarizingMemory",
    "add_cache_points",
    "track_costs",
]
