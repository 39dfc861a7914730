"""LlamaIndex adapters for costopt: thin translations onto ``costopt_core``."""

from llamaindex_costopt.cached_llm import CachedLLM
from llamaindex_costopt.handler import CostEventHandler, track_costs

__all__ = ["CachedLLM", "CostEventHandler", "track_costs"]
