"""LangChain adapters for costopt: thin translations onto ``costopt_core``."""

from typing import Any

from langchain_costopt.batch import BatchRunnable
from langchain_costopt.cache import SemanticCache
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.callbacks import CostCallbackHandler, track_costs
from langchain_costopt.components import cached
from langchain_costopt.local import LocalChatModel
from langchain_costopt.memory import (
    SummarizingChatMessageHistory,
    SummarizingMemoryTransform,
    summarize_messages,
)
from langchain_costopt.prefix import PrefixCachedChatModel, PrefixCacheOptimizer, with_prefix_cache
from langchain_costopt.relevance import RelevanceThresholdRetriever
from langchain_costopt.router import RouterChatModel
from langchain_costopt.summarizer import AbstractiveContextSummarizer, ContextSummarizer

__all__ = [
    "AbstractiveContextSummarizer",
    "BatchRunnable",
    "CachedChatModel",
    "ContextSummarizer",
    "CostCallbackHandler",
    "LocalChatModel",
    "PrefixCacheOptimizer",
    "PrefixCachedChatModel",
    "RelevanceThresholdRetriever",
    "RouterChatModel",
    "SemanticCache",
    "SummarizingChatMessageHistory",
    "SummarizingMemoryMiddleware",
    "SummarizingMemoryTransform",
    "cached",
    "summarize_messages",
    "track_costs",
    "with_prefix_cache",
]


def __getattr__(name: str) -> Any:
    # The agent middleware needs the ``langchain`` package (v1), imported only when asked for.
    if name == "SummarizingMemoryMiddleware":
        from langchain_costopt.memory_middleware import SummarizingMemoryMiddleware

        return SummarizingMemoryMiddleware
    raise AttributeError(f"module 'langchain_costopt' has no attribute {name!r}")
