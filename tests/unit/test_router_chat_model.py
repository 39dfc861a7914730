"""RouterChatModel: standard LangChain tests, routing, escalation, fallbacks, budgets."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.unit_tests.chat_models import ChatModelUnitTests
from pydantic import BaseModel

from costopt_core import Budget, BudgetExceededError, CostEngine, Usage
from costopt_core.errors import RoutingError
from costopt_core.routing.router import RouterConfig
from costopt_core.testing import Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel

U = Usage(1000, 100, cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0)


def scripted(*answers: str | ScriptedResponse, model: str = "gpt-4o-mini") -> ScriptedChatModel:
    rs = [
        a if isinstance(a, ScriptedResponse) else ScriptedResponse(a, U, model=model)
        for a in answers
    ]
    return ScriptedChatModel(script=Script(rs), model_name=model)


class Always:
    """A classifier with fixed probabilities (cheap tier good enough or not)."""

    name = "fixed"

    def __init__(self, p_small: float, n: int = 2) -> None:
        self.p = p_small
        self.n = n

    @property
    def n_tiers(self) -> int:
        return self.n

    def predict(self, items: Any) -> Any:
        import numpy as np

        row = [self.p] * (self.n - 1) + [1.0]
        return np.array([row for _ in items])


class TestRouterChatModelStandard(ChatModelUnitTests):
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # A wrapper's temperature, max_tokens and stop are defaults for the models
        # it wraps; timeout and retries are each wrapped client's, refused by name.
        return {"temperature": 0, "max_tokens": 100, "stop": []}

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return RouterChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "tiers": {
                "small": scripted("ok", model="gpt-4o-mini"),
                "frontier": scripted("ok", model="gpt-4o"),
            }
        }

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True


def test_easy_request_stays_on_the_cheap_tier() -> None:
    engine = CostEngine()
    small, big = scripted("4", model="gpt-4o-mini"), scripted("4", model="gpt-4o")
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=Always(0.9))
    out = router.invoke("What is 2+2?", config={"callbacks": [CostCallbackHandler(engine)]})
    route = out.response_metadata["costopt"]["route"]
    assert route["tier"] == "small" and route["model"] == "gpt-4o-mini"
    assert out.response_metadata["model_name"] == "gpt-4o-mini"
    assert out.usage_metadata["input_tokens"] == 1000
    assert "threshold" in route["decision"]["reason"]
    assert (small.script.calls, big.script.calls) == (1, 0)
    [rec] = engine.ledger.records()
    assert rec.tier == "small" and rec.savings_usd["routing"] > 0


def test_weak_answer_escalates_and_the_wasted_call_is_recorded() -> None:
    engine = CostEngine()
    small = scripted("I'm not sure, sorry.", model="gpt-4o-mini")
    big = scripted("It is 42.", model="gpt-4o")
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=Always(0.9))
    out = router.invoke("meaning?", config={"callbacks": [CostCallbackHandler(engine)]})
    assert out.content == "It is 42."
    route = out.response_metadata["costopt"]["route"]
    assert route["escalations"] == 1
    assert route["attempts"][0]["outcome"] == "escalated: refusal_or_hedge"
    outcomes = [(r.model, r.outcome) for r in engine.ledger.records()]
    assert outcomes == [("gpt-4o-mini", "escalated"), ("gpt-4o", "model")]
    t = engine.ledger.totals()
    # the escalation cost is paid out of routing savings: actual = mini + 4o
    assert t.cost_usd == Decimal("0.00021") + Decimal("0.0035")
    assert t.requests == 1


def test_accept_hook_and_unsure_band() -> None:
    from costopt_core.routing.validators import ValidatorConfig

    small, big = scripted("short"), scripted("long answer", model="gpt-4o")
    router = RouterChatModel(
        tiers={"small": small, "frontier": big},
        classifier=Always(0.9),
        validators=ValidatorConfig(accept=lambda a: len(a.text) > 6),
    )
    assert router.invoke("q").content == "long answer"
    unsure = RouterChatModel(
        tiers={"small": scripted("x"), "frontier": scripted("y", model="gpt-4o")},
        classifier=Always(0.52),
        router_config=RouterConfig(margin=0.05),
    )
    out = unsure.invoke("q")
    assert out.response_metadata["costopt"]["route"]["decision"]["escalate_band"] is True
    assert out.content == "y"


def test_provider_errors_fall_back_to_the_tier_alternative_then_up() -> None:
    boom = ScriptedResponse("", U, model="gpt-4o-mini", error=TimeoutError("429 rate limited"))
    primary = scripted(boom)
    alternative = scripted("from the alternative", model="claude-haiku-4-5")
    big = scripted("from frontier", model="gpt-4o")
    router = RouterChatModel(
        tiers={"small": [primary, alternative], "frontier": big},
        classifier=Always(0.9),
        router_config=RouterConfig(retries_per_model=1),
    )
    out = router.invoke("q")
    assert out.content == "from the alternative"
    assert primary.script.calls == 2  # one retry
    all_down = RouterChatModel(
        tiers={"small": scripted(boom), "frontier": scripted(boom, model="gpt-4o")},
        classifier=Always(0.9),
        router_config=RouterConfig(retries_per_model=0),
    )
    with pytest.raises(RoutingError, match="no tier could answer"):
        all_down.invoke("q")


def test_bind_tools_and_structured_output_apply_to_every_tier() -> None:
    call = {"name": "Person", "args": {"name": "Ada", "age": 36}, "id": "c1", "type": "tool_call"}
    small = scripted(ScriptedResponse("", U, model="gpt-4o-mini", tool_calls=(call,)))
    router = RouterChatModel(
        tiers={"small": small, "frontier": scripted("x", model="gpt-4o")},
        classifier=Always(0.9),
    )

    class Person(BaseModel):
        name: str
        age: int

    person = router.with_structured_output(Person).invoke("Ada is 36")
    assert person == Person(name="Ada", age=36)
    bad = {"name": "Nope", "args": {}, "id": "c2", "type": "tool_call"}
    router2 = RouterChatModel(
        tiers={
            "small": scripted(ScriptedResponse("", U, tool_calls=(bad,))),
            "frontier": scripted(ScriptedResponse("", U, model="gpt-4o", tool_calls=(call,))),
        },
        classifier=Always(0.9),
    )
    out = router2.bind_tools([Person]).invoke("Ada is 36")
    assert out.tool_calls[0]["name"] == "Person"  # the unknown tool call escalated


def test_streaming_routes_before_the_call() -> None:
    router = RouterChatModel(
        tiers={
            "small": scripted("two plus two is four"),
            "frontier": scripted("x", model="gpt-4o"),
        },
        classifier=Always(0.9),
    )
    chunks = list(router.stream("2+2?"))
    text = "".join(str(c.content) for c in chunks)
    assert text == "two plus two is four"
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.response_metadata["costopt"]["route"]["tier"] == "small"


async def test_async_matches_sync() -> None:
    def make() -> RouterChatModel:
        return RouterChatModel(
            tiers={"small": scripted("I cannot help"), "frontier": scripted("ok", model="gpt-4o")},
            classifier=Always(0.9),
        )

    s = make().invoke("q")
    a = await make().ainvoke("q")
    assert s.content == a.content == "ok"
    assert s.response_metadata["costopt"]["route"] == a.response_metadata["costopt"]["route"]


def test_budgets_block_and_downshift() -> None:
    engine = CostEngine()
    engine.ledger.add_budget(Budget(limit_usd=Decimal("0.004"), tenant="acme", policy="downshift"))
    small, big = scripted("cheap answer"), scripted("big answer", model="gpt-4o")
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=Always(0.1))
    cfg = {"callbacks": [CostCallbackHandler(engine)], "metadata": {"costopt_tenant": "acme"}}
    assert router.invoke("hard question", config=cfg).content == "big answer"  # $0.0035 spent
    out = router.invoke("hard question", config=cfg)  # 87% of the budget used: downshift
    assert out.content == "cheap answer"
    assert "downshifted" in out.response_metadata["costopt"]["route"]["decision"]["reason"]
    engine.ledger.add_budget(Budget(limit_usd=Decimal("0.001"), tenant="acme", policy="block"))
    with pytest.raises(BudgetExceededError):
        router.invoke("hard question", config=cfg)


def test_configuration_errors_are_costopt_errors_naming_the_fix() -> None:
    from costopt_core.errors import ConfigurationError
    from costopt_core.routing import HeuristicClassifier

    with pytest.raises(ConfigurationError, match="at least two tiers"):
        RouterChatModel(tiers={"only": scripted("x")})
    two = {"small": scripted("x"), "frontier": scripted("y")}
    with pytest.raises(ConfigurationError, match="scores 3 tiers, the router has 2"):
        RouterChatModel(tiers=two, classifier=HeuristicClassifier(n_tiers=3))
    with pytest.raises(ConfigurationError, match="margin=-1"):
        RouterChatModel(tiers=two, router_config={"margin": -1})


def _report(threshold: float, tiers: tuple[str, ...] = ("small", "frontier")):
    import numpy as np

    from costopt_core.routing.calibrate import calibrate_from_predictions

    report = calibrate_from_predictions(
        np.array([[0.9, 1.0], [0.2, 1.0]]),
        np.array([[1, 1], [0, 1]], dtype=float),
        np.array([[1, 10], [1, 10]], dtype=float),
        tier_names=tiers,
        cost_aware=False,
    )
    import dataclasses

    return dataclasses.replace(report, thresholds=(threshold,))


@pytest.mark.parametrize(("threshold", "tier"), [(0.4, "small"), (0.6, "frontier")])
def test_a_calibration_report_sets_the_thresholds(threshold: float, tier: str) -> None:
    model = RouterChatModel(
        tiers={"small": scripted("cheap"), "frontier": scripted("big", model="gpt-4o")},
        classifier=Always(0.5),
        calibration=_report(threshold),
        engine=CostEngine(),
    )
    # The config's own threshold (0.99) would send everything to the frontier.
    assert model.router_config.thresholds is None
    out = model.invoke("hello")
    assert out.response_metadata["costopt"]["route"]["tier"] == tier


@pytest.mark.parametrize("framework", ["langchain", "llamaindex"])
def test_a_calibration_file_from_costopt_calibrate_is_taken_by_path(
    tmp_path: Any, framework: str
) -> None:
    """The README's `costopt calibrate --out` file, passed as a path (str or Path)."""
    import json

    from costopt_core.errors import ConfigurationError

    path = tmp_path / "cal.json"
    path.write_text(json.dumps(_report(0.4).to_dict()), "utf-8")
    if framework == "langchain":

        def make(calibration: Any) -> Any:
            return RouterChatModel(
                tiers={"small": scripted("cheap"), "frontier": scripted("big", model="gpt-4o")},
                classifier=Always(0.5),
                calibration=calibration,
                engine=CostEngine(),
            )
    else:
        from costopt_core.testing import Script as LlamaScript
        from llamaindex_costopt.router import RouterLLM
        from llamaindex_costopt.testing import ScriptedLLM

        def make(calibration: Any) -> Any:
            tiers = {
                "small": ScriptedLLM(script=LlamaScript(["cheap"]), model="gpt-4o-mini"),
                "frontier": ScriptedLLM(script=LlamaScript(["big"]), model="gpt-4o"),
            }
            return RouterLLM(
                tiers=tiers, classifier=Always(0.5), calibration=calibration, engine=CostEngine()
            )

    for given in (str(path), path):
        assert make(given).calibration == _report(0.4)
    with pytest.raises(ConfigurationError, match=r"cannot read the calibration file .*nope\.json"):
        make(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{not json", "utf-8")
    with pytest.raises(ConfigurationError, match=r"bad\.json' is not a calibration report"):
        make(tmp_path / "bad.json")


def test_a_calibration_for_other_tiers_is_refused() -> None:
    # (pydantic reports the engine's ConfigurationError as a ValueError)
    with pytest.raises(ValueError, match="calibration is for tiers"):
        RouterChatModel(
            tiers={"small": scripted("a"), "frontier": scripted("b", model="gpt-4o")},
            calibration=_report(0.5, ("cheap", "best")),
        )


class _Person(BaseModel):
    name: str
    age: int


_ANN = {"name": "_Person", "args": {"name": "Ann", "age": 31}, "id": "c1", "type": "tool_call"}


def _structured_router(validators: Any = None) -> RouterChatModel:
    from costopt_core.routing.validators import ValidatorConfig

    return RouterChatModel(
        tiers={
            "small": scripted("Sure! The person is Ann, 31."),
            "frontier": scripted(ScriptedResponse("", U, model="gpt-4o", tool_calls=(_ANN,))),
        },
        classifier=Always(0.9),
        validators=validators or ValidatorConfig(),
    )


async def test_structured_output_escalates_a_cheap_answer_in_prose() -> None:
    # invoke() drops ls_structured_output_format before _generate: the forced
    # tool_choice is what tells the router that prose will not parse.
    out = _structured_router().with_structured_output(_Person, include_raw=True).invoke("Ann")
    assert out["parsed"] == _Person(name="Ann", age=31)
    route = out["raw"].response_metadata["costopt"]["route"]
    assert [a["outcome"] for a in route["attempts"]] == ["escalated: missing_tool_call", "kept"]
    assert route["tier"] == "frontier"
    chain = _structured_router().with_structured_output(_Person, include_raw=True)
    aout = await chain.ainvoke("Ann")
    assert aout["parsed"] == _Person(name="Ann", age=31)
    assert aout["raw"].response_metadata["costopt"]["route"] == route


def test_with_structured_output_marks_the_request_structured() -> None:
    from costopt_core.routing.validators import ValidatorConfig

    # With the tool-call checks off, only the structured flag can catch the prose.
    router = _structured_router(ValidatorConfig(tool_calls=False))
    out = router.with_structured_output(_Person, include_raw=True).invoke("Ann")
    route = out["raw"].response_metadata["costopt"]["route"]
    assert route["attempts"][0]["outcome"] == "escalated: unparseable_structured_output"
    assert out["parsed"] == _Person(name="Ann", age=31)


@pytest.mark.parametrize(
    "choice", ["any", "required", "_Person", {"type": "function", "function": {"name": "_Person"}}]
)
def test_a_forcing_tool_choice_escalates_prose(choice: Any) -> None:
    out = _structured_router().bind_tools([_Person], tool_choice=choice).invoke("Ann")
    assert out.tool_calls[0]["args"] == {"name": "Ann", "age": 31}
    attempts = out.response_metadata["costopt"]["route"]["attempts"]
    assert attempts[0]["outcome"] == "escalated: missing_tool_call"


def test_prose_is_kept_when_tool_choice_does_not_force() -> None:
    out = _structured_router().bind_tools([_Person], tool_choice="auto").invoke("Ann")
    assert out.content == "Sure! The person is Ann, 31."
    assert out.response_metadata["costopt"]["tier"] == "small"


def test_a_tool_call_answer_is_kept_with_the_tool_checks_off() -> None:
    from costopt_core.routing.validators import ValidatorConfig

    call = {"name": "_Person", "args": {"name": "Ann", "age": 31}, "id": "c1", "type": "tool_call"}
    small = scripted(ScriptedResponse("", U, tool_calls=(call,)))
    big = scripted("x", model="gpt-4o")
    router = RouterChatModel(
        tiers={"small": small, "frontier": big},
        classifier=Always(0.9),
        validators=ValidatorConfig(tool_calls=False),
    )
    out = router.bind_tools([_Person]).invoke("Ann")
    assert out.response_metadata["costopt"]["route"]["attempts"] == [
        {"tier": "small", "model": "gpt-4o-mini", "outcome": "kept"}
    ]
    assert (small.script.calls, big.script.calls) == (1, 0)


class _NoStream(BaseChatModel):
    """A model with only _generate (LangChain streams it as one chunk)."""

    model_name: str = "local-small"

    @property
    def _llm_type(self) -> str:
        return "nostream"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        msg = AIMessage("4", response_metadata={"model_name": self.model_name})
        return ChatResult(generations=[ChatGeneration(message=msg)])


def _total(chunks: list[Any]) -> Any:
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return total


async def test_streaming_through_a_tier_that_cannot_stream() -> None:
    def make() -> RouterChatModel:
        big = scripted("four", model="gpt-4o")
        return RouterChatModel(
            tiers={"small": _NoStream(), "frontier": big}, classifier=Always(0.9)
        )

    for chunks in (list(make().stream("2+2?")), [c async for c in make().astream("2+2?")]):
        total = _total(chunks)
        assert total.content == "4"
        assert total.response_metadata["costopt"]["route"]["attempts"] == [
            {"tier": "small", "model": "local-small", "outcome": "kept"}
        ]


async def test_a_tier_that_cannot_bind_tools_falls_back_when_streaming() -> None:
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    def make() -> Any:
        small = GenericFakeChatModel(messages=iter([AIMessage("x")] * 10))  # no bind_tools
        big = scripted("five", model="gpt-4o")
        router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=Always(0.9))
        return router.bind_tools([_Person])

    for chunks in (list(make().stream("2+3")), [c async for c in make().astream("2+3")]):
        total = _total(chunks)
        assert total.content == "five"
        route = total.response_metadata["costopt"]["route"]
        assert route["tier"] == "frontier"
        assert route["attempts"][0]["outcome"] == "error: NotImplementedError"


def test_explicit_stream_still_streams_chunk_by_chunk() -> None:
    router = RouterChatModel(
        tiers={"small": scripted("one two three"), "frontier": scripted("x", model="gpt-4o")},
        classifier=Always(0.9),
    )
    texts = [c.content for c in router.stream("q") if c.content]
    assert texts == ["one", " two", " three"]


async def test_invoke_under_a_streaming_handler_still_validates() -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tracers._streaming import _V2StreamingCallbackHandler

    def make() -> RouterChatModel:
        return RouterChatModel(
            tiers={
                "small": scripted("I'm sorry, I can't help with that."),
                "frontier": scripted("The answer is 42.", model="gpt-4o"),
            },
            classifier=Always(0.9),
        )

    async def final(node: Any) -> Any:
        out = None
        async for ev in node.astream_events("q", version="v2"):
            if ev["event"] == "on_chain_end" and ev.get("parent_ids") == []:
                out = ev["data"]["output"]
        return out

    sync_router, async_router = make(), make()
    sync_out = await final(RunnableLambda(lambda x: sync_router.invoke(x)))

    async def anode(x: Any) -> Any:
        return await async_router.ainvoke(x)

    async_out = await final(RunnableLambda(anode))

    class V2(BaseCallbackHandler, _V2StreamingCallbackHandler):  # as LangGraph's v2 handler
        pass

    v2_out = make().invoke("q", config={"callbacks": [V2()]})
    for out in (sync_out, async_out, v2_out):
        assert out.content == "The answer is 42."
        route = out.response_metadata["costopt"]["route"]
        assert route["attempts"][0]["outcome"] == "escalated: refusal_or_hedge"


async def test_a_tier_models_rate_limiter_is_taken_once_per_call() -> None:
    from langchain_core.rate_limiters import BaseRateLimiter

    class Counting(BaseRateLimiter):
        def __init__(self) -> None:
            self.n = 0

        def acquire(self, *, blocking: bool = True) -> bool:
            self.n += 1
            return True

        async def aacquire(self, *, blocking: bool = True) -> bool:
            self.n += 1
            return True

    counts = []
    for how in ("invoke", "ainvoke", "stream", "astream"):
        limiter = Counting()
        small = scripted("four")
        small.rate_limiter = limiter
        router = RouterChatModel(
            tiers={"small": small, "frontier": scripted("4", model="gpt-4o")},
            classifier=Always(0.9),
        )
        if how == "invoke":
            router.invoke("2+2?")
        elif how == "ainvoke":
            await router.ainvoke("2+2?")
        elif how == "stream":
            list(router.stream("2+2?"))
        else:
            [c async for c in router.astream("2+2?")]
        counts.append(limiter.n)
    assert counts == [1, 1, 1, 1]


# -- what discarded and routed answers cost (review 2) ------------------------------
HEDGE = "I'm not sure, sorry."


async def _invoke(router: RouterChatModel, sync: bool, prompt: str, **kwargs: Any) -> Any:
    if sync:
        return router.invoke(prompt, **kwargs)
    return await router.ainvoke(prompt, **kwargs)


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("expose", [False, True])
async def test_a_rejected_answer_a_cache_served_is_not_recorded(sync: bool, expose: bool) -> None:
    from costopt_core.cache import SemanticCache
    from costopt_core.testing import FakeEmbedder
    from langchain_costopt.cached_model import CachedChatModel

    engine = CostEngine()
    cheap = ScriptedChatModel(
        script=Script([ScriptedResponse(HEDGE, U, model="gpt-4o-mini")], cycle=True)
    )
    small = CachedChatModel(
        model=cheap,
        semantic_cache=SemanticCache(embedder=FakeEmbedder()),
        expose_cache_info=expose,
    )
    big = ScriptedChatModel(
        script=Script([ScriptedResponse("4", U, model="gpt-4o")], cycle=True), model_name="gpt-4o"
    )
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=Always(0.9))
    cfg = {"callbacks": [CostCallbackHandler(engine)]}
    for _ in range(2):
        out = await _invoke(router, sync, "What is 2+2?", config=cfg)
        assert out.response_metadata["costopt"]["route"]["escalations"] == 1
    assert cheap.script.calls == 1  # the second hedge came from the cache
    records = [(r.model, r.outcome, r.cost_usd) for r in engine.ledger.records()]
    assert records == [
        ("gpt-4o-mini", "escalated", Decimal("0.00021")),
        ("gpt-4o", "model", Decimal("0.0035")),
        ("gpt-4o", "model", Decimal("0.0035")),
    ]


