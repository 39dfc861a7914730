"""Prices and the cost of a call (see ``catalog`` and ``cost``)."""

from costopt_core.pricing.catalog import (
    LongContextPrice,
    ModelPrice,
    PriceCatalog,
    UnknownCostWarning,
    UnknownModelPriceWarning,
)
from costopt_core.pricing.cost import (
    CallPricer,
    PricedCall,
    attribute_savings,
    cost_of,
    estimate_cost,
    has_batch_price,
    unknown_cost_reason,
)

__all__ = [
    "CallPricer",
    "LongContextPrice",
    "ModelPrice",
    "PriceCatalog",
    "PricedCall",
    "UnknownCostWarning",
    "UnknownModelPriceWarning",
    "attribute_savings",
    "cost_of",
    "estimate_cost",
    "has_batch_price",
    "unknown_cost_reason",
]
