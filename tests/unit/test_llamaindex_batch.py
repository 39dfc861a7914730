"""``BatchRunner``: LlamaIndex chat / complete requests through batch jobs, at batch rates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatStartEvent,
    LLMCompletionStartEvent,
)
from pydantic import Field

from costopt_core import BatchError, Budget, ConfigurationError, CostEngine, Usage
from costopt_core.batch import BatchLimits, BatchRequest, BatchResult, LocalBatchProvider
from costopt_core.batch.openai_provider import OpenAIBatchProvider
from costopt_core.batch.provider import RemoteBatch
from costopt_core.batch.queue import request_to_json
from costopt_core.errors import BudgetExceededError
from costopt_core.pricing import cost_of
from costopt_core.testing import Script, ScriptedResponse
from llamaindex_costopt.batch import (
    BATCH_TAG,
    BatchFailedError,
    BatchRequestError,
    BatchRunner,
    BatchRunnerHandle,
    model_name_of,
    provider_name_of,
)
from llamaindex_costopt.handler import CostEventHandler, track_costs, usage_of
from llamaindex_costopt.testing import ScriptedLLM
from tests.fakes.openai_batch_server import FakeOpenAIBatchServer

USAGE = Usage(input_tokens=1000, output_tokens=500)
# gpt-4o-mini: $0.15 / $0.60 per Mtok real time, $0.075 / $0.30 in a batch.
SYNC_COST = (1000 * Decimal("0.15") + 500 * Decimal("0.60")) / 10**6
BATCH_COST = (1000 * Decimal("0.075") + 500 * Decimal("0.30")) / 10**6


class FakeBatchAPI:
    """An in-process provider batch API: batches stay ``in_progress`` for ``hold``
    polls, requests whose last message holds a ``fail`` word error. Its state
    outlives any job, as a remote service's does."""

    name = "fake"
    limits = BatchLimits(max_requests=100, max_bytes=10_000_000)

    def __init__(self, *, hold: int = 0, fail: Sequence[str] = (), usage: Usage = USAGE) -> None:
        self.hold = hold
        self.fail = set(fail)
        self.usage = usage
        self.batches: dict[str, list[BatchRequest]] = {}
        self.submitted: list[list[BatchRequest]] = []
        self.polls: Counter[str] = Counter()

    def request_size(self, request: BatchRequest) -> int:
        return len(request_to_json(request).encode())

    def submit(self, requests: Sequence[BatchRequest]) -> str:
        batch_id = f"fb{len(self.submitted)}"
        self.submitted.append(list(requests))
        self.batches[batch_id] = list(requests)
        return batch_id

    def poll(self, batch_id: str) -> RemoteBatch:
        self.polls[batch_id] += 1
        n = len(self.batches[batch_id])
        if self.polls[batch_id] <= self.hold:
            return RemoteBatch(batch_id, "in_progress", {"processing": n})
        return RemoteBatch(batch_id, "ended", {"succeeded": n})

    def _result(self, r: BatchRequest) -> BatchResult:
        question = r.messages[-1].content
        if any(word in question for word in self.fail):
            return BatchResult(r.id, "errored", error="invalid_request: bad input")
        return BatchResult(r.id, "succeeded", f"A: {question}", self.usage, r.model)

    def results(self, batch_id: str) -> list[BatchResult]:
        return [self._result(r) for r in self.batches[batch_id]]

    def cancel(self, batch_id: str) -> None:
        pass

    async def asubmit(self, requests: Sequence[BatchRequest]) -> str:
        return self.submit(requests)

    async def apoll(self, batch_id: str) -> RemoteBatch:
        return self.poll(batch_id)

    async def aresults(self, batch_id: str) -> list[BatchResult]:
        return self.results(batch_id)

    async def acancel(self, batch_id: str) -> None:
        self.cancel(batch_id)


def llm(**kw: Any) -> ScriptedLLM:
    return ScriptedLLM.from_texts(["unused"], model="gpt-4o-mini", **kw)


