"""The semantic response cache: engine, config, backends (see ``engine``)."""

from costopt_core.cache.backend import BackendStats, CacheBackend, CombinedLookup
from costopt_core.cache.calibrate import (
    CalibrationResult,
    calibrate_pair_threshold,
    calibrate_threshold,
)
from costopt_core.cache.component import ComponentCache, ComponentStats
from costopt_core.cache.config import CacheConfig
from costopt_core.cache.engine import CacheResult, CacheStats, SemanticCache, Verifier
from costopt_core.cache.entry import CachedResponse, CacheEntry, CacheHit
from costopt_core.cache.guards import GuardConfig, check_guards, decide
from costopt_core.cache.keys import CacheRequest
from costopt_core.cache.memory_backend import MemoryCacheBackend
from costopt_core.cache.pair_model import (
    PairModel,
    PairScorer,
    PairWeights,
    pair_probability,
    word_overlap,
)
from costopt_core.cache.sqlite_backend import SQLiteCacheBackend

__all__ = [
    "BackendStats",
    "CacheBackend",
    "CacheConfig",
    "CacheEntry",
    "CacheHit",
    "CacheRequest",
    "CacheResult",
    "CacheStats",
    "CachedResponse",
    "CalibrationResult",
    "CombinedLookup",
    "ComponentCache",
    "ComponentStats",
    "GuardConfig",
    "MemoryCacheBackend",
    "PairModel",
    "PairScorer",
    "PairWeights",
    "RedisCacheBackend",
    "SQLiteCacheBackend",
    "SemanticCache",
    "Verifier",
    "calibrate_pair_threshold",
    "calibrate_threshold",
    "check_guards",
    "decide",
    "pair_probability",
    "word_overlap",
]


def __getattr__(name: str) -> object:
    # redisvl is imported only when the Redis backend is asked for.
    if name == "RedisCacheBackend":
        from costopt_core.cache.redis_backend import RedisCacheBackend

        return RedisCacheBackend
    raise AttributeError(f"module 'costopt_core.cache' has no attribute {name!r}")
