"""The engine part of the batch front-ends: ``JobHandle``, ``BatchFront`` and their helpers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costopt_core import BatchError, ConfigurationError, CostEngine, Message, Usage
from costopt_core.batch import (
    BatchFailedError,
    BatchFront,
    BatchJob,
    BatchRequest,
    BatchRequestError,
    BatchResult,
    JobHandle,
    LocalBatchProvider,
    OpenAIBatchProvider,
    batch_metadata,
    call_params,
    check_json,
    model_params,
    request_ids,
)
from costopt_core.pricing import cost_of
from costopt_core.types import CallMode

USAGE = Usage(input_tokens=1000, output_tokens=500)
# gpt-4o-mini real time: $0.15 / $0.60 per Mtok.
SYNC_COST = (1000 * Decimal("0.15") + 500 * Decimal("0.60")) / 10**6


def answer(request: BatchRequest) -> BatchResult:
    text = request.messages[-1].content
    if "fail" in text:
        return BatchResult(request.id, "errored", error="invalid_request: bad", retryable=False)
    return BatchResult(request.id, "succeeded", text.upper(), USAGE)


def reqs(*texts: str, model: str = "gpt-4o-mini") -> list[BatchRequest]:
    ids = request_ids(len(texts))
    return [
        BatchRequest(id=i, model=model, messages=(Message("user", t),))
        for i, t in zip(ids, texts, strict=True)
    ]


def convert(
    result: BatchResult, *, engine: CostEngine, model: str, mode: CallMode, job: str
) -> tuple[str | None, str, str, str]:
    return result.text, model, mode, job


@pytest.fixture
def local() -> Iterator[LocalBatchProvider]:
    provider = LocalBatchProvider(answer)
    yield provider
    provider.close()


def handle_for(
    provider: Any, engine: CostEngine, requests: list[BatchRequest], name: str = "j"
) -> JobHandle[tuple[str | None, str, str, str]]:
    job = BatchJob(provider, ":memory:", name=name, engine=engine, poll_interval_s=0.001)
    return JobHandle(job, [r.id for r in requests], [r.model for r in requests], convert)


# -- JobHandle ----------------------------------------------------------------------
def test_run_converts_answers_in_input_order(local: LocalBatchProvider, engine: CostEngine) -> None:
    requests = reqs("a", "b", "c")
    handle = handle_for(local, engine, requests)
    out = handle.run(requests, return_exceptions=False)
    assert out == [(t, "gpt-4o-mini", "sync", "j") for t in ("A", "B", "C")]
    assert handle.done()
    assert repr(handle) == "JobHandle(job='j', requests=3)"
    records = engine.ledger.records()
    assert len(records) == 3
    assert {r.call_id for r in records} == {"batch:j:0", "batch:j:1", "batch:j:2"}


def test_failed_requests_come_back_as_errors_or_raise(
    local: LocalBatchProvider, engine: CostEngine
) -> None:
    requests = reqs("a", "fail me", "c")
    handle = handle_for(local, engine, requests)
    out = handle.run(requests, return_exceptions=True)
    assert out[0][0] == "A" and out[2][0] == "C"
    err = out[1]
    assert isinstance(err, BatchRequestError)
    assert (err.request_id, err.job, err.status, err.retryable) == ("1", "j", "errored", False)
    assert "invalid_request: bad" in str(err)
    with pytest.raises(BatchFailedError, match=r"1 of 3 requests of batch job 'j' failed") as exc:
        handle.results()
    assert exc.value.failed_ids == ["1"]
    assert exc.value.outputs[0][0] == "A"  # the answers that came back are kept


def test_results_before_the_end_say_so(engine: CostEngine) -> None:
    release = threading.Event()

    def slow(request: BatchRequest) -> BatchResult:
        release.wait(5)
        return answer(request)

    provider = LocalBatchProvider(slow)
    try:
        requests = reqs("a", "b")
        handle = handle_for(provider, engine, requests)
        handle.submit(requests)
        assert not handle.done()
        assert handle.raw_results() == [None, None]
        with pytest.raises(BatchError, match="has not ended"):
            handle.results(wait=False)
        release.set()
        assert handle.wait(timeout_s=5).complete
        assert [r.text for r in handle.raw_results() if r is not None] == ["A", "B"]
        assert [o[0] for o in handle.results(wait=False)] == ["A", "B"]
    finally:
        release.set()
        provider.close()


def test_wait_times_out_with_the_handles_default(engine: CostEngine) -> None:
    release = threading.Event()
    provider = LocalBatchProvider(lambda r: (release.wait(5), answer(r))[1])
    try:
        requests = reqs("a")
        job = BatchJob(provider, ":memory:", name="t", engine=engine, poll_interval_s=0.001)
        handle = JobHandle(job, ["0"], ["gpt-4o-mini"], convert, timeout_s=0.05)
        handle.submit(requests)
        with pytest.raises(BatchError, match="not finished"):
            handle.results()
        assert handle.status(poll=False).submitted == 1
    finally:
        release.set()
        provider.close()


async def test_async_twins_match_sync(engine: CostEngine) -> None:
    sync_provider, async_provider = LocalBatchProvider(answer), LocalBatchProvider(answer)
    try:
        requests = reqs("a", "fail", "c")
        sync = handle_for(sync_provider, engine, requests, name="s")
        sync_out = sync.run(requests, return_exceptions=True)
        other = handle_for(async_provider, engine, requests, name="a")
        await other.asubmit(requests)
        status = await other.await_(timeout_s=5)
        assert status.complete and status.done == 2 and status.failed == 1
        async_out = await other.aresults(return_exceptions=True)
        assert [o[:3] if isinstance(o, tuple) else type(o) for o in async_out] == [
            o[:3] if isinstance(o, tuple) else type(o) for o in sync_out
        ]
        assert (await other.astatus()).complete
        again = handle_for(LocalBatchProvider(answer), engine, requests[:1], name="r")
        assert [o[0] for o in await again.arun(requests[:1], return_exceptions=False)] == ["A"]
    finally:
        sync_provider.close()
        async_provider.close()


async def test_cancel_drops_unsent_requests(engine: CostEngine) -> None:
    provider = LocalBatchProvider(answer)
    try:
        for cancel in ("sync", "async"):
            requests = reqs("a", "b")
            handle = handle_for(provider, engine, requests, name=cancel)
            handle.job.enqueue(requests)  # queued, not flushed
            status = handle.cancel() if cancel == "sync" else await handle.acancel()
            assert status.canceled == 2 and status.complete
            out = handle.results(wait=False, return_exceptions=True)
            assert all(isinstance(o, BatchRequestError) and o.status == "canceled" for o in out)
    finally:
        provider.close()


def test_batch_metadata_prices_as_the_ledger_records(engine: CostEngine) -> None:
    result = BatchResult("7", "succeeded", "x", USAGE, "gpt-4o-mini")
    meta = batch_metadata(engine, result, "gpt-4o-mini", "sync", "nightly")
    assert Decimal(meta["cost_usd"]) == SYNC_COST
    assert Decimal(meta["cost_usd"]) == cost_of(engine.catalog.get("gpt-4o-mini"), USAGE)
    assert meta["call_id"] == "batch:nightly:7"
    assert (meta["mode"], meta["batch_job"], meta["request_id"]) == ("sync", "nightly", "7")
    assert meta["tier"] is None and meta["served_by"] == "model"
    batch = batch_metadata(engine, result, "gpt-4o-mini", "batch", "nightly")
    assert Decimal(batch["cost_usd"]) == SYNC_COST / 2  # batch APIs bill half
    assert Decimal(batch["savings_usd"]["batch"]) == SYNC_COST / 2


# -- BatchFront ---------------------------------------------------------------------
class FakeModel:
    """A framework model seen through getattr only."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class Front(BatchFront):
    framework = "test"

    def __init__(self, model: FakeModel, **kw: Any) -> None:
        settings: dict[str, Any] = {
            "provider": None,
            "queue_path": None,
            "engine": None,
            "poll_interval_s": 0.001,
            "timeout_s": None,
            "max_attempts": 3,
            "max_concurrency": 2,
            "progress": False,
            "tenant": None,
            "record": True,
            "job_prefix": "test",
        }
        super().__init__(**{**settings, **kw})
        self.model = model
        self.calls: list[BatchRequest] = []

    def _default_provider_name(self) -> str:
        return str(getattr(self.model, "kind", "local"))

    def _sdk_clients(self, kind: str) -> dict[str, Any]:
        return {"api_key": "sk-test"}

    def _model_params(self, kind: str) -> dict[str, Any]:
        return model_params(self.model, kind, ("temperature",), extra="extra", stop=True)

    def _local_chat(self, request: BatchRequest) -> BatchResult:
        self.calls.append(request)
        return answer(request)

    async def _local_achat(self, request: BatchRequest) -> BatchResult:
        await asyncio.sleep(0)
        return self._local_chat(request)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"max_attempts": 0}, "max_attempts=0"),
        ({"timeout_s": -1.0}, "timeout_s=-1.0"),
        ({"job_prefix": "a b"}, "job_prefix='a b'"),
        ({"provider": "azure"}, "provider='azure' is unknown"),
    ],
)
def test_bad_settings_raise_configuration_error(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as exc:
        Front(FakeModel(), **kw)
    if "provider" not in kw:
        assert "invalid Front" in str(exc.value)


def test_provider_is_chosen_from_the_model_and_built_once() -> None:
    local = Front(FakeModel())
    assert local.provider_name == "local"
    assert isinstance(local.provider, LocalBatchProvider)
    assert local.provider is local.provider
    remote = Front(FakeModel(kind="openai"))
    assert remote.provider_name == "openai"
    assert isinstance(remote.provider, OpenAIBatchProvider)
    local.close()


def test_request_params_follow_the_provider() -> None:
    model = FakeModel(kind="openai", temperature=0.2, max_tokens=50, stop="END", extra={"n": 1})
    front = Front(model)
    params = front._request_params({"max_tokens": 9, "stop": None})
    assert params == {"temperature": 0.2, "max_completion_tokens": 9, "stop": ["END"], "n": 1}
    anthropic = Front(model, provider="anthropic")
    assert anthropic._request_params({"stop": "X"}) == {
        "temperature": 0.2,
        "max_tokens": 50,
        "stop_sequences": ["X"],
        "n": 1,
    }
    # The local provider calls the model, which applies its own fields.
    local = Front(FakeModel(temperature=0.2))
    assert local._request_params({"stop": "X", "seed": None}, {"how": "complete"}) == {
        "stop": "X",
        "how": "complete",
    }
    with pytest.raises(ConfigurationError, match=r"tools=.* is not JSON data.*; see docs"):
        local._request_params({"tools": object()}, hint="; see docs")
    local.close()


def test_jobs_are_named_reattached_and_refused_twice(tmp_path: Path, engine: CostEngine) -> None:
    path = tmp_path / "jobs.db"
    front = Front(FakeModel(), queue_path=path, engine=engine)
    job = front._new_job(None, kind="chat")
    assert job.name.startswith("test-chat-") and len(job.name) == len("test-chat-") + 16
    assert job.framework == "test" and job.engine is engine
    requests = reqs("a", "b")
    JobHandle(job, ["0", "1"], ["gpt-4o-mini"] * 2, convert).run(requests, return_exceptions=False)
    assert front.jobs() == [job.name]
    with pytest.raises(BatchError, match=r"already exists.*Front.handle\(name\)"):
        front._new_job(job.name)
    with pytest.raises(BatchError, match="no batch job 'nope'"):
        front._stored_job("nope")
    front.close()

    again = Front(FakeModel(), queue_path=path, engine=engine)
    stored, ids, models = again._stored_job(job.name)
    assert (ids, models) == (["0", "1"], ["gpt-4o-mini"] * 2)
    assert [r.text for r in stored.results().values()] == ["A", "B"]
    again.close()


def test_close_stops_only_a_provider_it_built(
    engine: CostEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    own = Front(FakeModel(), engine=engine)
    monkeypatch.setattr(own.provider, "close", lambda: closed.append("built"))
    given = LocalBatchProvider(answer)
    monkeypatch.setattr(given, "close", lambda: closed.append("given"))
    theirs = Front(FakeModel(), provider=given, engine=engine)
    own.close()
    theirs.close()
    assert closed == ["built"]  # the caller owns the provider it passed


def test_local_provider_calls_the_model_through_the_front(engine: CostEngine) -> None:
    front = Front(FakeModel(), engine=engine)
    requests = reqs("x", "y")
    job = front._new_job(None)
    out = JobHandle(job, ["0", "1"], ["gpt-4o-mini"] * 2, convert).run(
        requests, return_exceptions=False
    )
    assert [o[0] for o in out] == ["X", "Y"]
    assert sorted(r.id for r in front.calls) == ["0", "1"]
    front.close()


# -- helpers ------------------------------------------------------------------------
def test_request_ids_sort_in_input_order() -> None:
    assert request_ids(0) == []
    assert request_ids(3) == ["0", "1", "2"]
    ids = request_ids(11)
    assert ids[0] == "00" and ids[-1] == "10" and sorted(ids) == ids


def test_model_and_call_params() -> None:
    model = FakeModel(temperature=0, seed=True, max_tokens=7, stop_sequences=("a", "b"))
    assert model_params(model, "openai", ("temperature", "seed"), extra="none") == {
        "temperature": 0,
        "max_completion_tokens": 7,
    }
    assert model_params(model, "anthropic", (), extra="none", stop=True) == {
        "max_tokens": 7,
        "stop_sequences": ["a", "b"],
    }
    assert call_params({"stop": "x", "max_tokens": 3, "top_p": None}, "openai") == {
        "stop": ["x"],
        "max_completion_tokens": 3,
    }
    assert call_params({"stop": ["x"], "max_tokens": 3}, "custom") == {
        "stop": ["x"],
        "max_tokens": 3,
    }
    check_json({"a": [1, {"b": None}]})  # JSON data passes


def test_batch_failed_error_names_at_most_ten_ids() -> None:
    errors = [BatchRequestError(BatchResult(str(i), "expired"), "j") for i in range(12)]
    exc = BatchFailedError("j", ["ok", *errors])
    assert exc.failed_ids == [str(i) for i in range(12)]
    assert "12 of 13 requests" in str(exc) and "and 2 more" in str(exc)
    assert "'9'" in str(exc) and "'10'" not in str(exc.args[0]).split("first:")[0]
    assert "no reason given" in str(errors[0])
    assert isinstance(exc, BatchError)