def runner(provider: Any, engine: CostEngine, **kw: Any) -> BatchRunner:
    kw.setdefault("poll_interval_s", 0.001)
    kw.setdefault("progress", False)
    return BatchRunner(kw.pop("llm", None) or llm(), provider=provider, engine=engine, **kw)


def convo(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


QUESTIONS = [f"question {i}" for i in range(4)]


# -- chat and complete ---------------------------------------------------------------
def test_chat_batch_responses_in_order_priced_at_batch_rates(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=2)
    out = runner(api, engine).chat_batch([convo(q) for q in QUESTIONS])
    assert all(isinstance(r, ChatResponse) for r in out)
    assert [r.message.content for r in out] == [f"A: {q}" for q in QUESTIONS]
    assert out[0].message.role == MessageRole.ASSISTANT
    assert len(api.submitted) == 1
    raw = out[0].raw
    assert raw["model"] == "gpt-4o-mini"
    assert raw["costopt"]["mode"] == "batch"
    assert Decimal(raw["costopt"]["cost_usd"]) == BATCH_COST
    assert usage_of(out[0]) == USAGE.without_provider_cache()  # raw usage reads back losslessly


def test_ledger_records_once_and_batch_saves_exactly_half(engine: CostEngine) -> None:
    out = runner(FakeBatchAPI(hold=1), engine).chat_batch([convo(q) for q in QUESTIONS])
    records = engine.ledger.records()
    assert len(records) == len(QUESTIONS)
    assert {r.mode for r in records} == {"batch"}
    assert {r.framework for r in records} == {"llamaindex"}
    assert all(r.cost_usd == BATCH_COST for r in records)
    assert all(r.savings_usd["batch"] * 2 == SYNC_COST for r in records)
    assert {r.raw["costopt"]["call_id"] for r in out} == {r.call_id for r in records}


def test_complete_batch_sends_the_prompt_after_the_system_prompt(engine: CostEngine) -> None:
    api = FakeBatchAPI()
    model = llm(system_prompt="Answer briefly.")
    out = runner(api, engine, llm=model).complete_batch(["one", "two"])
    assert all(isinstance(r, CompletionResponse) for r in out)
    assert [r.text for r in out] == ["A: one", "A: two"]
    sent = api.submitted[0][0]
    assert [(m.role, m.content) for m in sent.messages] == [
        ("system", "Answer briefly."),
        ("user", "one"),
    ]
    assert "costopt_local_call" not in sent.params  # never sent to a provider


def test_cached_reads_survive_the_round_trip(engine: CostEngine) -> None:
    u = Usage(1000, 50, cache_read_tokens=600, cache_write_5m_tokens=0, cache_write_1h_tokens=0)
    [r] = runner(FakeBatchAPI(usage=u), engine).complete_batch(["x"])
    assert usage_of(r) == u
    assert engine.ledger.records()[0].usage == u


def test_empty_batches_submit_nothing(engine: CostEngine) -> None:
    api = FakeBatchAPI()
    r = runner(api, engine)
    assert r.chat_batch([]) == []
    assert r.complete_batch([]) == []
    assert api.submitted == []


# -- failures ----------------------------------------------------------------------
def test_return_exceptions_and_failed_ids(engine: CostEngine) -> None:
    api = FakeBatchAPI(fail=["BAD"])
    r = runner(api, engine, max_attempts=1)
    out = r.complete_batch(["ok", "BAD", "ok too"], return_exceptions=True)
    assert [type(o) for o in out] == [CompletionResponse, BatchRequestError, CompletionResponse]
    assert out[1].request_id == "1"
    with pytest.raises(BatchFailedError) as info:
        r.chat_batch([convo("BAD a"), convo("fine"), convo("BAD b")])
    assert info.value.failed_ids == ["0", "2"]
    assert isinstance(info.value, BatchError)
    assert isinstance(info.value.outputs[1], ChatResponse)


def test_timeout_raises_batch_error(engine: CostEngine) -> None:
    r = runner(FakeBatchAPI(hold=10_000), engine, timeout_s=0.05)
    with pytest.raises(BatchError, match="not finished"):
        r.complete_batch(["slow"])


# -- submit, status, come back ----------------------------------------------------------
def test_status_counts_while_in_progress(engine: CostEngine) -> None:
    api = FakeBatchAPI(hold=2)
    handle = runner(api, engine).submit_chat([convo(q) for q in QUESTIONS])
    assert isinstance(handle, BatchRunnerHandle)
    assert handle.kind == "chat"
    s = handle.status()
    assert (s.submitted, s.done, s.open_batches) == (4, 0, 1)
    assert s.remote[0].counts == {"processing": 4}
    with pytest.raises(BatchError, match="has not ended"):
        handle.results(wait=False)
    out = handle.results()
    assert [r.message.content for r in out] == [f"A: {q}" for q in QUESTIONS]
    assert handle.status(poll=False).done == 4


def test_handle_recreated_after_restart(engine: CostEngine, tmp_path: Path) -> None:
    api = FakeBatchAPI(hold=2)
    db = tmp_path / "jobs.db"
    first = runner(api, engine, queue_path=db)
    name = first.submit_complete(["a", "b", "c"]).name
    first.close()  # the process "dies"
    second = runner(api, engine, queue_path=db)
    handle = second.handle(name)
    assert handle.kind == "complete"  # read from the generated job name
    out = handle.results()
    assert [r.text for r in out] == ["A: a", "A: b", "A: c"]
    assert len(api.submitted) == 1
    assert len(engine.ledger.records()) == 3
    runner(api, engine, queue_path=db).handle(name).results()
    assert len(engine.ledger.records()) == 3  # never recorded twice


def test_a_named_job_comes_back_as_the_kind_it_was_submitted(
    engine: CostEngine, tmp_path: Path
) -> None:
    """A user-named completion job reattached by name gave ChatResponses: the kind
    was read from generated names only."""
    api = FakeBatchAPI()
    db = tmp_path / "jobs.db"
    first = runner(api, engine, queue_path=db)
    first.submit_complete(["a"], job_name="nightly")
    first.submit_chat([convo("b")], job_name="nightly-chat-2")
    first.close()
    second = runner(api, engine, queue_path=db)
    done = second.handle("nightly")
    assert done.kind == "complete"
    assert [type(r).__name__ for r in done.results()] == ["CompletionResponse"]
    assert second.handle("nightly-chat-2").kind == "chat"
    assert second.handle("nightly", kind="chat").kind == "chat"  # the caller's word wins


def test_named_jobs_and_unknown_jobs(engine: CostEngine) -> None:
    r = runner(FakeBatchAPI(), engine)
    handle = r.submit_complete(["x"], job_name="mine")
    assert r.jobs() == ["mine"]
    assert r.handle("mine", kind="complete").results()[0].text == "A: x"
    assert handle.results()[0].text == "A: x"
    with pytest.raises(BatchError, match="already exists"):
        r.submit_chat([convo("y")], job_name="mine")
    with pytest.raises(BatchError, match="no batch job"):
        r.handle("other")


# -- async parity ------------------------------------------------------------------------
async def test_async_twins_match_sync(clock: Any) -> None:
    sync_engine, async_engine = CostEngine(clock=clock), CostEngine(clock=clock)
    prompts = ["ok 0", "BAD 1", "ok 2"]

    def make(engine: CostEngine) -> BatchRunner:
        return runner(FakeBatchAPI(hold=1, fail=["BAD"]), engine, max_attempts=1)

    sync_out = make(sync_engine).complete_batch(prompts, return_exceptions=True)
    async_out = await make(async_engine).acomplete_batch(prompts, return_exceptions=True)

    def shape(outs: list[Any]) -> list[Any]:
        return [
            (o.text, o.raw["usage"], o.raw["costopt"]["cost_usd"])
            if isinstance(o, CompletionResponse)
            else o.request_id
            for o in outs
        ]

    assert shape(sync_out) == shape(async_out)
    assert sync_engine.ledger.totals().cost_usd == async_engine.ledger.totals().cost_usd

    chats = await make(async_engine).achat_batch([convo("a"), convo("b")])
    assert [r.message.content for r in chats] == ["A: a", "A: b"]
    handle = await make(async_engine).asubmit_chat([convo("c")])
    assert (await handle.astatus()).submitted == 1
    assert [r.message.content for r in await handle.aresults()] == ["A: c"]
    handle = await make(async_engine).asubmit_complete(["d"])
    assert [r.text for r in await handle.aresults()] == ["A: d"]


# -- the local provider: the LLM itself, real-time prices ------------------------------------
class TagRecorder(BaseEventHandler):
    tags: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "TagRecorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatStartEvent | LLMCompletionStartEvent):
            self.tags.append(dict(event.tags))


@pytest.fixture
def tag_recorder() -> Iterator[TagRecorder]:
    recorder = TagRecorder()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(recorder)
    yield recorder
    dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not recorder]


