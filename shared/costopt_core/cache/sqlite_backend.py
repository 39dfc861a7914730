"""A persistent backend in one SQLite file, for notebooks and single-machine apps.

SQLite is the store of record; searches run on an in-process mirror
(``MemoryCacheBackend``) loaded from the file on first use, so a restarted
process finds every unexpired entry again. Each write is one transaction in the
file, and the mirror follows it: a failed write leaves neither half-written (a
put the mirror refuses rolls the file back, so an older entry of the key stays).

Several processes may share one file (workers of one app, a notebook and a
script). Every write logs the keys it changed in a change table
(``costopt_cache_changes``), in the same transaction. Before a lookup, a
``stats`` or a write, a backend asks SQLite whether another connection has
committed since it last looked (``PRAGMA data_version``, a few microseconds);
only then does it read the new change rows and apply them to its mirror:
re-reading the rows of the changed keys, dropping the deleted ones, emptying
the mirror on a ``clear``. The cost is that check on every call, one more
small insert per changed key on every write, and, after another process
wrote, reading back what it changed. The log keeps the last
``change_log_rows`` rows; a backend that fell further behind (idle while
others wrote more than that) reloads its mirror from the file instead. Every
process still keeps its own mirror, bounded by its own ``max_entries``.

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
from costopt_core.errors import CacheBackendError, ConfigurationError

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
CREATE TABLE IF NOT EXISTS costopt_cache_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT,
    op TEXT NOT NULL
);
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

#: Change-log rows kept by default (see ``SQLiteCacheBackend``'s ``change_log_rows``).
_CHANGE_LOG_ROWS = 10_000

#: Logs, as ``'del'`` rows, the keys a ``DELETE FROM costopt_cache WHERE ...``
#: of the same condition is about to remove (run it first, in the same transaction).
_LOG_DELETED = (
    "INSERT INTO costopt_cache_changes (key, op) SELECT key, 'del' FROM costopt_cache WHERE "
)


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
        change_log_rows: how many rows of the change log (what other processes
            sharing the file read to follow this one's writes) are kept; a
            process that falls further behind reloads the whole file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_entries: int = 100_000,
        purge_interval_s: float = 60.0,
        change_log_rows: int = _CHANGE_LOG_ROWS,
    ) -> None:
        if change_log_rows < 1:
            raise ConfigurationError(f"change_log_rows must be >= 1, got {change_log_rows}")
        self.path = Path(path)
        self.purge_interval_s = purge_interval_s
        self.change_log_rows = change_log_rows
        self._mirror = MemoryCacheBackend(max_entries=max_entries)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._last_purge = -math.inf
        # The mirror holds every change up to ``_seq`` in the change log, and
        # ``_data_version`` is the connection's data_version when it last caught up.
        self._seq = 0
        self._data_version: int | None = None
        self._trimmed_at = 0

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
                now = _newest(conn)
            self._purge_on_load(conn, now)
            # Read before the snapshot: a commit after it changes it again, so
            # the next call catches up with whatever the snapshot missed.
            version = _data_version(conn)
            with _read_snapshot(conn):
                self._load_rows(conn, now)
            self._data_version = version
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc

    def _load_rows(self, conn: sqlite3.Connection, now: float) -> None:
        """Fill the (empty) mirror with the live rows; the caller holds a transaction."""
        self._seq = _log_end(conn)
        self._trimmed_at = self._seq
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM costopt_cache "
            "WHERE expires_at IS NULL OR expires_at > ? ORDER BY created_at",
            (now,),
        )
        bad = [key for key in (self._load_row(row) for row in rows) if key is not None]
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
            conn.execute(_LOG_DELETED + _EXPIRED, (now,))
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

        The mirror first catches up with what other processes committed (the
        write lock is held, so nothing slips in between), and after the commit
        the backend counts its own change rows as seen: its writes never come
        back to it through the log.

        Raises:
            CacheBackendError: SQLite failed; nothing was written. Whatever
                ``run`` raises also rolls the transaction back.
        """
        with self._lock:
            db = self._db(now)
            try:
                db.execute("BEGIN IMMEDIATE")
                self._catch_up(db, now)
                result = run(db)
                end = _log_end(db)
                trim = end - self._trimmed_at >= max(1, self.change_log_rows // 10)
                if trim:
                    db.execute(
                        "DELETE FROM costopt_cache_changes WHERE seq <= ?",
                        (end - self.change_log_rows,),
                    )
                db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise CacheBackendError(
                        f"sqlite cache {op} failed at {str(self.path)!r}: {exc}; check the disk "
                        "has room and the file is writable"
                    ) from exc
                raise
            self._seq = end
            if trim:
                self._trimmed_at = end
            return result

    def _ready(self, now: float | None) -> None:
        """Open the file if needed and catch the mirror up with other processes' writes.

        Costs one ``PRAGMA data_version`` when nobody else committed.

        Raises:
            CacheBackendError: the file cannot be opened or read.
        """
        db = self._db(now)
        try:
            version = _data_version(db)
            if version == self._data_version:
                return
            with _read_snapshot(db):
                self._catch_up(db, now)
        except sqlite3.Error as exc:
            raise CacheBackendError(
                f"sqlite cache at {str(self.path)!r} cannot read what other processes "
                f"changed: {exc}"
            ) from exc
        self._data_version = version

    def _catch_up(self, db: sqlite3.Connection, now: float | None) -> None:
        """Apply the change rows after ``_seq`` to the mirror (inside a transaction).

        Reloads the whole mirror when the rows it needs were trimmed away (or the
        log is not the one it read before).
        """
        first, last = db.execute(
            "SELECT (SELECT min(seq) FROM costopt_cache_changes), "
            "(SELECT max(seq) FROM costopt_cache_changes)"
        ).fetchone()
        if last is None and self._seq == 0:
            return
        if last is None or last < self._seq or first > self._seq + 1:
            self._mirror.clear()
            self._load_rows(db, _newest(db) if now is None else now)
            return
        if last == self._seq:
            return
        rows = db.execute(
            "SELECT seq, key, op FROM costopt_cache_changes WHERE seq > ? ORDER BY seq",
            (self._seq,),
        ).fetchall()
        clears = [i for i, (_, _, op) in enumerate(rows) if op == "clear"]
        if clears:
            self._mirror.clear()
            rows = rows[clears[-1] + 1 :]
        self._refresh(db, list(dict.fromkeys(key for _, key, _ in rows)), now)
        self._seq = last

    def _refresh(self, db: sqlite3.Connection, keys: Sequence[object], now: float | None) -> None:
        """Make the mirror hold what the file holds for ``keys`` (as stored: str or bytes)."""
        found: dict[str, tuple[object, ...]] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {_COLUMNS} FROM costopt_cache WHERE key IN ({marks})"
            for row in db.execute(sql, list(chunk)):
                found[_text(row[0])] = row
        for raw in keys:
            key = _text(raw)
            row = found.get(key)
            expires = None if row is None else row[8]
            dead = now is not None and expires is not None and float(expires) <= now  # type: ignore[arg-type]
            if row is None or dead:
                self._mirror.delete([key])
            elif self._load_row(row) is not None:
                self._mirror.delete([key])  # an older entry of the key must not be served

    # -- sync ---------------------------------------------------------------
    def get(self, key: str, *, now: float) -> CacheEntry | None:
        with self._lock:
            self._ready(now)
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
            self._ready(now)
            return self._mirror.search(scope, vector, k, now=now, min_similarity=min_similarity)

    def put(self, entry: CacheEntry) -> None:
        """Store ``entry`` in the file and in the mirror; both or neither.

        The mirror takes the entry inside the file's transaction, which is
        rolled back if the mirror refuses it (a vector it cannot index): an
        older entry of the key then stays in both. A put also deletes expired
        rows when the last purge is ``purge_interval_s`` old, taking
        ``entry.created_at`` as the time.

        Raises:
            CacheBackendError: the write failed, or the mirror refused the entry;
                the entry is in neither, and any older entry of its key is kept.
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

            mirrored = False

            def run(db: sqlite3.Connection) -> list[str]:
                nonlocal mirrored
                expired: list[str] = []
                if purge:
                    sql = f"SELECT key FROM costopt_cache WHERE {_EXPIRED}"
                    expired = [_text(r[0]) for r in db.execute(sql, (now,))]
                    db.execute(_LOG_DELETED + _EXPIRED, (now,))
                    db.execute(f"DELETE FROM costopt_cache WHERE {_EXPIRED}", (now,))
                db.execute(_INSERT, row)
                db.execute(
                    "INSERT INTO costopt_cache_changes (key, op) VALUES (?, 'put')", (row[0],)
                )
                # All or nothing, and it raises before the commit: a refused
                # entry rolls the file back too, keeping an older entry of the key.
                try:
                    self._mirror.put(entry)
                except Exception as exc:
                    raise _Refused(exc) from exc
                mirrored = True
                return expired

            try:
                expired = self._transaction("put", run, now=now)
            except _Refused as refused:
                raise CacheBackendError(
                    f"sqlite cache put of {entry.key!r} at {str(self.path)!r} failed and was "
                    f"undone (an older entry of the key is kept): {refused.cause}"
                ) from refused.cause
            except BaseException:
                if mirrored:  # the commit failed after the mirror took the entry
                    self._restore(entry.key, now)
                raise
            if purge:
                self._last_purge = time.monotonic()
            # The purge ran before the insert: an expired row it removed may
            # have been the one this entry replaced, now live in the mirror.
            self._mirror.delete([key for key in expired if key != entry.key])

    def _restore(self, key: str, now: float) -> None:
        """Put back in the mirror what the file holds for ``key`` (after a rollback)."""
        try:
            self._refresh(self._db(now), [_sql(key)], now)
        except Exception:  # the file is failing: better no entry than a wrong one
            logger.debug("sqlite cache %r: key %r not restored", str(self.path), key)
            self._mirror.delete([key])

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
                "delete_scope", lambda db: _delete_where(db, "scope = ?", _sql(scope))
            )
            self._mirror.delete_scope(scope)
            return int(n)

    def delete_namespace(self, namespace: str) -> int:
        with self._lock:
            n = self._transaction(
                "delete_namespace", lambda db: _delete_where(db, "namespace = ?", _sql(namespace))
            )
            self._mirror.delete_namespace(namespace)
            return int(n)

    def clear(self) -> None:
        with self._lock:
            self._transaction("clear", _clear)
            self._mirror.clear()

    def stats(self) -> BackendStats:
        with self._lock:
            self._ready(None)
            return self._mirror.stats()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._mirror.clear()
                self._seq = 0
                self._data_version = None

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


class _Refused(Exception):
    """The mirror refused a put inside the transaction; carries its error."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@contextlib.contextmanager
def _read_snapshot(db: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: the rows read inside it are of one commit."""
    db.execute("BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _data_version(db: sqlite3.Connection) -> int:
    """Changes only when another connection commits to the file."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])


def _log_end(db: sqlite3.Connection) -> int:
    """The last sequence number in the change log (0 when it is empty)."""
    last = db.execute("SELECT max(seq) FROM costopt_cache_changes").fetchone()[0]
    return 0 if last is None else int(last)


def _newest(db: sqlite3.Connection) -> float:
    """The newest ``created_at`` in the file: a clock the cache has passed."""
    newest = db.execute("SELECT max(created_at) FROM costopt_cache").fetchone()[0]
    return -math.inf if newest is None else float(newest)


def _clear(db: sqlite3.Connection) -> None:
    """Delete every row; the log keeps one ``clear`` row (its older rows are moot)."""
    db.execute("DELETE FROM costopt_cache")
    db.execute("DELETE FROM costopt_cache_changes")
    db.execute("INSERT INTO costopt_cache_changes (key, op) VALUES (NULL, 'clear')")


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


def _chunks(items: Sequence[_T], size: int = _DELETE_CHUNK) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _delete_keys(db: sqlite3.Connection, keys: Sequence[str]) -> int:
    """Delete ``keys`` in chunks, logging each removed one (the caller holds the
    transaction); rows deleted."""
    n = 0
    for chunk in _chunks(keys):
        where = f"key IN ({','.join('?' * len(chunk))})"
        params = [_sql(key) for key in chunk]
        db.execute(_LOG_DELETED + where, params)
        n += db.execute(f"DELETE FROM costopt_cache WHERE {where}", params).rowcount
    return n


def _delete_where(db: sqlite3.Connection, where: str, param: str | bytes) -> int:
    """Delete the rows matching ``where``, logging each (the caller holds the transaction)."""
    db.execute(_LOG_DELETED + where, (param,))
    return int(db.execute(f"DELETE FROM costopt_cache WHERE {where}", (param,)).rowcount)
