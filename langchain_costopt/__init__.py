"""LangChain adapters for costopt: thin translations onto ``costopt_core``."""

from langchain_costopt.cache import SemanticCache
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.callbacks import CostCallbackHandler, track_costs
from langchain_costopt.components import cached

__all__ = ["CachedChatModel", "CostCallbackHandler", "SemanticCache", "cached", "track_costs"]
