"""Batch subsystem, third review: JSONL lines that hold Unicode line breaks, OpenAI
batches failed for a reason no line caused, a local chat function that returns the
wrong type, and answer-changing model settings carried into batch requests."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from types import SimpleNamespace as NS
from typing import Any

import pytest
from pydantic import Field

from costopt_core import CostEngine, Message
from costopt_core.batch import (
    BatchJob,
    BatchRequest,
    BatchResult,
    LocalBatchProvider,
    OpenAIBatchProvider,
    model_params,
)
from costopt_core.batch._wire import openai_jsonl_line, parse_jsonl
from costopt_core.batch.openai_provider import _Collector
from costopt_core.testing import Script
from langchain_costopt.batch import BatchRunnable
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt.batch import BatchRunner
from llamaindex_costopt.testing import ScriptedLLM
from tests.fakes.openai_batch_server import FakeOpenAIBatchServer

pytestmark = pytest.mark.filterwarnings("ignore::Warning")

#: Every character ``str.splitlines`` breaks at besides "\n" and "\r".
ODD_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def request(rid: str, text: str, **params: Any) -> BatchRequest:
    return BatchRequest(
        id=rid, model="gpt-4o-mini", messages=(Message("user", text),), params=params
    )


# -- 2. JSONL with Unicode line breaks ---------------------------------------------------


def test_parse_jsonl_keeps_a_line_whole_when_its_text_holds_unicode_line_breaks() -> None:
    # What an output file may hold raw (JSON allows U+2028, U+2029 and U+0085 unescaped).
    lines = [
        {"custom_id": "a", "text": "one\u2028two"},
        {"custom_id": "b", "text": "three\u2029four\x85five"},
        {"custom_id": "c", "text": "plain"},
    ]
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    assert parse_jsonl(text) == lines
    # CRLF line ends and blank lines are read as before.
    assert parse_jsonl(text.replace("\n", "\r\n") + "\r\n\r\n") == lines


def test_openai_jsonl_line_is_one_line_for_any_reader_and_round_trips() -> None:
    text = f"a{ODD_BREAKS}b\r\nc\u00e9\u4e2d\U0001f600\\\u2028"
    line = openai_jsonl_line(request("q1", text, temperature=0.2))
    decoded = line.decode("utf-8")
    assert decoded.endswith("\n") and decoded.count("\n") == 1
    assert len(decoded.splitlines()) == 1  # no reader splits our own line
    [obj] = parse_jsonl(decoded)
    assert obj["body"]["messages"][0]["content"] == text
    assert obj["body"]["temperature"] == 0.2
    # Other non-ASCII text stays raw UTF-8 (the size the batch limits count).
    assert "\u00e9\u4e2d\U0001f600" in decoded


def test_expired_openai_batch_with_a_u2028_prompt_is_collected_and_resubmitted() -> None:
    srv = FakeOpenAIBatchServer().start()
    try:
        srv.expire_after(1)  # the first request runs, the second expires
        prov = OpenAIBatchProvider(api_key=srv.api_key, base_url=srv.url, max_retries=0)
        job = BatchJob(
            prov, ":memory:", name="j", engine=CostEngine(), poll_interval_s=0.01,
            max_unavailable=0,
        )  # fmt: skip
        reqs = [request("q0", "plain question"), request("q1", "pasted\u2028text")]
        results = {r.id: r for r in job.run(reqs, timeout_s=10)}
        assert results["q0"].status == "succeeded"
        assert results["q1"].status == "succeeded"
        assert results["q1"].text == "gpt-4o-mini answers: pasted\u2028text"
        assert job.status().complete
        prov.close()
    finally:
        srv.stop()


# -- 3. OpenAI batch failed for a reason no line caused -------------------------------------

TOKEN_LIMIT = {
    "code": "token_limit_exceeded",
    "line": None,
    "param": None,
    "message": "Enqueued token limit reached for gpt-4o-mini in organization org-x. Please"
    " try again once some in_progress batches have been completed.",
}


def _failed_collector(errors: list[dict[str, Any]]) -> _Collector:
    collector = _Collector(
        {
            "status": "failed",
            "input_file_id": "in",
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "errors": {"object": "list", "data": errors},
        }
    )
    assert collector.next_file() == "in"
    collector.add("in", "".join(json.dumps({"custom_id": f"r{i}"}) + "\n" for i in (1, 2)))
    return collector


def test_openai_batch_failed_without_line_errors_leaves_its_requests_retryable() -> None:
    results = _failed_collector([TOKEN_LIMIT]).results()
    assert [r.id for r in results] == ["r1", "r2"]
    assert all(r.status == "errored" for r in results)
    assert [r.retryable for r in results] == [True, True]
    assert all("token_limit_exceeded" in (r.error or "") for r in results)
    # No reason given at all: still nothing known against the requests.
    assert [r.retryable for r in _failed_collector([]).results()] == [True, True]


def test_openai_batch_failed_with_line_errors_still_fails_the_named_lines() -> None:
    bad = {"code": "invalid_method", "message": "POST only", "line": 2}
    results = {r.id: r for r in _failed_collector([bad, TOKEN_LIMIT]).results()}
    assert results["r2"].error == "invalid_method: POST only"
    assert not results["r2"].retryable
    assert results["r1"].retryable


class _DuckOpenAI:
    """Just enough of an ``openai.OpenAI``: each batch created ends as ``finish`` says."""

    def __init__(self, finish: Callable[[dict[str, Any], list[dict[str, Any]]], Any]) -> None:
        self.finish = finish
        self.store: dict[str, str] = {}
        self.batches_store: dict[str, dict[str, Any]] = {}
        self.n = itertools.count(1)
        self.files = NS(create=self._file, content=lambda fid: NS(text=self.store[fid]))
        self.batches = NS(
            create=self._create,
            retrieve=self._retrieve,
            cancel=lambda bid: None,
            list=lambda **kw: NS(data=[], has_more=False),
        )

    def _file(self, file: tuple[str, bytes, str], purpose: str) -> NS:
        fid = f"file-{next(self.n)}"
        self.store[fid] = file[1].decode()
        return NS(id=fid)

    def _create(self, input_file_id: str, **kw: Any) -> NS:
        bid = f"batch_{next(self.n)}"
        lines = parse_jsonl(self.store[input_file_id])
        batch = {"id": bid, "input_file_id": input_file_id, "created_at": 0, **kw}
        final, files = self.finish(batch, lines)
        self.store.update(files)
        self.batches_store[bid] = final
        return NS(id=bid)

    def _retrieve(self, bid: str) -> NS:
        d = self.batches_store[bid]
        return NS(**d, to_dict=lambda mode="json": dict(d))


def _ok_line(custom_id: str) -> dict[str, Any]:
    body = {
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    return {"custom_id": custom_id, "response": {"status_code": 200, "body": body}}


def test_job_resubmits_an_openai_batch_failed_on_the_enqueued_token_limit() -> None:
    submissions: list[int] = []

    def finish(batch: dict[str, Any], lines: list[dict[str, Any]]) -> Any:
        submissions.append(len(lines))
        if len(submissions) == 1:
            counts = {"total": 0, "completed": 0, "failed": 0}
            return {
                **batch,
                "status": "failed",
                "request_counts": counts,
                "errors": {"object": "list", "data": [TOKEN_LIMIT]},
            }, {}
        out = f"file-out-{len(submissions)}"
        counts = {"total": len(lines), "completed": len(lines), "failed": 0}
        text = "\n".join(json.dumps(_ok_line(line["custom_id"])) for line in lines)
        return {**batch, "status": "completed", "output_file_id": out,
                "request_counts": counts}, {out: text}  # fmt: skip

    prov = OpenAIBatchProvider(client=_DuckOpenAI(finish), async_client=None)
    job = BatchJob(
        prov, ":memory:", name="j", engine=CostEngine(), poll_interval_s=0.01, max_attempts=3
    )
    results = job.run([request("q0", "hi 0"), request("q1", "hi 1")], timeout_s=10)
    assert [(r.id, r.status) for r in results] == [("q0", "succeeded"), ("q1", "succeeded")]
    assert submissions == [2, 2]


# -- 4. a local chat function returning the wrong type --------------------------------------


def _returns_a_dict(req: BatchRequest) -> Any:
    return {"text": "hi"}


def test_sync_local_chat_returning_the_wrong_type_ends_the_request_errored() -> None:
    job = BatchJob(
        LocalBatchProvider(_returns_a_dict), ":memory:", name="s", engine=CostEngine(),
        poll_interval_s=0.01,
    )  # fmt: skip
    [result] = job.run([request("a", "x")], timeout_s=5)
    assert result.status == "errored" and not result.retryable
    assert "dict" in (result.error or "")


def test_sync_and_async_local_paths_report_a_bad_return_alike() -> None:
    async def areturns_a_dict(req: BatchRequest) -> Any:
        return {"text": "hi"}

    sync = LocalBatchProvider(_returns_a_dict)
    batch_id = sync.submit([request("a", "x"), request("b", "y")])
    # The provider alone: its batch must end without a job's help.
    for _ in range(500):
        if sync.poll(batch_id).status == "ended":
            break
        time.sleep(0.01)
    sync_results = sync.results(batch_id)
    sync.close()

    async def run_async() -> list[BatchResult]:
        prov = LocalBatchProvider(achat=areturns_a_dict)
        bid = await prov.asubmit([request("a", "x"), request("b", "y")])
        for _ in range(500):
            if (await prov.apoll(bid)).status == "ended":
                break
            await asyncio.sleep(0.01)
        return await prov.aresults(bid)

    async_results = asyncio.run(run_async())
    assert [(r.id, r.status, r.retryable, r.error) for r in sync_results] == [
        (r.id, r.status, r.retryable, r.error) for r in async_results
    ]
    assert all(r.status == "errored" for r in sync_results)


# -- 5. answer-changing model settings ------------------------------------------------------


class ReasoningChatModel(ScriptedChatModel):
    """The fields of langchain-openai's ChatOpenAI / langchain-anthropic's ChatAnthropic
    that change the answer (values as those classes hold them)."""

    temperature: float | None = None
    max_tokens: int | None = None
    reasoning_effort: str | None = None
    reasoning: dict[str, Any] | None = None
    verbosity: str | None = None
    logit_bias: dict[int, int] | None = None
    thinking: dict[str, Any] | None = None
    effort: str | None = None
    service_tier: str | None = None
    n: int | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    extra_body: dict[str, Any] | None = None


def lc_params(provider: str, **fields: Any) -> dict[str, Any]:
    model = ReasoningChatModel(script=Script(["x"]), model_name="m", **fields)
    runnable = BatchRunnable(model, provider=provider, engine=CostEngine(), model="m")
    return dict(runnable.request_of("0", "hi").params)


def test_langchain_batch_request_carries_openai_reasoning_settings() -> None:
    params = lc_params(
        "openai",
        reasoning_effort="high",
        verbosity="low",
        logit_bias={50256: -100},
        service_tier="flex",  # the batch API's own: never sent
        n=3,  # one answer per request
        max_tokens=100,
    )
    assert params == {
        "reasoning_effort": "high",
        "verbosity": "low",
        "logit_bias": {50256: -100},
        "max_completion_tokens": 100,
    }
    # The Responses API's reasoning={"effort": ...} is Chat Completions' reasoning_effort.
    assert lc_params("openai", reasoning={"effort": "low", "summary": "auto"}) == {
        "reasoning_effort": "low"
    }


def test_langchain_batch_request_carries_anthropic_thinking_and_effort() -> None:
    thinking = {"type": "enabled", "budget_tokens": 2000}
    assert lc_params("anthropic", thinking=thinking, max_tokens=4000) == {
        "thinking": thinking,
        "max_tokens": 4000,
    }
    params = lc_params("anthropic", effort="low", model_kwargs={"output_config": {"format": "x"}})
    assert params == {"output_config": {"format": "x", "effort": "low"}}


def test_langchain_batch_request_passes_unknown_extra_keywords_through() -> None:
    params = lc_params(
        "openai",
        temperature=0.3,
        model_kwargs={"user": "u1", "prediction": {"type": "content"}, "stream": True},
        extra_body={"custom_flag": 1, "service_tier": "priority"},
    )
    assert params == {
        "temperature": 0.3,
        "user": "u1",
        "prediction": {"type": "content"},
        "custom_flag": 1,
    }


class ReasoningLLM(ScriptedLLM):
    """Fields of llama-index-llms-openai's OpenAI and -anthropic's Anthropic."""

    temperature: float = 0.1
    max_tokens: int | None = None
    reasoning_effort: str | None = None
    thinking_dict: dict[str, Any] | None = None
    additional_kwargs: dict[str, Any] = Field(default_factory=dict)


def test_llamaindex_batch_request_carries_reasoning_and_thinking() -> None:
    openai_llm = ReasoningLLM(script=Script(["x"]), model="o3-mini", reasoning_effort="high")
    req = BatchRunner(openai_llm, provider="openai", engine=CostEngine()).chat_request(
        "0", [], max_tokens=5
    )
    assert dict(req.params) == {
        "temperature": 0.1,
        "reasoning_effort": "high",
        "max_completion_tokens": 5,
    }
    thinking = {"type": "enabled", "budget_tokens": 1024}
    anthropic_llm = ReasoningLLM(
        script=Script(["x"]),
        model="claude-sonnet-4-5",
        thinking_dict=thinking,
        max_tokens=2048,
        additional_kwargs={"metadata": {"user_id": "u"}},
    )
    req = BatchRunner(anthropic_llm, provider="anthropic", engine=CostEngine()).complete_request(
        "0", "hi"
    )
    assert dict(req.params) == {
        "temperature": 0.1,
        "thinking": thinking,
        "max_tokens": 2048,
        "metadata": {"user_id": "u"},
    }


def test_model_params_reads_mappings_and_renamed_fields() -> None:
    model = NS(
        temperature=0.5,
        seed=True,  # a flag is not a seed
        thinking_dict={"type": "enabled", "budget_tokens": 10},
        kw={"user": "u", "stream_options": {"include_usage": True}},
        body={"user": "v"},
    )
    fields = {"temperature": "temperature", "seed": "seed", "thinking_dict": "thinking"}
    assert model_params(model, "anthropic", fields, extra=("kw", "body")) == {
        "temperature": 0.5,
        "thinking": {"type": "enabled", "budget_tokens": 10},
        "user": "v",  # extra_body is merged last, as the SDK does
    }
