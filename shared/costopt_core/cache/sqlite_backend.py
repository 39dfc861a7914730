"""A persistent backend in one SQLite file, for notebooks and single-machine apps.

SQLite is the store of record; searches run on an in-process mirror
(``MemoryCacheBackend``) loaded from the file on first use, so a restarted
process finds every unexpired entry again. Writes go to the file first, in one
transaction, then to the mirror: a failed write leaves neither half-written.
One process should write a given file (other processes see its writes after
they restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from costopt_core.cache.backend import BackendStats
from costopt_core.cache.entry import CachedResponse, CacheEntry
from costopt_core.cache.memory_backend import MemoryCacheBackend
from costopt_core.errors import CacheBackendError

__all__ = ["SQLiteCacheBackend"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS costopt_cache (
    key TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    namespace TEXT NOT NULL,
    prompt_text TEXT NOT NULL,
    response TEXT NOT NULL,
    vector BLOB,
    tags TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS costopt_cache_scope ON costopt_cache (scope);
CREATE INDEX IF NOT EXISTS costopt_cache_namespace ON costopt_cache (namespace);
"""


class SQLiteCacheBackend:
    """Cache entries in a SQLite file; survives restarts.

    Args:
        path: the database file (created if missing).
        max_entries: bound on the in-memory mirror.
    """

    def __init__(self, path: str | Path, *, max_entries: int = 100_000) -> None:
        self.path = Path(path)
        self._mirror = MemoryCacheBackend(max_entries=max_entries)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SQLiteCacheBackend(path={str(self.path)!r})"

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                rows = conn.execute(
                    "SELECT key, scope, namespace, prompt_text, response, vector, tags, "
                    "created_at, expires_at FROM costopt_cache ORDER BY created_at"
                ).fetchall()
            except sqlite3.Error as exc:
                raise CacheBackendError(
                    f"cannot open the sqlite cache at {str(self.path)!r}: {exc}; check the "
                    "path is writable and not on a full disk"
                ) from exc
            for row in rows:
                self._mirror.put(_entry_of(row))
            self._conn = conn
        return self._conn

    def _write(self, op: str, sql: str, params: Sequence[object] = ()) -> int:
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                cur = db.execute(sql, params)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise CacheBackendError(
                    f"sqlite cache {op} failed at {str(self.path)!r}: {exc}"
                ) from exc
            return cur.rowcount

    # -- sync ---------------------------------------------------------------
    def get(self, key: str, *, now: float) -> CacheEntry | None:
        with self._lock:
            self._db()
            return self._mirror.get(key, now=now)

    def search(
        self,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> list[tuple[CacheEntry, float]]:
        with self._lock:
            self._db()
            return self._mirror.search(scope, vector, k, now=now, min_similarity=min_similarity)

    def put(self, entry: CacheEntry) -> None:
        vec = None if entry.vector is None else np.asarray(entry.vector, np.float32).tobytes()
        with self._lock:
            self._write(
                "put",
                "INSERT OR REPLACE INTO costopt_cache VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.key,
                    entry.scope,
                    entry.namespace,
                    entry.prompt_text,
                    entry.response.to_json(),
                    vec,
                    json.dumps(list(entry.tags)),
                    entry.created_at,
                    entry.expires_at,
                ),
            )
            self._mirror.put(entry)

    def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        with self._lock:
            marks = ",".join("?" * len(keys))
            n = self._write("delete", f"DELETE FROM costopt_cache WHERE key IN ({marks})", keys)
            self._mirror.delete(keys)
            return n

    def _keys_where(self, sql: str, params: Sequence[object]) -> list[str]:
        with self._lock:
            rows = self._db().execute(f"SELECT key, tags FROM costopt_cache WHERE {sql}", params)
            return [r[0] for r in rows]

    def delete_tag(self, tag: str, namespace: str | None = None) -> int:
        with self._lock:
            rows = self._db().execute("SELECT key, tags, namespace FROM costopt_cache").fetchall()
            keys = [
                k
                for k, tags, ns in rows
                if tag in json.loads(tags) and (namespace is None or ns == namespace)
            ]
            return self.delete(keys)

    def delete_scope(self, scope: str) -> int:
        return self.delete(self._keys_where("scope = ?", (scope,)))

    def delete_namespace(self, namespace: str) -> int:
        return self.delete(self._keys_where("namespace = ?", (namespace,)))

    def clear(self) -> None:
        with self._lock:
            self._write("clear", "DELETE FROM costopt_cache")
            self._mirror.clear()

    def stats(self) -> BackendStats:
        with self._lock:
            self._db()
            return self._mirror.stats()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._mirror.clear()

    # -- async: SQLite is blocking, so the twins run in a worker thread -------
    async def aget(self, key: str, *, now: float) -> CacheEntry | None:
        return await asyncio.to_thread(self.get, key, now=now)

    async def asearch(
        self,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> list[tuple[CacheEntry, float]]:
        return await asyncio.to_thread(
            self.search, scope, vector, k, now=now, min_similarity=min_similarity
        )

    async def aput(self, entry: CacheEntry) -> None:
        await asyncio.to_thread(self.put, entry)

    async def adelete(self, keys: Sequence[str]) -> int:
        return await asyncio.to_thread(self.delete, keys)

    async def adelete_tag(self, tag: str, namespace: str | None = None) -> int:
        return await asyncio.to_thread(self.delete_tag, tag, namespace)

    async def adelete_scope(self, scope: str) -> int:
        return await asyncio.to_thread(self.delete_scope, scope)

    async def adelete_namespace(self, namespace: str) -> int:
        return await asyncio.to_thread(self.delete_namespace, namespace)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)


def _entry_of(row: tuple[object, ...]) -> CacheEntry:
    key, scope, namespace, prompt_text, response, vector, tags, created, expires = row
    return CacheEntry(
        key=str(key),
        scope=str(scope),
        namespace=str(namespace),
        prompt_text=str(prompt_text),
        response=CachedResponse.from_json(str(response)),
        vector=None if vector is None else np.frombuffer(vector, dtype=np.float32).copy(),  # type: ignore[call-overload]
        tags=tuple(json.loads(str(tags))),
        created_at=float(created),  # type: ignore[arg-type]
        expires_at=None if expires is None else float(expires),  # type: ignore[arg-type]
    )
