"""Constructor arguments: an unknown one is refused by name; the LangChain wrappers'
standard settings (temperature, max_tokens, stop) reach every call they make."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from costopt_core.errors import ConfigurationError
from costopt_core.testing import Script, ScriptedResponse
from costopt_core.types import Usage
from langchain_costopt import CachedChatModel, RouterChatModel
from langchain_costopt.local import LocalChatModel
from langchain_costopt.prefix import PrefixCachedChatModel, PrefixCacheOptimizer
from langchain_costopt.relevance import RelevanceThresholdRetriever
from langchain_costopt.summarizer import AbstractiveContextSummarizer, ContextSummarizer
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CachedLLM, RouterLLM
from llamaindex_costopt.local import LocalLLM
from llamaindex_costopt.memory import SummarizingMemory
from llamaindex_costopt.prefix import PrefixCachedLLM
from llamaindex_costopt.relevance import RelevanceThresholdPostprocessor
from llamaindex_costopt.summarizer import (
    AbstractiveSummarizerPostprocessor,
    ContextSummarizerPostprocessor,
)
from tests.conftest import CheapFirst

CONSTRUCTORS = [
    RouterChatModel,
    CachedChatModel,
    PrefixCachedChatModel,
    PrefixCacheOptimizer,
    LocalChatModel,
    RelevanceThresholdRetriever,
    ContextSummarizer,
    AbstractiveContextSummarizer,
    RouterLLM,
    CachedLLM,
    PrefixCachedLLM,
    LocalLLM,
    SummarizingMemory,
    RelevanceThresholdPostprocessor,
    ContextSummarizerPostprocessor,
    AbstractiveSummarizerPostprocessor,
]


@pytest.mark.parametrize("cls", CONSTRUCTORS, ids=lambda c: c.__name__)
def test_an_unknown_argument_is_refused_by_name(cls: type) -> None:
    # pydantic and the frameworks' base classes ignore it: the setting would
    # silently keep its default.
    with pytest.raises(ConfigurationError, match=rf"{cls.__name__} got unknown argument 'zzq'"):
        cls(zzq=1)


def message(cls: type, **arguments: Any) -> str:
    with pytest.raises(ConfigurationError) as err:
        cls(**arguments)
    return str(err.value)


def test_the_message_says_where_the_argument_belongs() -> None:
    assert "(did you mean 'tiers'?)" in message(RouterChatModel, tier={})
    assert "(a nested setting: pass router_config=RouterConfig(margin=...))" in message(
        RouterChatModel, margin=0.1
    )
    assert "did you mean router_config=RouterConfig(thresholds=...)?" in message(
        RouterChatModel, treshold=0.3
    )
    assert "settings of the model(s) it wraps" in message(RouterChatModel, top_p=0.9)
    both = message(RouterChatModel, tier={}, zzq=1)
    assert both.startswith(
        "RouterChatModel got unknown arguments 'tier' (did you mean 'tiers'?); 'zzq'"
    )
    assert "it takes cache, calibration," in both
    # A half-named field is found by its shared word.
    assert "(did you mean 'model'?)" in message(LocalLLM, model_name="x")
    assert "(did you mean 'token_model'?)" in message(RelevanceThresholdPostprocessor, model="x")
    # A wrapper's model_name is the wrapped model's, not its own "model" field.
    assert "settings of the model(s) it wraps" in message(CachedChatModel, model_name="x")


def test_no_advice_to_set_it_on_a_wrapped_model_that_is_not_there() -> None:
    # LocalChatModel is the model: top_p is simply not one of its settings.
    assert "wraps" not in message(LocalChatModel, top_p=0.9)
    assert "wraps" not in message(PrefixCacheOptimizer, api_key="k")
    # Only costopt's own configs are offered as nested settings, never a model class.
    assert "LLM(" not in message(SummarizingMemory, system_prompt="Be brief.")


def test_a_secret_value_is_never_in_the_message() -> None:
    assert "sk-secret" not in message(CachedChatModel, api_key="sk-secret")


def test_an_alias_is_a_known_argument() -> None:
    assert LocalChatModel(model="my-smollm").model_name == "my-smollm"


def test_router_llm_names_a_router_config_setting() -> None:  # the LlamaIndex twin
    with pytest.raises(ConfigurationError, match=r"router_config=RouterConfig\(margin=\.\.\.\)"):
        RouterLLM(margin=0.1)


# -- LangChain wrappers: standard settings are defaults for every wrapped call ----------


class Recording(ScriptedChatModel):
    """Records the stop sequences and kwargs each call reaches it with."""

    seen: list[tuple[Any, dict[str, Any]]]

    def _note(self, stop: Any, kw: dict[str, Any]) -> None:
        self.seen.append((stop, {k: kw[k] for k in ("temperature", "max_tokens") if k in kw}))

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self._note(stop, kw)
        return super()._generate(messages, stop, run_manager, **kw)

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        self._note(stop, kw)
        return await super()._agenerate(messages, stop, run_manager, **kw)

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self._note(stop, kw)
        return super()._stream(messages, stop, run_manager, **kw)


def recording() -> Recording:
    answers = [ScriptedResponse("fine", Usage(10, 2), model="gpt-4o-mini")] * 8
    return Recording(script=Script(answers), model_name="gpt-4o-mini", seen=[])


def wrappers(inner: Recording, **settings: Any) -> list[Any]:
    return [
        RouterChatModel(
            tiers={"small": inner, "frontier": recording()}, classifier=CheapFirst(), **settings
        ),
        CachedChatModel(model=inner, **settings),
        PrefixCachedChatModel(model=inner, **settings),
    ]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["router", "cached", "prefix"])
def test_standard_settings_reach_the_wrapped_model(which: int) -> None:
    inner = recording()
    model = wrappers(inner, temperature=0.2, max_tokens=50, stop=["END"])[which]
    model.invoke("a question")
    list(model.stream("another question"))
    asyncio.run(model.ainvoke("a third question"))
    # A call's own values win over the wrapper's.
    model.invoke("a fourth question", temperature=0.9, stop=["STOP"])
    want = (["END"], {"temperature": 0.2, "max_tokens": 50})
    assert inner.seen == [want, want, want, (["STOP"], {"temperature": 0.9, "max_tokens": 50})]


def test_without_settings_nothing_is_added() -> None:
    inner = recording()
    for model in wrappers(inner):
        model.invoke("a question")
    assert inner.seen == [(None, {})] * 3


def test_settings_are_traced_as_langchain_standard_params() -> None:
    model = wrappers(recording(), temperature=0.2, max_tokens=50)[0]
    params = model._get_ls_params(stop=["END"])
    assert (params["ls_temperature"], params["ls_max_tokens"], params["ls_stop"]) == (
        0.2,
        50,
        ["END"],
    )


@pytest.mark.parametrize("bad", [{"temperature": -1.0}, {"max_tokens": 0}])
def test_settings_are_range_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(bad))):
        wrappers(recording(), **bad)


def test_a_wrapper_temperature_is_part_of_the_cache_scope() -> None:
    from costopt_core.cache import SemanticCache
    from costopt_core.testing import FakeEmbedder

    shared = SemanticCache(embedder=FakeEmbedder())
    inner = recording()
    cold = CachedChatModel(model=inner, semantic_cache=shared, temperature=0.0)
    warm = CachedChatModel(model=inner, semantic_cache=shared, temperature=1.0)
    cold.invoke("a question")
    cold.invoke("a question")  # the same settings: served from the cache
    warm.invoke("a question")  # another temperature: another scope, a model call
    assert [kw for _, kw in inner.seen] == [{"temperature": 0.0}, {"temperature": 1.0}]


def test_the_settings_are_part_of_langchains_own_cache_key() -> None:
    # LangChain's LLM cache (cache= / set_llm_cache) keys on the invocation params.
    cut, whole = (wrappers(recording(), max_tokens=5, stop=["\n"])[0], wrappers(recording())[0])
    assert cut._get_llm_string() != whole._get_llm_string()
    cold, warm = (CachedChatModel(model=recording(), temperature=t) for t in (0.0, 1.0))
    assert cold._get_llm_string() != warm._get_llm_string()
    # The cost handler's budget estimate reads max_tokens from the same params.
    assert (
        CachedChatModel(model=recording(), max_tokens=50)._get_invocation_params()["max_tokens"]
        == 50
    )


@pytest.mark.parametrize("which", [0, 1, 2], ids=["router", "cached", "prefix"])
def test_every_wrapper_traces_its_settings(which: int) -> None:
    model = wrappers(recording(), temperature=0.2, max_tokens=50, stop=["END"])[which]
    params = model._get_ls_params()
    assert (params["ls_temperature"], params["ls_max_tokens"], params["ls_stop"]) == (
        0.2,
        50,
        ["END"],
    )


async def test_configurable_fields_keep_invoke_streaming_to_stream_handlers() -> None:
    # An unset streaming field must stay unset when LangChain rebuilds the model
    # (configurable_fields passes every field back in): a False it finds set
    # would stop invoke() streaming to astream_events / LangGraph's messages mode.
    from langchain_core.runnables import ConfigurableField, RunnableLambda

    model = CachedChatModel(model=recording(), cache=False).configurable_fields(
        tenant=ConfigurableField(id="tenant")
    )
    config: Any = {"configurable": {"tenant": "acme"}}

    async def call(x: str) -> Any:
        return await model.ainvoke(x, config)

    events = [e["event"] async for e in RunnableLambda(call).astream_events("hi", version="v2")]
    assert events.count("on_chat_model_stream") >= 1


def test_llamaindex_chat_engines_take_the_memory_class() -> None:
    # SimpleChatEngine builds memory_cls.from_defaults(chat_history=..., token_limit=...).
    from llama_index.core.chat_engine import SimpleChatEngine
    from llama_index.core.llms import MockLLM

    engine = SimpleChatEngine.from_defaults(llm=MockLLM(), memory_cls=SummarizingMemory)
    assert isinstance(engine._memory, SummarizingMemory)
    engine.chat("hello")
    assert [m.role.value for m in engine._memory.get_all()] == ["user", "assistant"]
