"""The ``CacheBackend`` seam: where cache entries live.

Backends store and search; every decision (scope, threshold, guards, TTL
policy, what to cache) is the engine's. A backend must:

- search only inside the given scope (filter inside the query, never after);
- return vector-search candidates as ``(entry, cosine similarity)``, best first;
- never return an expired entry;
- raise ``CacheBackendError`` (not a driver exception) when it fails, so the
  engine can fail open.

Every method has an ``a``-prefixed async twin. ``tests/contract/`` holds the
one suite all backends pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from costopt_core.cache.entry import CacheEntry

__all__ = ["BackendStats", "CacheBackend", "CombinedLookup"]


@dataclass(frozen=True)
class BackendStats:
    entries: int
    bytes: int


@runtime_checkable
class CacheBackend(Protocol):
    """Storage and scoped vector search for cache entries."""

    def get(self, key: str, *, now: float) -> CacheEntry | None:
        """The unexpired entry stored under ``key`` (an exact-match key), if any."""
        ...

    def search(
        self,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> list[tuple[CacheEntry, float]]:
        """Up to ``k`` unexpired entries of ``scope`` nearest to ``vector``, best first.

        ``min_similarity`` lets a backend skip fetching candidates that cannot
        be served; it may still return them (the engine checks again).
        """
        ...

    def put(self, entry: CacheEntry) -> None:
        """Store (or replace) an entry; all of it or nothing."""
        ...

    def delete(self, keys: Sequence[str]) -> int:
        """Remove entries by key; returns how many existed."""
        ...

    def delete_tag(self, tag: str, namespace: str | None = None) -> int:
        """Remove entries carrying ``tag`` (in one namespace, or all)."""
        ...

    def delete_scope(self, scope: str) -> int: ...

    def delete_namespace(self, namespace: str) -> int: ...

    def clear(self) -> None: ...

    def stats(self) -> BackendStats: ...

    def close(self) -> None: ...

    async def aget(self, key: str, *, now: float) -> CacheEntry | None: ...

    async def asearch(
        self,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> list[tuple[CacheEntry, float]]: ...

    async def aput(self, entry: CacheEntry) -> None: ...

    async def adelete(self, keys: Sequence[str]) -> int: ...

    async def adelete_tag(self, tag: str, namespace: str | None = None) -> int: ...

    async def adelete_scope(self, scope: str) -> int: ...

    async def adelete_namespace(self, namespace: str) -> int: ...

    async def aclear(self) -> None: ...


@runtime_checkable
class CombinedLookup(Protocol):
    """A backend that reads an exact key and searches in one round trip.

    Optional, for a backend across a network: when a prompt's vector is
    already at hand (the shared embedder has it), the engine asks for both
    tiers at once instead of waiting for the exact read before it searches.
    The result must equal ``(get(key), search(scope, vector, k, ...))``.
    """

    def get_and_search(
        self,
        key: str,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> tuple[CacheEntry | None, list[tuple[CacheEntry, float]]]:
        """The entry under ``key`` and the candidates of ``search``, in one trip."""
        ...

    async def aget_and_search(
        self,
        key: str,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> tuple[CacheEntry | None, list[tuple[CacheEntry, float]]]: ...
