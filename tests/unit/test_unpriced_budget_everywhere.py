"""Budgets facing a model with no price, wherever a budget is checked before a call.

A model missing from the price catalog has no estimate. Held as $0 and
recorded as unknown cost, its calls never counted against a budget, so a
``block`` budget could be overspent without limit. The LangChain cost handler
refuses such a call under a ``block`` (or ``downshift``) budget and warns once
per model under a ``warn`` one; the routers (through one shared rule,
``costopt_core.routing.router.reachable_estimate``) and batch flushes do the
same. Without budgets nothing changes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from llama_index.core.llms import ChatMessage

from costopt_core import Budget, CostEngine, Message, Usage
from costopt_core.batch import BatchJob, BatchRequest
from costopt_core.errors import BudgetExceededError
from costopt_core.pricing import UnknownCostWarning
from costopt_core.routing.router import reachable_estimate
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CostEventHandler
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM
from tests.unit.test_batch_budget import remote

UNPRICED = "my-finetune"  # in no price catalog
USAGE = Usage(1000, 100)
# What gpt-4o-mini's answer costs: 1000 in at $0.15, 100 out at $0.60 per Mtok.
MINI_COST = Decimal("0.00021")
PROMPT = "What is 2+2?"
REFUSAL = rf"'{UNPRICED}'.*no price.*with_overrides"


def engine_with(*budgets: Budget) -> CostEngine:
    return CostEngine(embedder=FakeEmbedder(), budgets=budgets)


def budget_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The warnings a warn budget gives about unpriced models."""
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, UnknownCostWarning) and "warn budget" in str(w.message)
    ]


class StartAt:
    """A classifier that starts every request at tier ``start`` of ``n_tiers``."""

    name = "fixed"

    def __init__(self, start: int, n_tiers: int = 2) -> None:
        self.n_tiers = n_tiers
        self.row = [0.0] * start + [0.9] * (n_tiers - start)

    def predict(self, items: Any) -> Any:
        return np.array([self.row for _ in items])


# -- the shared rule ----------------------------------------------------------------
def test_reachable_estimate_refuses_an_unpriced_model_and_prices_the_rest() -> None:
    log = logging.getLogger("test")
    pairs = [("gpt-4o-mini", Decimal("0.001")), (UNPRICED, None), ("gpt-4o", Decimal("0.01"))]
    blocked = engine_with(Budget(limit_usd=Decimal(100), policy="block"))
    with pytest.raises(BudgetExceededError, match=REFUSAL) as err:
        reachable_estimate(blocked, None, pairs, log)
    assert err.value.estimate_usd is None and err.value.spent_usd == 0
    downshift = engine_with(Budget(limit_usd=Decimal(100), policy="downshift"))
    with pytest.raises(BudgetExceededError, match=REFUSAL):
        reachable_estimate(downshift, None, pairs, log)
    # Another tenant's budget, and no budget at all: the dearest priced estimate.
    other = engine_with(Budget(limit_usd=Decimal(100), tenant="acme", policy="block"))
    assert reachable_estimate(other, "globex", pairs, log) == Decimal("0.01")
    assert reachable_estimate(engine_with(), None, pairs, log) == Decimal("0.01")
    assert reachable_estimate(engine_with(), None, [(UNPRICED, None)], log) is None


def test_reachable_estimate_logs_an_estimating_error_and_gives_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def failing() -> Iterator[tuple[str, Decimal | None]]:
        yield "gpt-4o", Decimal(1)
        raise RuntimeError("tokenizer down")

    engine = engine_with(Budget(limit_usd=Decimal(100), policy="block"))
    with caplog.at_level(logging.ERROR):
        assert reachable_estimate(engine, None, failing(), logging.getLogger("t")) is None
    assert "could not estimate" in caplog.text


# -- RouterChatModel (LangChain) ------------------------------------------------------
def chat_model(model: str, text: str = "4") -> ScriptedChatModel:
    reply = ScriptedResponse(text, USAGE, model=model)
    return ScriptedChatModel(script=Script([reply], cycle=True), model_name=model)


async def lc_invoke(router: RouterChatModel, sync: bool, **kwargs: Any) -> Any:
    if sync:
        return router.invoke(PROMPT, **kwargs)
    return await router.ainvoke(PROMPT, **kwargs)


