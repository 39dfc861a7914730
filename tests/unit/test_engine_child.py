"""CostEngine.child(): a track_costs block's engine keeps the outer engine's budgets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage

from costopt_core import (
    Budget,
    BudgetExceededError,
    CostEngine,
    Usage,
    current_engine,
    default_engine,
    set_default_engine,
)
from costopt_core.budgets import BudgetDecision, evaluate_budget
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from langchain_costopt import track_costs as lc_track_costs
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import track_costs as li_track_costs
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM

# gpt-4o: $2.50 in, $10 out per Mtok -> $0.0035 a call; a $0.005/day budget allows one.
USAGE = Usage(input_tokens=1000, output_tokens=100)
CALL = Decimal("0.0035")
LIMIT = Decimal("0.005")


def blocking() -> Budget:
    return Budget(limit_usd=LIMIT, period="day", policy="block")


@pytest.fixture
def outer(engine: CostEngine) -> Iterator[CostEngine]:
    """The fixture engine with a block budget, as the process default."""
    engine.ledger.add_budget(blocking())
    set_default_engine(engine)
    try:
        yield engine
    finally:
        set_default_engine(None)


def test_child_shares_everything_but_the_ledger(engine: CostEngine) -> None:
    child = engine.child()
    assert child.ledger is not engine.ledger and len(child.ledger) == 0
    assert child.catalog is engine.catalog
    assert child.baseline_model == engine.baseline_model
    assert child.embedder is engine.embedder
    assert child.tokens is engine.tokens
    assert child.clock is engine.clock


def test_child_shares_an_embedder_the_parent_builds_later() -> None:
    parent = CostEngine()
    child = parent.child()
    parent._embedder = FakeEmbedder()  # what the lazy build would set
    assert child.embedder is parent.embedder


def test_parent_budgets_count_and_block_the_childs_calls(engine: CostEngine) -> None:
    engine.ledger.add_budget(blocking())
    child = engine.child()
    assert child.ledger.has_budgets
    child.check_budget(None, CALL)
    child.record_call(model="gpt-4o", usage=USAGE, call_id="c1")
    assert child.ledger.totals().cost_usd == CALL
    assert engine.ledger.spent(None, "day") == CALL
    with pytest.raises(BudgetExceededError):
        child.check_budget(None, CALL)
    # A block opened inside the block cannot get around it either.
    with pytest.raises(BudgetExceededError):
        child.child().check_budget(None, CALL)
    # Budgets of the child apply to the block alone.
    roomy = CostEngine(clock=engine.clock).child()
    roomy.ledger.add_budget(Budget(limit_usd=Decimal("0.001"), period="day", policy="block"))
    with pytest.raises(BudgetExceededError):
        roomy.check_budget(None, CALL)
    assert roomy.ledger.parent is not None
    assert roomy.ledger.parent.check_budget(None, CALL) == []  # the outer engine has none


def test_child_calls_are_recorded_in_the_parent_once(engine: CostEngine) -> None:
    child = engine.child()
    # the block's handler and a handler of the outer engine report the same call
    child.record_call(model="gpt-4o", usage=USAGE, call_id="run-1")
    engine.record_call(model="gpt-4o", usage=USAGE, call_id="run-1")
    child.record_call_deferred(model="gpt-4o", usage=USAGE, call_id="run-2")
    child.record_removed_tokens(500, call_id="rm-1")
    assert [r.call_id for r in child.ledger.records()] == ["run-1", "run-2", "rm-1"]
    assert [r.call_id for r in engine.ledger.records()] == ["run-1", "run-2", "rm-1"]
    assert engine.ledger.totals().cost_usd == child.ledger.totals().cost_usd == CALL * 2
    # with a sink subscribed on the parent, the forwarded calls reach it as they are made
    seen: list[str] = []
    engine.ledger.subscribe(lambda r: seen.append(r.call_id))
    child.record_call_deferred(model="gpt-4o", usage=USAGE, call_id="run-3")
    assert seen == ["run-3"]


class _Store:
    """A shared budget store that records what it is asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def reserve(
        self,
        budgets: list[Budget],
        tenant: str | None,
        estimate: Decimal,
        call_id: str | None,
        now: datetime,
    ) -> list[BudgetDecision]:
        self.calls.append(("reserve", call_id))
        return [evaluate_budget(b, Decimal(0), estimate) for b in budgets]

    def release(self, budgets: Any, tenant: str | None, call_id: str, now: datetime) -> None:
        self.calls.append(("release", call_id))

    def spent(self, tenant: str | None, period: str, now: datetime) -> Decimal:
        return Decimal("123")


def test_child_holds_and_releases_on_the_parents_store(engine: CostEngine) -> None:
    engine.ledger.add_budget(blocking())
    store = _Store()
    engine.ledger.budget_store = store
    child = engine.child()
    # the adapters release a failed call's hold only when a store is there
    assert child.ledger.budget_store is store
    child.check_budget(None, CALL, call_id="run-9")
    child.release_budget(None, "run-9")
    assert store.calls == [("reserve", "run-9"), ("release", "run-9")]
    # the block's own spend is its own, not the cluster's
    assert child.ledger.spent(None, "day") == 0


def test_langchain_track_costs_keeps_the_default_engines_budget(outer: CostEngine) -> None:
    reply = ScriptedResponse("ok", USAGE, model="gpt-4o")
    model = ScriptedChatModel(script=Script([reply]), model_name="gpt-4o")
    with pytest.raises(BudgetExceededError), lc_track_costs() as costs:
        assert current_engine().embedder is outer.embedder
        for _ in range(5):
            model.invoke("hello")
    # $0.0035, $0.0070 > $0.005: the third call is refused before it is made
    assert model.script.calls == 2
    assert costs.ledger.totals().cost_usd == CALL * 2
    assert outer.ledger.totals().cost_usd == CALL * 2


def test_llamaindex_track_costs_keeps_the_default_engines_budget(outer: CostEngine) -> None:
    def tier(model: str) -> ScriptedLLM:
        return ScriptedLLM(script=Script([ScriptedResponse("ok", USAGE, model=model)]))

    small, big = tier("gpt-4o"), tier("gpt-4o")
    router = RouterLLM(tiers={"small": small, "frontier": big})
    answered = 0
    with pytest.raises(BudgetExceededError):
        for i in range(5):
            with li_track_costs() as costs:
                assert current_engine().embedder is outer.embedder
                router.chat([ChatMessage(role="user", content=f"question {i}?")])
                answered += 1
            assert costs.ledger.totals().cost_usd == CALL  # each block: its own call
    assert answered == 2  # $0.0035, $0.0070 > $0.005: the third is refused
    assert outer.ledger.totals().cost_usd == CALL * 2
    assert default_engine() is outer
