"""BatchJob, review fixes (3): a recovered batch with another program's plain ids is not
ours, a 404 of a provider that keeps its batches is not a lost batch, permanent submit
refusals are not retried, a canceled job takes no new requests, cancel releases the
budget hold, and a request that cannot be encoded fails alone."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, Literal

import anthropic
import pytest

from costopt_core import Budget, CostEngine, Message
from costopt_core.batch import (
    AnthropicBatchProvider,
    BatchJob,
    BatchQueue,
    BatchRequest,
    LocalBatchProvider,
    OpenAIBatchProvider,
)
from costopt_core.batch.budget import HOLDS, tenant_estimates
from costopt_core.errors import BatchError, BatchNotFoundError, BudgetExceededError
from costopt_core.testing import FakeEmbedder
from tests.contract.batch_contract import fail_creates
from tests.fakes.anthropic_batch_server import FakeAnthropicBatchServer
from tests.fakes.openai_batch_server import FakeOpenAIBatchServer

pytestmark = pytest.mark.filterwarnings("ignore::Warning")

Mode = Literal["sync", "async"]
Which = Literal["openai", "anthropic"]
MODES = ["sync", "async"]


def engine() -> CostEngine:
    return CostEngine(embedder=FakeEmbedder())


def server_for(which: Which) -> Any:
    return (FakeOpenAIBatchServer() if which == "openai" else FakeAnthropicBatchServer()).start()


def provider_for(which: Which, server: Any, api_key: str | None = None) -> Any:
    key = api_key or server.api_key
    if which == "openai":
        return OpenAIBatchProvider(api_key=key, base_url=server.url, max_retries=0)
    return AnthropicBatchProvider(api_key=key, base_url=server.url, max_retries=0)


def model_for(which: Which) -> str:
    return "gpt-4o-mini" if which == "openai" else "claude-haiku-4-5"


def asks(which: Which, n: int, prefix: str = "q", text: str = "question") -> list[BatchRequest]:
    return [
        BatchRequest(
            id=f"{prefix}{i}",
            model=model_for(which),
            messages=(Message("user", f"{text} {i}"),),
            params={"max_tokens": 50},
        )
        for i in range(n)
    ]


async def finish(job: BatchJob, mode: Mode, timeout_s: float = 30) -> None:
    if mode == "sync":
        job.wait(timeout_s=timeout_s)
    else:
        await job.await_(timeout_s=timeout_s)


async def close(provider: Any) -> None:
    provider.close()
    await provider.aclose()


# -- 1. a recovered batch with another program's plain ids is not this job's ---------------


class InterruptedOnce(AnthropicBatchProvider):
    """The process is interrupted inside the first create call, before the API got it."""

    interrupted = False

    def submit(self, requests: Any, *, submission: str | None = None) -> str:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().submit(requests, submission=submission)


def foreign_plain_batch(server: FakeAnthropicBatchServer, n: int) -> None:
    """Another program of the same org submits ``n`` requests with custom_ids "0", "1"..."""
    other = anthropic.Anthropic(api_key=server.api_key, base_url=server.url, max_retries=0)
    other.messages.batches.create(
        requests=[
            {
                "custom_id": str(i),
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 50,
                    "messages": [{"role": "user", "content": f"SOMEONE ELSE's question {i}"}],
                },
            }
            for i in range(n)
        ]
    )
    other.close()


@pytest.mark.parametrize("mode", MODES)
async def test_recovery_never_takes_another_programs_batch_with_plain_ids(mode: Mode) -> None:
    srv = FakeAnthropicBatchServer().start()
    provider = InterruptedOnce(api_key=srv.api_key, base_url=srv.url, max_retries=0)
    job = BatchJob(provider, ":memory:", name="a", engine=engine(), poll_interval_s=0.001)
    # The ids BatchRunnable / BatchRunner give their requests: "0", "1", "2".
    mine = asks("anthropic", 3, prefix="", text="MY question")
    try:
        job.enqueue(mine)
        with pytest.raises(KeyboardInterrupt):
            job.flush()
        assert job.queue.counts("a")["submitting"] == 3  # left for recovery
        foreign_plain_batch(srv, 3)
        await finish(job, mode)
    finally:
        await close(provider)
        srv.stop()
    texts = {rid: r.text or "" for rid, r in job.results().items()}
    assert not any("SOMEONE ELSE" in t for t in texts.values()), texts
    assert all(f"MY question {i}" in texts[str(i)] for i in range(3)), texts
    assert sorted(r.call_id for r in job.engine.ledger.records()) == [
        "batch:a:0",
        "batch:a:1",
        "batch:a:2",
    ]


def test_a_keyed_submission_recorded_in_the_queue_rejects_a_plain_id_batch() -> None:
    srv = FakeAnthropicBatchServer().start()
    queue = BatchQueue(":memory:")
    queue.enqueue("a", asks("anthropic", 3, prefix="", text="MY question"), now=time.time())
    seqs = [q.seq for q in queue.queued("a")]
    # A process of this version died inside the submit call (it sends keyed ids).
    queue.begin_submission(
        "a", "anthropic", "costopt-dead", seqs, now=time.time(), owner=("elsewhere", 1), keyed=True
    )
    foreign_plain_batch(srv, 3)
    provider = AnthropicBatchProvider(api_key=srv.api_key, base_url=srv.url, max_retries=0)
    job = BatchJob(
        provider, queue, name="a", engine=engine(), poll_interval_s=0.001, submit_lease_s=0.001
    )
    try:
        job.wait(timeout_s=30)
    finally:
        provider.close()
        srv.stop()
    texts = {rid: r.text or "" for rid, r in job.results().items()}
    assert all(f"MY question {i}" in texts[str(i)] for i in range(3)), texts


# -- 6. a 404 of a provider that keeps its batches is not a lost batch ----------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["openai", "anthropic"])
async def test_a_404_on_poll_raises_and_submits_nothing_again(which: Which, mode: Mode) -> None:
    proj_a, proj_b = server_for(which), server_for(which)
    proj_a.hold(100)
    proj_b._counter = 1000  # distinct ids, as two projects have
    queue = BatchQueue(":memory:")
    first = BatchJob(provider_for(which, proj_a), queue, name="nightly", engine=engine())
    slept: list[float] = []
    # Reattached with a client of another project (another key, another account).
    second = BatchJob(
        provider_for(which, proj_b),
        queue,
        name="nightly",
        engine=engine(),
        sleep=slept.append,
        asleep=lambda s: _asleep(slept, s),
    )
    try:
        first.enqueue(asks(which, 3))
        (batch_id,) = first.flush()
        with pytest.raises(BatchNotFoundError, match=rf"{batch_id}.*cannot see it"):
            await finish(second, mode)
        with pytest.raises(BatchNotFoundError, match=batch_id):
            second.poll() if mode == "sync" else await second.apoll()
    finally:
        await close(first.provider)
        await close(second.provider)
        proj_a.stop()
        proj_b.stop()
    status = second.status()
    assert (status.submitted, status.queued, status.open_batches) == (3, 0, 1)  # still open
    assert list(proj_b.batches) == []  # nothing sent (and billed) again
    assert slept == []  # not retried as "unavailable"


async def _asleep(slept: list[float], seconds: float) -> None:
    slept.append(seconds)


@pytest.mark.parametrize("mode", MODES)
async def test_a_404_on_cancel_raises_and_keeps_the_batch_open(mode: Mode) -> None:
    proj_a, proj_b = server_for("openai"), server_for("openai")
    proj_a.hold(100)
    proj_b._counter = 1000
    queue = BatchQueue(":memory:")
    first = BatchJob(provider_for("openai", proj_a), queue, name="j", engine=engine())
    second = BatchJob(provider_for("openai", proj_b), queue, name="j", engine=engine())
    try:
        first.enqueue(asks("openai", 2))
        (batch_id,) = first.flush()
        with pytest.raises(BatchNotFoundError, match=batch_id):
            second.cancel() if mode == "sync" else await second.acancel()
        assert second.status().open_batches == 1
    finally:
        await close(first.provider)
        await close(second.provider)
        proj_a.stop()
        proj_b.stop()


def test_a_local_batch_lost_with_its_process_is_still_queued_again() -> None:
    queue = BatchQueue(":memory:")
    reqs = asks("openai", 2)
    gone = LocalBatchProvider(lambda r: "ok")
    BatchJob(gone, queue, name="j", engine=engine()).enqueue(reqs)
    BatchJob(gone, queue, name="j", engine=engine()).flush()
    fresh = BatchJob(LocalBatchProvider(lambda r: "again"), queue, name="j", engine=engine())
    fresh.wait(timeout_s=30)
    assert {r.text for r in fresh.results().values()} == {"again"}


# -- 7. only a refusal that may pass later is retried by wait -------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_a_permanent_submit_refusal_is_raised_at_once(
    which: Which, status: int, mode: Mode
) -> None:
    srv = server_for(which)
    fail_creates(srv, status, 100)
    slept: list[float] = []
    job = BatchJob(
        provider_for(which, srv),
        ":memory:",
        name="j",
        engine=engine(),
        sleep=slept.append,
        asleep=lambda s: _asleep(slept, s),
    )
    try:
        with pytest.raises(BatchError, match=str(status)):
            if mode == "sync":
                job.run(asks(which, 1))
            else:
                await job.arun(asks(which, 1))
    finally:
        await close(job.provider)
        srv.stop()
    assert slept == []
    assert job.status().queued == 1  # the request stays queued


def test_a_wrong_api_key_is_raised_at_once() -> None:
    srv = FakeOpenAIBatchServer().start()
    slept: list[float] = []
    provider = provider_for("openai", srv, api_key="WRONG")
    job = BatchJob(provider, ":memory:", name="j", engine=engine(), sleep=slept.append)
    try:
        with pytest.raises(BatchError, match="401"):
            job.run(asks("openai", 1))
    finally:
        provider.close()
        srv.stop()
    assert slept == []
    assert [(m, p, s) for m, p, s in srv.log] == [("POST", "/v1/files", 401)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [408, 429, 503, 529])
async def test_a_refusal_for_now_is_tried_again(which: Which, status: int, mode: Mode) -> None:
    srv = server_for(which)
    fail_creates(srv, status, 2)
    slept: list[float] = []
    job = BatchJob(
        provider_for(which, srv),
        ":memory:",
        name="j",
        engine=engine(),
        poll_interval_s=0.5,
        sleep=slept.append,
        asleep=lambda s: _asleep(slept, s),
    )
    try:
        if mode == "sync":
            results = job.run(asks(which, 1))
        else:
            results = await job.arun(asks(which, 1))
    finally:
        await close(job.provider)
        srv.stop()
    assert [r.status for r in results] == ["succeeded"]
    assert slept[:2] == [0.5, 0.5]


# -- 8. a canceled job takes no new requests ---------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_enqueue_into_a_canceled_job_is_refused(mode: Mode) -> None:
    job = BatchJob(LocalBatchProvider(lambda r: "ok"), ":memory:", name="nightly", engine=engine())
    job.run(asks("openai", 1, prefix="mon"))
    job.cancel()
    with pytest.raises(BatchError, match=r"'nightly' was canceled.*another job name"):
        if mode == "sync":
            job.run(asks("openai", 1, prefix="wed"))
        else:
            await job.arun(asks("openai", 1, prefix="wed"))
    assert [s.id for s in job.queue.stored("nightly")] == ["mon0"]  # nothing queued


def test_run_raises_batch_error_for_a_request_left_without_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = BatchJob(
        LocalBatchProvider(lambda r: "ok"),
        ":memory:",
        name="j",
        engine=engine(),
        poll_interval_s=0.001,
    )
    wait = job.wait

    def canceled_elsewhere(**kwargs: Any) -> Any:
        # Another host starts submitting the request, and the job is canceled meanwhile.
        seqs = [q.seq for q in job.queue.queued("j")]
        job.queue.begin_submission(
            "j", "local", "costopt-elsewhere", seqs, now=time.time(), owner=("elsewhere", 1)
        )
        job.queue.cancel("j", now=time.time())
        return wait(**kwargs)

    monkeypatch.setattr(job, "wait", canceled_elsewhere)
    with pytest.raises(BatchError, match=r"without a result.*'q0'"):
        job.run(asks("openai", 1))


# -- 9. cancel releases the budget hold ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_releases_the_budget_hold_of_the_stopped_batch(mode: Mode) -> None:
    srv = FakeOpenAIBatchServer().start()
    srv.hold(100)
    srv.cancel_after(0)
    eng = engine()

    def reqs(tag: str) -> list[BatchRequest]:
        return [
            BatchRequest(
                id=f"{tag}{i}",
                model="gpt-4o-mini",
                messages=(Message("user", "hi " * 50),),
                params={"max_completion_tokens": 2000},
            )
            for i in range(5)
        ]

    est = tenant_estimates(eng, reqs("x"), "batch")[None]
    eng.ledger.add_budget(Budget(limit_usd=est * Decimal("1.5"), period="day", policy="block"))

    def job(name: str) -> BatchJob:
        return BatchJob(provider_for("openai", srv), ":memory:", name=name, engine=eng)

    a, b = job("a"), job("b")
    try:
        a.enqueue(reqs("a"))
        a.flush()
        with pytest.raises(BudgetExceededError):
            b.enqueue(reqs("b"))
            b.flush()
        status = a.cancel() if mode == "sync" else await a.acancel()
        assert (status.canceled, status.submitted, status.open_batches) == (5, 0, 0)
        assert not [h for key, hs in HOLDS._open.items() if key[1] == "a" for h in hs]
        # No poll of the canceled job needed: the corrected one is let through.
        assert len(b.flush() if mode == "sync" else await b.aflush()) == 1
    finally:
        await close(a.provider)
        await close(b.provider)
        srv.stop()


# -- 10. a request that cannot be encoded fails alone ------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_tool_call_with_non_json_arguments_fails_only_its_request(mode: Mode) -> None:
    srv = FakeAnthropicBatchServer().start()
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": "{not json"},
    }
    bad = BatchRequest(
        id="bad",
        model="claude-haiku-4-5",
        messages=(
            Message("user", "weather?"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "sunny", tool_call_id="call_1"),
        ),
        params={"max_tokens": 50},
    )
    provider = provider_for("anthropic", srv)
    job = BatchJob(provider, ":memory:", name="j", engine=engine(), poll_interval_s=0.001)
    try:
        job.enqueue([*asks("anthropic", 2), bad])
        await finish(job, mode)
    finally:
        await close(provider)
        srv.stop()
    results = job.results()
    assert [results[i].status for i in ("q0", "q1", "bad")] == ["succeeded", "succeeded", "errored"]
    error = results["bad"].error or ""
    assert "cannot be sent to the anthropic batch API" in error and "arguments" in error
    assert job.status().failed == 1