@pytest.mark.parametrize("policy", ["block", "downshift"])
@pytest.mark.parametrize("sync", [True, False])
async def test_langchain_router_refuses_a_request_that_can_reach_an_unpriced_model(
    sync: bool, policy: str
) -> None:
    # The request starts at the priced cheap tier, but may fall back or escalate
    # to the unpriced frontier: its cost cannot be bounded. Before the fix the
    # router checked gpt-4o-mini's estimate alone, passed, and the frontier's
    # call was never counted against the budget.
    engine = engine_with(Budget(limit_usd=Decimal(1), period="day", policy=policy))
    small, big = chat_model("gpt-4o-mini"), chat_model(UNPRICED)
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=StartAt(0))
    with pytest.raises(BudgetExceededError, match=REFUSAL) as err:
        await lc_invoke(router, sync, config={"callbacks": [CostCallbackHandler(engine)]})
    assert err.value.estimate_usd is None and err.value.scope == "all tenants"
    assert small.script.calls == big.script.calls == 0  # refused before any call
    assert len(engine.ledger) == 0 and engine.ledger.spent(None, "day") == 0


@pytest.mark.parametrize("sync", [True, False])
async def test_langchain_router_unpriced_tier_below_the_start_is_not_reachable(
    sync: bool,
) -> None:
    # Started at the priced frontier, the request can never reach the unpriced
    # cheap tier: the block budget checks the frontier's estimate and lets it through.
    engine = engine_with(Budget(limit_usd=Decimal(1), period="day", policy="block"))
    small, big = chat_model(UNPRICED), chat_model("gpt-4o-mini")
    router = RouterChatModel(tiers={"small": small, "frontier": big}, classifier=StartAt(1))
    out = await lc_invoke(router, sync, config={"callbacks": [CostCallbackHandler(engine)]})
    assert out.response_metadata["costopt"]["tier"] == "frontier"
    assert small.script.calls == 0 and big.script.calls == 1
    assert engine.ledger.spent(None, "day") == MINI_COST


