"""RouterLLM: the same routing policy on LlamaIndex, recorded once per request."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from llama_index.core.llms import ChatMessage
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

from costopt_core import CostEngine, Usage
from costopt_core.errors import RoutingError
from costopt_core.routing.router import RouterConfig
from costopt_core.testing import Script, ScriptedResponse
from llamaindex_costopt import CachedLLM, track_costs
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM

U = Usage(1000, 100)
MSGS = [ChatMessage(role="user", content="What is 2+2?")]


class Always:
    name = "fixed"

    def __init__(self, p: float) -> None:
        self.p = p

    @property
    def n_tiers(self) -> int:
        return 2

    def predict(self, items: Any) -> Any:
        return np.array([[self.p, 1.0] for _ in items])


def llm(*answers: str | ScriptedResponse, model: str = "gpt-4o-mini") -> ScriptedLLM:
    rs = [
        a if isinstance(a, ScriptedResponse) else ScriptedResponse(a, U, model=model)
        for a in answers
    ]
    return ScriptedLLM(script=Script(rs))


def test_escalation_is_recorded_once_per_attempt() -> None:
    engine = CostEngine()
    small, big = llm("I'm not sure, sorry."), llm("4", model="gpt-4o")
    router = RouterLLM(
        tiers={"small": small, "frontier": big}, classifier=Always(0.9), engine=engine
    )
    with track_costs(engine):
        out = router.chat(MSGS)
    assert out.message.content == "4"
    assert out.raw["costopt"]["route"]["attempts"][0]["outcome"] == "escalated: refusal_or_hedge"
    recs = [(r.model, r.outcome, r.tier) for r in engine.ledger.records()]
    assert recs == [("gpt-4o-mini", "escalated", "small"), ("gpt-4o", "model", "frontier")]


@pytest.mark.parametrize("how", ["chat", "complete", "stream_chat", "stream_complete"])
def test_each_call_style_routes_and_records_once(how: str) -> None:
    engine = CostEngine()
    router = RouterLLM(
        tiers={"small": llm("four"), "frontier": llm("4", model="gpt-4o")},
        classifier=Always(0.9),
        engine=engine,
    )
    with track_costs(engine):
        if how == "chat":
            text = router.chat(MSGS).message.content
        elif how == "complete":
            text = router.complete("2+2?").text
        elif how == "stream_chat":
            text = "".join(r.delta or "" for r in router.stream_chat(MSGS))
        else:
            text = "".join(r.delta or "" for r in router.stream_complete("2+2?"))
    assert text == "four"
    [rec] = engine.ledger.records()
    assert rec.model == "gpt-4o-mini" and rec.outcome == "model"


async def test_async_and_fallback() -> None:
    boom = ScriptedResponse("", U, error=TimeoutError("503"))
    router = RouterLLM(
        tiers={"small": llm(boom), "frontier": llm("ok", model="gpt-4o")},
        classifier=Always(0.9),
        router_config=RouterConfig(retries_per_model=0),
    )
    assert (await router.achat(MSGS)).message.content == "ok"
    assert (await router.acomplete("q")).text == "ok"
    down = RouterLLM(
        tiers={"small": llm(boom), "frontier": llm(boom)},
        classifier=Always(0.9),
        router_config=RouterConfig(retries_per_model=0),
    )
    with pytest.raises(RoutingError):
        down.chat(MSGS)


def test_cached_router_records_hits_as_cache() -> None:
    from costopt_core.cache import SemanticCache
    from costopt_core.testing import FakeEmbedder

    engine = CostEngine()
    router = RouterLLM(
        tiers={"small": llm("four"), "frontier": llm("4", model="gpt-4o")},
        classifier=Always(0.9),
        engine=engine,
    )
    cached = CachedLLM(llm=router, semantic_cache=SemanticCache(embedder=FakeEmbedder()))
    with track_costs(engine):
        cached.chat(MSGS)
        cached.chat(MSGS)
    assert [r.outcome for r in engine.ledger.records()] == ["model", "cache_exact"]


class _LazyFailing(ScriptedLLM):
    """Like provider LLMs: the request is sent when the stream is first iterated."""

    @staticmethod
    def _failing() -> Any:
        raise ConnectionError("503 from provider")
        yield  # pragma: no cover

    @staticmethod
    async def _afailing() -> Any:
        raise ConnectionError("503 from provider")
        yield  # pragma: no cover

    @llm_chat_callback()
    def stream_chat(self, messages: Any, **kwargs: Any) -> Any:
        return self._failing()

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        return self._failing()

    @llm_chat_callback()
    async def astream_chat(self, messages: Any, **kwargs: Any) -> Any:
        return self._afailing()

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        return self._afailing()


@pytest.mark.parametrize(
    "how", ["stream_chat", "stream_complete", "astream_chat", "astream_complete"]
)
async def test_a_stream_failing_on_its_first_chunk_falls_back(how: str) -> None:
    router = RouterLLM(
        tiers={
            "small": _LazyFailing(script=Script(["x"])),
            "frontier": llm("four", model="gpt-4o"),
        },
        classifier=Always(0.9),
        router_config=RouterConfig(retries_per_model=0),
    )
    if how == "stream_chat":
        chunks = list(router.stream_chat(MSGS))
    elif how == "stream_complete":
        chunks = list(router.stream_complete("2+2?"))
    elif how == "astream_chat":
        chunks = [c async for c in await router.astream_chat(MSGS)]
    else:
        chunks = [c async for c in await router.astream_complete("2+2?")]
    assert "".join(c.delta or "" for c in chunks) == "four"
    route = chunks[-1].raw["costopt"]["route"]
    assert [a["outcome"] for a in route["attempts"]] == ["error: ConnectionError", "kept"]
    assert route["tier"] == "frontier"


class _Seen(ScriptedLLM):
    """Records the roles and texts of each chat it is asked."""

    def chat(self, messages: Any, **kwargs: Any) -> Any:
        self.__dict__.setdefault("_asked", []).append([(m.role.value, m.content) for m in messages])
        return super().chat(messages, **kwargs)


def test_a_system_prompt_every_tier_has_is_applied_by_predict_through_the_router() -> None:
    from llama_index.core.prompts import PromptTemplate

    french = "Always answer in French."
    small = _Seen(script=Script([ScriptedResponse("Bonjour", U)]), system_prompt=french)
    big = _Seen(script=Script([ScriptedResponse("Bonjour", U)]), system_prompt=french)
    router = RouterLLM(tiers={"small": small, "frontier": big}, classifier=Always(0.9))
    assert router.system_prompt == french
    router.predict(PromptTemplate("Say hello to {name}"), name="Ada")
    assert small.__dict__["_asked"] == [[("system", french), ("user", "Say hello to Ada")]]
    # The router's own wins; chat applies none (as LlamaIndex's chat never does).
    own = RouterLLM(
        tiers={"small": small, "frontier": big}, classifier=Always(0.9), system_prompt="Mine."
    )
    own.predict(PromptTemplate("Hi"))
    assert small.__dict__["_asked"][-1] == [("system", "Mine."), ("user", "Hi")]
    own.chat(MSGS)
    assert small.__dict__["_asked"][-1] == [("user", "What is 2+2?")]


def test_tiers_with_different_system_prompts_warn_that_theirs_are_not_applied() -> None:
    small = ScriptedLLM(script=Script(["ok"]), system_prompt="Be brief.")
    big = ScriptedLLM(script=Script(["ok"]))
    with pytest.warns(UserWarning, match=r"RouterLLM\(system_prompt=\.\.\.\)"):
        router = RouterLLM(tiers={"small": small, "frontier": big}, classifier=Always(0.9))
    assert router.system_prompt is None
