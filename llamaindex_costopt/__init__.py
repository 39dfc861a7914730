"""LlamaIndex adapters for costopt: thin translations onto ``costopt_core``."""

from llamaindex_costopt.handler import CostEventHandler, track_costs

__all__ = ["CostEventHandler", "track_costs"]