def scripted(text: str = "local answer") -> ScriptedLLM:
    return ScriptedLLM(script=Script([ScriptedResponse(text, USAGE)]))


def test_local_provider_runs_the_llm_and_records_once(
    engine: CostEngine, tag_recorder: TagRecorder
) -> None:
    model = scripted()
    r = BatchRunner(model, engine=engine, poll_interval_s=0.001, progress=False)
    assert r.provider_name == "local"
    with track_costs(engine):  # a cost block must not count the job's calls again
        chats = r.chat_batch([convo("a"), convo("b")])
        completions = r.complete_batch(["c"])
    assert [c.message.content for c in chats] == ["local answer", "local answer"]
    assert [c.text for c in completions] == ["local answer"]
    assert model.script.calls == 3
    records = engine.ledger.records()
    assert len(records) == 3
    assert {rec.mode for rec in records} == {"sync"}
    assert all(rec.cost_usd == SYNC_COST for rec in records)
    assert chats[0].raw["costopt"]["mode"] == "sync"
    # every call the local provider made says it belongs to a batch
    assert len(tag_recorder.tags) >= 3
    assert all(BATCH_TAG in t for t in tag_recorder.tags)


def test_permanent_handler_skips_the_local_providers_calls(engine: CostEngine) -> None:
    # A handler attached for good on the job's engine sees the local provider's
    # LLM events (tagged costopt_batch); the job records them, so it must not.
    model = ScriptedLLM(script=Script([ScriptedResponse("x", USAGE)] * 5))
    r = BatchRunner(model, engine=engine, poll_interval_s=0.001, progress=False)
    handler = CostEventHandler(engine).attach()
    try:
        out = r.chat_batch([convo(str(i)) for i in range(5)])
        assert [o.message.content for o in out] == ["x"] * 5
        records = engine.ledger.records()
        assert len(records) == 5
        assert all(rec.call_id.startswith("batch:") for rec in records)
        assert handler.pending == 0
        # an untagged call is still recorded by the handler
        model.script = Script([ScriptedResponse("y", USAGE)])
        model.chat(convo("direct"))
        assert len(engine.ledger.records()) == 6
    finally:
        handler.detach()
        r.close()


