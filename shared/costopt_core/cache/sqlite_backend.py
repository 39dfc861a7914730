"""A persistent backend in one SQLite file, for notebooks and single-machine apps.

SQLite is the store of record; searches run on an in-process mirror
(``MemoryCacheBackend``) loaded from the file on first use, so a restarted
process finds every unexpired entry again. Writes go to the file first, in one
transaction, then to the mirror: a failed write leaves neither half-written.
One process should write a given file (other processes see its writes after
they restart).

Expired rows are deleted when the file is loaded and, at most every
``purge_interval_s``, by a put, so the file does not grow without bound and a
restart does not spend the mirror's places on dead entries. Expiry times are
on the cache's clock, which the backend only learns from its callers: the
``now`` of a lookup, or a new entry's ``created_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from costopt_core.cache.backend import BackendStats
from costopt_core.cache.entry import CachedResponse, CacheEntry
from costopt_core.cache.memory_backend import MemoryCacheBackend
from costopt_core.errors import CacheBackendError

__all__ = ["SQLiteCacheBackend"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

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

_COLUMNS = "key, scope, namespace, prompt_text, response, vector, tags, created_at, expires_at"

_INSERT = f"INSERT OR REPLACE INTO costopt_cache ({_COLUMNS}) VALUES ({','.join('?' * 9)})"

#: Keys per ``DELETE ... IN (...)``: well under the smallest bound-parameter
#: limit of any SQLite build (999 before 3.32), so a tag or tenant of any size
#: can be invalidated.
_DELETE_CHUNK = 500

#: Expiry is inclusive (``CacheEntry.expired``): a row is dead once now >= expires_at.
_EXPIRED = "expires_at IS NOT NULL AND expires_at <= ?"

#: How many unloadable row keys one log line names.
_LOGGED_KEYS = 5


def _sql(text: str) -> str | bytes:
    """``text`` as SQLite can bind it.

    sqlite3 binds a str as strict UTF-8, which refuses a lone surrogate (a JSON
    body's ``"\\ud83d"`` decodes to one); such a value is stored as its
    surrogatepass bytes, the same bytes every query binds, and :func:`_text`
    reads it back.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def _text(value: object) -> str:
    """A text column as stored by :func:`_sql`."""
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else str(value)


class SQLiteCacheBackend:
    """Cache entries in a SQLite file; survives restarts.

    Args:
        path: the database file (created if missing).
        max_entries: bound on the in-memory mirror.
        purge_interval_s: least time (monotonic seconds) between two deletions
            of expired rows by ``put``; 0 purges on every put.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_entries: int = 100_000,
        purge_interval_s: float = 60.0,
    ) -> None:
        self.path = Path(path)
        self.purge_interval_s = purge_interval_s
        self._mirror = MemoryCacheBackend(max_entries=max_entries)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._last_purge = -math.inf

    def __repr__(self) -> str:
        return f"SQLiteCacheBackend(path={str(self.path)!r})"

    def _db(self, now: float | None = None) -> sqlite3.Connection:
        """The connection; the first call opens the file and loads the mirror.

        Args:
            now: the cache's clock, to leave expired rows out of the mirror.
                Unknown (``None``), the newest ``created_at`` in the file stands
                in: the clock has passed it, so what expired by then is dead.

        Raises:
            CacheBackendError: the file cannot be opened or read.
        """
        with self._lock:
            if self._conn is None:
                conn = self._open()
                try:
                    self._load(conn, now)
                except BaseException:
                    conn.close()
                    self._mirror.clear()
                    raise
                self._conn = conn
            return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            conn.close()
            raise self._open_error(exc) from exc
        return conn

    def _open_error(self, exc: sqlite3.Error) -> CacheBackendError:
        return CacheBackendError(
            f"cannot open the sqlite cache at {str(self.path)!r}: {exc}; check the "
            "path is writable and not on a full disk"
        )

    def _load(self, conn: sqlite3.Connection, now: float | None) -> None:
        try:
            if now is None:
                newest = conn.execute("SELECT max(created_at) FROM costopt_cache").fetchone()[0]
                now = -math.inf if newest is None else float(newest)
            self._purge_on_load(conn, now)
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM costopt_cache "
                "WHERE expires_at IS NULL OR expires_at > ? ORDER BY created_at",
                (now,),
            )
            bad = [key for key in (self._load_row(row) for row in rows) if key is not None]
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc
        if bad:
            # One unreadable row (another version's format, a vector of another
            # model that the mirror rejects) must not take the whole cache down.
            logger.warning(
                "sqlite cache %r: skipped %d row(s) that cannot be loaded (keys %s); "
                "they are served by no lookup; clear the cache to drop them",
                str(self.path),
                len(bad),
                ", ".join(repr(k) for k in bad[:_LOGGED_KEYS])
                + (", ..." if len(bad) > _LOGGED_KEYS else ""),
            )

    def _load_row(self, row: tuple[object, ...]) -> str | None:
        """Put one row in the mirror; its key if it could not be loaded, else None."""
        try:
            self._mirror.put(_entry_of(row))
        except Exception as exc:  # whatever a bad row raises, the cache must open
            logger.debug("sqlite cache row %r not loaded: %r", row[0], exc)
            return _text(row[0])
        return None

    def _purge_on_load(self, conn: sqlite3.Connection, now: float) -> None:
        if now == -math.inf:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"DELETE FROM costopt_cache WHERE {_EXPIRED}", (now,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # A read-only or full file still serves its live rows: the load
            # leaves the expired ones out anyway, and a later put retries.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            logger.info("sqlite cache %r: expired rows not purged: %s", str(self.path), exc)
            return
        self._last_purge = time.monotonic()

    def _transaction(
        self, op: str, run: Callable[[sqlite3.Connection], _T], *, now: float | None = None
    ) -> _T:
        """``run(db)`` in one write transaction: all of it is committed, or none.

        Raises:
            CacheBackendError: SQLite failed; nothing was written.
        """
        with self._lock:
            db = self._db(now)
            try:
                db.execute("BEGIN IMMEDIATE")
                result = run(db)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise CacheBackendError(
                    f"sqlite cache {op} failed at {str(self.path)!r}: {exc}; check the disk "
                    "has room and the file is writable"
                ) from exc
            return result

    # -- sync ---------------------------------------------------------------
    def get(self, key: str, *, now: float) -> CacheEntry | None:
        with self._lock:
            self._db(now)
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
            self._db(now)
            return self._mirror.search(scope, vector, k, now=now, min_similarity=min_similarity)

    def put(self, entry: CacheEntry) -> None:
        """Store ``entry`` in the file, then in the mirror; both or neither.

        A put also deletes expired rows when the last purge is
        ``purge_interval_s`` old, taking ``entry.created_at`` as the time.

        Raises:
            CacheBackendError: the write failed; the entry is in neither.
        """
        vec = None if entry.vector is None else np.asarray(entry.vector, np.float32).tobytes()
        row = (
            _sql(entry.key),
            _sql(entry.scope),
            _sql(entry.namespace),
            _sql(entry.prompt_text),
            _sql(entry.response.to_json()),
            vec,
            json.dumps(list(entry.tags)),
            entry.created_at,
            entry.expires_at,
        )
        now = entry.created_at
        with self._lock:
            self._db(now)  # a first open purges already
            purge = time.monotonic() - self._last_purge >= self.purge_interval_s

            def run(db: sqlite3.Connection) -> list[str]:
                expired: list[str] = []
                if purge:
                    sql = f"SELECT key FROM costopt_cache WHERE {_EXPIRED}"
                    expired = [_text(r[0]) for r in db.execute(sql, (now,))]
                    db.execute(f"DELETE FROM costopt_cache WHERE {_EXPIRED}", (now,))
                db.execute(_INSERT, row)
                return expired

            expired = self._transaction("put", run, now=now)
            if purge:
                self._last_purge = time.monotonic()
            self._mirror.delete(expired)
            try:
                self._mirror.put(entry)
            except Exception as exc:
                self._undo_put(entry.key, exc)

    def _undo_put(self, key: str, exc: Exception) -> None:
        """The mirror refused an entry the file took: take it out of the file too."""
        self._mirror.delete([key])
        self._transaction(
            "put (undoing an entry the mirror refused)",
            lambda db: db.execute("DELETE FROM costopt_cache WHERE key = ?", (_sql(key),)),
        )
        raise CacheBackendError(
            f"sqlite cache put of {key!r} at {str(self.path)!r} failed and was undone: {exc}"
        ) from exc

    def delete(self, keys: Sequence[str]) -> int:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return 0
        with self._lock:
            n = self._transaction("delete", lambda db: _delete_keys(db, unique))
            self._mirror.delete(unique)
            return n

    def delete_tag(self, tag: str, namespace: str | None = None) -> int:
        # Tags are a JSON list per row, so the match is made here, in the same
        # transaction as the deletion (no row can be tagged in between).
        def run(db: sqlite3.Connection) -> tuple[int, list[str]]:
            if namespace is None:
                rows = db.execute("SELECT key, tags FROM costopt_cache")
            else:
                rows = db.execute(
                    "SELECT key, tags FROM costopt_cache WHERE namespace = ?", (_sql(namespace),)
                )
            keys = [_text(key) for key, tags in rows if tag in json.loads(_text(tags))]
            return _delete_keys(db, keys), keys

        with self._lock:
            n, keys = self._transaction("delete_tag", run)
            self._mirror.delete(keys)
            return n

    def delete_scope(self, scope: str) -> int:
        with self._lock:
            n = self._transaction(
                "delete_scope",
                lambda db: (
                    db.execute("DELETE FROM costopt_cache WHERE scope = ?", (_sql(scope),)).rowcount
                ),
            )
            self._mirror.delete_scope(scope)
            return int(n)

    def delete_namespace(self, namespace: str) -> int:
        with self._lock:
            n = self._transaction(
                "delete_namespace",
                lambda db: (
                    db.execute(
                        "DELETE FROM costopt_cache WHERE namespace = ?", (_sql(namespace),)
                    ).rowcount
                ),
            )
            self._mirror.delete_namespace(namespace)
            return int(n)

    def clear(self) -> None:
        with self._lock:
            self._transaction("clear", lambda db: db.execute("DELETE FROM costopt_cache"))
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
        key=_text(key),
        scope=_text(scope),
        namespace=_text(namespace),
        prompt_text=_text(prompt_text),
        response=CachedResponse.from_json(_text(response)),
        vector=None if vector is None else np.frombuffer(vector, dtype=np.float32).copy(),  # type: ignore[call-overload]
        tags=tuple(json.loads(_text(tags))),
        created_at=float(created),  # type: ignore[arg-type]
        expires_at=None if expires is None else float(expires),  # type: ignore[arg-type]
    )


def _chunks(items: Sequence[str], size: int = _DELETE_CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _delete_keys(db: sqlite3.Connection, keys: Sequence[str]) -> int:
    """Delete ``keys`` in chunks (the caller holds the transaction); rows deleted."""
    n = 0
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        sql = f"DELETE FROM costopt_cache WHERE key IN ({marks})"
        n += db.execute(sql, [_sql(key) for key in chunk]).rowcount
    return n
