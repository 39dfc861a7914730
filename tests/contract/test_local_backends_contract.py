"""The backend contract, run against the in-process and SQLite backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costopt_core.cache import MemoryCacheBackend, SQLiteCacheBackend
from costopt_core.cache.backend import CacheBackend
from tests.contract.backend_contract import (
    CacheBackendContract,
    assert_same_entry,
    make_entry,
    vec,
)


class TestMemoryBackendContract(CacheBackendContract):
    def make_backend(self) -> CacheBackend:
        return MemoryCacheBackend()


class TestMemoryBackendWithHNSWContract(CacheBackendContract):
    """The same contract once every scope has moved to the HNSW index."""

    def make_backend(self) -> CacheBackend:
        return MemoryCacheBackend(hnsw_threshold=0)


class TestSQLiteBackendContract(CacheBackendContract):
    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path: Path) -> None:
        self._path = tmp_path / "cache.sqlite"

    def make_backend(self) -> CacheBackend:
        return SQLiteCacheBackend(self._path)


def test_memory_backend_is_bounded_lru() -> None:
    b = MemoryCacheBackend(max_entries=2)
    for k in ("a", "b"):
        b.put(make_entry(k, vector=vec(1, 0, 0, 0)))
    assert b.get("a", now=1000.0) is not None  # a is now more recent than b
    b.put(make_entry("c", vector=vec(0, 1, 0, 0)))
    assert b.get("b", now=1000.0) is None
    assert b.stats().entries == 2


def test_sqlite_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    first = SQLiteCacheBackend(path)
    first.put(make_entry("k1", vector=vec(1, 0, 0, 0), tags=("doc:1",)))
    first.close()
    second = SQLiteCacheBackend(path)
    got = second.get("k1", now=1000.0)
    assert got is not None and got.tags == ("doc:1",)
    [(entry, sim)] = second.search("scope-a", vec(1, 0, 0, 0), 1, now=1000.0)
    assert entry.key == "k1" and sim == pytest.approx(1.0)


def test_sqlite_keeps_lone_surrogates_across_a_restart(tmp_path: Path) -> None:
    lone = json.loads('"q \\udc00"')  # a JSON body can carry one; strict UTF-8 refuses it
    path = tmp_path / "c.sqlite"
    first = SQLiteCacheBackend(path)
    entry = make_entry("k" + lone, scope="s" + lone, prompt=lone, vector=vec(1, 0, 0, 0))
    first.put(entry)
    first.close()
    second = SQLiteCacheBackend(path)
    assert_same_entry(second.get(entry.key, now=1000.0), entry)
    [(hit, _)] = second.search("s" + lone, vec(1, 0, 0, 0), 1, now=1000.0)
    assert hit.key == entry.key


def test_sqlite_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    from costopt_core.errors import CacheBackendError

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        b = SQLiteCacheBackend(ro / "sub" / "c.sqlite")
        with pytest.raises(CacheBackendError, match="cannot open the sqlite cache"):
            b.get("x", now=1.0)
    finally:
        ro.chmod(0o700)
