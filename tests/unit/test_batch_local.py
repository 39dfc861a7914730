"""The ``local`` batch provider: bounded concurrency, retries, cancel, and jobs over it."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from costopt_core import BatchError, ConfigurationError, CostEngine, Message, Usage
from costopt_core.batch import (
    BatchJob,
    BatchNotFoundError,
    BatchProvider,
    BatchQueue,
    BatchRequest,
    BatchResult,
    LocalBatchProvider,
)
from costopt_core.testing import FakeEmbedder

USAGE = Usage(input_tokens=200, output_tokens=50)


def reqs(n: int, model: str = "gpt-4o-mini") -> list[BatchRequest]:
    return [
        BatchRequest(id=f"r{i}", model=model, messages=(Message("user", f"q{i}"),))
        for i in range(n)
    ]


def echo(request: BatchRequest) -> BatchResult:
    return BatchResult(
        id="ignored", status="succeeded", text=request.messages[-1].content.upper(), usage=USAGE
    )


class Gauge:
    """Counts calls running at once."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.running -= 1


def wait_ended(p: LocalBatchProvider, batch_id: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while p.poll(batch_id).status != "ended":
        assert time.monotonic() < deadline, "local batch did not end"
        time.sleep(0.005)


@pytest.fixture
def engine() -> CostEngine:  # type: ignore[override]
    return CostEngine(embedder=FakeEmbedder())


def test_implements_the_seam_and_bills_in_real_time() -> None:
    p = LocalBatchProvider(echo)
    assert isinstance(p, BatchProvider)
    assert p.mode == "sync" and p.name == "local"
    assert p.request_size(reqs(1)[0]) > 10


def test_runs_every_request_and_keeps_request_ids() -> None:
    p = LocalBatchProvider(echo, max_concurrency=3)
    batch_id = p.submit(reqs(10))
    wait_ended(p, batch_id)
    results = p.results(batch_id)
    assert [r.id for r in results] == [f"r{i}" for i in range(10)]
    assert results[3].text == "Q3" and results[3].usage == USAGE
    assert results[3].model == "gpt-4o-mini"  # filled from the request
    remote = p.poll(batch_id)
    assert remote.counts == {"succeeded": 10, "processing": 0}
    p.close()


def test_a_plain_string_answer_is_a_success_with_unknown_usage() -> None:
    p = LocalBatchProvider(lambda r: f"hi {r.id}")
    batch_id = p.submit(reqs(2))
    wait_ended(p, batch_id)
    assert [(r.status, r.text, r.usage) for r in p.results(batch_id)] == [
        ("succeeded", "hi r0", None),
        ("succeeded", "hi r1", None),
    ]


def test_concurrency_is_bounded() -> None:
    gauge = Gauge()

    def slow(request: BatchRequest) -> str:
        with gauge:
            time.sleep(gauge.delay_s)
        return "ok"

    p = LocalBatchProvider(slow, max_concurrency=3)
    batch_id = p.submit(reqs(12))
    wait_ended(p, batch_id)
    assert gauge.peak == 3


def test_errors_are_retried_then_reported_retryable() -> None:
    calls: dict[str, int] = {}

    def flaky(request: BatchRequest) -> str:
        calls[request.id] = calls.get(request.id, 0) + 1
        if request.id == "r0" and calls[request.id] < 3:
            raise TimeoutError("slow")
        if request.id == "r1":
            raise ConnectionError("down")
        return "ok"

    p = LocalBatchProvider(flaky, max_retries=2)
    batch_id = p.submit(reqs(3))
    wait_ended(p, batch_id)
    r0, r1, r2 = p.results(batch_id)
    assert r0.status == "succeeded" and calls["r0"] == 3
    assert r1.status == "errored" and r1.retryable and calls["r1"] == 3
    assert r1.error == "ConnectionError: down"
    assert r2.status == "succeeded" and calls["r2"] == 1


def test_errors_outside_retry_on_fail_at_once_not_retryable() -> None:
    calls = []

    def broken(request: BatchRequest) -> str:
        calls.append(request.id)
        raise ValueError("bad prompt")

    p = LocalBatchProvider(broken, max_retries=3, retry_on=(TimeoutError,))
    batch_id = p.submit(reqs(1))
    wait_ended(p, batch_id)
    [r] = p.results(batch_id)
    assert (r.status, r.retryable, calls) == ("errored", False, ["r0"])


def test_unknown_batch_and_unfinished_results() -> None:
    release = threading.Event()

    def blocked(request: BatchRequest) -> str:
        release.wait(5)
        return "ok"

    p = LocalBatchProvider(blocked)
    with pytest.raises(BatchNotFoundError, match="lost with the process"):
        p.poll("local_nope")
    batch_id = p.submit(reqs(2))
    assert p.poll(batch_id).status == "in_progress"
    with pytest.raises(BatchError, match="has not ended"):
        p.results(batch_id)
    release.set()
    wait_ended(p, batch_id)
    p.forget(batch_id)
    with pytest.raises(BatchNotFoundError):
        p.results(batch_id)


def test_cancel_stops_requests_not_yet_started() -> None:
    started = threading.Event()
    release = threading.Event()

    def blocked(request: BatchRequest) -> str:
        started.set()
        release.wait(5)
        return "ok"

    p = LocalBatchProvider(blocked, max_concurrency=1)
    batch_id = p.submit(reqs(4))
    started.wait(5)
    p.cancel(batch_id)
    assert p.poll(batch_id).status == "canceling"
    release.set()
    wait_ended(p, batch_id)
    statuses = [r.status for r in p.results(batch_id)]
    assert statuses == ["succeeded", "canceled", "canceled", "canceled"]


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="chat="):
        LocalBatchProvider()
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        LocalBatchProvider(echo, max_concurrency=0)
    with pytest.raises(ConfigurationError, match="max_retries"):
        LocalBatchProvider(echo, max_retries=-1)
    p = LocalBatchProvider(echo)
    with pytest.raises(BatchError, match="empty"):
        p.submit([])


