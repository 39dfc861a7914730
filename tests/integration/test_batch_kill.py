"""A process killed (SIGKILL) mid-job loses nothing: a new process collects every result once.

The provider here keeps its batches in a SQLite file of its own, so, like a
real provider batch API, it outlives the process that submitted to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from costopt_core import CostEngine, Message, Usage
from costopt_core.batch import (
    BatchJob,
    BatchLimits,
    BatchNotFoundError,
    BatchQueue,
    BatchRequest,
    BatchResult,
    RemoteBatch,
    Submission,
)
from costopt_core.batch.queue import request_from_json, request_to_json
from costopt_core.testing import FakeEmbedder

REPO = Path(__file__).resolve().parents[2]
USAGE = Usage(input_tokens=300, output_tokens=100)


class FileBatchProvider:
    """A fake provider batch API whose state lives in a SQLite file, not in the process.

    Batches end ``ready_after_s`` after submission; every request succeeds.
    ``served()`` counts how often each batch's results were fetched. Batches
    carry the job's submission token and are found by it, as OpenAI's carry it
    in their metadata.
    """

    name = "filefake"

    def __init__(self, path: str | Path, *, ready_after_s: float = 0.0) -> None:
        self.path = str(path)
        self.ready_after_s = ready_after_s
        self.limits = BatchLimits(max_requests=40, max_bytes=10_000_000)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        db.execute(
            "CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, requests TEXT, "
            "submitted_at REAL, served INTEGER DEFAULT 0, submission TEXT)"
        )
        return db

    def request_size(self, request: BatchRequest) -> int:
        return len(request_to_json(request).encode())

    def submit(self, requests: Sequence[BatchRequest], *, submission: str | None = None) -> str:
        db = self._db()
        n = db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        batch_id = f"fb_{n}_{os.getpid()}"
        payload = json.dumps([request_to_json(r) for r in requests])
        db.execute(
            "INSERT INTO batches VALUES (?, ?, ?, 0, ?)",
            (batch_id, payload, time.time(), submission),
        )
        db.close()
        return batch_id

    def find_submission(self, submission: Submission) -> str | None:
        db = self._db()
        row = db.execute(
            "SELECT id FROM batches WHERE submission = ?", (submission.token,)
        ).fetchone()
        db.close()
        return None if row is None else str(row[0])

    async def afind_submission(self, submission: Submission) -> str | None:
        return self.find_submission(submission)

    def _row(self, batch_id: str) -> tuple[str, float]:
        db = self._db()
        row = db.execute(
            "SELECT requests, submitted_at FROM batches WHERE id = ?", (batch_id,)
        ).fetchone()
        db.close()
        if row is None:
            raise BatchNotFoundError(batch_id)
        return str(row[0]), float(row[1])

    def poll(self, batch_id: str) -> RemoteBatch:
        _, submitted_at = self._row(batch_id)
        ended = time.time() >= submitted_at + self.ready_after_s
        return RemoteBatch(id=batch_id, status="ended" if ended else "in_progress")

    def results(self, batch_id: str) -> list[BatchResult]:
        requests, _ = self._row(batch_id)
        db = self._db()
        db.execute("UPDATE batches SET served = served + 1 WHERE id = ?", (batch_id,))
        db.close()
        out = []
        for text in json.loads(requests):
            r = request_from_json(text)
            out.append(
                BatchResult(
                    id=r.id, status="succeeded", text=f"answer {r.id}", usage=USAGE, model=r.model
                )
            )
        return out

    def cancel(self, batch_id: str) -> None:
        self._row(batch_id)

    async def asubmit(
        self, requests: Sequence[BatchRequest], *, submission: str | None = None
    ) -> str:
        return self.submit(requests, submission=submission)

    async def apoll(self, batch_id: str) -> RemoteBatch:
        return self.poll(batch_id)

    async def aresults(self, batch_id: str) -> list[BatchResult]:
        return self.results(batch_id)

    async def acancel(self, batch_id: str) -> None:
        self.cancel(batch_id)

    def served(self) -> dict[str, int]:
        db = self._db()
        rows = db.execute("SELECT id, served FROM batches").fetchall()
        db.close()
        return {str(i): int(n) for i, n in rows}


def make_requests(n: int, start: int = 0, model: str = "gpt-4o-mini") -> list[BatchRequest]:
    return [
        BatchRequest(
            id=f"r{i}",
            model=model,
            messages=(Message("user", f"question {i}"),),
            params={"max_tokens": 32},
        )
        for i in range(start, start + n)
    ]


def spawn(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "shared"), str(REPO)])}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def spawn_enqueuer(queue_path: Path, job: str) -> subprocess.Popen[str]:
    """A child that enqueues 50 requests per commit into ``job`` and says so, until killed."""
    return spawn(
        f"""
        from costopt_core.batch import BatchQueue
        from tests.integration.test_batch_kill import make_requests
        q = BatchQueue({str(queue_path)!r})
        k = 0
        while True:
            q.enqueue({job!r}, make_requests(50, start=k * 50), now=float(k))
            k += 1
            print("COMMITTED", k * 50, flush=True)
        """
    )


def read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"child said {line!r}, expected {prefix!r}; stderr:\n{err}")
    return line


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.timeout(120)
def test_killed_between_submit_and_collect_then_collected_once(tmp_path: Path) -> None:
    queue_path, provider_path = tmp_path / "jobs.db", tmp_path / "provider.db"
    n = 200
    child = spawn(
        f"""
        import time
        from costopt_core.batch import BatchJob
        from tests.integration.test_batch_kill import FileBatchProvider, make_requests
        job = BatchJob(FileBatchProvider({str(provider_path)!r}, ready_after_s=0.5),
                       {str(queue_path)!r}, name="kill")
        job.enqueue(make_requests({n}))
        ids = job.flush()
        print("SUBMITTED", len(ids), flush=True)
        time.sleep(600)  # killed here, before anything is collected
        """
    )
    line = read_line(child, "SUBMITTED")
    kill(child)
    assert int(line.split()[1]) == 5  # 200 requests, 40 per batch

    provider = FileBatchProvider(provider_path, ready_after_s=0.5)
    engine = CostEngine(embedder=FakeEmbedder())
    job = BatchJob(provider, queue_path, name="kill", engine=engine, poll_interval_s=0.05)
    before = job.status()
    assert (before.submitted, before.open_batches, before.done) == (n, 5, 0)
    status = job.wait(timeout_s=60)
    assert (status.done, status.failed, status.complete) == (n, 0, True)

    results = job.results()
    assert list(results) == [f"r{i}" for i in range(n)]
    assert all(r.text == f"answer {rid}" for rid, r in results.items())
    records = engine.ledger.records()
    assert len(records) == n
    assert len({r.call_id for r in records}) == n
    assert {r.mode for r in records} == {"batch"}
    # Each remote batch's results were fetched once, and a second collector finds nothing.
    assert sorted(provider.served().values()) == [1] * 5
    other = CostEngine(embedder=FakeEmbedder())
    BatchJob(provider, queue_path, name="kill", engine=other, poll_interval_s=0.05).wait()
    assert len(other.ledger) == 0
    assert sorted(provider.served().values()) == [1] * 5


@pytest.mark.timeout(120)
def test_killed_while_enqueueing_keeps_every_committed_request(tmp_path: Path) -> None:
    queue_path = tmp_path / "jobs.db"
    child = spawn_enqueuer(queue_path, "job")
    last = 0
    for _ in range(20):
        last = int(read_line(child, "COMMITTED").split()[1])
    kill(child)
    queued = BatchQueue(queue_path).counts("job")["queued"]
    # Everything reported committed is there; a chunk is in whole or not at all.
    assert queued >= last
    assert queued % 50 == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["openai", "anthropic"])
def test_killed_job_over_the_provider_sdk_is_collected_once(tmp_path: Path, which: str) -> None:
    """The same, through the official SDK against the local fake of the provider's batch API."""
    fakes = pytest.importorskip(f"tests.fakes.{which}_batch_server")
    server_cls = (
        fakes.FakeOpenAIBatchServer if which == "openai" else fakes.FakeAnthropicBatchServer
    )
    module = f"costopt_core.batch.{which}_provider"
    provider_cls = "OpenAIBatchProvider" if which == "openai" else "AnthropicBatchProvider"
    model = "gpt-4o-mini" if which == "openai" else "claude-haiku-4-5"
    queue_path = tmp_path / "jobs.db"
    server = server_cls().start()
    try:
        child = spawn(
            f"""
            import time
            from costopt_core.batch import BatchJob
            from {module} import {provider_cls}
            from tests.integration.test_batch_kill import make_requests
            provider = {provider_cls}(api_key={server.api_key!r}, base_url={server.url!r},
                                      max_retries=0)
            reqs = [r.__class__(id=r.id, model={model!r}, messages=r.messages,
                                params={{"max_tokens": 32}}) for r in make_requests(30)]
            job = BatchJob(provider, {str(queue_path)!r}, name="kill")
            job.enqueue(reqs)
            print("SUBMITTED", len(job.flush()), flush=True)
            time.sleep(600)
            """
        )
        read_line(child, "SUBMITTED")
        kill(child)

        provider = getattr(pytest.importorskip(module), provider_cls)(
            api_key=server.api_key, base_url=server.url, max_retries=0
        )
        engine = CostEngine(embedder=FakeEmbedder())
        job = BatchJob(provider, queue_path, name="kill", engine=engine, poll_interval_s=0.01)
        assert job.status().submitted == 30
        status = job.wait(timeout_s=60)
        assert (status.done, status.complete) == (30, True)
        records = engine.ledger.records()
        assert len({r.call_id for r in records}) == len(records) == 30
        # Priced at the catalog's batch rates: exactly half of real time, the rest under batch.
        realtime = sum(engine.cost(r.model, r.usage, "sync") or Decimal(0) for r in records)
        totals = engine.ledger.totals()
        assert totals.cost_usd * 2 == realtime
        assert totals.savings_usd["batch"] == realtime - totals.cost_usd
        again = CostEngine(embedder=FakeEmbedder())
        BatchJob(provider, queue_path, name="kill", engine=again).wait()
        assert len(again.ledger) == 0
        close = getattr(provider, "close", None)
        if close is not None:
            close()
    finally:
        server.stop()


