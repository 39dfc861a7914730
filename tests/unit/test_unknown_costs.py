"""Unknown costs are None and a warning (once per model and reason), and reports say why."""

from __future__ import annotations

import uuid
import warnings
from decimal import Decimal

import pytest

from costopt_core import CostEngine, Usage
from costopt_core.ledger import CostLedger
from costopt_core.pricing import PriceCatalog, UnknownModelPriceWarning
from costopt_core.report import format_summary
from costopt_core.testing import FakeEmbedder

USAGE = Usage(input_tokens=1000, output_tokens=100)
NO_BATCH = "mixtral-8x7b-instruct"  # priced, no batch price in the shipped catalog


def engine() -> CostEngine:
    return CostEngine(embedder=FakeEmbedder())


def costs_and_warnings(record) -> tuple[list[Decimal | None], list[str]]:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        costs = record()
    return costs, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_a_priced_call_without_usage_is_none_and_warns_once_per_model() -> None:
    eng = engine()

    def record() -> list[Decimal | None]:
        out = [eng.record_call(model="gpt-4o", usage=Usage()).cost_usd for _ in range(3)]
        # the handlers' path (deferred records) too
        eng.record_call_deferred(model="gpt-4o", usage=Usage(), call_id=uuid.uuid4())
        out.append(eng.record_call(model="gpt-4o-mini", usage=Usage(input_tokens=5)).cost_usd)
        return out

    costs, messages = costs_and_warnings(record)
    assert costs == [None, None, None, None]
    assert [r.cost_usd for r in eng.ledger.records()] == [None] * 5
    assert len(messages) == 2
    assert "'gpt-4o'" in messages[0] and "no token usage" in messages[0]
    assert "'gpt-4o-mini'" in messages[1]
    assert all("cost None" in m and "not $0" in m for m in messages)


def test_a_batch_call_without_a_batch_price_is_none_and_warns_once() -> None:
    eng = engine()
    assert eng.catalog.get(NO_BATCH) is not None

    def record() -> list[Decimal | None]:
        return [
            eng.record_call(model=NO_BATCH, usage=USAGE, mode="batch").cost_usd,
            eng.record_call(
                model=NO_BATCH, usage=USAGE, mode="batch", outcome="escalated"
            ).cost_usd,
            eng.record_call(model=NO_BATCH, usage=USAGE).cost_usd,  # sync: priced, no warning
        ]

    costs, messages = costs_and_warnings(record)
    assert costs[:2] == [None, None] and costs[2] is not None and costs[2] > 0
    assert len(messages) == 1
    assert f"'{NO_BATCH}' has no batch price" in messages[0]
    assert "usd_per_mtok_batch_input" in messages[0] and "with_overrides" in messages[0]


def test_priced_calls_do_not_warn() -> None:
    eng = engine()
    _, messages = costs_and_warnings(
        lambda: [eng.record_call(model="gpt-4o-mini", usage=USAGE, mode="batch").cost_usd]
    )
    assert messages == []


def test_the_reasons() -> None:
    from costopt_core.pricing import UnknownCostWarning, unknown_cost_reason

    catalog = PriceCatalog.default()
    price = catalog.get(NO_BATCH)
    assert unknown_cost_reason(None, USAGE) == "no price"
    assert unknown_cost_reason(price, Usage()) == "no usage"
    assert unknown_cost_reason(price, USAGE, "batch") == "no batch price"
    assert unknown_cost_reason(price, USAGE) is None
    assert issubclass(UnknownModelPriceWarning, UnknownCostWarning)


def test_warned_keys_are_bounded() -> None:
    from costopt_core.pricing.catalog import _MAX_WARNED

    catalog = PriceCatalog.default()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(_MAX_WARNED + 50):
            catalog.get(f"made-up-{i}")
        assert len(catalog._warned) == _MAX_WARNED
        # the newest are remembered: no second warning for them
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            catalog.get(f"made-up-{_MAX_WARNED + 49}")
        assert caught == []


def _ledger_with_every_reason() -> CostLedger:
    eng = engine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eng.record_call(model="gpt-4o-mini", usage=USAGE)  # priced
        eng.record_call(model="gpt-4o", usage=Usage())
        eng.record_call(model="gpt-4o", usage=Usage())
        eng.record_call(model=NO_BATCH, usage=USAGE, mode="batch")
        eng.record_call(model="my-finetune", usage=USAGE)
    return eng.ledger


def test_the_summary_says_why_each_cost_is_unknown() -> None:
    text = format_summary(_ledger_with_every_reason())
    note = next(line for line in text.splitlines() if "not in the money" in line)
    assert note == (
        "(4 calls are not in the money: "
        "1 call on unpriced models (my-finetune): add their prices with "
        "PriceCatalog.with_overrides; "
        "2 calls whose provider reported no token usage (gpt-4o): have the provider return "
        "usage (e.g. stream_usage=True for streamed OpenAI calls); "
        f"1 batch call on a model with no batch price ({NO_BATCH}): add usd_per_mtok_batch_input "
        "and usd_per_mtok_batch_output with PriceCatalog.with_overrides)"
    )


def test_a_reloaded_export_says_the_same(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _ledger_with_every_reason().to_jsonl(tmp_path / "ledger.jsonl")
    again = CostLedger.from_jsonl(path)
    assert format_summary(again) == format_summary(_ledger_with_every_reason())


def test_only_missing_usage_gives_no_price_advice() -> None:
    eng = engine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eng.record_call(model="gpt-4o-mini", usage=USAGE)
        eng.record_call(model="gpt-4o", usage=Usage())
    text = format_summary(eng.ledger)
    assert (
        "(1 call whose provider reported no token usage is not in the money (gpt-4o): have the "
        "provider return usage (e.g. stream_usage=True for streamed OpenAI calls))"
    ) in text
    assert "with_overrides" not in text


def test_calls_dropped_from_memory_are_counted_without_a_reason() -> None:
    eng = CostEngine(embedder=FakeEmbedder(), ledger=CostLedger(max_records=1))
    with pytest.warns(UserWarning, match="no token usage"):
        eng.record_call(model="gpt-4o", usage=Usage())
    eng.record_call(model="gpt-4o-mini", usage=USAGE)
    text = format_summary(eng.ledger)
    assert "(1 older call is not in the money: their records are no longer in memory" in text
