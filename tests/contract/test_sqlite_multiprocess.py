"""Several processes on one SQLite cache file: each serves what the file holds.

Process A is this test; process B is a real second Python process (the venv's
interpreter, started with ``subprocess``) driving its own ``SQLiteCacheBackend``
on the same file through a line protocol on stdin/stdout. Neither restarts: each
must see the other's deletions and puts on its next lookup, search or stats.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from costopt_core.cache import SQLiteCacheBackend
from tests.contract.backend_contract import NOW, make_entry, vec

REPO = Path(__file__).resolve().parents[2]

_CHILD = """
import json, sys
import numpy as np
from costopt_core.cache import SQLiteCacheBackend
from tests.contract.backend_contract import NOW, make_entry

backend = SQLiteCacheBackend(sys.argv[1], **json.loads(sys.argv[2]))
for line in sys.stdin:
    op, args = json.loads(line)
    try:
        if op == "put":
            key, kw = args
            if kw.get("vector") is not None:
                kw["vector"] = np.asarray(kw["vector"], np.float32)
            kw["tags"] = tuple(kw.get("tags", ()))
            out = backend.put(make_entry(key, **kw))
        elif op == "get":
            entry = backend.get(args[0], now=NOW)
            out = None if entry is None else entry.response.text
        elif op == "search":
            query = np.asarray(args[1], np.float32)
            out = [e.key for e, _ in backend.search(args[0], query, args[2], now=NOW)]
        elif op == "stats":
            stats = backend.stats()
            out = [stats.entries, stats.bytes]
        else:
            out = getattr(backend, op)(*args)
        print(json.dumps({"ok": out}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": repr(exc)}), flush=True)
"""


class OtherProcess:
    """A second process with its own backend on ``path``, called op by op."""

    def __init__(self, path: Path, **options: Any) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), json.dumps(options)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, op: str, *args: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps([op, list(args)]) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        assert line, f"the other process died (exit code {self._proc.poll()})"
        reply = json.loads(line)
        assert "error" not in reply, reply["error"]
        return reply["ok"]

    def put(self, key: str, **kw: Any) -> None:
        if kw.get("vector") is not None:
            kw["vector"] = [float(x) for x in kw["vector"]]
        self("put", key, kw)

    def stop(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "shared.sqlite"


@pytest.fixture
def other(path: Path) -> Iterator[OtherProcess]:
    proc = OtherProcess(path)
    try:
        yield proc
    finally:
        proc.stop()


def _keys(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [e.key for e, _ in hits]


def _text(backend: SQLiteCacheBackend, key: str) -> str | None:
    entry = backend.get(key, now=NOW)
    return None if entry is None else entry.response.text


def _fresh_stats(path: Path) -> tuple[int, int]:
    """What a process that has just opened the file counts."""
    fresh = SQLiteCacheBackend(path)
    try:
        stats = fresh.stats()
        return stats.entries, stats.bytes
    finally:
        fresh.close()


def _fill(backend: SQLiteCacheBackend) -> None:
    backend.put(make_entry("by-tag", vector=vec(1, 0, 0, 0), tags=("doc:1",)))
    backend.put(make_entry("by-key", vector=vec(1, 0.1, 0, 0)))
    backend.put(make_entry("by-scope", scope="scope-b", vector=vec(1, 0, 0, 0)))
    backend.put(make_entry("by-ns", namespace="ns-2", vector=vec(1, 0.2, 0, 0)))
    backend.put(make_entry("kept", vector=vec(0, 0, 1, 0)))


# -- the other process invalidates; this one must stop serving -----------------------


def test_deletions_and_a_put_by_another_process_are_seen_without_a_restart(
    path: Path, other: OtherProcess
) -> None:
    a = SQLiteCacheBackend(path)
    _fill(a)
    assert _keys(a.search("scope-a", vec(1, 0, 0, 0), 5, now=NOW))[:3] == [
        "by-tag",
        "by-key",
        "by-ns",
    ]
    assert a.stats().entries == 5

    assert other("delete_tag", "doc:1") == 1
    assert other("delete", ["by-key", "missing"]) == 1
    assert other("delete_scope", "scope-b") == 1
    assert other("delete_namespace", "ns-2") == 1
    other.put("new", vector=vec(0.9, 0, 0, 0.1), text="from B")

    for gone in ("by-tag", "by-key", "by-scope", "by-ns"):
        assert a.get(gone, now=NOW) is None, f"{gone!r} was deleted by the other process"
    assert a.search("scope-b", vec(1, 0, 0, 0), 5, now=NOW) == []
    assert _keys(a.search("scope-a", vec(1, 0, 0, 0), 5, now=NOW)) == ["new", "kept"]
    assert _text(a, "new") == "from B"
    assert a.stats().entries == 2
    assert (a.stats().entries, a.stats().bytes) == _fresh_stats(path)
    a.close()


def test_the_async_twins_see_the_other_process_too(path: Path, other: OtherProcess) -> None:
    a = SQLiteCacheBackend(path)
    _fill(a)
    assert asyncio.run(a.aget("by-tag", now=NOW)) is not None
    other("delete_tag", "doc:1")
    other.put("new", vector=vec(0, 1, 0, 0))

    async def lookups() -> tuple[object, list[str]]:
        got = await a.aget("by-tag", now=NOW)
        hits = await a.asearch("scope-a", vec(0, 1, 0, 0), 1, now=NOW)
        return got, _keys(hits)

    assert asyncio.run(lookups()) == (None, ["new"])
    a.close()


def test_a_clear_by_another_process_then_its_put(path: Path, other: OtherProcess) -> None:
    a = SQLiteCacheBackend(path)
    _fill(a)
    assert a.stats().entries == 5
    other("clear")
    other.put("after-clear", vector=vec(0, 1, 0, 0))
    assert a.get("kept", now=NOW) is None
    assert _keys(a.search("scope-a", vec(0, 1, 0, 0), 5, now=NOW)) == ["after-clear"]
    assert a.stats().entries == 1
    assert (a.stats().entries, a.stats().bytes) == _fresh_stats(path)
    a.close()


def test_a_replacement_by_another_process_is_served(path: Path, other: OtherProcess) -> None:
    a = SQLiteCacheBackend(path)
    a.put(make_entry("k", vector=vec(1, 0, 0, 0), text="old"))
    assert _text(a, "k") == "old"
    other.put("k", vector=vec(0, 1, 0, 0), text="new")
    assert _text(a, "k") == "new"
    assert _keys(a.search("scope-a", vec(0, 1, 0, 0), 1, now=NOW)) == ["k"]
    [(_, sim)] = a.search("scope-a", vec(1, 0, 0, 0), 1, now=NOW)
    assert sim == pytest.approx(0.0, abs=1e-6)  # the old vector left the index
    assert a.stats().entries == 1
    a.close()


# -- both processes live, writing in turn --------------------------------------------


def test_both_processes_follow_each_other(path: Path, other: OtherProcess) -> None:
    a = SQLiteCacheBackend(path)
    _fill(a)
    assert other("get", "kept") == "answer for kept"  # B has loaded its mirror

    # B deletes; A's own next write must not skip B's change while it moves on.
    other("delete", ["kept"])
    a.put(make_entry("a-later", vector=vec(0, 0, 0, 1)))
    assert a.get("kept", now=NOW) is None
    assert _keys(a.search("scope-a", vec(0, 0, 1, 0), 1, now=NOW)) != ["kept"]

    # A deletes and puts; B (loaded before) follows.
    assert a.delete_tag("doc:1") == 1
    assert other("get", "by-tag") is None
    assert other("get", "a-later") == "answer for a-later"
    assert other("search", "scope-a", [0, 0, 0, 1], 1) == ["a-later"]
    assert other("stats") == [a.stats().entries, a.stats().bytes] == list(_fresh_stats(path))
    a.close()


def test_a_process_behind_the_trimmed_change_log_reloads(path: Path) -> None:
    a = SQLiteCacheBackend(path, change_log_rows=5)
    _fill(a)
    assert a.stats().entries == 5
    b = OtherProcess(path, change_log_rows=5)
    try:
        for i in range(20):  # far more changes than the log keeps
            b.put(f"b{i}", vector=vec(0, 1, 0, float(i)), tags=("b",))
        b("delete", ["kept", "b3"])
    finally:
        b.stop()
    assert a.get("kept", now=NOW) is None
    assert a.get("b3", now=NOW) is None
    assert _text(a, "b19") == "answer for b19"
    assert a.stats().entries == 4 + 19
    assert (a.stats().entries, a.stats().bytes) == _fresh_stats(path)
    a.close()


def test_the_change_log_stays_bounded(path: Path) -> None:
    import sqlite3

    a = SQLiteCacheBackend(path, change_log_rows=50)
    for i in range(300):
        a.put(make_entry(f"k{i}", vector=vec(1, 0, 0, float(i))))
    conn = sqlite3.connect(path)
    try:
        [(n,)] = conn.execute("SELECT count(*) FROM costopt_cache_changes").fetchall()
    finally:
        conn.close()
    assert 50 <= n <= 60
    a.close()


# -- cheap: no reload of the whole file for one's own or a few foreign writes -----


def test_catching_up_reads_only_what_changed(
    path: Path, other: OtherProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = SQLiteCacheBackend(path)
    _fill(a)
    a.get("kept", now=NOW)
    reloads: list[int] = []
    original = a._load_rows

    def counting(*args: Any) -> None:
        reloads.append(1)
        original(*args)

    monkeypatch.setattr(a, "_load_rows", counting)
    for i in range(50):  # this process's own writes
        a.put(make_entry(f"own{i}", vector=vec(0, 1, 0, float(i))))
    a.delete(["own0"])
    other.put("theirs", vector=vec(0, 0, 0, 1))
    other("delete", ["own1"])
    assert _text(a, "theirs") == "answer for theirs"
    assert a.get("own1", now=NOW) is None
    assert a.get("own2", now=NOW) is not None
    assert reloads == []
    a.close()


def test_a_file_without_the_change_table_keeps_its_entries(path: Path) -> None:
    import sqlite3

    old = SQLiteCacheBackend(path)
    _fill(old)
    old.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE costopt_cache_changes")  # as written by an older version
    conn.commit()
    conn.close()

    a = SQLiteCacheBackend(path)
    assert a.stats().entries == 5
    assert _text(a, "kept") == "answer for kept"
    b = OtherProcess(path)
    try:
        b("delete", ["kept"])
    finally:
        b.stop()
    assert a.get("kept", now=NOW) is None
    assert a.stats().entries == 4
    a.close()
