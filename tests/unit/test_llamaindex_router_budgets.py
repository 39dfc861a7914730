"""RouterLLM's budget estimate: the dearest model a request can still reach.

A request that starts at a cheap tier may end at the frontier (the cheap tier
fails and falls back, or its answer escalates), so a block budget checked with
the starting tier's price alone let a capped request spend several times what
the budget allowed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from llama_index.core.llms import ChatMessage

from costopt_core import Budget, CostEngine, Usage
from costopt_core.errors import BudgetExceededError
from costopt_core.testing import Script, ScriptedResponse
from costopt_core.types import Message
from llamaindex_costopt import CostEventHandler
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM

USAGE = Usage(2000, 500)
PROMPT = [ChatMessage(role="user", content="Summarize: " + "lorem ipsum " * 800)]
NEUTRAL = [Message("user", PROMPT[0].content or "")]


class RateLimitError(Exception):
    pass


class StartAt:
    """A classifier that starts every request at tier ``start`` of ``n_tiers``."""

    name = "fixed"

    def __init__(self, start: int, n_tiers: int) -> None:
        self.n_tiers = n_tiers
        self.row = [0.0] * start + [0.9] * (n_tiers - start)

    def predict(self, items: Any) -> Any:
        return np.array([self.row for _ in items])


def llm(model: str, *, error: Exception | None = None, text: str = "answer") -> ScriptedLLM:
    return ScriptedLLM(script=Script([ScriptedResponse(text, USAGE, model=model, error=error)]))


def test_a_fallback_to_the_frontier_never_overspends_a_capped_budget() -> None:
    # The small tier rate-limits and the request falls back to gpt-4o: the check
    # must have priced gpt-4o, or a $0.005 budget is spent twice over ($0.01).
    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("0.005"), period="day", policy="block")])
    small = llm("gpt-4o-mini", error=RateLimitError("429"))
    big = llm("gpt-4o")
    r = RouterLLM(tiers={"small": small, "frontier": big}, classifier=StartAt(0, 2))
    handler = CostEventHandler(engine).attach()
    try:
        with pytest.raises(BudgetExceededError) as err:
            r.chat(PROMPT, max_tokens=500)
    finally:
        handler.detach()
    expected = engine.estimate("gpt-4o", NEUTRAL, max_output_tokens=500)
    assert expected == Decimal("0.00903")  # 1612 prompt tokens and 500 out, at gpt-4o
    assert err.value.estimate_usd == expected
    assert small.script.calls == 0 and big.script.calls == 0  # refused before any call
    assert engine.ledger.spent(None, "day") == Decimal(0)


def test_a_budget_that_holds_the_frontier_call_lets_it_through_and_no_more() -> None:
    # Exactly the frontier's estimate: the first request (answered by gpt-4o after
    # the fallback, with the whole cap) fits, and what it spent stays within the limit.
    whole = Usage(1612, 500)  # the prompt's tokens, and the answer's cap
    estimate = CostEngine().estimate("gpt-4o", NEUTRAL, max_output_tokens=500)
    assert estimate is not None
    engine = CostEngine(budgets=[Budget(limit_usd=estimate, period="day", policy="block")])
    small = ScriptedLLM(
        script=Script(
            [ScriptedResponse("x", USAGE, model="gpt-4o-mini", error=RateLimitError("429"))],
            cycle=True,
        )
    )
    big = ScriptedLLM(script=Script([ScriptedResponse("a", whole, model="gpt-4o")], cycle=True))
    r = RouterLLM(tiers={"small": small, "frontier": big}, classifier=StartAt(0, 2))
    handler = CostEventHandler(engine).attach()
    try:
        r.chat(PROMPT, max_tokens=500)
        with pytest.raises(BudgetExceededError):
            r.chat(PROMPT, max_tokens=500)
    finally:
        handler.detach()
    # 1612 in at $2.50 + 500 out at $10.00 per Mtok: the limit, not a cent over
    assert engine.ledger.spent(None, "day") == estimate == Decimal("0.00903")
    assert big.script.calls == 1


def test_the_estimate_prices_the_dearest_model_at_or_above_the_starting_tier() -> None:
    # Three tiers, the request starts at the middle one: a fallback of the top
    # tier (claude-opus-4-1) is the dearest it can reach; the bottom tier's o1,
    # dearer than gpt-4o but below the start, cannot answer it.
    engine = CostEngine(budgets=[Budget(limit_usd=Decimal("0.000001"), policy="block")])
    r = RouterLLM(
        tiers={
            "bottom": llm("o1"),
            "middle": llm("gpt-4o-mini"),
            "top": [llm("gpt-4o"), llm("claude-opus-4-1")],
        },
        classifier=StartAt(1, 3),
        engine=engine,
    )
    with pytest.raises(BudgetExceededError) as err:
        r.chat(PROMPT, max_tokens=500)
    opus = engine.estimate("claude-opus-4-1", NEUTRAL, max_output_tokens=500)
    assert opus is not None and err.value.estimate_usd == opus

    # Started at the top tier, only the top tier's models are reachable.
    top_only = RouterLLM(
        tiers={"bottom": llm("claude-opus-4-1"), "top": llm("gpt-4o")},
        classifier=StartAt(1, 2),
        engine=engine,
    )
    with pytest.raises(BudgetExceededError) as err:
        top_only.chat(PROMPT, max_tokens=500)
    assert err.value.estimate_usd == engine.estimate("gpt-4o", NEUTRAL, max_output_tokens=500)


def test_concurrent_requests_hold_an_in_process_budget_too() -> None:
    # Without holds every request in flight sees the same spend, and all of them
    # pass a budget room for two.
    import threading
    import time

    estimate = CostEngine().estimate("gpt-4o", NEUTRAL, max_output_tokens=500)
    assert estimate is not None
    engine = CostEngine(budgets=[Budget(limit_usd=estimate * 2, period="day", policy="block")])

    class Slow(ScriptedLLM):
        def chat(self, messages: Any, **kwargs: Any) -> Any:
            time.sleep(0.2)  # every request is in flight before any is recorded
            return super().chat(messages, **kwargs)

    small = Slow(script=Script([ScriptedResponse("answer", USAGE, model="gpt-4o-mini")] * 8))
    big = llm("gpt-4o")
    r = RouterLLM(tiers={"small": small, "frontier": big}, classifier=StartAt(0, 2))
    refused: list[BudgetExceededError] = []

    def one() -> None:
        try:
            r.chat(PROMPT, max_tokens=500)
        except BudgetExceededError as exc:
            refused.append(exc)

    handler = CostEventHandler(engine).attach()
    try:
        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        handler.detach()
    assert small.script.calls == 2 and len(refused) == 4
