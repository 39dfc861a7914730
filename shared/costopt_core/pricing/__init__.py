"""Prices and the cost of a call (see ``catalog`` and ``cost``)."""

from costopt_core.pricing.catalog import (
    LongContextPrice,
    ModelPrice,
    PriceCatalog,
    UnknownModelPriceWarning,
)
from costopt_core.pricing.cost import (
    CallPricer,
    PricedCall,
    attribute_savings,
    cost_of,
    estimate_cost,
)

__all__ = [
    "CallPricer",
    "LongContextPrice",
    "ModelPrice",
    "PriceCatalog",
    "PricedCall",
    "UnknownModelPriceWarning",
    "attribute_savings",
    "cost_of",
    "estimate_cost",
]