class _NoUsage(ScriptedChatModel):
    """Answers without ``usage_metadata`` (some providers and proxies report none)."""

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        r = self.script.next()
        msg = AIMessage(content=r.text, response_metadata={"model_name": r.model})
        return ChatResult(generations=[ChatGeneration(message=msg)])

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        return self._generate(messages, stop)


@pytest.mark.parametrize("sync", [True, False])
async def test_an_escalated_answer_without_usage_is_recorded_unpriced(sync: bool) -> None:
    engine = CostEngine()
    small = _NoUsage(script=Script([ScriptedResponse(HEDGE, U, model="gpt-4o-mini")]))
    router = RouterChatModel(
        tiers={"small": small, "frontier": scripted("4", model="gpt-4o")}, classifier=Always(0.9)
    )
    await _invoke(router, sync, "What is 2+2?", config={"callbacks": [CostCallbackHandler(engine)]})
    records = [(r.model, r.outcome, r.cost_usd) for r in engine.ledger.records()]
    assert records == [("gpt-4o-mini", "escalated", None), ("gpt-4o", "model", Decimal("0.0035"))]
    assert engine.ledger.totals().unpriced_calls == 1


@pytest.mark.parametrize("sync", [True, False])
async def test_a_block_budget_holds_the_frontier_estimate(sync: bool) -> None:
    # The run's model "router:small|frontier" has no price: only the router's own
    # estimate (on the frontier tier) can refuse what gpt-4o alone would be refused.
    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("0.001"), policy="block")])
    handler = CostCallbackHandler(engine)
    prompt = "word " * 2000
    with pytest.raises(BudgetExceededError) as direct:
        scripted("4", model="gpt-4o").invoke(prompt, config={"callbacks": [handler]})
    small, big = scripted("4"), scripted("4", model="gpt-4o")
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=Always(0.0))
    with pytest.raises(BudgetExceededError) as routed:
        await _invoke(router, sync, prompt, config={"callbacks": [handler]})
    assert routed.value.estimate_usd == direct.value.estimate_usd > 0
    assert small.script.calls == big.script.calls == 0
    assert engine.ledger.spent(None) == 0


