"""Submit calls cut off by a dead process: found by token, queued again, or left to their owner."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from costopt_core import BatchError, CostEngine
from costopt_core.batch import (
    BatchQueue,
    BatchRequest,
    RecoverableBatchProvider,
    Submission,
    submission_abandoned,
)
from costopt_core.batch.provider import SubmitRefusedError
from costopt_core.batch.split import (
    recovered_batch_is_ours,
    requeue_after_failed_submit,
    submit_refused,
)
from costopt_core.errors import ConfigurationError
from costopt_core.testing import FakeEmbedder
from tests.unit.test_batch_job import Clock, FakeRemote, make_job, reqs

HOST = socket.gethostname()


@pytest.fixture
def clock() -> Clock:  # type: ignore[override]
    return Clock()


@pytest.fixture
def engine() -> CostEngine:  # type: ignore[override]
    return CostEngine(embedder=FakeEmbedder())


class TaggingRemote(FakeRemote):
    """``FakeRemote`` that tags batches with the job's token and finds them by it.

    ``finds`` overrides the lookup (a batch id, or ``None``) to play a provider
    that matches batches by time and size and can pick the wrong one.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.tokens: dict[str, str] = {}
        self.lookups: list[Submission] = []
        self.finds: str | bool | None = False
        self.interrupt: BaseException | None = None

    def submit(self, requests: Sequence[BatchRequest], *, submission: str | None = None) -> str:
        batch_id = super().submit(requests)
        if submission is not None:
            self.tokens[submission] = batch_id
        if self.interrupt is not None:
            raise self.interrupt  # after the provider took the batch
        return batch_id

    async def asubmit(
        self, requests: Sequence[BatchRequest], *, submission: str | None = None
    ) -> str:
        await asyncio.sleep(0)
        return self.submit(requests, submission=submission)

    def find_submission(self, submission: Submission) -> str | None:
        self.lookups.append(submission)
        if self.finds is not False:
            return self.finds  # type: ignore[return-value]
        return self.tokens.get(submission.token)

    async def afind_submission(self, submission: Submission) -> str | None:
        await asyncio.sleep(0)
        return self.find_submission(submission)


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leave_pending(
    queue: BatchQueue, n: int, *, owner: tuple[str, int], now: float, token: str = "costopt-t1"
) -> list[int]:
    """``n`` queued requests under a submit call that ``owner`` started and never finished."""
    queue.enqueue("job", reqs(n), now=now)
    seqs = [q.seq for q in queue.queued("job")]
    assert queue.begin_submission("job", "fake", token, seqs, now=now, owner=owner) == n
    return seqs


# -- the pure decisions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner_host", "owner_pid", "alive", "in_flight", "age_s", "abandoned"),
    [
        (HOST, 123, False, False, 0.0, True),  # a dead process here: at once
        (HOST, 123, True, False, 0.0, False),  # a live one here: its call may still answer
        (HOST, 7, True, False, 0.0, True),  # this process, no such call in flight: at once
        (HOST, 7, True, True, 10_000.0, False),  # this process is making the call now
        (HOST, 123, True, False, 900.0, True),  # alive but past the lease (pid reused)
        ("elsewhere", 7, True, False, 899.0, False),  # another host: only the lease tells
        ("elsewhere", 7, True, False, 900.0, True),
    ],
)
def test_a_submission_is_abandoned_when_its_owner_is_gone_or_the_lease_ran_out(
    owner_host: str, owner_pid: int, alive: bool, in_flight: bool, age_s: float, abandoned: bool
) -> None:
    assert (
        submission_abandoned(
            owner_host=owner_host,
            owner_pid=owner_pid,
            started_at=1000.0,
            now=1000.0 + age_s,
            lease_s=900.0,
            host=HOST,
            pid=7,
            owner_alive=alive,
            in_flight_here=in_flight,
        )
        is abandoned
    )


def test_a_recovered_batch_is_ours_only_if_it_answers_nothing_else() -> None:
    assert recovered_batch_is_ours(["a", "b"], ["a", "b", "c"])  # some missing: retried
    assert recovered_batch_is_ours([], ["a"])
    assert not recovered_batch_is_ours(["a", "x"], ["a", "b"])


# -- the queue's record of a submit call -------------------------------------------------