def _requests_at_provider(provider: FileBatchProvider) -> list[str]:
    """Every request id the provider ran, once per batch it appeared in."""
    db = provider._db()
    rows = db.execute("SELECT requests FROM batches").fetchall()
    db.close()
    return [request_from_json(text).id for (payload,) in rows for text in json.loads(payload)]


def _finish(provider: FileBatchProvider, queue_path: Path, name: str) -> CostEngine:
    engine = CostEngine(embedder=FakeEmbedder())
    job = BatchJob(provider, queue_path, name=name, engine=engine, poll_interval_s=0.05)
    job.flush()
    status = job.wait(timeout_s=60)
    assert status.complete and status.failed == 0
    return engine


@pytest.mark.timeout(120)
def test_killed_while_enqueueing_then_every_committed_request_completes_once(
    tmp_path: Path,
) -> None:
    queue_path, provider_path = tmp_path / "jobs.db", tmp_path / "provider.db"
    child = spawn_enqueuer(queue_path, "kill")
    for _ in range(5):
        read_line(child, "COMMITTED")
    kill(child)
    queued = BatchQueue(queue_path).counts("kill")["queued"]
    provider = FileBatchProvider(provider_path)
    engine = _finish(provider, queue_path, "kill")
    results = BatchJob(provider, queue_path, name="kill").results()
    assert sorted(results) == sorted(f"r{i}" for i in range(queued))
    assert len({r.call_id for r in engine.ledger.records()}) == len(engine.ledger) == queued
    assert sorted(_requests_at_provider(provider)) == sorted(results)