@pytest.mark.parametrize("sync", [True, False])
async def test_a_budget_with_room_still_routes(sync: bool) -> None:
    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("1"), policy="block")])
    router = RouterChatModel(
        tiers={"small": scripted("4"), "frontier": scripted("4", model="gpt-4o")},
        classifier=Always(0.9),
    )
    out = await _invoke(router, sync, "2+2?", config={"callbacks": [CostCallbackHandler(engine)]})
    assert out.response_metadata["costopt"]["tier"] == "small"
    assert engine.ledger.spent(None) == Decimal("0.00021")


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize(
    ("response_format", "tier"),
    [
        ({"type": "text"}, "small"),  # OpenAI's explicit plain text: prose is the answer
        ({"type": "json_object"}, "frontier"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, "frontier"),
    ],
)
async def test_response_format_text_is_not_structured(
    sync: bool, response_format: dict[str, Any], tier: str
) -> None:
    router = RouterChatModel(
        tiers={"small": scripted("Paris."), "frontier": scripted("Paris.", model="gpt-4o")},
        classifier=Always(0.99),
        engine=CostEngine(),
    )
    out = await _invoke(router, sync, "Capital of France?", response_format=response_format)
    route = out.response_metadata["costopt"]["route"]
    assert route["tier"] == tier
    if tier == "frontier":
        assert route["attempts"][0]["outcome"] == "escalated: unparseable_structured_output"


