"""The semantic cache's shipped accept decision: threshold and guards.

PRELIMINARY values while the benchmark runs; replaced by measured ones.
"""

from __future__ import annotations

from costopt_core.cache.guards import GuardConfig

__all__ = ["DEFAULT_GUARDS", "DEFAULT_SIMILARITY_THRESHOLD"]

DEFAULT_SIMILARITY_THRESHOLD = 0.90

DEFAULT_GUARDS = GuardConfig()
