"""The durable batch queue and the pure planning functions of a batch job."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from costopt_core import BatchError, ConfigurationError, Message, Usage
from costopt_core.batch import BatchLimits, BatchQueue, BatchRequest, BatchResult
from costopt_core.batch.queue import (
    request_from_json,
    request_to_json,
    result_from_json,
    result_to_json,
)
from costopt_core.batch.split import decide_outcome, plan_batches, should_flush


def req(i: int | str, model: str = "gpt-4o-mini", text: str = "hello") -> BatchRequest:
    return BatchRequest(id=str(i), model=model, messages=(Message("user", f"{text} {i}"),))


# -- serialization -----------------------------------------------------------------
def test_request_json_round_trip_keeps_every_field() -> None:
    r = BatchRequest(
        id="a1",
        model="claude-haiku-4-5",
        messages=(
            Message("system", "be brief"),
            Message("assistant", "", tool_calls=({"id": "t1", "name": "f", "args": {"x": 1}},)),
            Message("tool", "42", name="f", tool_call_id="t1"),
        ),
        params={"max_tokens": 64, "temperature": 0.2, "tools": [{"name": "f"}]},
        tenant="acme",
    )
    assert request_from_json(request_to_json(r)) == r


def test_result_json_round_trip_keeps_usage_and_raw() -> None:
    r = BatchResult(
        id="a1",
        status="succeeded",
        text="hi",
        usage=Usage(input_tokens=10, output_tokens=3, cache_read_tokens=4),
        model="gpt-4o-mini-2024-07-18",
        raw={"choices": [{"message": {"content": "hi"}}]},
    )
    assert result_from_json(result_to_json(r)) == r
    err = BatchResult(id="b", status="expired", error="too slow", retryable=True)
    assert result_from_json(result_to_json(err)) == err


# -- the queue ---------------------------------------------------------------------
def test_constructor_does_no_io(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "q.db"
    q = BatchQueue(path)  # nothing happens yet
    assert not path.parent.exists()
    with pytest.raises(ConfigurationError, match="missing-dir"):
        q.counts("job")


def test_a_path_that_is_not_a_database_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="writable"):
        BatchQueue(tmp_path).counts("job")  # a folder, not a file


def test_bad_timeout_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="timeout_s"):
        BatchQueue(":memory:", timeout_s=0)


def test_queued_requests_survive_a_new_queue_object(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = BatchQueue(path)
    assert q.enqueue("job", [req(i) for i in range(5)], now=100.0) == 5
    q.close()
    again = BatchQueue(path)
    queued = again.queued("job")
    assert [x.request.id for x in queued] == ["0", "1", "2", "3", "4"]
    assert queued[0].request == req(0)
    assert again.counts("job")["queued"] == 5
    assert again.oldest_queued_at("job") == 100.0
    assert again.jobs() == ["job"]


def test_file_is_in_wal_mode_with_the_chosen_sync_level(tmp_path: Path) -> None:
    q = BatchQueue(tmp_path / "q.db")
    q.counts("x")
    assert q._db().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert q._db().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    safe = BatchQueue(tmp_path / "p.db", power_safe=True)
    safe.counts("x")
    assert safe._db().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_enqueue_is_all_or_nothing_on_a_duplicate_id(tmp_path: Path) -> None:
    q = BatchQueue(tmp_path / "q.db")
    q.enqueue("job", [req(1), req(2)], now=0.0)
    with pytest.raises(BatchError, match="'2' is already in batch job 'job'"):
        q.enqueue("job", [req(3), req(2)], now=1.0)
    with pytest.raises(BatchError, match="'4'"):
        q.enqueue("job", [req(4), req(4)], now=1.0)
    assert [x.request.id for x in q.queued("job")] == ["1", "2"]
    # Ids are per job: another job may reuse them.
    assert q.enqueue("other", [req(1)], now=2.0) == 1


def test_jobs_sharing_a_file_are_kept_apart() -> None:
    q = BatchQueue(":memory:")
    q.enqueue("a", [req(1), req(2)], now=0.0)
    q.enqueue("b", [req(1)], now=0.0)
    assert q.counts("a")["queued"] == 2
    assert q.counts("b")["queued"] == 1
    assert q.cancel("a", now=1.0) == 2
    assert q.is_canceled("a") and not q.is_canceled("b")
    assert q.counts("a") == {
        "queued": 0,
        "submitting": 0,
        "submitted": 0,
        "done": 0,
        "failed": 0,
        "canceled": 2,
    }
    assert q.counts("b")["queued"] == 1
    assert q.delete_job("a") == 2
    assert q.jobs() == ["b"]


def test_submit_then_collect_moves_states_and_claims_the_batch_once() -> None:
    q = BatchQueue(":memory:")
    q.enqueue("job", [req(i) for i in range(3)], now=0.0)
    seqs = [x.seq for x in q.queued("job")]
    q.mark_submitted("job", "fake", "b1", seqs[:2], now=1.0)
    assert q.counts("job")["submitted"] == 2
    [open_batch] = q.open_batches("job")
    assert (open_batch.provider, open_batch.remote_id, open_batch.requests) == ("fake", "b1", 2)
    carried = q.batch_requests("fake", "b1")
    assert [s.id for s in carried] == ["0", "1"]
    assert all(s.attempts == 1 for s in carried)

    ok = BatchResult(id="0", status="succeeded", text="yes")
    again = BatchResult(id="1", status="errored", error="overloaded", retryable=True)
    outcomes = {"0": ("done", ok), "1": ("queued", again)}
    assert q.finish_requests("job", outcomes, now=2.0, batch=("fake", "b1")) is True  # type: ignore[arg-type]
    # A second collector of the same batch stores nothing.
    assert q.finish_requests("job", outcomes, now=3.0, batch=("fake", "b1")) is False  # type: ignore[arg-type]
    assert q.open_batches("job") == []
    assert q.counts("job") == {
        "queued": 2,
        "submitting": 0,
        "submitted": 0,
        "done": 1,
        "failed": 0,
        "canceled": 0,
    }
    stored = {s.id: s for s in q.stored("job")}
    assert stored["0"].result == ok
    assert stored["1"].state == "queued" and stored["1"].attempts == 1
    assert stored["2"].result is None


def test_enqueue_from_many_threads_loses_nothing(tmp_path: Path) -> None:
    q = BatchQueue(tmp_path / "q.db")

    def work(t: int) -> None:
        for k in range(20):
            q.enqueue("job", [req(f"{t}-{k}-{j}") for j in range(5)], now=float(k))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert q.counts("job")["queued"] == 8 * 20 * 5


def test_a_second_process_connection_sees_committed_requests(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    BatchQueue(path).enqueue("job", [req(i) for i in range(3)], now=0.0)
    # Committed means visible to any other connection, without closing the writer.
    with sqlite3.connect(path) as other:
        n = other.execute("SELECT COUNT(*) FROM costopt_batch_requests").fetchone()[0]
    assert n == 3


# -- planning --------------------------------------------------------------------------
def test_plan_splits_by_request_count_in_order() -> None:
    plan = plan_batches([10] * 7, BatchLimits(max_requests=3, max_bytes=10_000))
    assert plan.batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert plan.too_large == []


def test_plan_splits_by_bytes_and_sets_oversized_requests_aside() -> None:
    plan = plan_batches([40, 40, 30, 101, 60, 50], BatchLimits(max_requests=100, max_bytes=100))
    assert plan.batches == [[0, 1], [2, 4], [5]]
    assert plan.too_large == [3]
    # A request exactly at the limit fits alone.
    assert plan_batches([100, 1], BatchLimits(10, 100)).batches == [[0], [1]]


def test_plan_of_nothing_is_empty() -> None:
    plan = plan_batches([], BatchLimits(1, 1))
    assert plan.batches == [] and plan.too_large == []


@pytest.mark.parametrize(
    ("result", "attempts", "canceled", "expected"),
    [
        (BatchResult(id="x", status="succeeded"), 1, False, "done"),
        (BatchResult(id="x", status="succeeded"), 3, True, "done"),
        (BatchResult(id="x", status="errored", retryable=True), 1, False, "queued"),
        (BatchResult(id="x", status="errored", retryable=True), 3, False, "failed"),
        (BatchResult(id="x", status="errored", retryable=False), 1, False, "failed"),
        (BatchResult(id="x", status="expired", retryable=True), 2, False, "queued"),
        (BatchResult(id="x", status="expired", retryable=True), 1, True, "canceled"),
        (BatchResult(id="x", status="canceled"), 1, False, "canceled"),
        (BatchResult(id="x", status="canceled", retryable=True), 1, False, "queued"),
        (None, 1, False, "queued"),
        (None, 3, False, "failed"),
    ],
)
def test_decide_outcome(
    result: BatchResult | None, attempts: int, canceled: bool, expected: str
) -> None:
    got = decide_outcome(result, attempts=attempts, max_attempts=3, job_canceled=canceled)
    assert got == expected


def test_should_flush_by_size_and_by_age() -> None:
    assert not should_flush(0, 100.0, max_pending=1, max_wait_s=1.0)
    assert should_flush(5, None, max_pending=5, max_wait_s=None)
    assert not should_flush(4, 0.5, max_pending=5, max_wait_s=1.0)
    assert should_flush(4, 1.0, max_pending=5, max_wait_s=1.0)
    assert not should_flush(4, 10.0, max_pending=None, max_wait_s=None)