async def test_permanent_handler_skips_the_local_providers_async_calls(
    engine: CostEngine,
) -> None:
    model = ScriptedLLM(script=Script([ScriptedResponse("x", USAGE)] * 5))
    r = BatchRunner(model, engine=engine, poll_interval_s=0.001, progress=False)
    handler = CostEventHandler(engine).attach()
    try:
        out = await r.acomplete_batch([str(i) for i in range(5)])
        assert [o.text for o in out] == ["x"] * 5
        assert len(engine.ledger.records()) == 5
    finally:
        handler.detach()
        r.close()


async def test_local_provider_async_records_once(engine: CostEngine) -> None:
    model = scripted("async local")
    r = BatchRunner(model, engine=engine, poll_interval_s=0.001, progress=False)
    with track_costs(engine):
        out = await r.achat_batch([convo("a"), convo("b")])
        done = await r.acomplete_batch(["c"])
    assert [o.message.content for o in out] == ["async local", "async local"]
    assert [d.text for d in done] == ["async local"]
    assert len(engine.ledger.records()) == 3


def test_local_provider_passes_call_kwargs(engine: CostEngine) -> None:
    seen: list[dict[str, Any]] = []

    class Recording(ScriptedLLM):
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            seen.append({"prompt": prompt, "formatted": formatted, **kwargs})
            return super().complete(prompt, formatted=formatted, **kwargs)

    model = Recording(script=Script(["ok"]))
    r = BatchRunner(model, engine=engine, poll_interval_s=0.001, progress=False)
    r.complete_batch(["hello"], formatted=True, max_tokens=5)
    assert seen == [{"prompt": "hello", "formatted": True, "max_tokens": 5}]


