"""costopt's engine: types, prices, ledger, budgets and the decisions every adapter shares.

This package imports neither LangChain nor LlamaIndex; the adapter packages
``langchain_costopt`` and ``llamaindex_costopt`` translate to and from it.
"""

from costopt_core.budgets import Budget, BudgetDecision, evaluate_budget
from costopt_core.embeddings import CachingEmbedder, Embedder, SentenceTransformerEmbedder
from costopt_core.engine import (
    DEFAULT_BASELINE_MODEL,
    CostEngine,
    current_engine,
    default_engine,
    engine_scope,
    set_default_engine,
)
from costopt_core.errors import (
    BatchError,
    BudgetExceededError,
    CacheBackendError,
    ConfigurationError,
    CostOptError,
    PricingNotFoundError,
    RoutingError,
    StoreError,
    UsageFormatError,
)
from costopt_core.ledger import CostLedger, Totals
from costopt_core.overhead import overhead_of
from costopt_core.pricing import ModelPrice, PriceCatalog, UnknownModelPriceWarning, cost_of
from costopt_core.tenancy import current_tenant, tenant_scope
from costopt_core.tokens import TokenCounter
from costopt_core.types import LEVERS, CallRecord, ChatRequest, Message, Usage
from costopt_core.usage import normalize_usage

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASELINE_MODEL",
    "LEVERS",
    "BatchError",
    "Budget",
    "BudgetDecision",
    "BudgetExceededError",
    "CacheBackendError",
    "CachingEmbedder",
    "CallRecord",
    "ChatRequest",
    "ConfigurationError",
    "CostEngine",
    "CostLedger",
    "CostOptError",
    "Embedder",
    "Message",
    "ModelPrice",
    "PriceCatalog",
    "PricingNotFoundError",
    "RoutingError",
    "SentenceTransformerEmbedder",
    "StoreError",
    "TokenCounter",
    "Totals",
    "UnknownModelPriceWarning",
    "Usage",
    "UsageFormatError",
    "__version__",
    "cost_of",
    "current_engine",
    "current_tenant",
    "default_engine",
    "engine_scope",
    "evaluate_budget",
    "normalize_usage",
    "overhead_of",
    "set_default_engine",
    "tenant_scope",
]
