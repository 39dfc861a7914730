"""What only the in-process backend can get wrong: its per-dimension indexes and atomic puts."""

from __future__ import annotations

import numpy as np
import pytest

from costopt_core.cache import MemoryCacheBackend
from costopt_core.cache.vector_index import VectorIndex
from costopt_core.errors import CacheBackendError
from tests.contract.backend_contract import NOW, assert_same_entry, make_entry, vec


def _v3(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def test_each_vector_dimension_is_searched_on_its_own() -> None:
    # After a model change both generations stay semantic candidates for queries
    # of their own length, and never for the other's.
    b = MemoryCacheBackend()
    b.put(make_entry("old", vector=vec(1, 0, 0, 0)))
    b.put(make_entry("new", vector=_v3(0, 1, 0)))
    [(hit4, sim4)] = b.search("scope-a", vec(1, 0, 0, 0), 5, now=NOW)
    [(hit3, sim3)] = b.search("scope-a", _v3(0, 1, 0), 5, now=NOW)
    assert (hit4.key, hit3.key) == ("old", "new")
    assert sim4 == pytest.approx(1.0) and sim3 == pytest.approx(1.0)
    assert b.search("scope-a", np.ones(7, np.float32), 5, now=NOW) == []
    assert b.delete(["old"]) == 1
    assert b.search("scope-a", vec(1, 0, 0, 0), 5, now=NOW) == []
    assert [e.key for e, _ in b.search("scope-a", _v3(0, 1, 0), 5, now=NOW)] == ["new"]


def test_a_failed_put_leaves_the_backend_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    b = MemoryCacheBackend()
    old = make_entry("k", vector=vec(1, 0, 0, 0), text="old")
    b.put(old)

    def broken(self: VectorIndex, label: int, vector: np.ndarray) -> None:
        raise RuntimeError("index failure")

    monkeypatch.setattr(VectorIndex, "add", broken)
    with pytest.raises(RuntimeError):
        b.put(make_entry("k", vector=vec(0, 1, 0, 0), text="new"))
    with pytest.raises(RuntimeError):
        b.put(make_entry("other", vector=_v3(1, 0, 0)))
    monkeypatch.undo()

    assert_same_entry(b.get("k", now=NOW), old)
    assert b.get("other", now=NOW) is None
    assert b.stats().entries == 1
    assert b.stats().bytes == old.size_bytes()
    assert [e.key for e, _ in b.search("scope-a", vec(1, 0, 0, 0), 5, now=NOW)] == ["k"]
    assert b.search("scope-a", _v3(1, 0, 0), 5, now=NOW) == []


@pytest.mark.parametrize("bad", [np.zeros(0, np.float32), np.ones((2, 4), np.float32)])
def test_a_malformed_vector_is_a_cache_error_and_stores_nothing(bad: np.ndarray) -> None:
    b = MemoryCacheBackend()
    with pytest.raises(CacheBackendError, match="non-empty 1-D"):
        b.put(make_entry("k", vector=bad))
    assert b.get("k", now=NOW) is None
    assert b.stats().entries == 0
    with pytest.raises(CacheBackendError, match="non-empty 1-D"):
        b.search("scope-a", bad, 3, now=NOW)


def test_a_vector_index_refuses_another_dimension_without_change() -> None:
    index = VectorIndex(4)
    index.add(1, vec(1, 0, 0, 0))
    with pytest.raises(ValueError, match="4-dim"):
        index.add(1, _v3(0, 1, 0))
    assert len(index) == 1
    [(label, sim)] = index.search(vec(1, 0, 0, 0), 1)
    assert label == 1 and sim == pytest.approx(1.0)
