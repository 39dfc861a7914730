"""The durable batch queue: requests, their remote batches and results in one SQLite file.

A request is ``queued`` until a job submits it: ``submitting`` while the
provider call is in flight (under a submission token recorded before the
call), ``submitted`` (with the provider and remote batch id) once the
provider answered, then ``done``, ``failed`` or ``canceled`` once its batch
is collected, or ``queued`` again for another attempt. Every change is one
transaction, so a process that dies loses nothing it was told was queued, a
restarted process finds the batches it had submitted, and one killed inside
the provider call leaves a submission record that says which requests may
already be at the provider, under which token.

Durability: the file is in WAL mode. With the default ``synchronous=NORMAL``
a committed write survives the process being killed (the commit is in the
WAL file when ``enqueue`` returns) but may be lost on power loss or an OS
crash; ``power_safe=True`` (``synchronous=FULL``) also survives those, at
an fsync per commit.

Collecting a batch claims it in the same transaction that stores its
results, so its results are handed out (and priced) once, even when two
processes collect at the same time.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from costopt_core.batch.provider import BatchRequest, BatchResult
from costopt_core.errors import BatchError, ConfigurationError
from costopt_core.types import Message, Usage

__all__ = [
    "BatchQueue",
    "OpenBatch",
    "PendingSubmission",
    "QueuedRequest",
    "RequestState",
    "StoredResult",
    "request_from_json",
    "request_to_json",
    "result_from_json",
    "result_to_json",
]

#: Where a queued request is.
RequestState = Literal["queued", "submitting", "submitted", "done", "failed", "canceled"]
STATES: tuple[RequestState, ...] = (
    "queued",
    "submitting",
    "submitted",
    "done",
    "failed",
    "canceled",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS costopt_batch_jobs (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    canceled INTEGER NOT NULL DEFAULT 0,
    wire_key TEXT,
    kind TEXT
);
CREATE TABLE IF NOT EXISTS costopt_batch_requests (
    seq INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    id TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    provider TEXT,
    batch_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    enqueued_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    submission TEXT,
    UNIQUE (job, id)
);
CREATE INDEX IF NOT EXISTS costopt_batch_requests_state
    ON costopt_batch_requests (job, state, seq);
CREATE INDEX IF NOT EXISTS costopt_batch_requests_batch
    ON costopt_batch_requests (provider, batch_id);
CREATE TABLE IF NOT EXISTS costopt_batch_batches (
    provider TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    job TEXT NOT NULL,
    state TEXT NOT NULL,
    requests INTEGER NOT NULL,
    submitted_at REAL NOT NULL,
    collected_at REAL,
    recovered INTEGER NOT NULL DEFAULT 0,
    keyed INTEGER,
    PRIMARY KEY (provider, remote_id)
);
CREATE TABLE IF NOT EXISTS costopt_batch_submissions (
    token TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    provider TEXT NOT NULL,
    owner_host TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    keyed INTEGER
);
"""

#: Columns added after the first release, for files an older version created.
_ADDED_COLUMNS = (
    ("costopt_batch_requests", "submission", "TEXT"),
    ("costopt_batch_batches", "recovered", "INTEGER NOT NULL DEFAULT 0"),
    ("costopt_batch_jobs", "wire_key", "TEXT"),
    ("costopt_batch_jobs", "kind", "TEXT"),
    # 1: the submission sent the job's keyed ids, 0: plain ids, NULL: made by a
    # version that did not say (before jobs keyed their ids: plain ids possible).
    ("costopt_batch_submissions", "keyed", "INTEGER"),
    ("costopt_batch_batches", "keyed", "INTEGER"),
)


@dataclass(frozen=True, slots=True)
class QueuedRequest:
    """A request waiting in the queue (``seq`` is its place in enqueue order)."""

    seq: int
    request: BatchRequest
    attempts: int
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class OpenBatch:
    """A submitted remote batch whose results have not been collected yet."""

    provider: str
    remote_id: str
    job: str
    requests: int
    submitted_at: float
    #: found at the provider by its submission token after the submitting
    #: process died, rather than returned by the submit call.
    recovered: bool = False
    #: whether the submit call sent the job's keyed ids (``job_custom_id``):
    #: ``None`` for a batch an older version submitted (it may carry plain ids).
    keyed: bool | None = None