# -- review 3: ledgers, bind_tools arguments, streaming validation, schemas ----------
def _refusing(**kwargs: Any) -> RouterChatModel:
    return RouterChatModel(
        tiers={
            "small": scripted("I'm sorry, I can't help with that."),
            "frontier": scripted("Refunds are accepted within 30 days.", model="gpt-4o"),
        },
        classifier=Always(0.9),
        **kwargs,
    )


async def _consume(router: Any, how: str, prompt: Any, **kwargs: Any) -> Any:
    """The whole answer of one call made ``how``: invoke, ainvoke, stream or astream."""
    if how == "invoke":
        return router.invoke(prompt, **kwargs)
    if how == "ainvoke":
        return await router.ainvoke(prompt, **kwargs)
    chunks = (
        list(router.stream(prompt, **kwargs))
        if how == "stream"
        else [c async for c in router.astream(prompt, **kwargs)]
    )
    return _total(chunks)


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
async def test_an_escalation_is_recorded_in_every_handlers_ledger_once(how: str) -> None:
    from langchain_costopt import track_costs

    app = CostCallbackHandler(CostEngine())
    twin = CostCallbackHandler(app.engine)  # a second handler on the same engine
    with track_costs() as block:
        out = await _consume(_refusing(), how, "refund window?", config={"callbacks": [app, twin]})
    assert out.content == "Refunds are accepted within 30 days."
    for ledger in (app.ledger, block.ledger):
        assert sorted((r.outcome, r.model) for r in ledger.records()) == [
            ("escalated", "gpt-4o-mini"),
            ("model", "gpt-4o"),
        ]
    # A block on a child of the application's engine passes its records on to
    # it: the application's ledger still counts the attempt once.
    parent = CostEngine()
    with track_costs(parent.child()) as block:
        cfg = {"callbacks": [CostCallbackHandler(parent)]}
        await _consume(_refusing(), how, "refund window?", config=cfg)
    for ledger in (parent.ledger, block.ledger):
        assert sorted((r.outcome, r.model) for r in ledger.records()) == [
            ("escalated", "gpt-4o-mini"),
            ("model", "gpt-4o"),
        ]


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
async def test_bind_tools_arguments_reach_each_tiers_bind_tools(how: str) -> None:
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    seen: list[dict[str, Any]] = []

    class OpenAIStyle(ScriptedChatModel):
        # As ChatOpenAI: strict goes into each tool schema, the rest are call kwargs.
        def bind_tools(  # type: ignore[override]
            self,
            tools: Any,
            *,
            tool_choice: Any = None,
            strict: bool | None = None,
            parallel_tool_calls: bool | None = None,
            **kw: Any,
        ) -> Any:
            seen.append({"strict": strict, "parallel": parallel_tool_calls, "kw": sorted(kw)})
            formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
            extra = {"tool_choice": tool_choice} if tool_choice else {}
            if parallel_tool_calls is not None:
                extra["parallel_tool_calls"] = parallel_tool_calls
            return self.bind(tools=formatted, **extra, **kw)

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
            seen.append(
                {"call": sorted(kw), "strict": [t["function"].get("strict") for t in kw["tools"]]}
            )
            return super()._generate(messages, stop, run_manager)

        async def _agenerate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ):
            return self._generate(messages, stop, run_manager, **kw)

        def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
            self._generate(messages, stop, run_manager, **kw)
            self.script.calls -= 1  # only recorded what the call was sent
            return super()._stream(messages, stop, run_manager)

        async def _astream(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ):
            self._generate(messages, stop, run_manager, **kw)
            self.script.calls -= 1
            async for c in super()._astream(messages, stop, run_manager):
                yield c

    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    small = OpenAIStyle.from_texts(["It is sunny."])
    big = OpenAIStyle.from_texts(["ok"], model="gpt-4o")
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=Always(0.9))
    bound = router.bind_tools([get_weather], strict=True, parallel_tool_calls=False, seed=7)
    await _consume(bound, how, "weather in Paris?")
    binds = [s for s in seen if "call" not in s]
    calls = [s for s in seen if "call" in s]
    assert binds[0] == {"strict": True, "parallel": False, "kw": ["seed"]}
    assert calls[0]["strict"] == [True]  # strict went into the tool schema...
    assert "strict" not in calls[0]["call"]  # ...and not into the request
    assert {"parallel_tool_calls", "seed", "tools"} <= set(calls[0]["call"])


