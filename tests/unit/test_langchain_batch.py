"""``BatchRunnable``: LangChain inputs through batch jobs, answers priced at batch rates."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from pydantic import Field

from costopt_core import BatchError, Budget, ConfigurationError, CostEngine, Usage
from costopt_core.batch import BatchLimits, BatchRequest, BatchResult, LocalBatchProvider
from costopt_core.batch.openai_provider import OpenAIBatchProvider
from costopt_core.batch.provider import RemoteBatch
from costopt_core.batch.queue import request_to_json
from costopt_core.errors import BudgetExceededError
from costopt_core.pricing import cost_of
from costopt_core.testing import Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler, track_costs
from langchain_costopt.batch import (
    BatchFailedError,
    BatchHandle,
    BatchRequestError,
    BatchRunnable,
    message_of,
    messages_of,
    model_name_of,
    provider_name_of,
    usage_metadata_of,
)
from langchain_costopt.testing import ScriptedChatModel
from tests.fakes.anthropic_batch_server import FakeAnthropicBatchServer
from tests.fakes.openai_batch_server import FakeOpenAIBatchServer

USAGE = Usage(input_tokens=1000, output_tokens=500)
# gpt-4o-mini: $0.15 / $0.60 per Mtok real time, $0.075 / $0.30 in a batch.
SYNC_COST = (1000 * Decimal("0.15") + 500 * Decimal("0.60")) / 10**6
BATCH_COST = (1000 * Decimal("0.075") + 500 * Decimal("0.30")) / 10**6


class FakeBatchAPI:
    """An in-process provider batch API: batches stay ``in_progress`` for ``hold``
    polls, requests whose last message names a ``fail`` word error, answers come
    back as OpenAI Chat Completions bodies. State outlives any job (a "server")."""

    name = "fake"
    limits = BatchLimits(max_requests=100, max_bytes=10_000_000)

    def __init__(self, *, hold: int = 0, fail: Sequence[str] = (), tools: bool = False) -> None:
        self.hold = hold
        self.fail = set(fail)
        self.tools = tools
        self.batches: dict[str, dict[str, Any]] = {}
        self.submitted: list[list[BatchRequest]] = []
        self.polls: Counter[str] = Counter()

    def request_size(self, request: BatchRequest) -> int:
        return len(request_to_json(request).encode())

    def submit(self, requests: Sequence[BatchRequest]) -> str:
        batch_id = f"fb{len(self.submitted)}"
        self.submitted.append(list(requests))
        self.batches[batch_id] = {"requests": list(requests), "canceled": False}
        return batch_id

    def poll(self, batch_id: str) -> RemoteBatch:
        self.polls[batch_id] += 1
        n = len(self.batches[batch_id]["requests"])
        if self.polls[batch_id] <= self.hold and not self.batches[batch_id]["canceled"]:
            return RemoteBatch(batch_id, "in_progress", {"processing": n})
        return RemoteBatch(batch_id, "ended", {"succeeded": n})

    def _result(self, r: BatchRequest) -> BatchResult:
        question = r.messages[-1].content
        if any(word in question for word in self.fail):
            return BatchResult(r.id, "errored", error="invalid_request: bad input", raw={})
        message: dict[str, Any] = {"role": "assistant", "content": f"A: {question}"}
        if self.tools:
            message["tool_calls"] = [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": json.dumps({"q": question})},
                }
            ]
        body = {
            "id": f"chatcmpl-{r.id}",
            "model": r.model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
        return BatchResult(r.id, "succeeded", message["content"], USAGE, r.model, raw=body)

    def results(self, batch_id: str) -> list[BatchResult]:
        return [self._result(r) for r in self.batches[batch_id]["requests"]]

    def cancel(self, batch_id: str) -> None:
        self.batches[batch_id]["canceled"] = True

    async def asubmit(self, requests: Sequence[BatchRequest]) -> str:
        return self.submit(requests)

    async def apoll(self, batch_id: str) -> RemoteBatch:
        return self.poll(batch_id)

    async def aresults(self, batch_id: str) -> list[BatchResult]:
        return self.results(batch_id)

    async def acancel(self, batch_id: str) -> None:
        self.cancel(batch_id)


def chat_model(**kw: Any) -> ScriptedChatModel:
    return ScriptedChatModel.from_texts(["unused"], model="gpt-4o-mini", **kw)


def runnable(provider: Any, engine: CostEngine, **kw: Any) -> BatchRunnable:
    kw.setdefault("poll_interval_s", 0.001)
    kw.setdefault("progress", False)
    return BatchRunnable(chat_model(), provider=provider, engine=engine, **kw)


QUESTIONS = [f"question {i}" for i in range(5)]


# -- batch ------------------------------------------------------------------------
def test_batch_answers_in_input_order_with_usage_and_batch_price(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=2)
    out = runnable(api, engine).batch(QUESTIONS)
    assert [m.content for m in out] == [f"A: {q}" for q in QUESTIONS]
    assert len(api.submitted) == 1  # one remote batch for the five inputs
    msg = out[0]
    assert isinstance(msg, AIMessage)
    assert msg.usage_metadata == {"input_tokens": 1000, "output_tokens": 500, "total_tokens": 1500}
    meta = msg.response_metadata["costopt"]
    assert meta["mode"] == "batch"
    assert Decimal(meta["cost_usd"]) == BATCH_COST
    assert msg.response_metadata["model_name"] == "gpt-4o-mini"
    assert msg.response_metadata["finish_reason"] == "stop"
    assert msg.id == "chatcmpl-0"


def test_ledger_records_each_answer_once_and_batch_saves_half(engine: CostEngine) -> None:
    out = runnable(FakeBatchAPI(hold=1), engine).batch(QUESTIONS)
    records = engine.ledger.records()
    assert len(records) == len(QUESTIONS)
    assert {r.mode for r in records} == {"batch"}
    assert {r.framework for r in records} == {"langchain"}
    assert all(r.cost_usd == BATCH_COST for r in records)
    # the batch lever is exactly half the real-time price of the same call
    assert all(r.savings_usd["batch"] == SYNC_COST - BATCH_COST for r in records)
    assert all(r.savings_usd["batch"] * 2 == SYNC_COST for r in records)
    assert engine.ledger.savings_by_lever()["batch"] == len(QUESTIONS) * SYNC_COST / 2
    # the message names the record it was priced as
    call_ids = {r.call_id for r in records}
    assert {m.response_metadata["costopt"]["call_id"] for m in out} == call_ids


def test_inputs_are_anything_a_chat_model_takes(engine: CostEngine) -> None:
    api = FakeBatchAPI()
    prompt = ChatPromptTemplate.from_messages([("system", "Be short."), ("human", "{q}")])
    inputs: list[Any] = [
        "plain string",
        [("system", "sys"), ("human", "tuple list")],
        [SystemMessage("sys"), HumanMessage("message list")],
        prompt.invoke({"q": "prompt value"}),
    ]
    out = runnable(api, engine).batch(inputs)
    assert [m.content for m in out] == [
        "A: plain string",
        "A: tuple list",
        "A: message list",
        "A: prompt value",
    ]
    sent = api.submitted[0]
    assert [m.role for m in sent[3].messages] == ["system", "user"]
    assert sent[3].messages[0].content == "Be short."


def test_chain_batch_goes_through_the_batch_api(engine: CostEngine) -> None:
    api = FakeBatchAPI()
    prompt = ChatPromptTemplate.from_messages([("human", "Q: {q}")])
    chain = prompt | runnable(api, engine) | StrOutputParser()
    assert chain.batch([{"q": "one"}, {"q": "two"}]) == ["A: Q: one", "A: Q: two"]
    assert len(api.submitted) == 1


def test_invoke_is_a_batch_of_one(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=1)
    msg = runnable(api, engine).invoke("just one")
    assert msg.content == "A: just one"
    assert [len(b) for b in api.submitted] == [1]
    assert len(engine.ledger.records()) == 1


async def test_ainvoke_is_a_batch_of_one(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=1)
    msg = await runnable(api, engine).ainvoke("just one")
    assert msg.content == "A: just one"
    assert [len(b) for b in api.submitted] == [1]


def test_empty_batch_submits_nothing(engine: CostEngine) -> None:
    api = FakeBatchAPI()
    assert runnable(api, engine).batch([]) == []
    assert api.submitted == []


# -- failures -----------------------------------------------------------------------
def test_return_exceptions_puts_the_error_in_place(engine: CostEngine) -> None:
    api = FakeBatchAPI(fail=["BAD"])
    out = runnable(api, engine, max_attempts=1).batch(
        ["ok 0", "BAD 1", "ok 2"], return_exceptions=True
    )
    assert [type(o) for o in out] == [AIMessage, BatchRequestError, AIMessage]
    err = out[1]
    assert isinstance(err, BatchRequestError)
    assert err.request_id == "1"
    assert err.status == "errored"
    assert "invalid_request" in str(err)
    assert len(engine.ledger.records()) == 2  # failures cost nothing


@pytest.mark.parametrize("sync", [True, False], ids=["batch", "abatch"])
async def test_one_bad_input_fails_only_itself(engine: CostEngine, sync: bool) -> None:
    """With return_exceptions, an input no batch request can carry gets its error in
    place; the others are still sent (found by a review: all three failed)."""
    api = FakeBatchAPI()
    r = runnable(api, engine)
    inputs: list[Any] = ["ticket 1", 42, "ticket 3"]
    out = (
        r.batch(inputs, return_exceptions=True)
        if sync
        else await r.abatch(inputs, return_exceptions=True)
    )
    assert [type(o).__name__ for o in out] == ["AIMessage", "ConfigurationError", "AIMessage"]
    assert [o.content for o in (out[0], out[2])] == ["A: ticket 1", "A: ticket 3"]
    assert [len(b) for b in api.submitted] == [2] and len(engine.ledger.records()) == 2
    with pytest.raises(ConfigurationError, match="invalid batch input of type int"):
        r.batch(inputs)  # without return_exceptions the bad input is raised...
    assert len(api.submitted) == 1 and len(engine.ledger.records()) == 2  # ...before any is sent


def test_submitting_nothing_gives_an_empty_handle(engine: CostEngine) -> None:
    api = FakeBatchAPI()
    r = runnable(api, engine)
    handle = r.submit([], job_name="none-today")
    assert handle.ids == [] and handle.results() == [] and api.submitted == []
    # It can be reattached by name like any other job (it could not: no request
    # was queued, so the queue file had no job of that name).
    again = r.handle("none-today")
    assert again.ids == [] and again.results() == []
    with pytest.raises(BatchError, match="already exists"):
        r.submit(["x"], job_name="none-today")


def test_a_string_is_not_a_list_of_inputs(engine: CostEngine) -> None:
    """'hello' is a sequence: taken as the inputs it would send one request per letter."""
    api = FakeBatchAPI()
    r = runnable(api, engine)
    for call in (lambda: r.batch("hello"), lambda: r.submit("hello")):  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=r"got str 'hello'; wrap a single one"):
            call()
    with pytest.raises(ConfigurationError, match="job_name must be a non-empty string"):
        r.submit(["a"], job_name=" ")
    assert api.submitted == []


def test_elements_recording_into_different_ledgers_are_refused(engine: CostEngine) -> None:
    api = FakeBatchAPI()
    one, two = CostEngine(), CostEngine()
    configs: list[Any] = [
        {"callbacks": [CostCallbackHandler(one)]},
        {"callbacks": [CostCallbackHandler(two)]},
    ]
    with pytest.raises(ConfigurationError, match="a batch job records into one ledger"):
        BatchRunnable(chat_model(), provider=api, poll_interval_s=0.001).batch(["a", "b"], configs)
    assert api.submitted == []
    same = CostCallbackHandler(one)
    r = BatchRunnable(chat_model(), provider=api, poll_interval_s=0.001)
    r.batch(["a", "b"], [{"callbacks": [same]}, {"callbacks": [same]}])
    assert len(one.ledger.records()) == 2 and len(two.ledger.records()) == 0
    # an element without a cost handler goes with the others, in a track_costs block too
    r.batch(["c", "d"], [{"callbacks": [same]}, {}])
    assert len(one.ledger.records()) == 4
    with track_costs():
        r.batch(["e", "f"], [{"callbacks": [same]}, {}])
    assert len(one.ledger.records()) == 6


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, 0])
def test_a_wait_timeout_must_be_finite_and_positive(engine: CostEngine, bad: float) -> None:
    handle = runnable(FakeBatchAPI(hold=2), engine).submit(["a"])
    with pytest.raises(ConfigurationError, match="timeout_s must be a finite number"):
        handle.results(timeout_s=bad)


def test_a_provider_error_names_the_job_and_how_to_come_back(engine: CostEngine) -> None:
    class PollFails(FakeBatchAPI):
        def poll(self, batch_id: str) -> RemoteBatch:
            raise BatchError(f"poll of batch {batch_id} failed: HTTP 500")

    r = runnable(PollFails(), engine)
    with pytest.raises(BatchError, match=r"batch job '.+': poll of batch fb0 failed") as info:
        r.batch(["a"])
    [job] = r.jobs()
    assert f"reattach with handle({job!r})" in str(info.value)


def test_failed_requests_raise_naming_their_ids(engine: CostEngine) -> None:
    api = FakeBatchAPI(fail=["BAD"])
    with pytest.raises(BatchFailedError) as info:
        runnable(api, engine, max_attempts=1).batch(["BAD 0", "ok 1", "BAD 2"])
    err = info.value
    assert isinstance(err, BatchError)
    assert err.failed_ids == ["0", "2"]
    assert "'0', '2'" in str(err)
    assert isinstance(err.outputs[1], AIMessage)  # the answer that came back is kept


def test_invoke_raises_the_request_error(engine: CostEngine) -> None:
    with pytest.raises(BatchRequestError, match="errored"):
        runnable(FakeBatchAPI(fail=["BAD"]), engine, max_attempts=1).invoke("BAD")


def test_timeout_raises_and_the_job_keeps_running(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=10_000)
    r = runnable(api, engine, timeout_s=0.05)
    with pytest.raises(BatchError, match="not finished"):
        r.batch(["slow"])
    assert len(api.submitted) == 1
    [job] = r.jobs()
    assert r.handle(job).status(poll=False).submitted == 1


# -- submit and come back -------------------------------------------------------------
def test_submit_returns_at_once_and_status_counts_progress(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=2)
    handle = runnable(api, engine).submit(QUESTIONS)
    assert isinstance(handle, BatchHandle)
    assert len(api.submitted) == 1
    first = handle.status()  # poll 1: in progress
    assert (first.submitted, first.done, first.open_batches) == (5, 0, 1)
    assert first.remote[0].counts == {"processing": 5}
    assert not handle.done()
    with pytest.raises(BatchError, match="has not ended"):
        handle.results(wait=False)
    handle.status()  # poll 2: still in progress
    third = handle.status()  # poll 3: ended and collected
    assert (third.submitted, third.done, third.complete) == (0, 5, True)
    assert handle.done()
    assert [m.content for m in handle.results(wait=False)] == [f"A: {q}" for q in QUESTIONS]
    assert len(engine.ledger.records()) == 5


def test_results_block_until_the_batch_ended(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=3)
    handle = runnable(api, engine).submit(["a", "b"])
    assert [m.content for m in handle.results()] == ["A: a", "A: b"]
    assert api.polls["fb0"] == 4


async def test_async_submit_status_and_results(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=1)
    handle = await runnable(api, engine).asubmit(["a", "b"])
    status = await handle.astatus()
    assert (status.submitted, status.done) == (2, 0)
    out = await handle.aresults()
    assert [m.content for m in out] == ["A: a", "A: b"]


def test_handle_recreated_from_the_queue_file_after_restart(
    engine: CostEngine, tmp_path: Path
) -> None:
    api = FakeBatchAPI(hold=2)  # the remote service outlives the process
    db = tmp_path / "jobs.db"
    first = runnable(api, engine, queue_path=db)
    name = first.submit(QUESTIONS, job_name="nightly").name
    first.close()  # the process "dies" before collecting
    assert engine.ledger.records() == []

    second = runnable(api, engine, queue_path=db)
    assert second.jobs() == ["nightly"]
    handle = second.handle(name)
    assert handle.ids == ["0", "1", "2", "3", "4"]
    assert [m.content for m in handle.results()] == [f"A: {q}" for q in QUESTIONS]
    assert len(api.submitted) == 1  # collected, not submitted again
    assert len(engine.ledger.records()) == 5
    # a third look finds the results stored, and records nothing twice
    assert [m.content for m in runnable(api, engine, queue_path=db).handle(name).results()] == [
        f"A: {q}" for q in QUESTIONS
    ]
    assert len(engine.ledger.records()) == 5


def test_handle_of_an_unknown_job_and_duplicate_job_names(engine: CostEngine) -> None:
    r = runnable(FakeBatchAPI(), engine)
    with pytest.raises(BatchError, match="no batch job 'nope'"):
        r.handle("nope")
    r.submit(["a"], job_name="mine")
    with pytest.raises(BatchError, match="already exists"):
        r.submit(["b"], job_name="mine")


def test_cancel_stops_the_batch(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=100)
    handle = runnable(api, engine).submit(["a", "b"])
    handle.cancel()
    assert api.batches["fb0"]["canceled"]
    handle.wait()
    assert handle.status(poll=False).complete


# -- async parity ----------------------------------------------------------------------
async def test_abatch_matches_batch(clock: Any) -> None:
    sync_engine, async_engine = CostEngine(clock=clock), CostEngine(clock=clock)
    inputs = ["ok 0", "BAD 1", "ok 2"]
    sync_out = runnable(FakeBatchAPI(hold=1, fail=["BAD"]), sync_engine, max_attempts=1).batch(
        inputs, return_exceptions=True
    )
    async_out = await runnable(
        FakeBatchAPI(hold=1, fail=["BAD"]), async_engine, max_attempts=1
    ).abatch(inputs, return_exceptions=True)

    def shape(outs: list[Any]) -> list[Any]:
        return [
            (o.content, o.usage_metadata, o.response_metadata["costopt"]["cost_usd"])
            if isinstance(o, AIMessage)
            else (type(o).__name__, o.request_id)
            for o in outs
        ]

    assert shape(sync_out) == shape(async_out)
    assert sync_engine.ledger.totals().cost_usd == async_engine.ledger.totals().cost_usd
    with pytest.raises(BatchFailedError):
        await runnable(FakeBatchAPI(fail=["BAD"]), async_engine, max_attempts=1).abatch(inputs)


# -- the local provider: the wrapped model itself, real-time prices ------------------------
def test_local_provider_runs_the_model_and_records_once(engine: CostEngine) -> None:
    script = Script([ScriptedResponse(f"local {i}", USAGE) for i in range(3)], cycle=True)
    model = ScriptedChatModel(script=script, model_name="gpt-4o-mini")
    r = BatchRunnable(model, engine=engine, poll_interval_s=0.001, progress=False)
    assert r.provider_name == "local"  # a scripted model has no batch API
    handler = CostCallbackHandler(engine)
    out = r.batch(["a", "b", "c"], config={"callbacks": [handler]})
    assert sorted(m.content for m in out) == ["local 0", "local 1", "local 2"]
    assert script.calls == 3
    records = engine.ledger.records()
    assert len(records) == 3  # the job's records; the handler saw no LLM run
    assert {r.mode for r in records} == {"sync"}
    assert all(r.cost_usd == SYNC_COST for r in records)
    assert all("batch" not in r.savings_usd for r in records)
    assert out[0].response_metadata["costopt"]["mode"] == "sync"


def test_local_provider_inside_track_costs_records_in_its_ledger() -> None:
    model = ScriptedChatModel(script=Script([ScriptedResponse("x", USAGE)]))
    r = BatchRunnable(model, poll_interval_s=0.001, progress=False)
    with track_costs() as costs:
        r.batch(["a", "b"])
    assert len(costs.ledger.records()) == 2  # once each, not twice


async def test_local_provider_async(engine: CostEngine) -> None:
    script = Script([ScriptedResponse("async local", USAGE)])
    r = BatchRunnable(
        ScriptedChatModel(script=script), engine=engine, poll_interval_s=0.001, progress=False
    )
    out = await r.abatch(["a", "b"])
    assert [m.content for m in out] == ["async local", "async local"]
    assert len(engine.ledger.records()) == 2


def test_local_provider_passes_call_kwargs_to_the_model(engine: CostEngine) -> None:
    seen: list[dict[str, Any]] = []

    class Recording(ScriptedChatModel):
        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
            seen.append({"stop": stop, **kw, "roles": [m.type for m in messages]})
            return super()._generate(messages, stop, run_manager, **kw)

    model = Recording(script=Script(["ok"]))
    r = BatchRunnable(model.bind(stop=["END"]), engine=engine, poll_interval_s=0.001)
    r.batch([[("system", "s"), ("human", "h")]], seed=7)
    assert seen == [{"stop": ["END"], "seed": 7, "roles": ["system", "human"]}]


def test_local_provider_errors_come_back_as_request_errors(engine: CostEngine) -> None:
    script = Script([ScriptedResponse("x", error=ValueError("model down"))])
    r = BatchRunnable(
        ScriptedChatModel(script=script),
        engine=engine,
        poll_interval_s=0.001,
        progress=False,
        max_attempts=1,
    )
    [err] = r.batch(["a"], return_exceptions=True)
    assert isinstance(err, BatchRequestError)
    assert "model down" in str(err)


# -- requests: model name and parameters -------------------------------------------------
class ParamModel(ScriptedChatModel):
    temperature: float | None = 0.2
    max_tokens: int | None = 64
    stop: list[str] | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)


def test_request_carries_the_models_name_and_parameters(engine: CostEngine) -> None:
    model = ParamModel(script=Script(["x"]), model_name="gpt-4o", stop=["\n"])
    model.model_kwargs = {"user": "u1"}
    r = BatchRunnable(model, provider="openai", engine=engine)
    req = r.request_of("0", "hi", max_tokens=10)
    assert req.model == "gpt-4o"
    assert dict(req.params) == {
        "temperature": 0.2,
        "max_completion_tokens": 10,
        "stop": ["\n"],
        "user": "u1",
    }
    anth = BatchRunnable(model, provider="anthropic", engine=engine, model="claude-haiku-4-5")
    req = anth.request_of("0", "hi", stop="END")
    assert req.model == "claude-haiku-4-5"
    assert dict(req.params) == {
        "temperature": 0.2,
        "max_tokens": 64,
        "stop_sequences": ["END"],
        "user": "u1",
    }


def test_bound_tools_are_sent_and_tool_calls_come_back(engine: CostEngine) -> None:
    def lookup(q: str) -> str:
        """Look something up."""
        return q

    api = FakeBatchAPI(tools=True)
    bound = chat_model().bind_tools([lookup])
    r = BatchRunnable(bound, provider=api, engine=engine, poll_interval_s=0.001, progress=False)
    [msg] = r.batch(["weather"])
    [sent] = api.submitted[0]
    assert sent.params["tools"][0]["function"]["name"] == "lookup"
    assert msg.tool_calls == [
        {"name": "lookup", "args": {"q": "weather"}, "id": "call_1", "type": "tool_call"}
    ]


def test_params_that_are_not_json_are_refused(engine: CostEngine) -> None:
    r = runnable(FakeBatchAPI(), engine)
    with pytest.raises(ConfigurationError, match="response_format"):
        r.batch(["a"], response_format=object())


def test_tenant_from_metadata_goes_with_the_request(engine: CostEngine) -> None:
    api = FakeBatchAPI()
    runnable(api, engine).batch(
        ["a", "b"],
        config=[{"metadata": {"costopt_tenant": "acme"}}, {"metadata": {"tenant_id": "globex"}}],
    )
    assert [r.tenant for r in api.submitted[0]] == ["acme", "globex"]
    assert sorted(str(r.tenant) for r in engine.ledger.records()) == ["acme", "globex"]


# -- configuration and helpers -------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poll_interval_s": 0}, "poll_interval_s"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"job_prefix": "a b"}, "job_prefix"),
        ({"provider": "azure"}, "azure"),
    ],
)
def test_bad_settings_raise_configuration_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        BatchRunnable(chat_model(), **kwargs)


def test_only_chat_models_are_wrapped() -> None:
    with pytest.raises(ConfigurationError, match="chat model"):
        BatchRunnable(RunnableLambda(lambda x: x))  # type: ignore[arg-type]


def test_default_provider_follows_the_model_class(engine: CostEngine) -> None:
    class FakeOpenAI(ScriptedChatModel):
        @property
        def _llm_type(self) -> str:
            return "openai-chat"

    class FakeAnthropic(ScriptedChatModel):
        @property
        def _llm_type(self) -> str:
            return "anthropic-chat"

    script = Script(["x"])
    assert provider_name_of(FakeOpenAI(script=script)) == "openai"
    assert provider_name_of(FakeAnthropic(script=script)) == "anthropic"
    assert provider_name_of(ScriptedChatModel(script=script)) == "local"
    # built on first use, without network
    assert isinstance(BatchRunnable(FakeOpenAI(script=script)).provider, OpenAIBatchProvider)
    assert isinstance(BatchRunnable(ScriptedChatModel(script=script)).provider, LocalBatchProvider)


def test_model_name_from_attributes_or_identifying_params() -> None:
    assert model_name_of(chat_model()) == "gpt-4o-mini"

    class Unnamed(ScriptedChatModel):
        model_name: str = ""

        @property
        def _identifying_params(self) -> dict[str, Any]:
            return {"model": "from-params"}

    assert model_name_of(Unnamed(script=Script(["x"]))) == "from-params"


def test_messages_of_rejects_other_inputs() -> None:
    with pytest.raises(ConfigurationError, match="invalid batch input"):
        messages_of(42)  # type: ignore[arg-type]


def test_usage_metadata_follows_langchains_convention() -> None:
    u = Usage(1000, 50, cache_read_tokens=600, cache_write_5m_tokens=100, reasoning_tokens=20)
    assert usage_metadata_of(u) == {
        "input_tokens": 1000,  # includes the cache reads and writes
        "output_tokens": 50,
        "total_tokens": 1050,
        "input_token_details": {"cache_read": 600, "ephemeral_5m_input_tokens": 100},
        "output_token_details": {"reasoning": 20},
    }
    assert usage_metadata_of(Usage()) is None


# -- end to end through the providers' SDKs, against local fake batch servers ---------------
@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIBatchServer]:
    server = FakeOpenAIBatchServer().start()
    yield server
    server.stop()


@pytest.fixture
def anthropic_server() -> Iterator[FakeAnthropicBatchServer]:
    server = FakeAnthropicBatchServer().start()
    yield server
    server.stop()


def test_openai_batch_api_end_to_end(
    engine: CostEngine, openai_server: FakeOpenAIBatchServer
) -> None:
    openai_server.hold(2)
    provider = OpenAIBatchProvider(
        api_key=openai_server.api_key, base_url=openai_server.url, max_retries=0
    )
    r = BatchRunnable(chat_model(), provider=provider, engine=engine, poll_interval_s=0.001)
    out = r.batch(["what is batching", "why half price"])
    assert [m.content for m in out] == [
        "gpt-4o-mini answers: what is batching",
        "gpt-4o-mini answers: why half price",
    ]
    records = engine.ledger.records()
    assert len(records) == 2
    for msg, rec in zip(out, records, strict=True):
        usage = rec.usage
        assert msg.usage_metadata is not None
        assert msg.usage_metadata["input_tokens"] == usage.input_tokens
        entry = engine.catalog.get("gpt-4o-mini")
        assert rec.cost_usd == cost_of(entry, usage, "batch")
        assert rec.savings_usd["batch"] * 2 == cost_of(entry, usage, "sync")


def test_anthropic_message_batches_end_to_end(
    engine: CostEngine, anthropic_server: FakeAnthropicBatchServer
) -> None:
    from costopt_core.batch.anthropic_provider import AnthropicBatchProvider

    # The job sends "<its key>-1" for request "1": fail that one by its suffix.
    failure_for = anthropic_server.failure_for
    anthropic_server.failure_for = lambda custom_id, model: (  # type: ignore[method-assign]
        "invalid" if custom_id.endswith("-1") else failure_for(custom_id, model)
    )
    provider = AnthropicBatchProvider(
        api_key=anthropic_server.api_key, base_url=anthropic_server.url, max_retries=0
    )
    model = ScriptedChatModel.from_texts(["x"], model="claude-haiku-4-5")
    r = BatchRunnable(
        model, provider=provider, engine=engine, poll_interval_s=0.001, max_attempts=1
    )
    out = r.batch(["first", "second"], return_exceptions=True)
    assert isinstance(out[0], AIMessage)
    assert out[0].content == "claude-haiku-4-5 answers: first"
    assert isinstance(out[1], BatchRequestError)
    [rec] = engine.ledger.records()
    assert rec.mode == "batch"
    assert rec.savings_usd["batch"] * 2 == cost_of(
        engine.catalog.get("claude-haiku-4-5"), rec.usage, "sync"
    )


def test_progress_bar_while_waiting(engine: CostEngine, capsys: pytest.CaptureFixture[str]) -> None:
    r = runnable(FakeBatchAPI(hold=2), engine, progress=True)
    r.batch(["a", "b", "c"])
    err = capsys.readouterr().err
    [job] = r.jobs()
    assert f"batch {job}" in err
    assert "3/3" in err  # the bar ends with every request finished
    runnable(FakeBatchAPI(hold=1), engine).batch(["quiet"])  # progress=False
    assert capsys.readouterr().err == ""


async def test_batch_as_completed_is_one_batch(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=1)
    r = runnable(api, engine)
    got = list(r.batch_as_completed(["a", "b", "c"]))
    assert [(i, m.content) for i, m in got] == [(0, "A: a"), (1, "A: b"), (2, "A: c")]
    agot = [(i, m.content) async for i, m in r.abatch_as_completed(["d", "e"])]
    assert agot == [(0, "A: d"), (1, "A: e")]
    assert [len(b) for b in api.submitted] == [3, 2]  # not one batch per input


def test_anthropic_tool_use_and_bad_openai_arguments(engine: CostEngine) -> None:
    anthropic_raw = {
        "id": "msg_1",
        "stop_reason": "tool_use",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
        ],
    }
    result = BatchResult(
        "7", "succeeded", "Let me look.", USAGE, "claude-haiku-4-5", raw=anthropic_raw
    )
    msg = message_of(result, engine=engine, model="claude-haiku-4-5", mode="batch", job="j")
    assert msg.tool_calls == [
        {"name": "lookup", "args": {"q": "x"}, "id": "toolu_1", "type": "tool_call"}
    ]
    assert msg.response_metadata["finish_reason"] == "tool_use"
    assert msg.response_metadata["costopt"]["call_id"] == "batch:j:7"
    bad = {
        "choices": [
            {
                "message": {
                    "tool_calls": [
                        {"id": "c", "function": {"name": "lookup", "arguments": "{not json"}}
                    ]
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    result = BatchResult("8", "succeeded", "", USAGE, "gpt-4o-mini", raw=bad)
    msg = message_of(result, engine=engine, model="gpt-4o-mini", mode="batch", job="j")
    assert msg.tool_calls == []
    assert msg.invalid_tool_calls[0]["name"] == "lookup"


def test_error_classes_are_the_engines() -> None:
    # One class for both frameworks: ``except BatchFailedError`` catches either adapter's.
    from costopt_core import errors

    assert BatchRequestError is errors.BatchRequestError
    assert BatchFailedError is errors.BatchFailedError


# -- budgets ------------------------------------------------------------------------
def batch_estimate(engine: CostEngine, request: BatchRequest) -> Decimal:
    """Every prompt token and every allowed answer token at gpt-4o-mini's batch rates."""
    tokens = engine.tokens.count_messages(request.messages, request.model).tokens
    allowed = next(v for k, v in request.params.items() if k.startswith("max_"))
    return (tokens * Decimal("0.075") + allowed * Decimal("0.30")) / 10**6


def test_a_block_budget_refuses_the_batch_before_it_is_submitted(engine: CostEngine) -> None:
    engine.ledger.add_budget(Budget(limit_usd=Decimal("0.0001"), period="day", policy="block"))
    api = FakeBatchAPI()
    br = runnable(api, engine)
    # 5 requests of up to 100 answer tokens, at gpt-4o-mini's batch rates ($0.075 / $0.30)
    expected = sum(
        batch_estimate(engine, br.request_of(str(i), q, max_tokens=100))
        for i, q in enumerate(QUESTIONS)
    )
    assert expected > 5 * 100 * Decimal("0.30") / 10**6
    with pytest.raises(BudgetExceededError) as info:
        br.batch(QUESTIONS, max_tokens=100)
    assert info.value.estimate_usd == expected
    assert api.submitted == []
    assert engine.ledger.totals().calls == 0