def test_local_provider_errors_come_back_as_request_errors(engine: CostEngine) -> None:
    model = ScriptedLLM(script=Script([ScriptedResponse("x", error=RuntimeError("llm down"))]))
    r = BatchRunner(model, engine=engine, poll_interval_s=0.001, progress=False, max_attempts=1)
    [err] = r.chat_batch([convo("a")], return_exceptions=True)
    assert isinstance(err, BatchRequestError)
    assert "llm down" in str(err)


# -- requests: model name and parameters --------------------------------------------------------
class ParamLLM(ScriptedLLM):
    temperature: float = 0.3
    max_tokens: int | None = 128
    additional_kwargs: dict[str, Any] = Field(default_factory=dict)


def test_request_carries_the_llms_name_and_parameters(engine: CostEngine) -> None:
    model = ParamLLM(script=Script(["x"]), model="gpt-4o", additional_kwargs={"user": "u1"})
    openai_req = BatchRunner(model, provider="openai", engine=engine).chat_request(
        "0", convo("hi"), stop="END"
    )
    assert openai_req.model == "gpt-4o"
    assert dict(openai_req.params) == {
        "temperature": 0.3,
        "max_completion_tokens": 128,
        "user": "u1",
        "stop": ["END"],
    }
    anthropic_req = BatchRunner(
        model, provider="anthropic", engine=engine, model="claude-haiku-4-5"
    ).complete_request("0", "hi", max_tokens=9)
    assert anthropic_req.model == "claude-haiku-4-5"
    assert dict(anthropic_req.params) == {"temperature": 0.3, "max_tokens": 9, "user": "u1"}


def test_tenant_goes_with_the_request(engine: CostEngine) -> None:
    api = FakeBatchAPI()
    runner(api, engine, tenant="acme").complete_batch(["a"])
    assert api.submitted[0][0].tenant == "acme"
    assert engine.ledger.records()[0].tenant == "acme"


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poll_interval_s": -1}, "poll_interval_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_attempts": 101}, "max_attempts"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"job_prefix": ""}, "job_prefix"),
        ({"provider": "bedrock"}, "bedrock"),
    ],
)
def test_bad_settings_raise_configuration_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        BatchRunner(llm(), **kwargs)