@pytest.mark.timeout(120)
def test_killed_mid_collect_then_every_request_is_recorded_once(tmp_path: Path) -> None:
    # Killed after the provider handed over a batch's results, before the queue stored
    # them: the next process fetches them again and records each request once.
    queue_path, provider_path = tmp_path / "jobs.db", tmp_path / "provider.db"
    n = 200
    child = spawn(
        f"""
        import time
        from costopt_core.batch import BatchJob
        from tests.integration.test_batch_kill import FileBatchProvider, make_requests

        class Stalls(FileBatchProvider):
            calls = 0

            def results(self, batch_id):
                out = super().results(batch_id)
                Stalls.calls += 1
                if Stalls.calls == 3:  # two batches stored, the third fetched, not stored
                    print("FETCHED", flush=True)
                    time.sleep(600)
                return out

        job = BatchJob(Stalls({str(provider_path)!r}), {str(queue_path)!r}, name="kill",
                       poll_interval_s=0.01)
        job.enqueue(make_requests({n}))
        job.flush()
        job.wait()
        """
    )
    read_line(child, "FETCHED")
    kill(child)
    provider = FileBatchProvider(provider_path)
    before = BatchJob(provider, queue_path, name="kill").status()
    assert (before.done, before.submitted) == (80, 120)
    engine = _finish(provider, queue_path, "kill")
    # The 80 the killed process stored are not recorded again; the other 120 are, once.
    records = engine.ledger.records()
    assert len({r.call_id for r in records}) == len(records) == n - 80
    results = BatchJob(provider, queue_path, name="kill").results()
    assert list(results) == [f"r{i}" for i in range(n)]
    assert sorted(provider.served().values()) == [1, 1, 1, 1, 2]  # the stalled one twice
    assert sorted(_requests_at_provider(provider)) == sorted(results)  # each ran once


