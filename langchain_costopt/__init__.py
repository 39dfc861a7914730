"""LangChain adapters for costopt: thin translations onto ``costopt_core``."""

from langchain_costopt.cache import SemanticCache
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.callbacks import CostCallbackHandler, track_costs
from langchain_costopt.components import cached
from langchain_costopt.prefix import PrefixCachedChatModel, PrefixCacheOptimizer, with_prefix_cache
from langchain_costopt.relevance import RelevanceThresholdRetriever
from langchain_costopt.summarizer import ContextSummarizer

__all__ = [
    "CachedChatModel",
    "ContextSummarizer",
    "CostCallbackHandler",
    "PrefixCacheOptimizer",
    "PrefixCachedChatModel",
    "RelevanceThresholdRetriever",
    "SemanticCache",
    "cached",
    "track_costs",
    "with_prefix_cache",
]
