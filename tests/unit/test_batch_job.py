"""``BatchJob``: splitting, flush policies, retries, expiry, cancellation, pricing, restart."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from costopt_core import BatchError, ConfigurationError, CostEngine, Message, Usage
from costopt_core.batch import (
    BatchJob,
    BatchJobConfig,
    BatchLimits,
    BatchNotFoundError,
    BatchProvider,
    BatchQueue,
    BatchRequest,
    BatchResult,
    RemoteBatch,
)
from costopt_core.batch.queue import request_to_json
from costopt_core.testing import FakeEmbedder

USAGE = Usage(input_tokens=1000, output_tokens=500)
Outcome = Callable[[BatchRequest, int], BatchResult]
DEFAULT_LIMITS = BatchLimits(max_requests=100, max_bytes=10_000_000)


def answer(request: BatchRequest, attempt: int) -> BatchResult:
    return BatchResult(
        id=request.id,
        status="succeeded",
        text=f"answer {request.id}",
        usage=USAGE,
        model=request.model,
    )


class FakeRemote:
    """An in-process provider batch API. Its state outlives any job object.

    ``outcome(request, attempt)`` decides each result; batches end on the first
    poll unless ``hold`` is set (then ``release()`` ends them).
    """

    name = "fake"

    def __init__(
        self,
        outcome: Outcome = answer,
        *,
        limits: BatchLimits = DEFAULT_LIMITS,
        hold: bool = False,
    ) -> None:
        self.outcome = outcome
        self.limits = limits
        self.hold = hold
        self.batches: dict[str, dict[str, object]] = {}
        self.attempts: Counter[str] = Counter()
        self.submitted: list[list[str]] = []
        self.canceled: list[str] = []
        self.results_calls = 0
        self.fail_submit: Exception | None = None

    def request_size(self, request: BatchRequest) -> int:
        return len(request_to_json(request).encode())

    def submit(self, requests: Sequence[BatchRequest]) -> str:
        if self.fail_submit is not None:
            raise self.fail_submit
        assert len(requests) <= self.limits.max_requests
        assert sum(self.request_size(r) for r in requests) <= self.limits.max_bytes
        batch_id = f"b{len(self.submitted)}"
        self.batches[batch_id] = {"requests": list(requests), "ended": not self.hold}
        self.submitted.append([r.id for r in requests])
        for r in requests:
            self.attempts[r.id] += 1
        return batch_id

    def release(self) -> None:
        for b in self.batches.values():
            b["ended"] = True

    def _batch(self, batch_id: str) -> dict[str, object]:
        if batch_id not in self.batches:
            raise BatchNotFoundError(batch_id)
        return self.batches[batch_id]

    def poll(self, batch_id: str) -> RemoteBatch:
        b = self._batch(batch_id)
        return RemoteBatch(id=batch_id, status="ended" if b["ended"] else "in_progress")

    def results(self, batch_id: str) -> list[BatchResult]:
        self.results_calls += 1
        b = self._batch(batch_id)
        requests: list[BatchRequest] = b["requests"]  # type: ignore[assignment]
        if b.get("canceled"):
            # The first request was answered before the stop, the rest were not.
            return [answer(requests[0], 1)] + [
                BatchResult(id=r.id, status="canceled", error="canceled", retryable=True)
                for r in requests[1:]
            ]
        return [self.outcome(r, self.attempts[r.id]) for r in requests]

    def cancel(self, batch_id: str) -> None:
        b = self._batch(batch_id)
        b["canceled"] = b["ended"] = True
        self.canceled.append(batch_id)

    async def asubmit(self, requests: Sequence[BatchRequest]) -> str:
        await asyncio.sleep(0)
        return self.submit(requests)

    async def apoll(self, batch_id: str) -> RemoteBatch:
        await asyncio.sleep(0)
        return self.poll(batch_id)

    async def aresults(self, batch_id: str) -> list[BatchResult]:
        await asyncio.sleep(0)
        return self.results(batch_id)

    async def acancel(self, batch_id: str) -> None:
        await asyncio.sleep(0)
        self.cancel(batch_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    async def asleep(self, s: float) -> None:
        self.sleep(s)


def reqs(n: int, model: str = "gpt-4o-mini", tenant: str | None = None) -> list[BatchRequest]:
    return [
        BatchRequest(id=f"r{i}", model=model, messages=(Message("user", f"q{i}"),), tenant=tenant)
        for i in range(n)
    ]


@pytest.fixture
def clock() -> Clock:  # type: ignore[override]
    return Clock()


@pytest.fixture
def engine() -> CostEngine:  # type: ignore[override]
    return CostEngine(embedder=FakeEmbedder())


def make_job(
    provider: BatchProvider,
    engine: CostEngine,
    clock: Clock,
    queue: BatchQueue | str | Path = ":memory:",
    **settings: object,
) -> BatchJob:
    settings.setdefault("poll_interval_s", 1.0)
    return BatchJob(
        provider,
        queue,
        name="job",
        engine=engine,
        clock=clock,
        sleep=clock.sleep,
        asleep=clock.asleep,
        **settings,
    )


def test_the_fake_implements_the_seam() -> None:
    assert isinstance(FakeRemote(), BatchProvider)


def test_run_returns_results_in_order_and_counts(engine: CostEngine, clock: Clock) -> None:
    remote = FakeRemote()
    job = make_job(remote, engine, clock)
    results = job.run(reqs(5))
    assert [r.id for r in results] == ["r0", "r1", "r2", "r3", "r4"]
    assert [r.text for r in results] == [f"answer r{i}" for i in range(5)]
    status = job.status()
    assert (status.done, status.total, status.complete) == (5, 5, True)
    assert list(job.results()) == ["r0", "r1", "r2", "r3", "r4"]


def test_flush_splits_by_the_providers_request_limit(engine: CostEngine, clock: Clock) -> None:
    remote = FakeRemote(limits=BatchLimits(max_requests=3, max_bytes=10**9))
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(10))
    assert len(job.flush()) == 4
    assert remote.submitted == [
        ["r0", "r1", "r2"],
        ["r3", "r4", "r5"],
        ["r6", "r7", "r8"],
        ["r9"],
    ]
    assert job.status().submitted == 10 and job.status().open_batches == 4
    job.wait()
    assert list(job.results()) == [f"r{i}" for i in range(10)]


def test_flush_splits_by_bytes_and_fails_requests_too_big_for_any_batch(
    engine: CostEngine, clock: Clock
) -> None:
    probe = FakeRemote()
    small = reqs(6)
    size = probe.request_size(small[0])
    huge = BatchRequest(id="huge", model="gpt-4o-mini", messages=(Message("user", "x" * 5000),))
    remote = FakeRemote(limits=BatchLimits(max_requests=100, max_bytes=size * 2 + 1))
    job = make_job(remote, engine, clock)
    job.enqueue([*small[:3], huge, *small[3:]])
    job.wait()
    assert remote.submitted == [["r0", "r1"], ["r2", "r3"], ["r4", "r5"]]
    results = job.results()
    assert results["huge"].status == "errored" and "exceeds" in (results["huge"].error or "")
    assert job.status().failed == 1 and job.status().done == 6


def test_flush_by_size_on_enqueue(engine: CostEngine, clock: Clock) -> None:
    remote = FakeRemote()
    job = make_job(remote, engine, clock, max_pending=4)
    job.enqueue(reqs(3))
    assert remote.submitted == []
    job.enqueue([BatchRequest(id="r3", model="gpt-4o-mini", messages=(Message("user", "x"),))])
    assert remote.submitted == [["r0", "r1", "r2", "r3"]]


def test_flush_by_age_on_enqueue_and_poll(engine: CostEngine, clock: Clock) -> None:
    remote = FakeRemote()
    job = make_job(remote, engine, clock, max_wait_s=60.0)
    job.enqueue(reqs(2))
    assert remote.submitted == []
    clock.now += 30
    job.poll()
    assert remote.submitted == []
    clock.now += 30
    job.poll()  # the oldest request has now waited 60 s
    assert remote.submitted == [["r0", "r1"]]


def test_explicit_flush_only_by_default(engine: CostEngine, clock: Clock) -> None:
    remote = FakeRemote()
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(500))
    clock.now += 10**6
    job.poll()
    assert remote.submitted == []
    job.flush()
    assert sum(len(b) for b in remote.submitted) == 500


def test_partial_failures_are_retried_up_to_max_attempts(engine: CostEngine, clock: Clock) -> None:
    def flaky(request: BatchRequest, attempt: int) -> BatchResult:
        n = int(request.id[1:])
        if n % 3 == 1 and attempt < 2:  # succeeds on the second attempt
            return BatchResult(id=request.id, status="errored", error="overloaded", retryable=True)
        if n % 3 == 2:  # never succeeds
            return BatchResult(id=request.id, status="errored", error="overloaded", retryable=True)
        return answer(request, attempt)

    remote = FakeRemote(flaky)
    job = make_job(remote, engine, clock, max_attempts=3)
    results = job.run(reqs(6))
    assert [r.status for r in results] == ["succeeded", "succeeded", "errored"] * 2
    assert results[2].error == "overloaded" and results[2].retryable
    assert remote.attempts == Counter({"r0": 1, "r3": 1, "r1": 2, "r4": 2, "r2": 3, "r5": 3})
    stored = {s.id: s for s in job.queue.stored("job")}
    assert stored["r2"].state == "failed" and stored["r2"].attempts == 3
    assert job.status().done == 4 and job.status().failed == 2
    assert len(engine.ledger) == 4  # only successes are billed


def test_a_non_retryable_error_fails_at_once(engine: CostEngine, clock: Clock) -> None:
    def bad(request: BatchRequest, attempt: int) -> BatchResult:
        return BatchResult(
            id=request.id, status="errored", error="invalid_request", retryable=False
        )

    remote = FakeRemote(bad)
    job = make_job(remote, engine, clock, max_attempts=5)
    [result] = job.run(reqs(1))
    assert result.error == "invalid_request"
    assert remote.attempts["r0"] == 1


def test_expired_requests_are_queued_again_and_resubmitted(
    engine: CostEngine, clock: Clock
) -> None:
    def expires_once(request: BatchRequest, attempt: int) -> BatchResult:
        if attempt == 1:
            return BatchResult(id=request.id, status="expired", error="24h", retryable=True)
        return answer(request, attempt)

    remote = FakeRemote(expires_once, hold=True)
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(3))
    job.flush()
    remote.release()
    status = job.poll()
    assert status.queued == 3 and status.submitted == 0  # back in the queue, not lost
    remote.hold = False
    status = job.wait()
    assert status.done == 3
    assert remote.submitted == [["r0", "r1", "r2"], ["r0", "r1", "r2"]]


def test_a_missing_result_counts_as_a_retryable_error(engine: CostEngine, clock: Clock) -> None:
    class Drops(FakeRemote):
        def results(self, batch_id: str) -> list[BatchResult]:
            out = super().results(batch_id)
            return out[1:] if len(self.submitted) == 1 else out

    remote = Drops()
    job = make_job(remote, engine, clock)
    results = job.run(reqs(2))
    assert [r.status for r in results] == ["succeeded", "succeeded"]
    assert remote.attempts == Counter({"r0": 2, "r1": 1})


def test_a_batch_the_provider_lost_is_requeued(engine: CostEngine, clock: Clock) -> None:
    remote = FakeRemote(hold=True)
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(2))
    job.flush()
    remote.batches.clear()  # e.g. the provider purged it
    remote.hold = False
    job.wait()
    assert job.status().done == 2
    assert remote.attempts == Counter({"r0": 2, "r1": 2})


def test_cancel_stops_queued_and_running_requests(engine: CostEngine, clock: Clock) -> None:
    remote = FakeRemote(hold=True)
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(3))
    job.flush()
    job.enqueue([BatchRequest(id="late", model="gpt-4o-mini", messages=(Message("user", "x"),))])
    status = job.cancel()
    assert remote.canceled == ["b0"]
    assert status.job_canceled and status.canceled == 1 and status.submitted == 3
    status = job.wait()
    # r0 was answered before the stop: kept and billed; the rest canceled, never retried.
    assert (status.done, status.canceled, status.complete) == (1, 3, True)
    results = job.results()
    assert [results[i].status for i in ("r0", "r1", "r2", "late")] == [
        "succeeded",
        "canceled",
        "canceled",
        "canceled",
    ]
    assert "before this request was submitted" in (results["late"].error or "")
    assert len(remote.submitted) == 1
    assert len(engine.ledger) == 1
    # A canceled job submits nothing more.
    with pytest.raises(BatchError, match="already in batch job"):
        job.enqueue(reqs(1))
    job.queue.enqueue("job", [BatchRequest(id="new", model="m", messages=())], now=0.0)
    assert job.flush() == []


def test_results_are_priced_at_batch_rates_with_half_saved_under_batch(
    engine: CostEngine, clock: Clock
) -> None:
    job = make_job(FakeRemote(), engine, clock, framework="langchain")
    job.run(reqs(4, model="gpt-4o-mini", tenant="acme"))
    records = engine.ledger.records()
    assert len(records) == 4
    sync_cost = engine.cost("gpt-4o-mini", USAGE, "sync")
    assert sync_cost == Decimal("0.00045")
    for r in records:
        assert r.mode == "batch"
        assert r.cost_usd == sync_cost / 2
        assert r.savings_usd["batch"] == sync_cost / 2
        assert (r.tenant, r.framework) == ("acme", "langchain")
        assert r.tags["batch_job"] == "job"
    assert records[0].call_id == "batch:job:r0"
    totals = engine.ledger.totals()
    assert totals.savings_usd["batch"] == totals.cost_usd == 4 * sync_cost / 2


def test_anthropic_model_is_also_half_price(engine: CostEngine, clock: Clock) -> None:
    job = make_job(FakeRemote(), engine, clock)
    job.run(reqs(2, model="claude-haiku-4-5"))
    sync_cost = engine.cost("claude-haiku-4-5", USAGE, "sync")
    assert sync_cost is not None
    assert engine.ledger.totals().cost_usd == sync_cost  # two calls at half price each


def test_record_switch_off(engine: CostEngine, clock: Clock) -> None:
    job = make_job(FakeRemote(), engine, clock)
    job.record = False
    job.run(reqs(2))
    assert len(engine.ledger) == 0


def test_restart_collects_submitted_batches_once(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "jobs.db"
    remote = FakeRemote(hold=True)  # the provider's state outlives the "process"
    first_engine = CostEngine(embedder=FakeEmbedder())
    first = make_job(remote, first_engine, clock, BatchQueue(path))
    first.enqueue(reqs(5))
    first.flush()
    assert first.poll().submitted == 5
    first.queue.close()
    del first  # the process "dies" between submit and collect

    remote.release()
    engine = CostEngine(embedder=FakeEmbedder())
    second = make_job(remote, engine, clock, BatchQueue(path))
    assert second.status().open_batches == 1
    status = second.wait()
    assert status.done == 5 and len(engine.ledger) == 5
    assert len(first_engine.ledger) == 0
    # A third reader of the file, or a second wait, records nothing again.
    third_engine = CostEngine(embedder=FakeEmbedder())
    third = make_job(remote, third_engine, clock, BatchQueue(path))
    third.wait()
    second.wait()
    assert len(third_engine.ledger) == 0 and len(engine.ledger) == 5
    assert remote.results_calls == 1
    assert [r.text for r in third.results().values()] == [f"answer r{i}" for i in range(5)]


def test_two_job_objects_collecting_the_same_batch_record_it_once(
    tmp_path: Path, engine: CostEngine, clock: Clock
) -> None:
    path = tmp_path / "jobs.db"
    remote = FakeRemote(hold=True)
    a = make_job(remote, engine, clock, BatchQueue(path))
    b = make_job(remote, engine, clock, BatchQueue(path))
    a.enqueue(reqs(3))
    a.flush()
    remote.release()
    other = CostEngine(embedder=FakeEmbedder())
    b._engine = other
    b.poll()
    a.poll()
    assert len(other.ledger) == 3 and len(engine.ledger) == 0


def test_wait_times_out_and_the_job_can_be_waited_on_later(
    engine: CostEngine, clock: Clock
) -> None:
    remote = FakeRemote(hold=True)
    job = make_job(remote, engine, clock, poll_interval_s=5.0)
    job.enqueue(reqs(2))
    with pytest.raises(BatchError, match="not finished after 12"):
        job.wait(timeout_s=12)
    assert clock.slept == [5.0, 5.0, 5.0]
    remote.release()
    assert job.wait().done == 2


def test_wait_shows_a_progress_bar(
    engine: CostEngine, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    make_job(FakeRemote(), engine, clock).run(reqs(3), progress=True)
    err = capsys.readouterr().err
    assert "batch job" in err and "3/3" in err


def test_submit_failure_keeps_requests_queued(engine: CostEngine, clock: Clock) -> None:
    remote = FakeRemote()
    remote.fail_submit = RuntimeError("HTTP 500")
    job = make_job(remote, engine, clock)
    job.enqueue(reqs(2))
    with pytest.raises(BatchError, match="HTTP 500"):
        job.flush()
    assert job.status().queued == 2
    # A provider without lookup: no submission record is left to recover.
    assert job.queue.pending_submissions("job") == []
    remote.fail_submit = None
    assert job.wait().done == 2


def test_open_batches_of_another_provider_are_an_error(
    tmp_path: Path, engine: CostEngine, clock: Clock
) -> None:
    path = tmp_path / "jobs.db"
    job = make_job(FakeRemote(hold=True), engine, clock, BatchQueue(path))
    job.enqueue(reqs(1))
    job.flush()

    class Other(FakeRemote):
        name = "other"

    with pytest.raises(BatchError, match="provider"):
        make_job(Other(), engine, clock, BatchQueue(path)).poll()


def test_config_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_attempts"):
        BatchJobConfig(max_attempts=0)
    with pytest.raises(ConfigurationError, match="poll_interval_s"):
        BatchJob(FakeRemote(), ":memory:", poll_interval_s=0)
    with pytest.raises(BatchError, match="not both"):
        BatchJob(FakeRemote(), ":memory:", config=BatchJobConfig(), max_attempts=2)


def test_poll_interval_defaults_from_the_provider() -> None:
    assert BatchJob(FakeRemote(), ":memory:").poll_interval_s == 10.0
    remote = FakeRemote()
    remote.poll_interval_s = 2.5  # type: ignore[attr-defined]
    assert BatchJob(remote, ":memory:").poll_interval_s == 2.5


async def test_sync_and_async_paths_agree(clock: Clock) -> None:
    def flaky(request: BatchRequest, attempt: int) -> BatchResult:
        if request.id == "r1" and attempt == 1:
            return BatchResult(id=request.id, status="expired", retryable=True)
        if request.id == "r2":
            return BatchResult(id=request.id, status="errored", error="bad", retryable=False)
        return answer(request, attempt)

    sync_engine = CostEngine(embedder=FakeEmbedder())
    async_engine = CostEngine(embedder=FakeEmbedder())
    limits = BatchLimits(max_requests=2, max_bytes=10**9)
    sync_remote, async_remote = FakeRemote(flaky, limits=limits), FakeRemote(flaky, limits=limits)
    sync_job = make_job(sync_remote, sync_engine, clock)
    sync_results = sync_job.run(reqs(5))
    async_job = make_job(async_remote, async_engine, clock)
    async_results = await async_job.arun(reqs(5))
    assert sync_results == async_results
    assert [r.status for r in sync_results].count("succeeded") == 4
    assert sync_remote.submitted == async_remote.submitted
    assert sync_engine.ledger.totals().cost_usd == async_engine.ledger.totals().cost_usd
    assert sync_job.status().to_dict() == async_job.status().to_dict()

    # async cancel and poll too
    held = FakeRemote(hold=True)
    job = make_job(held, async_engine, clock)
    await job.aenqueue(reqs(2))
    await job.aflush()
    await job.acancel()
    status = await job.await_()
    assert (status.done, status.canceled) == (1, 1)


def test_run_refuses_a_bad_timeout_before_queueing(engine: CostEngine, clock: Clock) -> None:
    from costopt_core.errors import ConfigurationError

    job = make_job(FakeRemote(), engine, clock)
    with pytest.raises(ConfigurationError, match="timeout_s must be a finite number"):
        job.run(reqs(2), timeout_s=float("nan"))
    assert job.status().queued == 0


def test_wait_tries_again_while_the_provider_cannot_answer(
    engine: CostEngine, clock: Clock
) -> None:
    """A rate limit or a server error on a poll is tried again after the poll interval
    (a blip during a 24 h wait used to end it), up to max_unavailable times in a row."""
    from costopt_core.batch.provider import ProviderUnavailableError

    class Flaky(FakeRemote):
        def __init__(self, fails: int) -> None:
            super().__init__()
            self.fails = fails

        def poll(self, batch_id: str) -> RemoteBatch:
            if self.fails:
                self.fails -= 1
                raise ProviderUnavailableError("poll failed: HTTP 503")
            return super().poll(batch_id)

    job = make_job(Flaky(fails=3), engine, clock)
    job.enqueue(reqs(2))
    assert job.wait().done == 2
    assert len(engine.ledger) == 2
    stubborn = make_job(Flaky(fails=10), engine, clock, max_unavailable=2)
    stubborn.enqueue(reqs(1))
    with pytest.raises(ProviderUnavailableError, match=r"batch job 'job': poll failed"):
        stubborn.wait()
