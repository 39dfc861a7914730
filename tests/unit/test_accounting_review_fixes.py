"""Accounting review fixes: completion batches, budgets facing unpriced models,
and removed-context records in the by-model / by-tier tables.
"""

from __future__ import annotations

import asyncio
import warnings
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models.llms import BaseLLM
from langchain_core.outputs import Generation, LLMResult

from costopt_core import Budget, CostEngine
from costopt_core.engine import split_usage
from costopt_core.errors import BudgetExceededError
from costopt_core.pricing import UnknownCostWarning
from costopt_core.report import REMOVED_ROW, format_breakdown, format_summary
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse
from costopt_core.types import Usage
from langchain_costopt import CostCallbackHandler
from langchain_costopt.testing import ScriptedChatModel

M = Decimal(1_000_000)
# gpt-4o-mini: $0.15 in, $0.60 out per Mtok
MINI_IN, MINI_OUT = Decimal("0.15"), Decimal("0.60")


def mini(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * MINI_IN + output_tokens * MINI_OUT) / M


class CompletionLLM(BaseLLM):
    """Like langchain_openai.OpenAI: one request for all prompts, usage summed in llm_output.

    ``per_generation`` puts each prompt's own usage on its generation too.
    """

    per_generation: bool = False

    @property
    def _llm_type(self) -> str:
        return "fake-completion"

    def _usage(self, prompt: str) -> dict[str, int]:
        # Each prompt's "billed" usage: 10 input tokens per character, 7 output.
        return {"prompt_tokens": 10 * len(prompt), "completion_tokens": 7}

    def _generate(self, prompts: list[str], stop: Any = None, run_manager: Any = None, **kw: Any):
        gens = [
            [Generation(text="ok", generation_info={"token_usage": self._usage(p)})]
            if self.per_generation
            else [Generation(text="ok")]
            for p in prompts
        ]
        summed_in = sum(self._usage(p)["prompt_tokens"] for p in prompts)
        summed_out = sum(self._usage(p)["completion_tokens"] for p in prompts)
        usage = {
            "prompt_tokens": summed_in,
            "completion_tokens": summed_out,
            "total_tokens": summed_in + summed_out,
        }
        return LLMResult(
            generations=gens, llm_output={"token_usage": usage, "model_name": "gpt-4o-mini"}
        )

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": "gpt-4o-mini"}


TENANTS = ("acme", "globex", "initech")


def per_tenant(handler: CostCallbackHandler) -> list[dict[str, Any]]:
    return [{"callbacks": [handler], "metadata": {"costopt_tenant": t}} for t in TENANTS]


# -- 1. completion batches ------------------------------------------------------
def test_completion_batch_splits_summed_usage_over_its_prompts() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostCallbackHandler(engine)
    # Three prompts of equal length: the summed 3 x 10 input tokens, 3 x 7 output.
    CompletionLLM().batch(["aaa", "bbb", "ccc"], config=per_tenant(handler))
    by_tenant = engine.ledger.totals_by("tenant")
    assert set(by_tenant) == set(TENANTS)
    for tenant in TENANTS:
        t = by_tenant[tenant]
        # Before the fix: acme had all 90 input tokens, the others cost None.
        assert t.unpriced_calls == 0
        assert t.tokens["input_tokens"] == 30 and t.tokens["output_tokens"] == 7
        assert t.cost_usd == mini(30, 7)
    assert engine.ledger.totals().cost_usd == mini(90, 21)  # what the provider reported
    assert all(r.estimated for r in engine.ledger.records())
    assert handler.errors == 0


def test_completion_batch_shares_follow_counted_prompt_tokens() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostCallbackHandler(engine)
    prompts = ["hi", "tell me a long story about the sea and the ships on it " * 4, "why"]
    CompletionLLM().batch(prompts, config=per_tenant(handler))
    total_in = sum(10 * len(p) for p in prompts)
    by_tenant = engine.ledger.totals_by("tenant")
    inputs = {t: by_tenant[t].tokens["input_tokens"] for t in TENANTS}
    assert sum(inputs.values()) == total_in  # the provider's total, split
    assert sum(by_tenant[t].tokens["output_tokens"] for t in TENANTS) == 21
    counted = [engine.tokens.count(p, "gpt-4o-mini") for p in prompts]
    for tenant, n in zip(TENANTS, counted, strict=True):
        assert abs(inputs[tenant] - total_in * n / sum(counted)) <= 1
    assert inputs["globex"] > inputs["acme"] + inputs["initech"]


def test_completion_batch_prices_each_prompt_from_its_own_generation_usage() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostCallbackHandler(engine)
    prompts = ["a", "bbbb", "cc"]
    CompletionLLM(per_generation=True).batch(prompts, config=per_tenant(handler))
    by_tenant = engine.ledger.totals_by("tenant")
    for tenant, prompt in zip(TENANTS, prompts, strict=True):
        assert by_tenant[tenant].tokens["input_tokens"] == 10 * len(prompt)
        assert by_tenant[tenant].cost_usd == mini(10 * len(prompt), 7)
    assert not any(r.estimated for r in engine.ledger.records())


