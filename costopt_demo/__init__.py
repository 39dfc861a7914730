"""The costopt demo: a support-assistant workload through LangChain and LlamaIndex.

An application of the library, not part of it: it is the one place that
imports both adapters. ``costopt demo`` (``make demo``) runs it offline.
"""

from costopt_demo.run import (
    DemoLocalModel,
    DemoResult,
    LocalModelUnavailable,
    load_local_model,
    run_demo,
)

__all__ = [
    "DemoLocalModel",
    "DemoResult",
    "LocalModelUnavailable",
    "load_local_model",
    "run_demo",
]
