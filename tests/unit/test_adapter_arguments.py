"""Constructor arguments: an unknown one is refused by name; the LangChain wrappers'
standard settings (temperature, max_tokens, stop) reach every call they make."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from costopt_core.errors import ConfigurationError, check_arguments
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


class Inner(BaseModel):
    thresholds: list[float] | None = None
    margin: float = 0.05


class Outer(BaseModel):
    tiers: dict[str, Any] = {}
    router_config: Inner = Inner()
    engine: Any = None


def test_the_message_says_where_the_argument_belongs() -> None:
    def message(*names: str) -> str:
        with pytest.raises(ConfigurationError) as err:
            check_arguments("Outer", names, Outer)
        return str(err.value)

    assert "(did you mean 'tiers'?)" in message("tier")
    assert "(a nested setting: pass router_config=Inner(margin=...))" in message("margin")
    assert "did you mean router_config=Inner(thresholds=...)?" in message("treshold")
    assert "settings of the model(s) it wraps" in message("top_p")
    both = message("tier", "zzq")
    assert both.startswith("Outer got unknown arguments 'tier' (did you mean 'tiers'?); 'zzq'")
    assert "it takes engine, router_config, tiers" in both
    check_arguments("Outer", ["tiers", "engine"], Outer)  # known: no error


def test_an_alias_is_a_known_argument() -> None:
    assert LocalChatModel(model="my-smollm").model_name == "my-smollm"


def test_router_llm_names_a_router_config_setting() -> None:
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