def test_wrong_input_shapes_are_refused(engine: CostEngine) -> None:
    r = runner(FakeBatchAPI(), engine)
    with pytest.raises(ConfigurationError, match="list of conversations"):
        r.chat_batch(convo("one conversation"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="takes a list of inputs, one per request"):
        r.complete_batch("one prompt")
    with pytest.raises(ConfigurationError, match="not JSON"):
        r.complete_batch(["x"], response_format=object())
    with pytest.raises(ConfigurationError, match="LlamaIndex LLM"):
        BatchRunner(object())  # type: ignore[arg-type]


def test_each_conversation_and_prompt_is_checked(engine: CostEngine) -> None:
    r = runner(FakeBatchAPI(), engine)
    with pytest.raises(ConfigurationError, match="a conversation must be a non-empty list"):
        r.chat_batch([["hi"]])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="a conversation must be a non-empty list"):
        r.chat_batch(["hi"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="a prompt must be a string, got int 1"):
        r.complete_batch([1, 2])  # type: ignore[list-item]


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_one_bad_input_fails_only_itself(engine: CostEngine, sync: bool) -> None:
    api = FakeBatchAPI()
    r = runner(api, engine)
    chats: list[Any] = [convo("a"), "hi", convo("c"), None, 5, []]
    prompts: list[Any] = ["a", 7, "c"]
    if sync:
        chat_out = r.chat_batch(chats, return_exceptions=True)
        done_out = r.complete_batch(prompts, return_exceptions=True)
    else:
        chat_out = await r.achat_batch(chats, return_exceptions=True)
        done_out = await r.acomplete_batch(prompts, return_exceptions=True)
    for out in (chat_out, done_out):
        assert isinstance(out[1], ConfigurationError)
        assert not isinstance(out[0], Exception) and not isinstance(out[2], Exception)
    assert all(isinstance(o, ConfigurationError) for o in chat_out[3:])
    assert [len(b) for b in api.submitted] == [2, 2]


def test_default_provider_follows_the_llm_class() -> None:
    class FakeOpenAI(ScriptedLLM):
        @classmethod
        def class_name(cls) -> str:
            return "openai_llm"

    class FakeAnthropic(ScriptedLLM):
        @classmethod
        def class_name(cls) -> str:
            return "Anthropic_LLM"

    script = Script(["x"])
    assert provider_name_of(FakeOpenAI(script=script)) == "openai"
    assert provider_name_of(FakeAnthropic(script=script)) == "anthropic"
    assert provider_name_of(ScriptedLLM(script=script)) == "local"
    assert isinstance(BatchRunner(FakeOpenAI(script=script)).provider, OpenAIBatchProvider)
    assert isinstance(BatchRunner(ScriptedLLM(script=script)).provider, LocalBatchProvider)


def test_model_name_of() -> None:
    assert model_name_of(llm()) == "gpt-4o-mini"
    with pytest.raises(ConfigurationError, match="model="):
        model_name_of(ScriptedLLM(script=Script(["x"]), model="unknown"))


# -- end to end through the OpenAI SDK, against a local fake Batch API ----------------------------
def test_openai_batch_api_end_to_end(engine: CostEngine) -> None:
    server = FakeOpenAIBatchServer().start()
    try:
        server.hold(2)
        provider = OpenAIBatchProvider(api_key=server.api_key, base_url=server.url, max_retries=0)
        r = BatchRunner(llm(), provider=provider, engine=engine, poll_interval_s=0.001)
        out = r.complete_batch(["what is batching", "why half price"])
    finally:
        server.stop()
    assert [o.text for o in out] == [
        "gpt-4o-mini answers: what is batching",
        "gpt-4o-mini answers: why half price",
    ]
    entry = engine.catalog.get("gpt-4o-mini")
    for response, rec in zip(out, engine.ledger.records(), strict=True):
        assert usage_of(response) == rec.usage
        assert rec.cost_usd == cost_of(entry, rec.usage, "batch")
        assert rec.savings_usd["batch"] * 2 == cost_of(entry, rec.usage, "sync")


def test_progress_bar_while_waiting(engine: CostEngine, capsys: pytest.CaptureFixture[str]) -> None:
    r = runner(FakeBatchAPI(hold=2), engine, progress=True)
    handle = r.submit_complete(["a", "b"])
    handle.wait()
    err = capsys.readouterr().err
    assert f"batch {handle.name}" in err
    assert "2/2" in err
    runner(FakeBatchAPI(hold=1), engine).complete_batch(["quiet"])
    assert capsys.readouterr().err == ""


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
    r = runner(api, engine)
    # 4 requests of up to 100 answer tokens, at gpt-4o-mini's batch rates ($0.075 / $0.30)
    expected = sum(
        batch_estimate(engine, r.chat_request(str(i), convo(q), max_tokens=100))
        for i, q in enumerate(QUESTIONS)
    )
    assert expected > 4 * 100 * Decimal("0.30") / 10**6
    with pytest.raises(BudgetExceededError) as info:
        r.chat_batch([convo(q) for q in QUESTIONS], max_tokens=100)
    assert info.value.estimate_usd == expected
    assert api.submitted == []
    assert engine.ledger.totals().calls == 0