def test_completion_abatch_and_ainvoke_are_recorded() -> None:
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostCallbackHandler(engine)
    llm = CompletionLLM()

    async def main() -> None:
        await llm.ainvoke("one", config={"callbacks": [handler]})
        await llm.abatch(["aaa", "bbb", "ccc"], config=per_tenant(handler))

    asyncio.run(main())
    # Before the fix: nothing at all (the runs were dropped with their start task).
    by_tenant = engine.ledger.totals_by("tenant")
    assert by_tenant[None].cost_usd == mini(30, 7)
    for tenant in TENANTS:
        assert by_tenant[tenant].cost_usd == mini(30, 7)


def test_split_usage_adds_up_and_keeps_cached_within_input() -> None:
    total = Usage(input_tokens=1001, output_tokens=50, cache_read_tokens=333, reasoning_tokens=20)
    shares = split_usage(total, [1, 2, 0], [5, 0, 1])
    assert sum(s.input_tokens or 0 for s in shares) == 1001
    assert sum(s.cache_read_tokens or 0 for s in shares) == 333
    assert sum(s.output_tokens or 0 for s in shares) == 50
    assert sum(s.reasoning_tokens or 0 for s in shares) == 20
    for s in shares:
        assert (s.cache_read_tokens or 0) <= (s.input_tokens or 0)
        assert (s.reasoning_tokens or 0) <= (s.output_tokens or 0)
    assert shares[2].input_tokens == 0 and shares[1].output_tokens == 0


# -- 2. budgets facing a model with no price --------------------------------------
def unpriced_model() -> ScriptedChatModel:
    reply = ScriptedResponse(
        "ok", usage=Usage(input_tokens=100_000, output_tokens=4_000), model="my-finetune"
    )
    return ScriptedChatModel(script=Script([reply]), model_name="my-finetune")