def test_the_queue_records_a_submission_before_the_call_and_resolves_it_once() -> None:
    q = BatchQueue(":memory:")
    seqs = leave_pending(q, 3, owner=(HOST, 1), now=5.0)
    assert q.counts("job")["submitting"] == 3
    assert q.queued("job") == []  # not handed to another flush
    (pending,) = q.pending_submissions("job")
    assert (pending.token, pending.provider, pending.owner_pid) == ("costopt-t1", "fake", 1)
    assert pending.request_ids == ("r0", "r1", "r2") and pending.started_at == 5.0
    assert q.mark_submitted("job", "fake", "b9", now=6.0, submission="costopt-t1") == 3
    assert q.pending_submissions("job") == []
    assert q.counts("job")["submitted"] == 3
    assert [r.attempts for r in q.stored("job")] == [1, 1, 1]
    # Resolving it again (a late owner after a recoverer) changes nothing.
    assert q.mark_submitted("job", "fake", "b10", now=7.0, submission="costopt-t1") == 0
    assert q.abort_submission("costopt-t1", now=7.0) == 0
    assert [b.remote_id for b in q.open_batches("job")] == ["b9"]
    assert q.batch_ids("fake", since=0.0) == frozenset({"b9"})
    # A second begin over the same requests moves none of them.
    assert q.begin_submission("job", "fake", "costopt-t2", seqs, now=8.0, owner=(HOST, 1)) == 0


def test_an_aborted_submission_puts_its_requests_back_in_order() -> None:
    q = BatchQueue(":memory:")
    leave_pending(q, 3, owner=(HOST, 1), now=5.0)
    assert q.abort_submission("costopt-t1", now=6.0) == 3
    assert [x.request.id for x in q.queued("job")] == ["r0", "r1", "r2"]
    assert [x.attempts for x in q.queued("job")] == [0, 0, 0]
    assert q.pending_submissions("job") == []


