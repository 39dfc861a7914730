"""What only the SQLite backend can get wrong: what a restart loads, purging, big deletes.

The shared contract (``test_local_backends_contract.py``) covers the behaviour all
backends share; these tests open, close and reopen the file, look at its rows,
and lower SQLite's limits on the backend's own connection.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from costopt_core.cache import SQLiteCacheBackend
from costopt_core.errors import CacheBackendError
from tests.contract.backend_contract import NOW, assert_same_entry, make_entry, vec


def _rows(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT key FROM costopt_cache")}
    finally:
        conn.close()


def _keys(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [e.key for e, _ in hits]


# -- a vector dimension change, and rows that cannot be loaded ---------------------


def test_rows_of_two_vector_dimensions_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    first = SQLiteCacheBackend(path)
    old = make_entry("old", vector=vec(1, 0, 0, 0))
    first.put(old)
    first.close()
    second = SQLiteCacheBackend(path)  # the embedding model changed to 3 dims
    new = make_entry("new", vector=np.asarray([0, 1, 0], np.float32))
    second.put(new)
    assert _rows(path) == {"old", "new"}
    second.close()

    third = SQLiteCacheBackend(path)
    assert_same_entry(third.get("old", now=NOW), old)
    assert_same_entry(third.get("new", now=NOW), new)
    assert _keys(third.search("scope-a", vec(1, 0, 0, 0), 5, now=NOW)) == ["old"]
    assert _keys(third.search("scope-a", np.asarray([0, 1, 0], np.float32), 5, now=NOW)) == ["new"]
    assert third.stats().entries == 2
    third.close()


def test_a_row_that_cannot_be_loaded_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite"
    first = SQLiteCacheBackend(path)
    first.put(make_entry("good", vector=vec(1, 0, 0, 0)))
    first.put(make_entry("bad-json", vector=vec(0, 1, 0, 0)))
    first.put(make_entry("bad-vector", vector=vec(0, 0, 1, 0)))
    first.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE costopt_cache SET response = '{not json' WHERE key = 'bad-json'")
    conn.execute("UPDATE costopt_cache SET vector = x'' WHERE key = 'bad-vector'")
    conn.commit()
    conn.close()

    with caplog.at_level(logging.WARNING, logger="costopt_core.cache.sqlite_backend"):
        second = SQLiteCacheBackend(path)
        entry = second.get("good", now=NOW)
    assert entry is not None and entry.response.text == "answer for good"
    assert second.get("bad-json", now=NOW) is None
    assert second.get("bad-vector", now=NOW) is None
    assert second.stats().entries == 1
    [record] = [r for r in caplog.records if "cannot be loaded" in r.getMessage()]
    assert "2 row(s)" in record.getMessage()
    assert "'bad-json'" in record.getMessage() and "'bad-vector'" in record.getMessage()
    second.put(make_entry("later", vector=vec(0, 0, 0, 1)))  # still writable
    assert second.get("later", now=NOW) is not None
    second.close()


def test_a_put_the_mirror_refuses_is_undone_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    backend = SQLiteCacheBackend(path)
    backend.put(make_entry("kept", vector=vec(1, 0, 0, 0)))
    with pytest.raises(CacheBackendError, match="undone"):
        backend.put(make_entry("bad", vector=np.zeros(0, np.float32)))
    assert backend.get("bad", now=NOW) is None
    assert _rows(path) == {"kept"}
    backend.close()
    assert SQLiteCacheBackend(path).stats().entries == 1


# -- expired rows ------------------------------------------------------------------


def _store_live_and_expired(path: Path) -> None:
    backend = SQLiteCacheBackend(path, max_entries=10)
    backend.put(make_entry("live", vector=vec(1, 0, 0, 0), created_at=1000.0))
    backend.put(make_entry("ttl-far", vector=vec(0, 0, 1, 0), created_at=1001, expires_at=5000))
    for i in range(3):
        backend.put(
            make_entry(f"short-{i}", vector=vec(0, 1, 0, i), created_at=1001, expires_at=1011)
        )
    backend.close()


def test_a_restart_loads_only_live_rows_and_deletes_the_expired(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    _store_live_and_expired(path)
    assert len(_rows(path)) == 5
    # The mirror holds two entries: the three expired rows must not push out the live ones.
    backend = SQLiteCacheBackend(path, max_entries=2)
    live = backend.get("live", now=1100.0)
    assert live is not None and live.response.text == "answer for live"
    assert backend.get("ttl-far", now=1100.0) is not None
    assert backend.stats().entries == 2
    assert _rows(path) == {"live", "ttl-far"}
    backend.close()


def test_a_restart_without_a_clock_drops_what_expired_before_the_newest_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite"
    _store_live_and_expired(path)
    backend = SQLiteCacheBackend(path)
    backend.put(make_entry("newest", vector=None, created_at=1050.0))  # clock moved on
    backend.close()
    reopened = SQLiteCacheBackend(path)
    # stats() knows no time: the newest created_at (1050) is a safe "now".
    assert reopened.stats().entries == 3
    assert _rows(path) == {"live", "ttl-far", "newest"}
    reopened.close()


def test_puts_purge_expired_rows_at_most_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    eager = SQLiteCacheBackend(path, purge_interval_s=0)
    eager.put(make_entry("short", vector=vec(1, 0, 0, 0), created_at=1000, expires_at=1010))
    eager.put(make_entry("live", vector=vec(0, 1, 0, 0), created_at=1005))
    assert _rows(path) == {"short", "live"}  # not expired yet at 1005
    eager.put(make_entry("later", vector=vec(0, 0, 1, 0), created_at=1010))
    assert _rows(path) == {"live", "later"}  # expiry is inclusive
    assert eager.stats().entries == 2
    eager.close()

    lazy = SQLiteCacheBackend(path, purge_interval_s=3600)
    lazy.put(make_entry("short-2", vector=vec(1, 0, 0, 0), created_at=1010, expires_at=1020))
    lazy.put(make_entry("after", vector=vec(0, 0, 0, 1), created_at=1100))
    assert "short-2" in _rows(path)  # the open purged; the next purge is an hour away
    assert lazy.get("short-2", now=1100) is None
    lazy.close()


# -- deletions larger than SQLite's bound-parameter limit --------------------------

N_MANY = 1200  # more keys than 999, the smallest bound-parameter limit of any SQLite build


def _many(tmp_path: Path) -> SQLiteCacheBackend:
    backend = SQLiteCacheBackend(tmp_path / "c.sqlite")
    backend._db().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    for i in range(N_MANY):
        backend.put(
            make_entry(
                f"k{i}",
                scope=f"scope-{i % 2}",
                namespace=f"ns-{i % 3}",
                tags=("prices",),
                vector=vec(1, 0, 0, float(i)),
            )
        )
    backend.put(make_entry("other", scope="scope-x", namespace="ns-x", vector=vec(0, 1, 0, 0)))
    return backend


def test_delete_tag_of_more_keys_than_the_parameter_limit(tmp_path: Path) -> None:
    backend = _many(tmp_path)
    assert backend.delete_tag("prices") == N_MANY
    assert backend.get("k7", now=NOW) is None
    assert backend.stats().entries == 1
    assert _rows(backend.path) == {"other"}
    backend.close()


def test_delete_of_more_keys_than_the_parameter_limit(tmp_path: Path) -> None:
    backend = _many(tmp_path)
    keys = [f"k{i}" for i in range(N_MANY)] + ["missing", "k0"]
    assert backend.delete(keys) == N_MANY
    assert backend.search("scope-0", vec(1, 0, 0, 0), 5, now=NOW) == []
    assert _rows(backend.path) == {"other"}
    backend.close()


def test_delete_scope_and_namespace_of_more_keys_than_the_parameter_limit(
    tmp_path: Path,
) -> None:
    backend = _many(tmp_path)
    assert backend.delete_scope("scope-0") == N_MANY // 2
    assert backend.search("scope-0", vec(1, 0, 0, 0), 5, now=NOW) == []
    assert backend.delete_namespace("ns-1") == N_MANY // 6  # odd i with i % 3 == 1
    assert backend.stats().entries == N_MANY // 2 - N_MANY // 6 + 1
    assert len(_rows(backend.path)) == backend.stats().entries
    backend.close()


def test_a_failed_big_delete_deletes_nothing(tmp_path: Path) -> None:
    backend = _many(tmp_path)
    # Fail on a row of the last chunk: the chunks before it must be rolled back.
    backend._db().execute(
        "CREATE TRIGGER refuse BEFORE DELETE ON costopt_cache WHEN old.key = 'k1150' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    with pytest.raises(CacheBackendError, match="delete_tag failed"):
        backend.delete_tag("prices")
    assert len(_rows(backend.path)) == N_MANY + 1
    assert backend.stats().entries == N_MANY + 1
    assert backend.get("k3", now=NOW) is not None
    backend.close()


# -- a refused replacement ---------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [np.ones((1, 4), np.float32), np.zeros(0, np.float32), vec(1, float("nan"), 0, 0)],
    ids=["2-d", "empty", "nan"],
)
def test_a_refused_replacement_keeps_the_older_entry(tmp_path: Path, bad: np.ndarray) -> None:  # type: ignore[type-arg]
    path = tmp_path / "c.sqlite"
    backend = SQLiteCacheBackend(path)
    backend.put(make_entry("k", vector=vec(1, 0, 0, 0), text="GOOD"))
    with pytest.raises(CacheBackendError, match="undone"):
        backend.put(make_entry("k", vector=bad, text="BAD"))
    got = backend.get("k", now=NOW)
    assert got is not None and got.response.text == "GOOD"
    assert _keys(backend.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW)) == ["k"]
    assert _rows(path) == {"k"}
    backend.close()
    reopened = SQLiteCacheBackend(path)
    got = reopened.get("k", now=NOW)
    assert got is not None and got.response.text == "GOOD"
    reopened.close()


def test_a_refused_async_replacement_keeps_the_older_entry(tmp_path: Path) -> None:
    import asyncio

    backend = SQLiteCacheBackend(tmp_path / "c.sqlite")
    backend.put(make_entry("k", vector=vec(1, 0, 0, 0), text="GOOD"))
    with pytest.raises(CacheBackendError, match="undone"):
        asyncio.run(backend.aput(make_entry("k", vector=np.ones((2, 2), np.float32))))
    got = asyncio.run(backend.aget("k", now=NOW))
    assert got is not None and got.response.text == "GOOD"
    backend.close()


def test_a_put_replacing_an_expired_row_survives_its_own_purge(tmp_path: Path) -> None:
    backend = SQLiteCacheBackend(tmp_path / "c.sqlite", purge_interval_s=0)
    backend.put(make_entry("k", vector=vec(1, 0, 0, 0), created_at=1000, expires_at=1010))
    backend.put(make_entry("k", vector=vec(0, 1, 0, 0), created_at=1020, text="fresh"))
    got = backend.get("k", now=1030)
    assert got is not None and got.response.text == "fresh"
    assert backend.stats().entries == 1
    backend.close()


def test_a_put_failing_after_the_mirror_took_it_keeps_the_older_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from costopt_core.cache import sqlite_backend

    backend = SQLiteCacheBackend(tmp_path / "c.sqlite")
    backend.put(make_entry("k", vector=vec(1, 0, 0, 0), text="GOOD"))

    def failing(db: sqlite3.Connection) -> int:  # runs after the mirror put, before COMMIT
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_backend, "_log_end", failing)
    with pytest.raises(CacheBackendError, match="put failed"):
        backend.put(make_entry("k", vector=vec(0, 1, 0, 0), text="NEW"))
    monkeypatch.undo()
    got = backend.get("k", now=NOW)
    assert got is not None and got.response.text == "GOOD"
    [(hit, sim)] = backend.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW)
    assert hit.key == "k" and sim == pytest.approx(1.0)
    assert backend.stats().entries == 1
    backend.close()