@dataclass(frozen=True, slots=True)
class PendingSubmission:
    """A submit call that started and was not recorded as answered (or given up) yet.

    ``owner_host`` / ``owner_pid`` name the process making the call; the
    requests are ``submitting`` under ``token`` until it finishes.
    """

    token: str
    job: str
    provider: str
    owner_host: str
    owner_pid: int
    started_at: float
    request_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoredResult:
    """One request of a job as stored: its state, attempts and last result."""

    id: str
    state: RequestState
    attempts: int
    request: BatchRequest
    result: BatchResult | None


# -- serialization --------------------------------------------------------------
def _message_to_dict(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name is not None:
        d["name"] = m.name
    if m.tool_calls:
        d["tool_calls"] = list(m.tool_calls)
    if m.tool_call_id is not None:
        d["tool_call_id"] = m.tool_call_id
    return d


def request_to_json(r: BatchRequest) -> str:
    """A request as the JSON stored in the queue."""
    return json.dumps(
        {
            "id": r.id,
            "model": r.model,
            "messages": [_message_to_dict(m) for m in r.messages],
            "params": dict(r.params),
            "tenant": r.tenant,
        },
        separators=(",", ":"),
    )


def request_from_json(text: str) -> BatchRequest:
    """The inverse of :func:`request_to_json`."""
    d = json.loads(text)
    return BatchRequest(
        id=d["id"],
        model=d["model"],
        messages=tuple(
            Message(
                role=m["role"],
                content=m["content"],
                name=m.get("name"),
                tool_calls=tuple(m.get("tool_calls", ())),
                tool_call_id=m.get("tool_call_id"),
            )
            for m in d["messages"]
        ),
        params=d.get("params") or {},
        tenant=d.get("tenant"),
    )


def result_to_json(r: BatchResult) -> str:
    """A result as the JSON stored in the queue."""
    return json.dumps(
        {
            "id": r.id,
            "status": r.status,
            "text": r.text,
            "usage": None if r.usage is None else r.usage.to_dict(),
            "model": r.model,
            "error": r.error,
            "retryable": r.retryable,
            "raw": None if r.raw is None else dict(r.raw),
        },
        separators=(",", ":"),
        default=str,
    )


def result_from_json(text: str) -> BatchResult:
    """The inverse of :func:`result_to_json`."""
    d = json.loads(text)
    usage = d.get("usage")
    return BatchResult(
        id=d["id"],
        status=d["status"],
        text=d.get("text"),
        usage=None if usage is None else Usage.from_dict(usage),
        model=d.get("model"),
        error=d.get("error"),
        retryable=bool(d.get("retryable", False)),
        raw=d.get("raw"),
    )


class BatchQueue:
    """Requests of batch jobs, durable in one SQLite file; thread-safe.

    The file is opened on first use (the constructor does no I/O). Several
    jobs (by name) can share one file; request ids are unique within a job.

    Args:
        path: the database file (created if missing), or ``":memory:"`` for a
            queue that lives and dies with this object (tests, throwaway jobs).
        power_safe: fsync every commit (``synchronous=FULL``), so committed
            requests also survive power loss; by default they survive the
            process being killed, not the machine losing power.
        timeout_s: how long to wait for another process holding the write lock.
    """

    def __init__(
        self, path: str | Path, *, power_safe: bool = False, timeout_s: float = 30.0
    ) -> None:
        if timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be > 0, got {timeout_s}")
        self.path = path if path == ":memory:" else Path(path)
        self.power_safe = power_safe
        self.timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"BatchQueue(path={str(self.path)!r})"

    # -- connection ---------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if isinstance(self.path, Path) and not self.path.parent.is_dir():
            raise ConfigurationError(
                f"batch queue path {str(self.path)!r}: folder {str(self.path.parent)!r} does "
                "not exist; create it or pass another path"
            )
        try:
            conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=self.timeout_s
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.power_safe else 'NORMAL'}")
            conn.executescript(_SCHEMA)
            _add_missing_columns(conn)
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"cannot open the batch queue at {str(self.path)!r}: {exc}; check the file and "
                "its folder are writable (a read-only queue cannot record submissions)"
            ) from exc
        self._conn = conn
        return conn

    @contextlib.contextmanager
    def _tx(self, op: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back and raised as ``BatchError`` on failure."""
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except sqlite3.IntegrityError:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise BatchError(
                    f"batch queue {op} failed at {str(self.path)!r}: {exc}; check the file is "
                    "writable and the disk not full"
                ) from exc
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._lock:
            db = self._db()
            try:
                return db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise BatchError(f"batch queue read failed at {str(self.path)!r}: {exc}") from exc

    def close(self) -> None:
        """Close the file (it is opened again on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- writing ------------------------------------------------------------
    def enqueue(
        self,
        job: str,
        requests: Iterable[BatchRequest],
        *,
        now: float,
        refuse_canceled: bool = False,
    ) -> int:
        """Add requests to ``job``, all or none, committed before returning.

        With ``refuse_canceled`` (as ``BatchJob.enqueue`` asks) a canceled
        job takes none: a canceled job submits nothing again, so they would
        never run.

        Returns:
            How many requests were queued.

        Raises:
            BatchError: an id is already in the job, or the job was canceled
                and ``refuse_canceled`` is set (nothing is queued), or the file
                cannot be written.
        """
        rows = [
            (job, r.id, request_to_json(r), "queued", now, now)
            for r in requests  # serialized before the lock: the write stays short
        ]
        if not rows:
            return 0
        try:
            with self._tx("enqueue") as db:
                db.execute(
                    "INSERT OR IGNORE INTO costopt_batch_jobs (name, created_at, wire_key) "
                    "VALUES (?, ?, ?)",
                    (job, now, _new_wire_key()),
                )
                db.executemany(
                    "INSERT INTO costopt_batch_requests "
                    "(job, id, request, state, enqueued_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                # After the ids are checked (a duplicate is named first); rolled back.
                canceled = (
                    refuse_canceled
                    and db.execute(
                        "SELECT canceled FROM costopt_batch_jobs WHERE name = ?", (job,)
                    ).fetchone()
                )
                if canceled and canceled[0]:
                    raise BatchError(
                        f"batch job {job!r} was canceled, and a canceled job takes no new "
                        f"requests (nothing was queued): enqueue them under another job name, "
                        f"or delete the canceled job first (BatchQueue.delete_job({job!r})) "
                        "to use its name again"
                    )
        except sqlite3.IntegrityError as exc:
            ids = [r[1] for r in rows]
            dup = _first_duplicate(ids) or self._first_existing(job, ids)
            raise BatchError(
                f"request id {dup!r} is already in batch job {job!r}; nothing was queued. "
                "Give each request of a job its own id"
            ) from exc
        return len(rows)

    def add_job(self, job: str, *, now: float, kind: str | None = None) -> bool:
        """Make ``job`` (with what its handles give back, ``kind``); False if it exists.

        A job is made before its first request is queued, so one reattaches by
        name with nothing submitted yet, and its kind (an adapter's ``chat`` or
        ``complete``) comes back with it whatever it was named.
        """
        with self._tx("add_job") as db:
            made = db.execute(
                "INSERT OR IGNORE INTO costopt_batch_jobs (name, created_at, wire_key, kind) "
                "VALUES (?, ?, ?, ?)",
                (job, now, _new_wire_key(), kind),
            )
            return made.rowcount == 1

    def job_kind(self, job: str) -> str | None:
        """The kind ``job`` was made with (:meth:`add_job`), if any."""
        rows = self._read("SELECT kind FROM costopt_batch_jobs WHERE name = ?", (job,))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def _first_existing(self, job: str, ids: Sequence[str]) -> str | None:
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT id FROM costopt_batch_requests WHERE job = ? AND id IN ({marks}) LIMIT 1",
                [job, *chunk],
            )
            if rows:
                return str(rows[0][0])
        return None

    def job_key(self, job: str, *, now: float) -> str:
        """``job``'s random key, the same in every process that opens this file.

        Made with the job (or on first use, for a job an older version
        made). The job puts it in front of its request ids on the wire, so a
        batch found by lookup that answers another job's requests never
        passes as this job's, even when both use the same ids.
        """
        rows = self._read("SELECT wire_key FROM costopt_batch_jobs WHERE name = ?", (job,))
        if rows and rows[0][0]:
            return str(rows[0][0])
        with self._tx("job_key") as db:
            db.execute(
                "INSERT OR IGNORE INTO costopt_batch_jobs (name, created_at) VALUES (?, ?)",
                (job, now),
            )
            # Another process may have set one in between: keep the first.
            db.execute(
                "UPDATE costopt_batch_jobs SET wire_key = ? WHERE name = ? AND wire_key IS NULL",
                (_new_wire_key(), job),
            )
            (key,) = db.execute(
                "SELECT wire_key FROM costopt_batch_jobs WHERE name = ?", (job,)
            ).fetchone()
        return str(key)

    def begin_submission(
        self,
        job: str,
        provider: str,
        token: str,
        seqs: Sequence[int],
        *,
        now: float,
        owner: tuple[str, int],
        keyed: bool | None = None,
    ) -> int:
        """Record that queued requests are about to be sent to ``provider`` under ``token``.

        ``keyed`` says whether the call sends the job's keyed ids
        (``job_custom_id``, as a ``BatchJob`` does for a provider that asks for
        them): a batch found for it by lookup must then answer those ids.
        ``None`` (not said, as by a version before keyed ids) lets it answer
        the plain ids too.

        Committed before the provider call, so a process killed inside it
        leaves a :class:`PendingSubmission` a later process can resolve.

        Returns:
            How many requests moved to ``submitting`` (queued ones only).
        """
        with self._tx("begin_submission") as db:
            db.execute(
                "INSERT INTO costopt_batch_submissions "
                "(token, job, provider, owner_host, owner_pid, started_at, keyed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    token,
                    job,
                    provider,
                    owner[0],
                    owner[1],
                    now,
                    None if keyed is None else int(keyed),
                ),
            )
            cur = db.executemany(
                "UPDATE costopt_batch_requests SET state = 'submitting', submission = ?, "
                "updated_at = ? WHERE seq = ? AND job = ? AND state = 'queued'",
                [(token, now, seq, job) for seq in seqs],
            )
            return int(cur.rowcount)

    def abort_submission(self, token: str, *, now: float) -> int:
        """Put a submission's requests back in the queue (the provider has not got them).

        In a canceled job they end ``canceled`` instead: nothing would ever
        submit them again, so left ``queued`` they would never finish.

        Returns:
            How many requests were queued again or canceled (0 if the
            submission was already resolved).
        """
        with self._tx("abort_submission") as db:
            cur = db.execute(
                "UPDATE costopt_batch_requests SET submission = NULL, updated_at = ?, "
                "state = CASE WHEN EXISTS (SELECT 1 FROM costopt_batch_jobs j "
                "WHERE j.name = costopt_batch_requests.job AND j.canceled = 1) "
                "THEN 'canceled' ELSE 'queued' END "
                "WHERE submission = ? AND state = 'submitting'",
                (now, token),
            )
            db.execute("DELETE FROM costopt_batch_submissions WHERE token = ?", (token,))
            return int(cur.rowcount)

    def mark_submitted(
        self,
        job: str,
        provider: str,
        remote_id: str,
        seqs: Sequence[int] = (),
        *,
        now: float,
        submission: str | None = None,
        recovered: bool = False,
    ) -> int:
        """Record a submitted remote batch and move its requests to ``submitted``.

        The requests are those of ``submission`` (``submitting`` under that
        token) when given, else the queued ones of ``seqs``.

        Returns:
            How many requests the batch carries; 0 when ``submission`` was
            already resolved by another process (nothing is changed then).

        Raises:
            BatchError: the provider reused a batch id this file already holds.
        """
        try:
            with self._tx("mark_submitted") as db:
                keyed: int | None = None
                if submission is not None:
                    row = db.execute(
                        "SELECT keyed FROM costopt_batch_submissions WHERE token = ?",
                        (submission,),
                    ).fetchone()
                    keyed = None if row is None else row[0]
                    gone = db.execute(
                        "DELETE FROM costopt_batch_submissions WHERE token = ?", (submission,)
                    )
                    if gone.rowcount == 0:
                        return 0
                    cur = db.execute(
                        "UPDATE costopt_batch_requests SET state = 'submitted', provider = ?, "
                        "batch_id = ?, submission = NULL, attempts = attempts + 1, "
                        "updated_at = ? WHERE submission = ? AND state = 'submitting'",
                        (provider, remote_id, now, submission),
                    )
                    carried = int(cur.rowcount)
                else:
                    cur = db.executemany(
                        "UPDATE costopt_batch_requests SET state = 'submitted', provider = ?, "
                        "batch_id = ?, attempts = attempts + 1, updated_at = ? "
                        "WHERE seq = ? AND state = 'queued'",
                        [(provider, remote_id, now, seq) for seq in seqs],
                    )
                    carried = int(cur.rowcount)
                db.execute(
                    "INSERT INTO costopt_batch_batches "
                    "(provider, remote_id, job, state, requests, submitted_at, recovered, keyed) "
                    "VALUES (?, ?, ?, 'open', ?, ?, ?, ?)",
                    (provider, remote_id, job, carried, now, int(recovered), keyed),
                )
                return carried
        except sqlite3.IntegrityError as exc:
            raise BatchError(
                f"{provider} returned batch id {remote_id!r}, which this queue already holds; "
                "a provider must return a new id per submitted batch"
            ) from exc

    def finish_requests(
        self,
        job: str,
        outcomes: Mapping[str, tuple[RequestState, BatchResult]],
        *,
        now: float,
        batch: tuple[str, str] | None = None,
    ) -> bool:
        """Store the outcome of requests, claiming their batch in the same transaction.

        Args:
            job: the requests' job.
            outcomes: request id -> (new state, result to store).
            now: the time of the change.
            batch: ``(provider, remote_id)`` of the batch being collected: it
                is marked collected in the same transaction, and if another
                collector got there first nothing is stored.

        Returns:
            False when ``batch`` was already collected (nothing stored).
        """
        with self._tx("store results") as db:
            if batch is not None:
                cur = db.execute(
                    "UPDATE costopt_batch_batches SET state = 'collected', collected_at = ? "
                    "WHERE provider = ? AND remote_id = ? AND state = 'open'",
                    (now, *batch),
                )
                if cur.rowcount == 0:
                    return False
            db.executemany(
                "UPDATE costopt_batch_requests SET state = ?, result = ?, updated_at = ?, "
                "provider = CASE WHEN ? = 'queued' THEN NULL ELSE provider END, "
                "batch_id = CASE WHEN ? = 'queued' THEN NULL ELSE batch_id END "
                "WHERE job = ? AND id = ?",
                [
                    (state, result_to_json(result), now, state, state, job, rid)
                    for rid, (state, result) in outcomes.items()
                ],
            )
        return True

    def cancel(self, job: str, *, now: float) -> int:
        """Mark ``job`` canceled and its queued requests ``canceled``; returns how many."""
        with self._tx("cancel") as db:
            db.execute(
                "INSERT INTO costopt_batch_jobs (name, created_at, canceled, wire_key) "
                "VALUES (?, ?, 1, ?) ON CONFLICT (name) DO UPDATE SET canceled = 1",
                (job, now, _new_wire_key()),
            )
            cur = db.execute(
                "UPDATE costopt_batch_requests SET state = 'canceled', updated_at = ? "
                "WHERE job = ? AND state = 'queued'",
                (now, job),
            )
            return int(cur.rowcount)

    def delete_job(self, job: str) -> int:
        """Forget ``job``: its requests, results and batch records; returns requests removed."""
        with self._tx("delete_job") as db:
            cur = db.execute("DELETE FROM costopt_batch_requests WHERE job = ?", (job,))
            db.execute("DELETE FROM costopt_batch_batches WHERE job = ?", (job,))
            db.execute("DELETE FROM costopt_batch_submissions WHERE job = ?", (job,))
            db.execute("DELETE FROM costopt_batch_jobs WHERE name = ?", (job,))
            return int(cur.rowcount)

    # -- reading ------------------------------------------------------------
    def queued(self, job: str, limit: int | None = None) -> list[QueuedRequest]:
        """Queued requests of ``job`` in enqueue order."""
        rows = self._read(
            "SELECT seq, request, attempts, enqueued_at FROM costopt_batch_requests "
            "WHERE job = ? AND state = 'queued' ORDER BY seq LIMIT ?",
            (job, -1 if limit is None else limit),
        )
        return [QueuedRequest(s, request_from_json(r), a, t) for s, r, a, t in rows]

    def oldest_queued_at(self, job: str) -> float | None:
        """Enqueue time of the oldest queued request of ``job``, if any."""
        rows = self._read(
            "SELECT MIN(enqueued_at) FROM costopt_batch_requests "
            "WHERE job = ? AND state = 'queued'",
            (job,),
        )
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    def pending_submissions(self, job: str) -> list[PendingSubmission]:
        """Submit calls of ``job`` started and not resolved yet, oldest first."""
        rows = self._read(
            "SELECT token, job, provider, owner_host, owner_pid, started_at "
            "FROM costopt_batch_submissions WHERE job = ? ORDER BY started_at, rowid",
            (job,),
        )
        out = []
        for token, j, provider, host, pid, started in rows:
            ids = self._read(
                "SELECT id FROM costopt_batch_requests WHERE submission = ? ORDER BY seq",
                (token,),
            )
            out.append(
                PendingSubmission(
                    token, j, provider, host, int(pid), float(started), tuple(i for (i,) in ids)
                )
            )
        return out

    def batch_ids(self, provider: str, *, since: float) -> frozenset[str]:
        """Remote ids of ``provider``'s batches this file recorded at or after ``since``."""
        rows = self._read(
            "SELECT remote_id FROM costopt_batch_batches WHERE provider = ? AND submitted_at >= ?",
            (provider, since),
        )
        return frozenset(str(r) for (r,) in rows)

    def open_batches(self, job: str | None = None) -> list[OpenBatch]:
        """Submitted batches not collected yet (of ``job``, or of every job)."""
        sql = (
            "SELECT provider, remote_id, job, requests, submitted_at, recovered, keyed "
            "FROM costopt_batch_batches WHERE state = 'open'"
        )
        params: tuple[object, ...] = ()
        if job is not None:
            sql += " AND job = ?"
            params = (job,)
        rows = self._read(sql + " ORDER BY submitted_at, rowid", params)
        return [
            OpenBatch(p, r, j, n, t, bool(rec), None if k is None else bool(k))
            for p, r, j, n, t, rec, k in rows
        ]

    def batch_requests(self, provider: str, remote_id: str) -> list[StoredResult]:
        """The requests a batch carries (still ``submitted`` to it)."""
        rows = self._read(
            "SELECT id, state, attempts, request, result FROM costopt_batch_requests "
            "WHERE provider = ? AND batch_id = ? AND state = 'submitted' ORDER BY seq",
            (provider, remote_id),
        )
        return [_stored(row) for row in rows]

    def counts(self, job: str) -> dict[RequestState, int]:
        """Requests of ``job`` per state (every state listed)."""
        rows = self._read(
            "SELECT state, COUNT(*) FROM costopt_batch_requests WHERE job = ? GROUP BY state",
            (job,),
        )
        out: dict[RequestState, int] = dict.fromkeys(STATES, 0)
        for state, n in rows:
            out[state] = int(n)
        return out

    def stored(self, job: str) -> list[StoredResult]:
        """Every request of ``job`` in enqueue order, with its state and last result."""
        rows = self._read(
            "SELECT id, state, attempts, request, result FROM costopt_batch_requests "
            "WHERE job = ? ORDER BY seq",
            (job,),
        )
        return [_stored(row) for row in rows]

    def is_canceled(self, job: str) -> bool:
        rows = self._read("SELECT canceled FROM costopt_batch_jobs WHERE name = ?", (job,))
        return bool(rows and rows[0][0])

    def jobs(self) -> list[str]:
        """Names of the jobs in this file, oldest first."""
        return [str(r[0]) for r in self._read("SELECT name FROM costopt_batch_jobs ORDER BY rowid")]


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, decl in _ADDED_COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    # After the column exists (an older file gains it above).
    conn.execute(
        "CREATE INDEX IF NOT EXISTS costopt_batch_requests_submission "
        "ON costopt_batch_requests (submission)"
    )


def _stored(row: tuple[Any, ...]) -> StoredResult:
    rid, state, attempts, request, result = row
    return StoredResult(
        id=rid,
        state=state,
        attempts=int(attempts),
        request=request_from_json(request),
        result=None if result is None else result_from_json(result),
    )


def _new_wire_key() -> str:
    # 12 hex digits (48 random bits): short enough to leave 51 characters of a
    # 64-character custom_id to the caller's id.
    return uuid.uuid4().hex[:12]


def _first_duplicate(ids: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            return i
        seen.add(i)
    return None