_KILLED_IN_SUBMIT = """
    import time
    from costopt_core.batch import BatchJob, BatchLimits
    from tests.integration.test_batch_kill import make_requests
    {make_provider}

    class Stalls(Provider):
        limits = BatchLimits(max_requests=40, max_bytes=10_000_000)
        calls = 0

        def submit(self, requests, **kwargs):
            remote_id = super().submit(requests, **kwargs)
            Stalls.calls += 1
            if Stalls.calls == 2:  # the provider has the second batch; the queue does not
                print("ACCEPTED", remote_id, flush=True)
                time.sleep(600)
            return remote_id

    job = BatchJob(Stalls(**{kwargs!r}), {queue!r}, name="kill")
    job.enqueue(make_requests(80, model={model!r}))
    job.flush()
    """


def _file_provider(tmp_path: Path) -> tuple[str, dict[str, object], FileBatchProvider]:
    path = str(tmp_path / "provider.db")
    code = "from tests.integration.test_batch_kill import FileBatchProvider as Provider"
    return code, {"path": path}, FileBatchProvider(path)


def _killed_in_submit(
    tmp_path: Path, make_provider: str, kwargs: dict[str, object], model: str = "gpt-4o-mini"
) -> Path:
    """A child submits 80 requests in two batches; killed once the provider took the second."""
    queue_path = tmp_path / "jobs.db"
    code = _KILLED_IN_SUBMIT.format(
        make_provider=make_provider, kwargs=kwargs, queue=str(queue_path), model=model
    )
    child = spawn(code)
    read_line(child, "ACCEPTED")
    kill(child)
    return queue_path


@pytest.mark.timeout(120)
def test_killed_inside_submit_every_request_runs_completes_and_is_recorded_once(
    tmp_path: Path,
) -> None:
    make, kwargs, provider = _file_provider(tmp_path)
    queue_path = _killed_in_submit(tmp_path, make, kwargs)
    before = BatchJob(provider, queue_path, name="kill").queue.counts("kill")
    assert (before["submitted"], before["submitting"]) == (40, 40)
    engine = _finish(provider, queue_path, "kill")
    results = BatchJob(provider, queue_path, name="kill").results()
    assert list(results) == [f"r{i}" for i in range(80)]
    records = engine.ledger.records()
    assert len({r.call_id for r in records}) == len(records) == 80
    # The batch the dead process never recorded was found by its token, not sent again.
    ran = _requests_at_provider(provider)
    assert sorted(ran) == sorted(f"r{i}" for i in range(80))
    assert sorted(provider.served().values()) == [1, 1]


@pytest.mark.timeout(120)
def test_killed_inside_submit_async_recovery_finds_the_batch(tmp_path: Path) -> None:
    make, kwargs, provider = _file_provider(tmp_path)
    queue_path = _killed_in_submit(tmp_path, make, kwargs)
    engine = CostEngine(embedder=FakeEmbedder())
    job = BatchJob(provider, queue_path, name="kill", engine=engine, poll_interval_s=0.05)
    assert asyncio.run(job.arecover()) == 1
    assert job.queue.counts("kill")["submitted"] == 80
    status = asyncio.run(job.await_(timeout_s=60))
    assert (status.done, status.complete) == (80, True)
    assert len(engine.ledger) == 80
    assert sorted(_requests_at_provider(provider)) == sorted(f"r{i}" for i in range(80))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["openai", "anthropic"])
def test_killed_inside_submit_over_the_provider_sdk_runs_each_request_once(
    tmp_path: Path, which: str
) -> None:
    fakes = pytest.importorskip(f"tests.fakes.{which}_batch_server")
    server = (
        fakes.FakeOpenAIBatchServer() if which == "openai" else fakes.FakeAnthropicBatchServer()
    ).start()
    module = f"costopt_core.batch.{which}_provider"
    provider_cls = "OpenAIBatchProvider" if which == "openai" else "AnthropicBatchProvider"
    model = "gpt-4o-mini" if which == "openai" else "claude-haiku-4-5"
    kwargs = {"api_key": server.api_key, "base_url": server.url, "max_retries": 0}
    try:
        queue_path = _killed_in_submit(
            tmp_path, f"from {module} import {provider_cls} as Provider", kwargs, model
        )
        provider = getattr(pytest.importorskip(module), provider_cls)(**kwargs)
        engine = CostEngine(embedder=FakeEmbedder())
        job = BatchJob(provider, queue_path, name="kill", engine=engine, poll_interval_s=0.01)
        status = job.wait(timeout_s=60)
        assert (status.done, status.failed, status.complete) == (80, 0, True)
        records = engine.ledger.records()
        assert len({r.call_id for r in records}) == len(records) == 80
        # Two batches at the provider, each created once: nothing was sent twice.
        assert len(server.batches) == 2
        provider.close()
    finally:
        server.stop()