@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_a_streamed_weak_answer_is_validated_and_escalated(how: str) -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)], "metadata": {"costopt_tenant": "acme"}}
    total = await _consume(_refusing(), how, "What is the refund window?", config=cfg)
    assert total.content == "Refunds are accepted within 30 days."
    route = total.response_metadata["costopt"]["route"]
    assert [a["outcome"] for a in route["attempts"]] == ["escalated: refusal_or_hedge", "kept"]
    assert [(r.outcome, r.model, r.tenant) for r in engine.ledger.records()] == [
        ("escalated", "gpt-4o-mini", "acme"),
        ("model", "gpt-4o", "acme"),
    ]
    # As a chat UI streams a chain.
    chain = ChatPromptTemplate.from_template("{q}") | _refusing() | StrOutputParser()
    if how == "stream":
        text = "".join(chain.stream({"q": "What is the refund window?"}))
    else:
        text = "".join([t async for t in chain.astream({"q": "What is the refund window?"})])
    assert text == "Refunds are accepted within 30 days."


@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_a_held_back_stream_the_caller_stops_reading_is_still_recorded(how: str) -> None:
    # Held back, the answer was read whole (and paid for whole) before its first
    # chunk was passed on; the handler records only a stream that ends.
    engine = CostEngine()
    router = RouterChatModel(
        tiers={"small": scripted("one two three"), "frontier": scripted("x", model="gpt-4o")},
        classifier=Always(0.9),
    )
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)], "metadata": {"costopt_tenant": "acme"}}
    if how == "stream":
        stream = router.stream("q", config=cfg)
        assert next(stream).content == "one"
        stream.close()
    else:
        astream = router.astream("q", config=cfg)
        assert (await anext(astream)).content == "one"
        await astream.aclose()
        for _ in range(100):  # the loop closes the router's own generator soon after
            if engine.ledger.records():
                break
            await asyncio.sleep(0)
    assert [(r.outcome, r.model, r.tenant, r.tier) for r in engine.ledger.records()] == [
        ("model", "gpt-4o-mini", "acme", "small"),
    ]
    assert engine.ledger.records()[0].usage.input_tokens == U.input_tokens
    # Read to its end, it is recorded once, by the handler.
    await _consume(router, how, "q", config=cfg)
    assert [r.outcome for r in engine.ledger.records()] == ["model", "model"]