def test_langchain_router_warn_budget_lets_it_through_with_one_warning() -> None:
    engine = engine_with(Budget(limit_usd=Decimal("0.0001"), period="day", policy="warn"))
    handler = CostCallbackHandler(engine)
    router = RouterChatModel(
        tiers={"small": chat_model(UNPRICED), "frontier": chat_model("gpt-4o-mini")},
        classifier=StartAt(0),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            out = router.invoke(PROMPT, config={"callbacks": [handler]})
            assert out.content == "4"
    found = budget_warnings(caught)
    assert len(found) == 1 and f"'{UNPRICED}'" in found[0]
    assert [r.model for r in engine.ledger.records()] == [UNPRICED] * 3
    assert engine.ledger.totals().unpriced_calls == 3


def test_langchain_router_without_budgets_is_unchanged() -> None:
    engine = engine_with()
    router = RouterChatModel(
        tiers={"small": chat_model(UNPRICED), "frontier": chat_model("gpt-4o")},
        classifier=StartAt(0),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = router.invoke(PROMPT, config={"callbacks": [CostCallbackHandler(engine)]})
    assert out.response_metadata["costopt"]["tier"] == "small"
    assert budget_warnings(caught) == []
    assert engine.ledger.totals().unpriced_calls == 1


# -- RouterLLM (LlamaIndex) ---------------------------------------------------------
LI_PROMPT = [ChatMessage(role="user", content=PROMPT)]


def llm(model: str, text: str = "4") -> ScriptedLLM:
    return ScriptedLLM(script=Script([ScriptedResponse(text, USAGE, model=model)], cycle=True))


@pytest.mark.parametrize("policy", ["block", "downshift"])
@pytest.mark.parametrize("handled", [True, False])
async def test_llamaindex_router_refuses_a_request_that_can_reach_an_unpriced_model(
    handled: bool, policy: str
) -> None:
    # The unpriced model is the starting tier's fallback: any request can reach it.
    engine = engine_with(Budget(limit_usd=Decimal(1), period="day", tenant="acme", policy=policy))
    cheap, finetune, big = llm("gpt-4o-mini"), llm(UNPRICED), llm("gpt-4o")
    router = RouterLLM(
        tiers={"small": [cheap, finetune], "frontier": big},
        classifier=StartAt(0),
        tenant="acme",
        engine=None if handled else engine,
    )
    handler = CostEventHandler(engine).attach() if handled else None
    try:
        with pytest.raises(BudgetExceededError, match=REFUSAL) as err:
            router.chat(LI_PROMPT)
        with pytest.raises(BudgetExceededError, match=REFUSAL):
            await router.achat(LI_PROMPT)
    finally:
        if handler is not None:
            handler.detach()
    assert err.value.estimate_usd is None and err.value.scope == "tenant 'acme'"
    assert cheap.script.calls == finetune.script.calls == big.script.calls == 0
    assert len(engine.ledger) == 0 and engine.ledger.spent("acme", "day") == 0

    # Another tenant's requests are not this budget's.
    other = RouterLLM(
        tiers={"small": [cheap, finetune], "frontier": big},
        classifier=StartAt(0),
        tenant="globex",
        engine=engine,
    )
    assert other.chat(LI_PROMPT).message.content == "4"
    assert (cheap.script.calls, finetune.script.calls, big.script.calls) == (1, 0, 0)


def test_llamaindex_router_warn_budget_lets_it_through_with_one_warning() -> None:
    engine = engine_with(Budget(limit_usd=Decimal("0.0001"), period="day", policy="warn"))
    router = RouterLLM(
        tiers={"small": llm(UNPRICED), "frontier": llm("gpt-4o-mini")}, classifier=StartAt(0)
    )
    handler = CostEventHandler(engine).attach()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                assert router.chat(LI_PROMPT).message.content == "4"
    finally:
        handler.detach()
    found = budget_warnings(caught)
    assert len(found) == 1 and f"'{UNPRICED}'" in found[0]
    assert [r.model for r in engine.ledger.records()] == [UNPRICED] * 3
    assert engine.ledger.totals().unpriced_calls == 3


def test_llamaindex_router_without_budgets_is_unchanged() -> None:
    engine = engine_with()
    router = RouterLLM(
        tiers={"small": llm(UNPRICED), "frontier": llm("gpt-4o")}, classifier=StartAt(0)
    )
    handler = CostEventHandler(engine).attach()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert router.chat(LI_PROMPT).message.content == "4"
    finally:
        handler.detach()
    assert budget_warnings(caught) == []
    assert engine.ledger.totals().unpriced_calls == 1


# -- batch jobs ---------------------------------------------------------------------
def batch(model: str, n: int, tenant: str | None = None, start: int = 0) -> list[BatchRequest]:
    return [
        BatchRequest(
            id=f"r{i}",
            model=model,
            messages=(Message(role="user", content=f"question number {i}"),),
            params={"max_tokens": 100},
            tenant=tenant,
        )
        for i in range(start, start + n)
    ]


@pytest.mark.parametrize("policy", ["block", "downshift"])
def test_a_flush_with_an_unpriced_model_under_a_block_budget_is_refused(policy: str) -> None:
    # Before the fix the unpriced requests added $0 to the flush's estimate: the
    # flush passed a $0.01 budget and its spend was never counted.
    engine = engine_with(Budget(limit_usd=Decimal("0.01"), period="day", policy=policy))
    api = remote()
    job = BatchJob(api, ":memory:", name="j", engine=engine)
    job.enqueue(batch("gpt-4o-mini", 1) + batch(UNPRICED, 2, start=1))
    with pytest.raises(BudgetExceededError, match=REFUSAL) as err:
        job.flush()
    assert err.value.estimate_usd is None
    assert api.submitted == []
    assert job.status().queued == 3  # kept, as after a provider's refusal
    assert engine.ledger.totals().calls == 0
    assert engine.ledger.spent(None, "day") == 0  # nothing stays held


def test_a_flush_of_unpriced_requests_of_another_tenant_is_not_refused() -> None:
    engine = engine_with(Budget(limit_usd=Decimal("0.01"), period="day", tenant="a"))
    api = remote()
    job = BatchJob(api, ":memory:", name="j", engine=engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unpriced records' own warning
        results = job.run(batch(UNPRICED, 2, tenant="b"))
    assert [r.status for r in results] == ["succeeded"] * 2
    assert engine.ledger.totals().unpriced_calls == 2


def test_a_flush_with_an_unpriced_model_under_a_warn_budget_runs_with_one_warning() -> None:
    engine = engine_with(Budget(limit_usd=Decimal("0.01"), period="day", policy="warn"))
    api = remote()
    job = BatchJob(api, ":memory:", name="j", engine=engine)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = job.run(batch(UNPRICED, 4))
    assert [r.status for r in results] == ["succeeded"] * 4
    assert api.submitted == [["r0", "r1"], ["r2", "r3"]]  # two batches, one warning
    found = budget_warnings(caught)
    assert len(found) == 1 and f"'{UNPRICED}'" in found[0]
    assert engine.ledger.totals().unpriced_calls == 4


def test_a_flush_with_an_unpriced_model_and_no_budget_runs() -> None:
    engine = engine_with()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = BatchJob(remote(), ":memory:", name="j", engine=engine).run(batch(UNPRICED, 2))
    assert [r.status for r in results] == ["succeeded"] * 2
    assert budget_warnings(caught) == []
    assert engine.ledger.totals().unpriced_calls == 2
