"""A full disk and a read-only file under the SQLite cache and the batch queue.

The faults are real where the machine allows it: as root the test mounts a tiny
``tmpfs`` (filled up with a padding file for "disk full", remounted read-only
for "read-only"). Without the right to mount, "read-only" is ``chmod`` (which
binds a non-root user) and "disk full" is ``PRAGMA max_page_count`` on the
backend's own connection, which SQLite reports with the same SQLITE_FULL error.

What must hold: a typed ``CostOptError`` whose message says what failed and
what to do; the cache degrades to a miss without failing the user's call; and
every entry or request stored before the fault is intact afterwards (reopened
from the file, ``PRAGMA integrity_check`` clean).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from costopt_core import BatchError, CostOptError, Message
from costopt_core.batch import BatchQueue, BatchRequest
from costopt_core.cache import SemanticCache
from costopt_core.cache.sqlite_backend import SQLiteCacheBackend
from costopt_core.errors import CacheBackendError
from costopt_core.testing import FakeEmbedder
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.testing import ScriptedChatModel
from tests.contract.backend_contract import NOW, make_entry, vec

TMPFS_SIZE = "4m"


class Disk:
    """A folder whose filesystem the test can fill up or make read-only."""

    def __init__(self, path: Path, mounted: bool) -> None:
        self.path = path
        self.mounted = mounted
        self._padding = path / "padding.bin"

    def fill(self, db: sqlite3.Connection | None = None) -> None:
        """No more room: the filesystem is full (or, unmounted, the database is)."""
        if self.mounted:
            chunk = b"\0" * 4096
            fd = os.open(self._padding, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)
            return
        assert db is not None, "without a tmpfs, the connection to cap is needed"
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")

    def free(self, db: sqlite3.Connection | None = None) -> None:
        if self.mounted:
            self._padding.unlink(missing_ok=True)
        elif db is not None:
            db.execute("PRAGMA max_page_count = 1073741823")

    def read_only(self, *files: Path) -> None:
        if self.mounted:
            _run("mount", "-o", f"remount,ro,size={TMPFS_SIZE}", str(self.path))
        else:
            if os.geteuid() == 0:
                pytest.skip("root without the right to mount: no way to make a file read-only")
            for f in files:
                f.chmod(0o444)
            self.path.chmod(0o555)

    def writable(self, *files: Path) -> None:
        if self.mounted:
            _run("mount", "-o", f"remount,rw,size={TMPFS_SIZE}", str(self.path))
        else:
            self.path.chmod(0o755)
            for f in files:
                f.chmod(0o644)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    path = tmp_path / "small-disk"
    path.mkdir()
    mounted = False
    # COSTOPT_TEST_NO_MOUNT=1 runs the fallbacks (as a user without mount rights would).
    if os.geteuid() == 0 and not os.environ.get("COSTOPT_TEST_NO_MOUNT"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _run("mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path))
            mounted = True
    try:
        yield Disk(path, mounted)
    finally:
        if mounted:
            _run("umount", "-l", str(path))
        else:
            path.chmod(0o755)


def _conn(backend: SQLiteCacheBackend | BatchQueue) -> sqlite3.Connection:
    conn = backend._db()  # the backend's own connection: max_page_count is per connection
    return conn


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# -- the SQLite cache --------------------------------------------------------------


def _fill_cache(backend: SQLiteCacheBackend, n: int) -> None:
    for i in range(n):
        backend.put(make_entry(f"old-{i}", vector=vec(1, 0, 0, float(i)), text=f"kept {i}"))


def _big_entry(key: str) -> object:
    # Larger than any free page left, so the write needs new pages.
    return make_entry(key, vector=vec(0, 1, 0, 0), text="x" * 200_000)


def test_a_full_disk_is_a_clear_cache_error_and_stored_entries_survive(disk: Disk) -> None:
    path = disk.path / "cache.db"
    backend = SQLiteCacheBackend(path)
    _fill_cache(backend, 20)
    disk.fill(_conn(backend))

    with pytest.raises(CacheBackendError) as info:
        backend.put(_big_entry("new"))  # type: ignore[arg-type]
    message = str(info.value)
    assert isinstance(info.value, CostOptError)
    assert "put" in message and str(path) in message and "full" in message
    # The failed write is in neither half: not in the file, not in the search mirror.
    assert backend.get("new", now=NOW) is None
    assert [e.key for e, _ in backend.search("scope-a", vec(0, 1, 0, 0), 30, now=NOW)] != []
    assert all(e.key != "new" for e, _ in backend.search("scope-a", vec(0, 1, 0, 0), 30, now=NOW))
    backend.close()

    disk.free()
    assert _integrity(path) == "ok"
    reopened = SQLiteCacheBackend(path)
    for i in range(20):
        entry = reopened.get(f"old-{i}", now=NOW)
        assert entry is not None and entry.response.text == f"kept {i}"
    assert reopened.get("new", now=NOW) is None
    assert reopened.stats().entries == 20
    reopened.put(_big_entry("new"))  # type: ignore[arg-type]  # room again: writes work
    assert reopened.get("new", now=NOW) is not None
    reopened.close()


def _cached_model(backend: SQLiteCacheBackend) -> tuple[CachedChatModel, ScriptedChatModel]:
    cache = SemanticCache(backend, embedder=FakeEmbedder())
    model = ScriptedChatModel.from_texts(["From the model."])
    return CachedChatModel(model=model, semantic_cache=cache), model


def test_a_full_disk_degrades_the_cache_to_a_miss_without_failing_the_call(disk: Disk) -> None:
    path = disk.path / "cache.db"
    backend = SQLiteCacheBackend(path)
    cached, model = _cached_model(backend)
    assert cached.invoke("What is the refund policy?").content == "From the model."
    assert cached.invoke("What is the refund policy?").content == "From the model."
    assert model.script.calls == 1  # the second was a hit
    disk.fill(_conn(backend))

    long_question = "Tell me everything about shipping. " + "Please. " * 30_000
    for _ in range(2):  # the store fails each time: the model answers each time
        assert cached.invoke(long_question).content == "From the model."
    assert model.script.calls == 3
    stats = cached.semantic_cache.stats()
    assert stats.errors >= 2 and stats.stores == 1
    # What was stored before the disk filled is still served.
    assert cached.invoke("What is the refund policy?").content == "From the model."
    assert model.script.calls == 3
    # Room again: the same process stores again, no restart needed.
    disk.free(_conn(backend))
    assert cached.invoke("How long does shipping take?").content == "From the model."
    assert cached.semantic_cache.stats().stores == 2
    backend.close()
    assert _integrity(path) == "ok"
    assert SQLiteCacheBackend(path).stats().entries == 2


def test_a_read_only_cache_file_is_a_clear_error_and_a_miss_for_the_user(disk: Disk) -> None:
    path = disk.path / "cache.db"
    backend = SQLiteCacheBackend(path)
    _fill_cache(backend, 5)
    backend.close()  # checkpoints the WAL into the file
    disk.read_only(path)
    try:
        # An open connection cannot write any more ...
        with pytest.raises(CacheBackendError) as info:
            fresh = SQLiteCacheBackend(path)
            fresh.put(make_entry("new", vector=vec(0, 1, 0, 0)))
        message = str(info.value)
        assert str(path) in message
        assert "writable" in message or "readonly" in message or "read-only" in message
        # ... and the user's call is answered by the model all the same.
        cached, model = _cached_model(SQLiteCacheBackend(path))
        assert cached.invoke("What is the refund policy?").content == "From the model."
        assert model.script.calls == 1
    finally:
        disk.writable(path)
    assert _integrity(path) == "ok"
    reopened = SQLiteCacheBackend(path)
    assert reopened.stats().entries == 5
    assert reopened.get("old-3", now=NOW) is not None
    reopened.close()


# -- the batch queue ---------------------------------------------------------------


def _requests(prefix: str, n: int, size: int = 100) -> list[BatchRequest]:
    return [
        BatchRequest(
            id=f"{prefix}-{i}",
            model="gpt-4o-mini",
            messages=(Message("user", f"question {i} " + "y" * size),),
        )
        for i in range(n)
    ]


def test_a_full_disk_fails_an_enqueue_whole_and_keeps_the_queue_intact(disk: Disk) -> None:
    path = disk.path / "queue.db"
    queue = BatchQueue(path)
    assert queue.enqueue("job", _requests("old", 50), now=NOW) == 50
    disk.fill(_conn(queue))

    with pytest.raises(BatchError) as info:
        queue.enqueue("job", _requests("new", 50, size=2_000), now=NOW)
    message = str(info.value)
    assert "enqueue" in message and str(path) in message
    assert "full" in message and "disk" in message  # what failed, and what to check
    # All or none: not one of the failed batch is queued; the earlier ones all are.
    assert queue.counts("job")["queued"] == 50
    assert {r.request.id for r in queue.queued("job")} == {f"old-{i}" for i in range(50)}
    queue.close()

    disk.free()
    assert _integrity(path) == "ok"
    reopened = BatchQueue(path)
    assert reopened.counts("job")["queued"] == 50
    assert reopened.enqueue("job", _requests("new", 50, size=2_000), now=NOW) == 50
    assert reopened.counts("job")["queued"] == 100
    reopened.close()


def test_a_read_only_queue_is_a_clear_error_and_its_requests_are_intact(disk: Disk) -> None:
    path = disk.path / "queue.db"
    queue = BatchQueue(path)
    queue.enqueue("job", _requests("old", 10), now=NOW)
    queue.close()
    disk.read_only(path)
    try:
        with pytest.raises(CostOptError) as info:
            BatchQueue(path).enqueue("job", _requests("new", 1), now=NOW)
        message = str(info.value)
        assert str(path) in message and "writable" in message
    finally:
        disk.writable(path)
    assert _integrity(path) == "ok"
    reopened = BatchQueue(path)
    assert {r.request.id for r in reopened.queued("job")} == {f"old-{i}" for i in range(10)}
    reopened.close()


def test_a_queue_whose_disk_fills_mid_run_reports_it_on_mark_submitted(disk: Disk) -> None:
    # Between submit and collect: the provider has the batch, the queue cannot record
    # it. The error must say so (the caller retries) and leave the requests queued.
    path = disk.path / "queue.db"
    queue = BatchQueue(path)
    queue.enqueue("job", _requests("r", 100, size=1_000), now=NOW)
    seqs = [r.seq for r in queue.queued("job")]
    disk.fill(_conn(queue))
    remote = "batch_" + uuid.uuid4().hex + "x" * 200  # every row gets it: new pages
    with pytest.raises(BatchError, match="full"):
        queue.mark_submitted("job", "openai", remote, seqs, now=NOW)
    assert queue.counts("job")["queued"] == 100
    disk.free(_conn(queue))
    queue.mark_submitted("job", "openai", remote, seqs, now=NOW)
    assert queue.counts("job")["submitted"] == 100
    queue.close()
    assert _integrity(path) == "ok"
