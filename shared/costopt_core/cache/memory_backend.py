"""The default backend: entries and vectors in this process.

Bounded by entry count (least recently used out first); one ``VectorIndex``
per (scope, vector dimension), so a search only ever looks inside its scope and
only compares vectors of its own length: after the embedding model changes,
older entries of another dimension stay reachable by exact key and are simply
not semantic candidates. Thread-safe.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from costopt_core.cache.backend import BackendStats
from costopt_core.cache.entry import CacheEntry
from costopt_core.cache.vector_index import VectorIndex
from costopt_core.errors import CacheBackendError, ConfigurationError

__all__ = ["MemoryCacheBackend"]


class MemoryCacheBackend:
    """In-process cache storage with scoped vector search.

    Args:
        max_entries: bound on stored entries; the least recently used go first.
        hnsw_threshold: scopes larger than this use an HNSW index.
    """

    def __init__(self, *, max_entries: int = 100_000, hnsw_threshold: int = 4096) -> None:
        if max_entries < 1:
            raise ConfigurationError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.hnsw_threshold = hnsw_threshold
        self._entries: OrderedDict[str, tuple[CacheEntry, int]] = OrderedDict()
        self._by_label: dict[int, str] = {}
        # Keyed by (scope, dims): vectors of different lengths cannot share an index.
        self._scopes: dict[tuple[str, int], VectorIndex] = {}
        self._labels = itertools.count()
        self._bytes = 0
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"MemoryCacheBackend(entries={len(self._entries)}, max_entries={self.max_entries})"

    # -- sync ---------------------------------------------------------------
    def get(self, key: str, *, now: float) -> CacheEntry | None:
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            if item[0].expired(now):
                self._remove(key)
                return None
            self._entries.move_to_end(key)
            return item[0]

    def search(
        self,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> list[tuple[CacheEntry, float]]:
        query = _vector_of(vector, "search")
        with self._lock:
            index = self._scopes.get((scope, query.size))
            if index is None or k <= 0:
                return []
            # Ask for a few more than k: expired entries are dropped below. When
            # they leave fewer than k live candidates, they are purged (out of
            # the index) and the search asks again for twice as many, until k
            # live ones are found, the scope is exhausted, or the candidates
            # fall below ``min_similarity`` (those further away are no nearer):
            # however many expired entries are nearer, they never hide a live
            # one. The common case (nothing expired) stays a single search.
            want = k + 4
            while True:
                out: list[tuple[CacheEntry, float]] = []
                expired: list[str] = []
                exhaustive = want >= len(index)
                found = index.search(query, want)
                for label, sim in found:
                    key = self._by_label.get(label)
                    if key is None:
                        continue
                    entry = self._entries[key][0]
                    if entry.expired(now):
                        expired.append(key)
                        continue
                    out.append((entry, sim))
                    if len(out) == k:
                        break
                for key in expired:
                    self._remove(key)
                if len(out) >= k or not expired or exhaustive:
                    break
                if min_similarity is not None and found and found[-1][1] < min_similarity:
                    break
                index = self._scopes.get((scope, query.size))
                if index is None:  # the purge emptied the scope
                    break
                want *= 2
            # Best last, so the most recently used: a hit serves the best
            # candidate that passes, and LRU must not evict it first.
            for entry, _ in reversed(out):
                self._entries.move_to_end(entry.key)
            return out

    def put(self, entry: CacheEntry) -> None:
        """Store ``entry``, replacing any entry of the same key; all or nothing.

        Raises:
            CacheBackendError: ``entry.vector`` is not a non-empty 1-D array. The
                backend is then unchanged (an older entry of the key is kept).
        """
        vector = None if entry.vector is None else _vector_of(entry.vector, "put")
        size = entry.size_bytes()
        with self._lock:
            label = next(self._labels)
            # The index is the only step that can fail, so it goes first and is
            # undone on error: a failed put must leave no half entry behind.
            where, index = None, None
            if vector is not None:
                where = (entry.scope, vector.size)
                index = self._scopes.get(where)
                if index is None:
                    index = VectorIndex(vector.size, hnsw_threshold=self.hnsw_threshold)
                try:
                    index.add(label, vector)
                except Exception:
                    index.remove(label)
                    raise
            if entry.key in self._entries:
                self._remove(entry.key)
            if where is not None and index is not None:
                self._scopes[where] = index
            self._entries[entry.key] = (entry, label)
            self._by_label[label] = entry.key
            self._bytes += size
            while len(self._entries) > self.max_entries:
                self._remove(next(iter(self._entries)))

    def _remove(self, key: str) -> bool:
        item = self._entries.pop(key, None)
        if item is None:
            return False
        entry, label = item
        self._by_label.pop(label, None)
        self._bytes -= entry.size_bytes()
        if entry.vector is not None:
            where = (entry.scope, int(np.asarray(entry.vector).size))
            index = self._scopes.get(where)
            if index is not None:
                index.remove(label)
                if not len(index):
                    del self._scopes[where]
        return True

    def _delete_where(self, pred: object) -> int:
        with self._lock:
            keys = [k for k, (e, _) in self._entries.items() if pred(e)]  # type: ignore[operator]
            return sum(self._remove(k) for k in keys)

    def delete(self, keys: Sequence[str]) -> int:
        with self._lock:
            return sum(self._remove(k) for k in keys)

    def delete_tag(self, tag: str, namespace: str | None = None) -> int:
        return self._delete_where(
            lambda e: tag in e.tags and (namespace is None or e.namespace == namespace)
        )

    def delete_scope(self, scope: str) -> int:
        return self._delete_where(lambda e: e.scope == scope)

    def delete_namespace(self, namespace: str) -> int:
        return self._delete_where(lambda e: e.namespace == namespace)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_label.clear()
            self._scopes.clear()
            self._bytes = 0

    def stats(self) -> BackendStats:
        with self._lock:
            return BackendStats(entries=len(self._entries), bytes=self._bytes)

    def close(self) -> None:
        pass

    # -- async: everything is in memory, so the twins run inline -------------
    async def aget(self, key: str, *, now: float) -> CacheEntry | None:
        return self.get(key, now=now)

    async def asearch(
        self,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> list[tuple[CacheEntry, float]]:
        return self.search(scope, vector, k, now=now, min_similarity=min_similarity)

    async def aput(self, entry: CacheEntry) -> None:
        self.put(entry)

    async def adelete(self, keys: Sequence[str]) -> int:
        return self.delete(keys)

    async def adelete_tag(self, tag: str, namespace: str | None = None) -> int:
        return self.delete_tag(tag, namespace)

    async def adelete_scope(self, scope: str) -> int:
        return self.delete_scope(scope)

    async def adelete_namespace(self, namespace: str) -> int:
        return self.delete_namespace(namespace)

    async def aclear(self) -> None:
        self.clear()


def _vector_of(vector: npt.ArrayLike, op: str) -> npt.NDArray[np.float32]:
    """``vector`` as float32, or a CacheBackendError if it cannot be indexed."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise CacheBackendError(
            f"memory cache {op}: a cache vector must be a non-empty 1-D array, got shape "
            f"{arr.shape}; pass the embedder's output for one text"
        )
    if not np.isfinite(arr).all():
        # A NaN similarity passes no comparison, so it would slip past every
        # threshold, and one NaN vector in an HNSW graph breaks other searches.
        raise CacheBackendError(
            f"memory cache {op}: the cache vector holds NaN or infinite values; check the "
            "embedder (a zero vector divided by its norm gives NaN)"
        )
    return arr