def test_a_queue_file_from_before_submissions_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE costopt_batch_jobs (name TEXT PRIMARY KEY, created_at REAL NOT NULL,
            canceled INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE costopt_batch_requests (seq INTEGER PRIMARY KEY, job TEXT NOT NULL,
            id TEXT NOT NULL, request TEXT NOT NULL, state TEXT NOT NULL, provider TEXT,
            batch_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, result TEXT,
            enqueued_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (job, id));
        CREATE TABLE costopt_batch_batches (provider TEXT NOT NULL, remote_id TEXT NOT NULL,
            job TEXT NOT NULL, state TEXT NOT NULL, requests INTEGER NOT NULL,
            submitted_at REAL NOT NULL, collected_at REAL, PRIMARY KEY (provider, remote_id));
        INSERT INTO costopt_batch_jobs VALUES ('job', 1.0, 0);
        INSERT INTO costopt_batch_batches VALUES ('fake', 'b0', 'job', 'open', 1, 1.0, NULL);
        """
    )
    db.execute(
        "INSERT INTO costopt_batch_requests (job, id, request, state, provider, batch_id, "
        "attempts, enqueued_at, updated_at) VALUES ('job', 'r0', ?, 'submitted', 'fake', 'b0', "
        "1, 1.0, 1.0)",
        ('{"id":"r0","model":"gpt-4o-mini","messages":[{"role":"user","content":"q0"}]}',),
    )
    db.commit()
    db.close()
    q = BatchQueue(path)
    (batch,) = q.open_batches("job")
    assert (batch.remote_id, batch.recovered) == ("b0", False)
    assert q.counts("job")["submitted"] == 1
    assert q.stored("job")[0].request.id == "r0"  # nothing the user stored is lost
    q.enqueue("job", reqs(2)[1:], now=2.0)
    assert q.begin_submission("job", "fake", "t", [2], now=3.0, owner=(HOST, 1)) == 1
    assert q.job_kind("job") is None  # made before jobs had a kind
    assert q.add_job("new", now=4.0, kind="complete") and q.job_kind("new") == "complete"
    assert not q.add_job("job", now=4.0, kind="chat") and q.job_kind("job") is None


# -- the job resolving them --------------------------------------------------------------


def test_a_dead_processs_submission_is_found_by_its_token_and_collected_once(
    engine: CostEngine, clock: Clock
) -> None:
    remote = TaggingRemote()
    assert isinstance(remote, RecoverableBatchProvider)
    queue = BatchQueue(":memory:")
    leave_pending(queue, 3, owner=(HOST, dead_pid()), now=clock.now)
    batch_id = remote.submit(reqs(3), submission="costopt-t1")  # the dead call reached it
    job = make_job(remote, engine, clock, queue)
    status = job.wait()
    assert (status.done, status.complete) == (3, True)
    assert remote.submitted == [["r0", "r1", "r2"]]  # never sent again
    (lookup,) = remote.lookups
    assert lookup.token == "costopt-t1" and lookup.request_ids == ("r0", "r1", "r2")
    assert len(engine.ledger) == 3
    assert {r.tags["batch_id"] for r in engine.ledger.records()} == {batch_id}


def test_a_dead_processs_submission_the_provider_never_got_is_sent_once(
    engine: CostEngine, clock: Clock
) -> None:
    remote = TaggingRemote()
    queue = BatchQueue(":memory:")
    leave_pending(queue, 3, owner=(HOST, dead_pid()), now=clock.now)
    job = make_job(remote, engine, clock, queue)
    assert job.wait().done == 3
    assert remote.submitted == [["r0", "r1", "r2"]]
    assert len(engine.ledger) == 3


def test_async_recovery_shares_the_sync_decisions(engine: CostEngine, clock: Clock) -> None:
    remote = TaggingRemote()
    queue = BatchQueue(":memory:")
    leave_pending(queue, 2, owner=(HOST, dead_pid()), now=clock.now)
    remote.submit(reqs(2), submission="costopt-t1")
    job = make_job(remote, engine, clock, queue)
    assert asyncio.run(job.arecover()) == 1
    status = asyncio.run(job.await_())
    assert (status.done, len(remote.submitted)) == (2, 1)


def test_a_provider_without_lookup_gets_the_requests_again_with_a_warning(
    engine: CostEngine, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    remote = FakeRemote()
    queue = BatchQueue(":memory:")
    leave_pending(queue, 2, owner=(HOST, dead_pid()), now=clock.now)
    job = make_job(remote, engine, clock, queue)
    with caplog.at_level(logging.WARNING, logger="costopt_core.batch.job"):
        assert job.wait().done == 2
    assert "may be billed twice" in caplog.text
    assert remote.submitted == [["r0", "r1"]]
    assert len(engine.ledger) == 2


def test_a_live_owners_call_is_left_alone_until_the_lease_runs_out(
    engine: CostEngine, clock: Clock
) -> None:
    remote = TaggingRemote()
    queue = BatchQueue(":memory:")
    leave_pending(queue, 2, owner=("another-host", 42), now=clock.now)
    job = make_job(remote, engine, clock, queue, submit_lease_s=60.0)
    assert job.recover() == 0 and job.flush() == []
    assert job.status().submitted == 2 and not job.status().complete
    assert remote.lookups == [] and remote.submitted == []
    clock.now += 60.0
    assert job.recover() == 1
    assert job.wait().done == 2
    assert remote.submitted == [["r0", "r1"]]


def test_a_batch_found_by_time_that_answers_other_requests_is_not_taken(
    engine: CostEngine, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    remote = TaggingRemote()
    foreign = remote.submit([reqs(2)[1], BatchRequest(id="x", model="m", messages=())])
    remote.finds = foreign  # a provider matching by time and size picks someone else's batch
    queue = BatchQueue(":memory:")
    leave_pending(queue, 2, owner=(HOST, dead_pid()), now=clock.now)
    job = make_job(remote, engine, clock, queue)
    with caplog.at_level(logging.WARNING, logger="costopt_core.batch.job"):
        job.recover()
        job.poll()
    assert "answers other requests" in caplog.text
    assert job.queue.counts("job")["queued"] == 2  # back in the queue, none taken
    assert len(engine.ledger) == 0
    remote.finds = False
    assert job.wait().done == 2
    assert sorted(r.id for r in job.results().values()) == ["r0", "r1"]
    assert {r.text for r in job.results().values()} == {"answer r0", "answer r1"}


def test_an_interrupted_submit_is_resolved_by_the_same_process(
    engine: CostEngine, clock: Clock
) -> None:
    remote = TaggingRemote()
    remote.interrupt = KeyboardInterrupt()
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(2))
    with pytest.raises(KeyboardInterrupt):
        job.flush()
    assert job.queue.counts("job")["submitting"] == 2  # the provider may have it: not requeued
    remote.interrupt = None
    assert job.recover() == 1  # this process's call is over: resolved at once, no lease wait
    assert job.queue.counts("job")["submitted"] == 2
    assert job.wait().done == 2
    assert remote.submitted == [["r0", "r1"]]  # found by its token, not sent again


def test_a_failed_submit_is_looked_up_before_the_requests_go_out_again(
    engine: CostEngine, clock: Clock
) -> None:
    remote = TaggingRemote()
    remote.fail_submit = RuntimeError("HTTP 500")  # refused: the provider has nothing
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(2))
    with pytest.raises(Exception, match="HTTP 500"):
        job.flush()
    # The call might have reached the provider (a timeout looks the same): kept, not requeued.
    assert job.queue.counts("job")["submitting"] == 2
    remote.fail_submit = None
    assert job.recover() == 1 and len(remote.lookups) == 1  # asked once: not there
    assert job.queue.counts("job")["queued"] == 2
    assert job.wait().done == 2 and remote.submitted == [["r0", "r1"]]


def test_a_submit_that_timed_out_after_the_provider_took_it_is_not_resent(
    engine: CostEngine, clock: Clock
) -> None:
    remote = TaggingRemote()
    remote.interrupt = TimeoutError("read timed out")  # raised after the batch was created
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(2))
    with pytest.raises(BatchError, match="timed out"):
        job.flush()
    remote.interrupt = None
    assert job.wait().done == 2
    assert remote.submitted == [["r0", "r1"]]  # found by its token, sent once
    assert len(engine.ledger) == 2
    assert sum(clock.slept) < 10  # resolved at once, not after the 900 s lease


def test_a_submit_that_may_have_created_its_batch_keeps_the_budget_hold(clock: Clock) -> None:
    """The batch may be running: its estimate stays held, so a later flush cannot pass a
    budget on its spend, until the lookup by token (found: collected) settles it; a
    lookup that finds nothing releases it."""
    from decimal import Decimal

    from costopt_core import Budget
    from tests.unit.test_batch_budget import Store

    engine = CostEngine(
        embedder=FakeEmbedder(),
        budgets=[Budget(limit_usd=Decimal(1), period="day", policy="block")],
    )
    store = Store()
    engine.ledger.budget_store = store
    remote = TaggingRemote()
    remote.interrupt = TimeoutError("read timed out")  # after the batch was created
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(2))
    with pytest.raises(BatchError, match="timed out"):
        job.flush()
    [(_, _, hold_id)] = store.reserved
    assert store.released == []  # held while the batch may run
    remote.interrupt = None
    assert job.wait().done == 2
    assert store.released == [(None, hold_id)]  # collected: settled
    # a submit the provider never got: the lookup finds nothing, the hold goes
    remote.interrupt = TimeoutError("read timed out")
    remote.finds = None
    other = make_job(remote, engine, clock)
    other.enqueue(reqs(2))
    with pytest.raises(BatchError, match="timed out"):
        other.flush()
    second = store.reserved[1][2]
    assert (None, second) not in store.released
    remote.interrupt = None
    other.recover()
    assert (None, second) in store.released


def test_a_flush_whose_requests_another_flush_took_sends_nothing(
    engine: CostEngine, clock: Clock
) -> None:
    remote = TaggingRemote()
    queue = BatchQueue(":memory:")
    job = make_job(remote, engine, clock, queue)
    job.enqueue(reqs(2))
    planned = job._plan_flush()
    # Another process claims one of them between this flush's read and its write.
    queue.begin_submission(
        "job", "fake", "costopt-other", [planned[0][0][0]], now=clock.now, owner=(HOST, os.getpid())
    )
    assert job._begin([s for s, *_ in planned[0]]) is None
    assert queue.counts("job")["queued"] == 1  # its other request is queued again
    assert remote.submitted == []


def test_two_jobs_resolving_one_submission_record_it_once(engine: CostEngine, clock: Clock) -> None:
    remote = TaggingRemote()
    queue = BatchQueue(":memory:")
    leave_pending(queue, 2, owner=(HOST, dead_pid()), now=clock.now)
    remote.submit(reqs(2), submission="costopt-t1")
    other = CostEngine(embedder=FakeEmbedder())
    first = make_job(remote, engine, clock, queue)
    second = make_job(remote, other, clock, queue)
    first.recover()
    assert second.recover() == 0  # already resolved
    first.wait()
    second.wait()
    assert len(engine.ledger) + len(other.ledger) == 2


# -- refused submits and canceled jobs ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "refused"),
    [
        *((code, True) for code in (400, 404, 429, 503, 529)),  # the API turned it down
        *((code, False) for code in (500, 502, 504)),  # it may have acted first
    ],
)
def test_only_a_status_that_proves_nothing_was_created_is_a_refusal(
    status: int, refused: bool
) -> None:
    assert submit_refused(status) is refused


@pytest.mark.parametrize(
    ("interrupted", "refused", "recoverable", "requeue"),
    [
        (False, True, True, True),  # refused: nothing running, send again at once
        (False, False, True, False),  # a timeout may have reached it: look it up first
        (False, False, False, True),  # no lookup: its error means nothing is running
        (True, True, True, False),  # cut off: leave the record to recover()
        (True, False, False, False),
    ],
)
def test_what_a_failed_submit_does_with_its_requests(
    interrupted: bool, refused: bool, recoverable: bool, requeue: bool
) -> None:
    got = requeue_after_failed_submit(
        interrupted=interrupted, refused=refused, recoverable=recoverable
    )
    assert got is requeue


@pytest.mark.parametrize(
    "error",
    [
        SubmitRefusedError("HTTP 429: rate limited"),
        ConfigurationError("batch request id 'a b' is not a valid custom_id"),
    ],
)
def test_a_refused_submit_puts_its_requests_back_without_a_lookup(
    engine: CostEngine, clock: Clock, error: Exception
) -> None:
    remote = TaggingRemote()
    remote.fail_submit = error
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(2))
    with pytest.raises(BatchError):
        job.flush()
    counts = job.queue.counts("job")
    assert (counts["queued"], counts["submitting"]) == (2, 0)
    assert job.queue.pending_submissions("job") == []
    remote.fail_submit = None
    assert job.wait().done == 2
    assert remote.lookups == []  # nothing to look up: a batch found would not be ours
    assert remote.submitted == [["r0", "r1"]]


def test_an_aborted_submission_of_a_canceled_job_ends_canceled() -> None:
    q = BatchQueue(":memory:")
    leave_pending(q, 2, owner=(HOST, 1), now=5.0)
    q.cancel("job", now=6.0)
    assert q.abort_submission("costopt-t1", now=7.0) == 2
    counts = q.counts("job")
    assert (counts["canceled"], counts["queued"], counts["submitting"]) == (2, 0, 0)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cancel_resolves_a_failed_submit_and_every_request_ends(
    engine: CostEngine, clock: Clock, mode: str
) -> None:
    remote = TaggingRemote()
    remote.fail_submit = RuntimeError("HTTP 500")  # may have reached it: the record stays
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(2))
    with pytest.raises(BatchError):
        job.flush()
    assert job.queue.counts("job")["submitting"] == 2
    status = job.cancel() if mode == "sync" else asyncio.run(job.acancel())
    assert (status.canceled, status.submitted, status.complete) == (2, 0, True)
    assert len(remote.lookups) == 1  # asked the provider first: it had nothing
    assert {i: r.status for i, r in job.results().items()} == {"r0": "canceled", "r1": "canceled"}


def test_cancel_stops_a_batch_a_failed_submit_did_create(engine: CostEngine, clock: Clock) -> None:
    remote = TaggingRemote()
    remote.interrupt = TimeoutError("read timed out")  # after the provider took the batch
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(2))
    with pytest.raises(BatchError):
        job.flush()
    remote.interrupt = None
    job.cancel()
    assert remote.canceled == ["b0"]  # found by its token, then canceled
    assert job.wait().complete
    # The fake answers the first request before the stop; the other ends canceled.
    assert {i: r.status for i, r in job.results().items()} == {
        "r0": "succeeded",
        "r1": "canceled",
    }


def test_a_job_key_is_the_same_for_every_reader_and_differs_per_job(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    first = BatchQueue(path)
    first.enqueue("a", reqs(1), now=1.0)
    first.enqueue("b", reqs(1), now=1.0)
    key = first.job_key("a", now=2.0)
    assert key == BatchQueue(path).job_key("a", now=3.0)
    assert key != first.job_key("b", now=2.0)
    assert len(key) == 12 and key.isalnum()
    # A job an older version made (no key yet) gets one, kept from then on.
    db = sqlite3.connect(path)
    db.execute("UPDATE costopt_batch_jobs SET wire_key = NULL WHERE name = 'a'")
    db.commit()
    db.close()
    made = BatchQueue(path).job_key("a", now=4.0)
    assert made == BatchQueue(path).job_key("a", now=5.0) and len(made) == 12


def test_a_submission_pending_at_an_upgrade_is_collected_once_under_its_plain_ids() -> None:
    class KeyedRemote(TaggingRemote):
        job_keyed_ids = True  # as the OpenAI and Anthropic providers declare

    clock = Clock()
    engine = CostEngine(embedder=FakeEmbedder())
    remote = KeyedRemote()
    queue = BatchQueue(":memory:")
    # The previous version began a submission, the provider took it under the
    # plain ids, and the process died; this version recovers it.
    leave_pending(queue, 3, owner=(HOST, dead_pid()), now=clock.now)
    remote.submit(reqs(3), submission="costopt-t1")
    status = make_job(remote, engine, clock, queue).wait()
    assert status.done == 3
    assert remote.submitted == [["r0", "r1", "r2"]]  # not sent (and billed) twice
    assert len(engine.ledger) == 3