@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_a_live_stream_the_caller_stops_reading_is_recorded_with_unknown_usage(
    how: str,
) -> None:
    # Passed on as it came, stopped before the chunk with the usage: the prompt
    # was billed all the same, so the call is recorded, unpriced, never $0.
    engine = CostEngine()
    router = RouterChatModel(
        tiers={"small": scripted("one two three"), "frontier": scripted("x", model="gpt-4o")},
        classifier=Always(0.9),
        validate_streams=False,
    )
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    if how == "stream":
        stream = router.stream("q", config=cfg)
        assert next(stream).content == "one"
        stream.close()
    else:
        astream = router.astream("q", config=cfg)
        assert (await anext(astream)).content == "one"
        await astream.aclose()
        for _ in range(100):  # the loop closes the router's own generator soon after
            if engine.ledger.records():
                break
            await asyncio.sleep(0)
    [record] = engine.ledger.records()
    assert (record.outcome, record.model, record.tier) == ("model", "gpt-4o-mini", "small")
    assert record.usage.input_tokens is None and record.cost_usd is None


async def _stop_after_one_chunk(model: Any, how: str, prompt: str, cfg: Any) -> None:
    if how == "stream":
        stream = model.stream(prompt, config=cfg)
        next(stream)
        stream.close()
        return
    astream = model.astream(prompt, config=cfg)
    await anext(astream)
    await astream.aclose()
    for _ in range(100):  # the loop closes the wrapped generators soon after
        await asyncio.sleep(0)