def test_block_budget_refuses_a_call_of_an_unpriced_model() -> None:
    engine = CostEngine(
        embedder=FakeEmbedder(),
        budgets=[Budget(limit_usd=Decimal("0.01"), period="day", tenant="acme", policy="block")],
    )
    handler = CostCallbackHandler(engine)
    config = {"callbacks": [handler], "metadata": {"costopt_tenant": "acme"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Before the fix: every call passed (estimated and counted as $0).
        with pytest.raises(BudgetExceededError, match=r"'my-finetune'.*with_overrides"):
            unpriced_model().invoke("hi", config=config, max_tokens=4000)
        # Another tenant's calls are not this budget's.
        unpriced_model().invoke("hi", config={"callbacks": [handler]})
    assert len(engine.ledger) == 1


def test_block_budget_of_a_parent_engine_refuses_an_unpriced_model_in_a_block() -> None:
    outer = CostEngine(
        embedder=FakeEmbedder(), budgets=[Budget(limit_usd=Decimal(1), policy="block")]
    )
    with pytest.raises(BudgetExceededError, match="my-finetune"):
        outer.child().check_unpriced(None, "my-finetune")


def test_warn_budget_lets_an_unpriced_model_through_with_one_warning() -> None:
    engine = CostEngine(
        embedder=FakeEmbedder(),
        budgets=[Budget(limit_usd=Decimal("0.01"), period="day", policy="warn")],
    )
    handler = CostCallbackHandler(engine)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            unpriced_model().invoke("hi", config={"callbacks": [handler]})
    budget_warnings = [
        w
        for w in caught
        if issubclass(w.category, UnknownCostWarning) and "warn budget" in str(w.message)
    ]
    assert len(budget_warnings) == 1 and "'my-finetune'" in str(budget_warnings[0].message)
    assert engine.ledger.totals().unpriced_calls == 3


# -- 3. removed context in the by-model / by-tier tables -------------------------
def removal_ledger() -> CostEngine:
    engine = CostEngine(embedder=FakeEmbedder())  # baseline gpt-4o
    engine.record_call(
        model="gpt-4o-mini", usage=Usage(input_tokens=1000, output_tokens=100), tier="small"
    )
    engine.record_call(
        model="claude-haiku-4-5", usage=Usage(input_tokens=1000, output_tokens=100), tier="mid"
    )
    engine.record_removed_tokens(50_000, lever="compression")
    engine.record_removed_tokens(20_000, lever="memory", model="gpt-4o-mini")
    return engine


def rows(table: str) -> dict[str, list[str]]:
    return {line.split("  ")[0].strip(): line.split() for line in table.splitlines()[3:]}


def test_by_model_table_keeps_removed_context_in_a_row_of_its_own() -> None:
    engine = removal_ledger()
    by_model = rows(format_breakdown(engine.ledger, "model"))
    # Before the fix: a "gpt-4o" row (the baseline model answered nothing) held the
    # 50k removed tokens' saving, and gpt-4o-mini's row the other 20k's.
    assert "gpt-4o" not in by_model
    mini_baseline = engine.cost("gpt-4o", Usage(input_tokens=1000, output_tokens=100))
    assert by_model["gpt-4o-mini"][1:4] == ["1", "$0.000210", f"${mini_baseline:.6f}"]
    removed = engine.cost("gpt-4o", Usage(input_tokens=70_000, output_tokens=0))
    assert by_model[REMOVED_ROW][3:7] == ["0", "$0.000000", f"${removed:.6f}", f"${removed:.6f}"]
    # The rows still add up to the totals.
    model_totals = engine.ledger.totals_by("model", removals=False)
    removed_totals = engine.ledger.totals_by("outcome")["removed"]
    assert (
        sum(t.baseline_cost_usd or 0 for t in model_totals.values())
        + (removed_totals.baseline_cost_usd or 0)
        == engine.ledger.totals().baseline_cost_usd
    )


def test_by_tier_table_keeps_removed_context_out_of_no_tier() -> None:
    engine = removal_ledger()
    by_tier = rows(format_breakdown(engine.ledger, "tier"))
    assert "(no tier)" not in by_tier  # before the fix: the removal records' row
    removed = engine.cost("gpt-4o", Usage(input_tokens=70_000, output_tokens=0))
    assert by_tier[REMOVED_ROW][3:7] == ["0", "$0.000000", f"${removed:.6f}", f"${removed:.6f}"]
    summary = format_summary(engine.ledger)
    tier_table = summary.split("By tier")[1].split("\n\n")[0]
    assert "(no tier)" not in tier_table and REMOVED_ROW in tier_table


def test_summary_splits_keep_removed_context_apart_and_add_up() -> None:
    """CostLedger.summary()'s by_model / by_tier folded the context kept out of
    calls into the baseline model's entry and the None tier."""
    engine = removal_ledger()
    summary = engine.ledger.summary()
    assert "None" not in summary["by_tier"]
    kept_out = summary["context_kept_out"]
    removed = engine.cost("gpt-4o", Usage(input_tokens=70_000, output_tokens=0))
    assert Decimal(kept_out["baseline_cost_usd"]) == removed
    for split in ("by_tier", "by_model"):
        baseline = sum(Decimal(t["baseline_cost_usd"]) for t in summary[split].values())
        total = Decimal(summary["total"]["baseline_cost_usd"])
        assert baseline + Decimal(kept_out["baseline_cost_usd"]) == total


# -- second review of the completion-batch change --------------------------------------


@pytest.mark.parametrize("sync", [True, False], ids=["batch", "abatch"])
async def test_a_completion_batch_a_budget_refuses_leaves_no_hold_behind(sync: bool) -> None:
    """The runs started before the refused one never end (the call fails): their
    holds stayed until their time-to-live and refused the next call."""
    engine = CostEngine(
        embedder=FakeEmbedder(), budgets=[Budget(limit_usd=Decimal("0.0004"), policy="block")]
    )
    handler = CostCallbackHandler(engine)
    prompt = "word " * 1000  # about $0.00015 each with max_tokens=1000: two fit, not three
    config: Any = {"callbacks": [handler]}
    with pytest.raises(BudgetExceededError):
        if sync:
            CompletionLLM().batch([prompt] * 3, config=config, max_tokens=1000)
        else:
            await CompletionLLM().abatch([prompt] * 3, config=config, max_tokens=1000)
    await asyncio.sleep(0)
    assert handler._runs == {}
    assert engine.ledger.spent(None, "month") == 0
    # The budget is whole again: one more call of the same size passes.
    await CompletionLLM().ainvoke(prompt, config=config, max_tokens=1000)
    assert [r.outcome for r in engine.ledger.records()] == ["model"]


async def test_a_cancelled_completion_call_is_not_recorded() -> None:
    """A timed-out ainvoke and a cancelled abatch were recorded as calls of
    unknown cost: only a stream the caller stopped reading is billed."""

    class Slow(CompletionLLM):
        async def _agenerate(
            self, prompts: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ):  # type: ignore[no-untyped-def]
            await asyncio.sleep(5)
            return self._generate(prompts)

    engine = CostEngine(embedder=FakeEmbedder(), budgets=[Budget(limit_usd=Decimal(1))])
    handler = CostCallbackHandler(engine)
    config: Any = {"callbacks": [handler]}
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(Slow().ainvoke("a b", config=config), 0.05)
    task = asyncio.create_task(Slow().abatch(["a b", "c d"], config=config))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.ledger.records() == []
    assert handler._runs == {}


def test_a_handler_on_some_prompts_of_a_batch_books_their_share_only() -> None:
    """A handler given to two of three prompts split the whole batch's usage
    over its two runs, charging the third prompt's tokens to their tenants."""
    engine = CostEngine(embedder=FakeEmbedder())
    handler = CostCallbackHandler(engine)
    CompletionLLM().generate(["aaa", "bbb", "ccc"], callbacks=[[handler], [], [handler]])
    records = engine.ledger.records()
    assert len(records) == 2 and all(r.estimated for r in records)
    assert sum(r.usage.input_tokens or 0 for r in records) == 60  # 2 of the 3 x 30
    assert sum(r.usage.output_tokens or 0 for r in records) == 14