async def test_async_submit_bounds_concurrency_with_achat() -> None:
    running = peak = 0

    async def achat(request: BatchRequest) -> BatchResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return echo(request)

    p = LocalBatchProvider(achat=achat, max_concurrency=4)
    batch_id = await p.asubmit(reqs(16))
    while (await p.apoll(batch_id)).status != "ended":
        await asyncio.sleep(0.005)
    results = await p.aresults(batch_id)
    assert [r.text for r in results] == [f"Q{i}" for i in range(16)]
    assert peak == 4


async def test_async_submit_with_a_sync_chat_runs_it_in_threads() -> None:
    p = LocalBatchProvider(echo)
    batch_id = await p.asubmit(reqs(3))
    while (await p.apoll(batch_id)).status != "ended":
        await asyncio.sleep(0.005)
    assert [r.text for r in await p.aresults(batch_id)] == ["Q0", "Q1", "Q2"]


def test_sync_submit_with_only_achat_runs_it() -> None:
    async def achat(request: BatchRequest) -> str:
        await asyncio.sleep(0)
        return "async ok"

    p = LocalBatchProvider(achat=achat)
    batch_id = p.submit(reqs(2))
    wait_ended(p, batch_id)
    assert [r.text for r in p.results(batch_id)] == ["async ok", "async ok"]


# -- a job over the local provider ---------------------------------------------------
def test_job_over_local_records_sync_calls_without_batch_savings(engine: CostEngine) -> None:
    job = BatchJob(LocalBatchProvider(echo), ":memory:", engine=engine, poll_interval_s=0.01)
    results = job.run(reqs(5))
    assert [r.text for r in results] == ["Q0", "Q1", "Q2", "Q3", "Q4"]
    records = engine.ledger.records()
    assert len(records) == 5 and {r.mode for r in records} == {"sync"}
    assert all("batch" not in r.savings_usd for r in records)
    assert engine.ledger.totals().cost_usd == 5 * Decimal(engine.cost("gpt-4o-mini", USAGE) or 0)


def test_job_retries_local_errors_across_attempts(engine: CostEngine) -> None:
    calls: dict[str, int] = {}

    def fails_three_times(request: BatchRequest) -> str:
        calls[request.id] = calls.get(request.id, 0) + 1
        if calls[request.id] <= 3:
            raise TimeoutError("busy")
        return "ok"

    # 2 tries per submission (max_retries=1), so the 4th call is in the 2nd attempt.
    p = LocalBatchProvider(fails_three_times, max_retries=1)
    job = BatchJob(p, ":memory:", engine=engine, poll_interval_s=0.01, max_attempts=2)
    [result] = job.run(reqs(1))
    assert result.status == "succeeded" and calls["r0"] == 4
    stored = job.queue.stored("default")
    assert stored[0].attempts == 2


def test_a_restarted_job_resubmits_a_lost_local_batch(tmp_path: Path, engine: CostEngine) -> None:
    path = tmp_path / "jobs.db"
    release = threading.Event()

    def blocked(request: BatchRequest) -> str:
        release.wait(5)
        return "first"

    first = BatchJob(LocalBatchProvider(blocked), BatchQueue(path), engine=engine)
    first.enqueue(reqs(3))
    first.flush()
    # The process "dies": its provider (and the batch's results) are gone.
    restarted = BatchJob(
        LocalBatchProvider(lambda r: "second"),
        BatchQueue(path),
        engine=engine,
        poll_interval_s=0.01,
    )
    status = restarted.wait()
    release.set()
    assert status.done == 3
    assert {r.text for r in restarted.results().values()} == {"second"}
    assert {s.attempts for s in restarted.queue.stored("default")} == {2}


async def test_job_sync_and_async_agree_over_local() -> None:
    sync_engine = CostEngine(embedder=FakeEmbedder())
    async_engine = CostEngine(embedder=FakeEmbedder())
    sync_job = BatchJob(
        LocalBatchProvider(echo), ":memory:", engine=sync_engine, poll_interval_s=0.01
    )
    async_job = BatchJob(
        LocalBatchProvider(echo), ":memory:", engine=async_engine, poll_interval_s=0.01
    )
    a = sync_job.run(reqs(6))
    b = await async_job.arun(reqs(6))
    assert a == b
    assert sync_engine.ledger.totals().cost_usd == async_engine.ledger.totals().cost_usd


def test_requests_stopped_by_their_event_loop_closing_run_again(engine: CostEngine) -> None:
    """asubmit in an asyncio.run that returns: its loop cancels the requests' tasks.
    They were not canceled by the user, so the job runs them again (they used to
    end 'canceled', their work lost)."""
    started = threading.Event()

    async def slow(request: BatchRequest) -> str:
        started.set()
        await asyncio.sleep(10)
        return "never"

    provider = LocalBatchProvider(echo, achat=slow)
    job = BatchJob(provider, ":memory:", engine=engine, poll_interval_s=0.01, max_attempts=2)

    async def submit_and_return() -> None:
        await job.aenqueue(reqs(2))
        await job.aflush()
        await asyncio.sleep(0)  # the tasks start, then the loop closes under them

    asyncio.run(submit_and_return())
    assert started.is_set()
    status = job.wait(timeout_s=5)  # the sync path runs echo
    assert (status.done, status.canceled, status.failed) == (2, 0, 0)
    assert sorted(r.text or "" for r in job.results().values()) == ["Q0", "Q1"]
    assert len(engine.ledger.records()) == 2