@pytest.mark.parametrize("validate_streams", [False, True])
@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_a_stopped_stream_through_a_cached_tier_or_a_cached_router_is_recorded_once(
    how: str, validate_streams: bool
) -> None:
    from costopt_core.cache import SemanticCache
    from costopt_core.testing import FakeEmbedder
    from langchain_costopt.cached_model import CachedChatModel

    def cheap() -> ScriptedChatModel:
        script = Script(
            [ScriptedResponse("one two three four", U, model="gpt-4o-mini")], cycle=True
        )
        return ScriptedChatModel(script=script, model_name="gpt-4o-mini")

    def cache() -> SemanticCache:
        return SemanticCache(embedder=FakeEmbedder())

    prompt = "What is the refund window?"
    # A cache tier replaying a hit: the model was called once, for the first answer.
    engine = CostEngine()
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    small = cheap()
    router = RouterChatModel(
        tiers={
            "small": CachedChatModel(model=small, semantic_cache=cache()),
            "frontier": scripted("x"),
        },
        classifier=Always(0.9),
        validate_streams=validate_streams,
    )
    await _consume(router, how, prompt, config=cfg)
    await _stop_after_one_chunk(router, how, prompt, cfg)
    assert small.script.calls == 1
    assert [r.outcome for r in engine.ledger.records() if r.outcome == "model"] == ["model"]
    # A router wrapped in a cache, stopped on a miss: the router records it, the handler not.
    engine = CostEngine()
    cfg = {"callbacks": [CostCallbackHandler(engine)]}
    small = cheap()
    tiers = {"small": small, "frontier": scripted("x", model="gpt-4o")}
    wrapped = CachedChatModel(
        model=RouterChatModel(
            tiers=tiers, classifier=Always(0.9), validate_streams=validate_streams
        ),
        semantic_cache=cache(),
    )
    await _stop_after_one_chunk(wrapped, how, prompt, cfg)
    assert small.script.calls == 1
    assert [(r.model, r.outcome) for r in engine.ledger.records()] == [("gpt-4o-mini", "model")]


@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_a_stream_that_passes_is_emitted_chunk_by_chunk_and_can_opt_out(how: str) -> None:
    router = RouterChatModel(
        tiers={"small": scripted("one two three"), "frontier": scripted("x", model="gpt-4o")},
        classifier=Always(0.9),
    )
    chunks = list(router.stream("q")) if how == "stream" else [c async for c in router.astream("q")]
    assert [c.content for c in chunks if c.content] == ["one", " two", " three"]
    # validate_streams=False: passed on as it comes, a weak answer is kept.
    out = await _consume(_refusing(validate_streams=False), how, "q")
    assert out.content == "I'm sorry, I can't help with that."
    assert out.response_metadata["costopt"]["route"]["attempts"][0]["outcome"] == "kept"


def test_a_tier_that_is_not_a_chat_model_is_a_configuration_error() -> None:
    from costopt_core.errors import ConfigurationError

    small = scripted("ok")
    with pytest.raises(
        ConfigurationError, match=r"tier 'frontier'.*chat model.*got str 'gpt-4o'.*ChatOpenAI"
    ):
        RouterChatModel(tiers={"small": small, "frontier": "gpt-4o"})
    with pytest.raises(ConfigurationError, match=r"tier 'frontier'.*got int 3"):
        RouterChatModel(tiers={"small": small, "frontier": [small, 3]})
    with pytest.raises(ConfigurationError, match=r"tiers must be a dict.*got list"):
        RouterChatModel(tiers=[small, small])


class _City(BaseModel):
    city: str
    population: int


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
async def test_structured_output_that_breaks_the_schema_escalates(how: str) -> None:
    def call(args: dict[str, Any], i: int) -> dict[str, Any]:
        return {"name": "_City", "args": args, "id": f"c{i}", "type": "tool_call"}

    bad = call({"city": "Paris", "population": "about two million"}, 0)
    good = call({"city": "Paris", "population": 2100000}, 1)
    small = scripted(ScriptedResponse("", U, tool_calls=(bad,)))
    big = scripted(ScriptedResponse("", U, model="gpt-4o", tool_calls=(good,)))
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=Always(0.9))
    q = "Capital of France and its population?"
    if how in ("invoke", "ainvoke"):
        raw = await _consume(router.with_structured_output(_City, include_raw=True), how, q)
        assert raw["parsing_error"] is None
        assert raw["parsed"] == _City(city="Paris", population=2100000)
        route = raw["raw"].response_metadata["costopt"]["route"]
    else:
        structured = router.with_structured_output(_City)
        parsed = (
            list(structured.stream(q))
            if how == "stream"
            else [p async for p in structured.astream(q)]
        )
        assert parsed[-1] == _City(city="Paris", population=2100000)
        msg = await _consume(router.bind_tools([_City], tool_choice="any"), how, q)
        route = msg.response_metadata["costopt"]["route"]
    assert route["attempts"][0]["outcome"] == "escalated: invalid_tool_args"


@pytest.mark.parametrize("sync", [True, False])
async def test_a_json_schema_response_format_checks_the_answer(sync: bool) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "City", "schema": schema}}
    router = RouterChatModel(
        tiers={
            "small": scripted('{"city": "Paris"}'),  # JSON, but not the schema's
            "frontier": scripted('{"city": "Paris", "population": 2100000}', model="gpt-4o"),
        },
        classifier=Always(0.9),
        engine=CostEngine(),
    )
    out = await _invoke(router, sync, "Capital of France?", response_format=fmt)
    route = out.response_metadata["costopt"]["route"]
    assert route["attempts"][0]["outcome"] == "escalated: invalid_structured_output"
    assert route["tier"] == "frontier"
    # A pydantic class as response_format (as ChatOpenAI takes it) is its JSON schema.
    out = await _invoke(router, sync, "Capital of France?", response_format=_City)
    assert out.response_metadata["costopt"]["route"]["tier"] == "frontier"


