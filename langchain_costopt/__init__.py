"""LangChain adapters for costopt: thin translations onto ``costopt_core``."""

from langchain_costopt.callbacks import CostCallbackHandler, track_costs

__all__ = ["CostCallbackHandler", "track_costs"]
