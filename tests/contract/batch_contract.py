"""The one contract every ``BatchProvider`` passes, as a mixin test class.

The batch job trusts its provider for a few things it cannot check afterwards:
one result per submitted request, texts and usage as the provider reported
them, failures per request with an honest ``retryable``, unprocessed requests
of an expired batch reported as expired (and retryable), cancellation ending
the batch with canceled results, errors as ``BatchError`` (never an SDK
exception), and a batch id that a new provider object (a new process) can poll
and collect. This suite pins those down once for every provider, through the
sync methods and through their async twins, with the same assertions.

Subclass it, provide ``make_provider(server)`` (a new provider object talking
to the same backend, as a new process would) and override the ``server``
fixture with whatever runs the batches. A server that can be scripted says so
in its ``supports`` set; tests needing a behaviour it lacks are skipped:

- ``expected``: ``server.expected(requests)`` -> ``{id: (text, Usage)}``;
- ``fail``: ``server.fail(request_id, "rate_limit" | "server" | "invalid")``;
- ``hold``: ``server.hold(polls)`` keeps the next batch in progress for N polls;
- ``expire``: ``server.expire_after(n)``: the next batch expires after n requests;
- ``cancel_after``: ``server.cancel_after(n)``: on cancel, n requests have run.

Optional hooks: ``make_unreachable_provider()`` (a provider pointed at a dead
address), ``fail_submits(server, status, times)`` (the next ``times`` batch
creations answer HTTP ``status``; :func:`fail_creates` does it for the HTTP
fakes), ``provider_source(server)`` (Python source defining ``provider``, for
the process-killed-after-submit test) and ``durable = False`` for providers
whose batches die with the process. Nothing sleeps longer than 10 ms.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest

from costopt_core.batch.job import BatchJob
from costopt_core.batch.provider import (
    BatchProvider,
    BatchRequest,
    BatchResult,
    RecoverableBatchProvider,
    RemoteBatch,
    Submission,
)
from costopt_core.batch.queue import BatchQueue
from costopt_core.engine import CostEngine
from costopt_core.errors import BatchError
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message

__all__ = [
    "BatchControl",
    "BatchProviderContract",
    "ProviderOps",
    "close",
    "fail_creates",
    "finish",
    "flush",
    "make_requests",
    "new_job",
]

Mode = Literal["sync", "async"]
REPO = Path(__file__).resolve().parents[2]
#: At least 8 words: a cacheable prefix for servers that model prompt caching.
SYSTEM = "You are a terse assistant: answer every question in one short sentence."


def make_requests(
    n: int, *, prefix: str = "q", model: str = "model-a", system: str | None = SYSTEM
) -> list[BatchRequest]:
    """``n`` small chat requests with ids ``<prefix>0`` ... and a shared system prompt."""
    out = []
    for i in range(n):
        messages = [Message("user", f"What is item number {i} of the list?")]
        if system is not None:
            messages.insert(0, Message("system", system))
        out.append(BatchRequest(id=f"{prefix}{i}", model=model, messages=tuple(messages)))
    return out


def fail_creates(server: Any, status: int, times: int, *, after: int = 0) -> None:
    """Make ``times`` batch creations of an HTTP fake answer HTTP ``status``, ``after`` on.

    For the fakes of ``tests/fakes`` (their ``_create`` and ``_error``).
    """
    create = server._create
    left = [times]
    passed = [after]

    def failing(body: bytes) -> Any:
        if passed[0] > 0:
            passed[0] -= 1
        elif left[0] > 0:
            left[0] -= 1
            return server._error(status, f"scripted HTTP {status}")
        return create(body)

    server._create = failing


def asked_by(who: str, requests: Sequence[BatchRequest]) -> list[BatchRequest]:
    """``requests`` with the same ids and other questions (another job's)."""
    return [
        dataclasses.replace(r, messages=(Message("user", f"{who} asks question {r.id}"),))
        for r in requests
    ]


def assert_own_answers(results: Mapping[str, Any], mine: Sequence[Any], server: Any) -> None:
    """Every request of ``mine`` succeeded with its own answer, none with job B's."""
    assert {i: r.status for i, r in results.items()} == dict.fromkeys(
        ("q0", "q1", "q2"), "succeeded"
    )
    assert not any("B asks" in (r.text or "") for r in results.values())
    if "expected" in getattr(server, "supports", ()):
        assert {i: (r.text, r.usage) for i, r in results.items()} == server.expected(mine)


def new_job(provider: BatchProvider, name: str, queue: BatchQueue | None = None) -> BatchJob:
    return BatchJob(
        provider,
        queue if queue is not None else BatchQueue(":memory:"),
        name=name,
        engine=CostEngine(embedder=FakeEmbedder()),
        poll_interval_s=0.002,
    )


async def flush(job: BatchJob, mode: Mode) -> list[str]:
    return job.flush() if mode == "sync" else await job.aflush()


async def finish(job: BatchJob, mode: Mode) -> dict[str, BatchResult]:
    if mode == "sync":
        job.wait(timeout_s=30)
    else:
        await job.await_(timeout_s=30)
    return job.results()


class BatchControl:
    """A backend that cannot be scripted (the default ``server``): scripted tests skip."""

    supports: frozenset[str] = frozenset()


def need(server: Any, *features: str) -> None:
    missing = [f for f in features if f not in getattr(server, "supports", ())]
    if missing:
        pytest.skip(f"the provider's server cannot script {', '.join(missing)}")


def by_id(results: Sequence[BatchResult]) -> dict[str, BatchResult]:
    ids = [r.id for r in results]
    assert len(ids) == len(set(ids)), f"duplicate results: {sorted(ids)}"
    return {r.id: r for r in results}


def comparable(result: BatchResult) -> tuple[Any, ...]:
    """A result without ``raw`` (which holds per-call ids)."""
    return (
        result.id,
        result.status,
        result.text,
        result.usage,
        result.model,
        result.error,
        result.retryable,
    )


class ProviderOps:
    """One awaitable API over a provider's sync methods or its async twins."""

    def __init__(self, provider: BatchProvider, mode: Mode) -> None:
        self.provider = provider
        self.mode = mode

    async def submit(self, requests: Sequence[BatchRequest]) -> str:
        if self.mode == "sync":
            return self.provider.submit(requests)
        return await self.provider.asubmit(requests)

    async def poll(self, batch_id: str) -> RemoteBatch:
        if self.mode == "sync":
            return self.provider.poll(batch_id)
        return await self.provider.apoll(batch_id)

    async def results(self, batch_id: str) -> list[BatchResult]:
        if self.mode == "sync":
            return self.provider.results(batch_id)
        return await self.provider.aresults(batch_id)

    async def cancel(self, batch_id: str) -> None:
        if self.mode == "sync":
            self.provider.cancel(batch_id)
        else:
            await self.provider.acancel(batch_id)

    async def wait(self, batch_id: str, *, max_polls: int = 1000) -> list[RemoteBatch]:
        """Poll until the batch ended; every status seen, the last one ended."""
        seen = []
        for i in range(max_polls):
            remote = await self.poll(batch_id)
            assert remote.id == batch_id
            seen.append(remote)
            if remote.status == "ended":
                return seen
            if i >= 3:  # scripted servers move per poll; threaded ones need a moment
                await asyncio.sleep(0.01)
        raise AssertionError(f"batch {batch_id} did not end after {max_polls} polls: {seen[-1]}")

    async def run(self, requests: Sequence[BatchRequest]) -> tuple[str, dict[str, BatchResult]]:
        batch_id = await self.submit(requests)
        await self.wait(batch_id)
        return batch_id, by_id(await self.results(batch_id))


async def close(provider: Any) -> None:
    """Close what a provider opened (async clients on the loop that made them)."""
    aclose = getattr(provider, "aclose", None)
    if aclose is not None:
        await aclose()
    sync_close = getattr(provider, "close", None)
    if sync_close is not None:
        sync_close()


class BatchProviderContract:
    """Mixin: the ``BatchProvider`` contract. Subclasses provide ``make_provider()``."""

    #: a batch outlives the provider object (and the process) that submitted it.
    durable = True

    def make_provider(self, server: Any) -> BatchProvider:
        """A new provider object for ``server``'s batches, as a new process would make."""
        raise NotImplementedError

    def make_unreachable_provider(self) -> BatchProvider | None:
        """A provider whose backend cannot be reached (``None``: test skipped)."""
        return None

    def provider_source(self, server: Any) -> str | None:
        """Python source that defines ``provider`` in a fresh interpreter (``None``: skipped)."""
        return None

    def fail_submits(self, server: Any, status: int, times: int) -> bool:
        """Make the next ``times`` submits fail with HTTP ``status``; False: cannot (skipped)."""
        return False

    @pytest.fixture
    def server(self) -> Iterator[Any]:
        """What runs the batches; override with a scriptable one where there is one."""
        yield BatchControl()

    @pytest.fixture
    async def provider(self, server: Any) -> AsyncIterator[BatchProvider]:
        provider = self.make_provider(server)
        yield provider
        await close(provider)

    @pytest.fixture(params=["sync", "async"])
    def ops(self, request: pytest.FixtureRequest, provider: BatchProvider) -> ProviderOps:
        return ProviderOps(provider, request.param)

    # -- the basics ---------------------------------------------------------------------

    async def test_provider_satisfies_the_protocol(self, provider: BatchProvider) -> None:
        assert isinstance(provider, BatchProvider)
        assert isinstance(provider.name, str) and provider.name
        assert provider.limits.max_requests >= 1
        assert provider.limits.max_bytes >= 1

    async def test_submit_poll_collect_gives_one_result_per_request(
        self, ops: ProviderOps, server: Any
    ) -> None:
        requests = make_requests(4)
        batch_id, results = await ops.run(requests)
        assert isinstance(batch_id, str) and batch_id
        assert set(results) == {r.id for r in requests}
        for request in requests:
            result = results[request.id]
            assert result.status == "succeeded", result
            assert isinstance(result.text, str) and result.text
            assert result.error is None
            assert result.usage is not None
            assert result.usage.input_tokens and result.usage.output_tokens
            assert result.model is not None and result.model.startswith(request.model)
        if "expected" in getattr(server, "supports", ()):
            expected = server.expected(requests)
            assert {i: (r.text, r.usage) for i, r in results.items()} == expected
            # The shared system prompt is a cache hit after the first request.
            assert any(r.usage and r.usage.cache_read_tokens for r in results.values())

    async def test_final_counts_add_up_to_the_requests(self, ops: ProviderOps) -> None:
        requests = make_requests(3)
        batch_id = await ops.submit(requests)
        seen = await ops.wait(batch_id)
        for remote in seen:
            assert sum(remote.counts.values()) in (0, len(requests)), remote
        assert seen[-1].counts.get("succeeded") == len(requests)
        assert not seen[-1].counts.get("processing")

    async def test_results_match_requests_by_id_not_by_order(self, ops: ProviderOps) -> None:
        requests = [
            BatchRequest(id=f"id-{word}", model="model-a", messages=(Message("user", word),))
            for word in ("alpha", "bravo", "charlie", "delta", "echo")
        ]
        _, results = await ops.run(requests)
        for request in requests:
            text = results[request.id].text
            assert text is not None and request.messages[-1].content in text

    async def test_unknown_batch_id_is_a_batch_error(self, ops: ProviderOps) -> None:
        with pytest.raises(BatchError):
            await ops.poll("batch_doesnotexist")
        with pytest.raises(BatchError):
            await ops.results("batch_doesnotexist")

    async def test_request_size_is_consistent_with_limits(self, provider: BatchProvider) -> None:
        [small] = make_requests(1)
        big = BatchRequest(
            id=small.id, model=small.model, messages=(*small.messages, Message("user", "x" * 5000))
        )
        size = provider.request_size(small)
        assert size > 0
        assert provider.request_size(small) == size  # stable
        assert provider.request_size(big) >= size + 5000
        # A unicode character takes its UTF-8 bytes.
        wide = BatchRequest(id=small.id, model=small.model, messages=(Message("user", "é" * 100),))
        narrow = BatchRequest(
            id=small.id, model=small.model, messages=(Message("user", "e" * 100),)
        )
        assert provider.request_size(wide) >= provider.request_size(narrow) + 100
        # A full batch of typical requests fits in max_bytes.
        assert size * min(provider.limits.max_requests, 1000) <= provider.limits.max_bytes

    # -- progress, failures, expiry, cancellation ---------------------------------------

    async def test_a_running_batch_reports_progress_and_has_no_results_yet(
        self, ops: ProviderOps, server: Any
    ) -> None:
        need(server, "hold")
        server.hold(3)
        requests = make_requests(3)
        batch_id = await ops.submit(requests)
        first = await ops.poll(batch_id)
        assert first.status == "in_progress"
        assert first.counts.get("processing") == len(requests)
        assert first.expires_at is None or first.expires_at > 0
        with pytest.raises(BatchError):
            await ops.results(batch_id)
        seen = await ops.wait(batch_id)
        assert seen[-1].counts.get("succeeded") == len(requests)

    async def test_partial_failures_are_reported_per_request(
        self, ops: ProviderOps, server: Any
    ) -> None:
        need(server, "fail")
        server.fail("q1", "rate_limit")
        server.fail("q2", "server")
        server.fail("q3", "invalid")
        requests = make_requests(5)
        batch_id, results = await ops.run(requests)
        assert set(results) == {r.id for r in requests}
        assert [results[f"q{i}"].status for i in range(5)] == [
            "succeeded",
            "errored",
            "errored",
            "errored",
            "succeeded",
        ]
        assert results["q1"].retryable and results["q2"].retryable
        assert not results["q3"].retryable
        for i in (1, 2, 3):
            assert results[f"q{i}"].error, results[f"q{i}"]
            assert results[f"q{i}"].text is None
        assert "rate" in (results["q1"].error or "").lower()
        assert not results["q0"].retryable and results["q0"].error is None
        remote = await ops.poll(batch_id)
        assert remote.counts.get("succeeded") == 2
        assert remote.counts.get("errored") == 3

    async def test_expiry_reports_unprocessed_requests_as_expired_and_retryable(
        self, ops: ProviderOps, server: Any
    ) -> None:
        need(server, "expire")
        server.expire_after(2)
        requests = make_requests(5)
        batch_id, results = await ops.run(requests)
        assert set(results) == {r.id for r in requests}
        assert [results[f"q{i}"].status for i in range(5)] == ["succeeded"] * 2 + ["expired"] * 3
        for i in (2, 3, 4):
            assert results[f"q{i}"].retryable
            assert results[f"q{i}"].usage is None
        remote = await ops.poll(batch_id)
        assert remote.status == "ended"
        assert remote.counts.get("expired") == 3
        assert remote.counts.get("succeeded") == 2

    async def test_cancel_ends_the_batch_with_canceled_results(
        self, ops: ProviderOps, server: Any
    ) -> None:
        need(server, "hold", "cancel_after")
        server.hold(50)
        server.cancel_after(1)
        requests = make_requests(3)
        batch_id = await ops.submit(requests)
        assert (await ops.poll(batch_id)).status == "in_progress"
        await ops.cancel(batch_id)
        seen = await ops.wait(batch_id)
        assert {r.status for r in seen} <= {"in_progress", "canceling", "ended"}
        assert seen[-1].counts.get("canceled") == 2
        results = by_id(await ops.results(batch_id))
        assert [results[f"q{i}"].status for i in range(3)] == ["succeeded", "canceled", "canceled"]
        assert not results["q1"].retryable and not results["q2"].retryable

    async def test_cancel_then_collect_gives_every_request_an_outcome(
        self, ops: ProviderOps
    ) -> None:
        requests = make_requests(4)
        batch_id = await ops.submit(requests)
        await ops.cancel(batch_id)
        await ops.wait(batch_id)
        results = by_id(await ops.results(batch_id))
        assert set(results) == {r.id for r in requests}
        for result in results.values():
            assert result.status in ("succeeded", "canceled"), result
            if result.status == "canceled":
                assert not result.retryable

    async def test_cancel_of_an_ended_batch_changes_nothing(self, ops: ProviderOps) -> None:
        requests = make_requests(2)
        batch_id, before = await ops.run(requests)
        await ops.cancel(batch_id)
        after = by_id(await ops.results(batch_id))
        assert {i: comparable(r) for i, r in after.items()} == {
            i: comparable(r) for i, r in before.items()
        }

    # -- parity, restarts, unreachable backends -----------------------------------------

    async def test_sync_and_async_give_the_same_results(
        self, provider: BatchProvider, server: Any
    ) -> None:
        if "fail" in getattr(server, "supports", ()):
            server.fail("q2", "server")
        requests = make_requests(4)
        _, sync_results = await ProviderOps(provider, "sync").run(requests)
        _, async_results = await ProviderOps(provider, "async").run(requests)
        assert {i: comparable(r) for i, r in sync_results.items()} == {
            i: comparable(r) for i, r in async_results.items()
        }

    async def test_a_new_provider_object_collects_a_batch_submitted_by_another(
        self, ops: ProviderOps, server: Any
    ) -> None:
        if not self.durable:
            pytest.skip("this provider's batches live in its process")
        requests = make_requests(3)
        batch_id = await ops.submit(requests)
        await close(ops.provider)
        fresh = self.make_provider(server)
        try:
            again = ProviderOps(fresh, ops.mode)
            await again.wait(batch_id)
            results = by_id(await again.results(batch_id))
        finally:
            await close(fresh)
        assert set(results) == {r.id for r in requests}
        assert all(r.status == "succeeded" for r in results.values())
        if "expected" in getattr(server, "supports", ()):
            expected = server.expected(requests)
            assert {i: (r.text, r.usage) for i, r in results.items()} == expected

    async def test_a_process_killed_after_submit_leaves_a_collectable_batch(
        self, server: Any
    ) -> None:
        source = self.provider_source(server)
        if source is None or not self.durable:
            pytest.skip("no way to build this provider in another process")
        script = textwrap.dedent(source) + textwrap.dedent(
            """
            import sys, time
            from tests.contract.batch_contract import make_requests
            print(provider.submit(make_requests(3, prefix="k")), flush=True)
            time.sleep(120)  # killed here, before collecting
            """
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "shared"), str(REPO)])}
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            batch_id = proc.stdout.readline().strip()
            assert batch_id, proc.stderr.read() if proc.stderr else "no output"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        provider = self.make_provider(server)
        try:
            ops = ProviderOps(provider, "sync")
            await ops.wait(batch_id)
            results = by_id(await ops.results(batch_id))
        finally:
            await close(provider)
        assert set(results) == {"k0", "k1", "k2"}
        assert all(r.status == "succeeded" for r in results.values())
        if "expected" in getattr(server, "supports", ()):
            expected = server.expected(make_requests(3, prefix="k"))
            assert {i: (r.text, r.usage) for i, r in results.items()} == expected

    @pytest.mark.parametrize("mode", ["sync", "async"])
    async def test_an_unreachable_backend_is_a_batch_error(self, mode: Mode) -> None:
        provider = self.make_unreachable_provider()
        if provider is None:
            pytest.skip("this provider has no backend to lose")
        ops = ProviderOps(provider, mode)
        try:
            calls = [
                lambda: ops.submit(make_requests(1)),
                lambda: ops.poll("batch_abc"),
                lambda: ops.results("batch_abc"),
                lambda: ops.cancel("batch_abc"),
            ]
            for call in calls:
                with pytest.raises(BatchError) as info:
                    await call()
                assert type(info.value).__module__.startswith("costopt_core")
                assert "reach" in str(info.value)
        finally:
            await close(provider)

    # -- recoverable submissions ---------------------------------------------------------

    @pytest.mark.parametrize("mode", ["sync", "async"])
    async def test_a_tagged_submission_is_found_by_its_token_and_only_by_it(
        self, server: Any, mode: Mode
    ) -> None:
        provider = self.make_provider(server)
        if not isinstance(provider, RecoverableBatchProvider):
            await close(provider)
            pytest.skip("this provider cannot find a batch again by its submission token")
        try:

            async def submit(requests: Sequence[BatchRequest], token: str) -> str:
                if mode == "sync":
                    return provider.submit(requests, submission=token)
                return await provider.asubmit(requests, submission=token)

            async def find(submission: Submission) -> str | None:
                if mode == "sync":
                    return provider.find_submission(submission)
                return await provider.afind_submission(submission)

            started = time.time()
            before = await find(Submission("costopt-none", started, ("t0", "t1")))
            assert before is None  # nothing submitted under this token yet
            first = await submit(make_requests(2, prefix="t"), "costopt-first")
            second = await submit(make_requests(3, prefix="u"), "costopt-second")
            assert first != second
            # A new provider object (a new process) finds each batch by its token...
            fresh = self.make_provider(server)
            try:
                found_first = fresh.find_submission(
                    Submission("costopt-first", started, ("t0", "t1"), frozenset({second}))
                )
                found_second = fresh.find_submission(
                    Submission("costopt-second", started, ("u0", "u1", "u2"), frozenset({first}))
                )
                # ...and a token nothing was submitted under finds nothing.
                missing = fresh.find_submission(
                    Submission("costopt-never", started, ("v0",) * 4, frozenset({first, second}))
                )
            finally:
                await close(fresh)
            assert (found_first, found_second, missing) == (first, second, None)
        finally:
            await close(provider)

    # -- through a job: ids, refused submits, cancel -------------------------------------

    @pytest.mark.parametrize("mode", ["sync", "async"])
    async def test_a_job_runs_requests_under_any_id(self, server: Any, mode: Mode) -> None:
        ids = ["order 42", "caf\u00e9/1", "x" * 64, "plain-1"]
        requests = [
            dataclasses.replace(r, id=i) for r, i in zip(make_requests(4), ids, strict=True)
        ]
        job = new_job(self.make_provider(server), "ids")
        try:
            job.enqueue(requests)
            results = await finish(job, mode)
        finally:
            await close(job.provider)
        assert list(results) == ids
        assert {i: r.status for i, r in results.items()} == dict.fromkeys(ids, "succeeded")
        if "expected" in getattr(server, "supports", ()):
            assert {i: (r.text, r.usage) for i, r in results.items()} == server.expected(requests)

    @pytest.mark.parametrize("mode", ["sync", "async"])
    async def test_a_refused_submit_is_sent_again_and_never_takes_another_jobs_batch(
        self, server: Any, mode: Mode
    ) -> None:
        if not self.fail_submits(server, 429, 1):
            pytest.skip("this provider's server cannot refuse a submit")
        mine, theirs = make_requests(3), asked_by("B", make_requests(3))  # the same ids
        job, other = (
            new_job(self.make_provider(server), "a"),
            new_job(self.make_provider(server), "b"),
        )
        try:
            job.enqueue(mine)
            with pytest.raises(BatchError, match="429"):
                await flush(job, mode)
            counts = job.queue.counts("a")
            assert (counts["queued"], counts["submitting"]) == (3, 0)  # back at once
            other.enqueue(theirs)
            await flush(other, mode)
            results = await finish(job, mode)
            await finish(other, mode)
        finally:
            await close(job.provider)
            await close(other.provider)
        assert_own_answers(results, mine, server)
        assert sorted(r.call_id for r in job.engine.ledger.records()) == [
            "batch:a:q0",
            "batch:a:q1",
            "batch:a:q2",
        ]

    @pytest.mark.parametrize("mode", ["sync", "async"])
    async def test_an_interrupted_submit_never_takes_another_jobs_batch(
        self, server: Any, mode: Mode
    ) -> None:
        provider = self.make_provider(server)
        mine, theirs = make_requests(3), asked_by("B", make_requests(3))  # the same ids
        queue = BatchQueue(":memory:")
        queue.enqueue("a", mine, now=time.time())
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        # A process died inside the submit call, before the provider got anything...
        seqs = [q.seq for q in queue.queued("a")]
        owner = (socket.gethostname(), dead.pid)
        queue.begin_submission(
            "a", provider.name, "costopt-dead", seqs, now=time.time(), owner=owner
        )
        # ...while another job (its own queue file) sent requests with the same ids.
        other = new_job(self.make_provider(server), "b")
        job = new_job(provider, "a", queue)
        try:
            other.enqueue(theirs)
            await flush(other, mode)
            results = await finish(job, mode)
            await finish(other, mode)
        finally:
            await close(provider)
            await close(other.provider)
        assert_own_answers(results, mine, server)
        assert len(job.engine.ledger.records()) == 3  # the other job's calls are not ours

    @pytest.mark.parametrize("mode", ["sync", "async"])
    async def test_cancel_after_a_failed_submit_ends_every_request(
        self, server: Any, mode: Mode
    ) -> None:
        if not self.fail_submits(server, 500, 10):
            pytest.skip("this provider's server cannot fail a submit")
        job = new_job(self.make_provider(server), "a")
        try:
            job.enqueue(make_requests(2))
            with pytest.raises(BatchError, match="500"):
                await flush(job, mode)
            status = job.cancel() if mode == "sync" else await job.acancel()
            assert (status.canceled, status.submitted, status.complete) == (2, 0, True)
            results = await finish(job, mode)
        finally:
            await close(job.provider)
        assert {i: r.status for i, r in results.items()} == {"q0": "canceled", "q1": "canceled"}