@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_a_stream_that_can_no_longer_escalate_is_not_held_back(how: str) -> None:
    # No escalations left (RouteRun.may_escalate is False): the first tier's
    # stream is passed on as it comes, and its weak answer is kept.
    out = await _consume(_refusing(router_config=RouterConfig(max_escalations=0)), how, "q")
    assert out.content == "I'm sorry, I can't help with that."
    route = out.response_metadata["costopt"]["route"]
    assert [(a["tier"], a["outcome"]) for a in route["attempts"]] == [("small", "kept")]


def test_a_cached_tier_is_named_after_the_model_it_calls() -> None:
    # The name a stopped stream of the tier is recorded under when no chunk said.
    from costopt_core.cache import SemanticCache
    from costopt_core.testing import FakeEmbedder
    from langchain_costopt.cached_model import CachedChatModel
    from langchain_costopt.router import _model_name

    cached = CachedChatModel(
        model=scripted("x"), semantic_cache=SemanticCache(embedder=FakeEmbedder())
    )
    assert _model_name(cached) == "gpt-4o-mini"


class _OpenAIStyle(BaseChatModel):
    """Reports the way ChatOpenAI does: finish_reason and logprobs in the
    generation's generation_info, the model's name in the result's llm_output,
    a call with unreadable arguments in invalid_tool_calls."""

    model_name: str = "gpt-4o-mini"
    finish: str = "stop"
    logprob: float = -0.1
    broken_call: bool = False

    @property
    def _llm_type(self) -> str:
        return "openai-style"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        invalid = [{"name": "lookup", "args": '{"q": pw}', "id": "c1", "error": "bad json"}]
        msg = AIMessage(
            content="Let me look that up, the first three steps are",
            usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
            invalid_tool_calls=invalid if self.broken_call else [],
        )
        info = {
            "finish_reason": self.finish,
            "logprobs": {"content": [{"token": "x", "logprob": self.logprob}]},
        }
        return ChatResult(
            generations=[ChatGeneration(message=msg, generation_info=info)],
            llm_output={"model_name": self.model_name, "token_usage": {}},
        )

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        # ChatOpenAI's last chunk: finish_reason, logprobs and model_name in generation_info.
        result = self._generate(messages)
        gen = result.generations[0]
        calls = [
            {"name": c["name"], "args": c["args"], "id": c["id"], "index": 0}
            for c in gen.message.invalid_tool_calls
        ]
        yield ChatGenerationChunk(
            message=AIMessageChunk(content=gen.message.content, tool_call_chunks=calls)
        )
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=gen.message.usage_metadata),
            generation_info={**gen.generation_info, "model_name": self.model_name},
        )


@pytest.mark.parametrize(
    ("cheap", "reason"),
    [
        ({"finish": "length"}, "truncated"),
        ({"logprob": -5.0}, "low_logprob"),
        ({"broken_call": True}, "invalid_tool_args"),
    ],
    ids=["truncated", "low_logprob", "broken_tool_call"],
)
@pytest.mark.parametrize("method", ["invoke", "ainvoke", "stream"])
async def test_what_a_tier_reports_outside_the_message_is_validated_and_priced(
    cheap: dict[str, Any], reason: str, method: str
) -> None:
    # The router calls a tier's _generate, before langchain-core merges
    # generation_info and llm_output into the message: they are read there.
    engine = CostEngine()
    router = RouterChatModel(
        tiers={
            "small": _OpenAIStyle(**cheap),
            "frontier": scripted("Full answer.", model="gpt-4o"),
        },
        classifier=Always(0.9),
    )
    cfg: Any = {"callbacks": [CostCallbackHandler(engine)]}
    if method == "invoke":
        out = router.invoke("How do I reset my password?", config=cfg)
    elif method == "ainvoke":
        out = await router.ainvoke("How do I reset my password?", config=cfg)
    else:
        out = _total(list(router.stream("How do I reset my password?", config=cfg)))
    assert out.content == "Full answer."
    attempts = out.response_metadata["costopt"]["route"]["attempts"]
    assert attempts[0] == {
        "tier": "small",
        "model": "gpt-4o-mini",
        "outcome": f"escalated: {reason}",
    }
    records = [(r.model, r.outcome) for r in engine.ledger.records()]
    assert records == [("gpt-4o-mini", "escalated"), ("gpt-4o", "model")]
    assert engine.ledger.records()[0].cost_usd == Decimal("0.00021")


class _Unnamed(ScriptedChatModel):
    """A tier whose answers name no model in response_metadata (fake chat models,
    integrations that report it under another key)."""

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        result = super()._generate(messages, stop, run_manager, **kw)
        result.generations[0].message.response_metadata = {"finish_reason": "stop"}
        return result

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        for chunk in super()._stream(messages, stop, run_manager, **kw):
            chunk.message.response_metadata = {}
            yield chunk


@pytest.mark.parametrize("streamed", [False, True])
def test_answers_naming_no_model_are_priced_as_the_tier_model(streamed: bool) -> None:
    engine = CostEngine()
    small = _Unnamed(script=Script([ScriptedResponse("I'm sorry, I can't help.", U)]),
                     model_name="gpt-4o-mini")  # fmt: skip
    big = _Unnamed(script=Script([ScriptedResponse("Paris.", U)]), model_name="gpt-4o")
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=Always(0.9))
    config: Any = {"callbacks": [CostCallbackHandler(engine)]}
    if streamed:
        out: Any = None
        for chunk in router.stream("Capital of France?", config=config):
            out = chunk if out is None else out + chunk
    else:
        out = router.invoke("Capital of France?", config=config)
    assert out.response_metadata["model_name"] == "gpt-4o"
    records = [(r.model, r.outcome, r.cost_usd is not None) for r in engine.ledger.records()]
    assert records == [("gpt-4o-mini", "escalated", True), ("gpt-4o", "model", True)]
