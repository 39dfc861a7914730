"""LlamaIndex adapters for costopt: thin translations onto ``costopt_core``."""

from llamaindex_costopt.cached_llm import CachedLLM
from llamaindex_costopt.handler import CostEventHandler, track_costs
from llamaindex_costopt.prefix import PrefixCachedLLM, add_cache_points
from llamaindex_costopt.relevance import RelevanceThresholdPostprocessor
from llamaindex_costopt.summarizer import ContextSummarizerPostprocessor

__all__ = [
    "CachedLLM",
    "ContextSummarizerPostprocessor",
    "CostEventHandler",
    "PrefixCachedLLM",
    "RelevanceThresholdPostprocessor",
    "add_cache_points",
    "track_costs",
]
