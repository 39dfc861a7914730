"""A lever's own model call (a summarizer's) is charged to that lever, not priced as a request."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

from costopt_core import CostEngine, PriceCatalog, Usage
from costopt_core.context.summarize import (
    AbstractiveConfig,
    asummarize_abstractive,
    summarize_abstractive,
)
from costopt_core.errors import ConfigurationError
from costopt_core.ledger import CostLedger
from costopt_core.memory import MemoryConfig, MemoryState, aflush, flush
from costopt_core.overhead import current_overhead, overhead_of
from costopt_core.pricing import attribute_savings
from costopt_core.projection import project
from costopt_core.report import format_summary
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message
from costopt_core.workload import measure_records

U = Usage(input_tokens=1000, output_tokens=100)
# gpt-4o-mini: 1000 x $0.15/M + 100 x $0.60/M
MINI_COST = Decimal("0.00021")


def engine() -> CostEngine:
    return CostEngine(embedder=FakeEmbedder())


@pytest.mark.parametrize("deferred", [False, True], ids=["record_call", "deferred"])
@pytest.mark.parametrize("lever", ["compression", "memory"])
def test_a_call_inside_overhead_of_has_no_baseline_and_costs_its_lever(
    deferred: bool, lever: str
) -> None:
    e = engine()

    def record() -> None:
        if deferred:
            e.record_call_deferred(model="gpt-4o-mini", usage=U, call_id=f"c{len(e.ledger)}")
        else:
            e.record_call(model="gpt-4o-mini", usage=U)

    with overhead_of(lever):  # type: ignore[arg-type]
        record()
    record()  # outside: an ordinary request again
    call, request = e.ledger.records()
    assert (call.outcome, call.cost_usd, call.baseline_cost_usd) == ("overhead", MINI_COST, 0)
    assert call.savings_usd == {lever: -MINI_COST}
    assert request.outcome == "model" and request.savings_usd["routing"] > 0
    totals = e.ledger.totals()
    assert (totals.calls, totals.requests, totals.overheads) == (2, 1, 1)
    assert totals.to_dict()["overheads"] == 1
    assert totals.tokens["input_tokens"] == 2000  # billed tokens, both calls
    assert e.ledger.savings_by_lever()[lever] == -MINI_COST
    assert "levers' own model calls (summarizers, cache verifiers) 1" in format_summary(e.ledger)


def test_escalations_hits_and_removals_inside_overhead_of() -> None:
    e = engine()
    with overhead_of("memory"):
        escalated = e.record_call(model="gpt-4o-mini", usage=U, outcome="escalated")
        hit = e.record_call(model="gpt-4o", usage=U, outcome="cache_semantic")
        removed = e.record_removed_tokens(500, lever="memory")
    # A thrown-away attempt of a summarizer is still the summarizer's cost.
    assert escalated.outcome == "overhead" and escalated.savings_usd == {"memory": -MINI_COST}
    # A summary a cache served billed nothing, and is no request, so no cache hit either.
    assert (hit.outcome, hit.cost_usd, hit.baseline_cost_usd, hit.savings_usd) == (
        "overhead", 0, 0, {"memory": 0}
    )  # fmt: skip
    assert (hit.usage.input_tokens, hit.usage.output_tokens) == (0, 0)
    # Tokens kept out are a saving, whoever records them.
    assert removed is not None and removed.outcome == "removed"
    assert removed.savings_usd["memory"] > 0
    totals = e.ledger.totals()
    assert (totals.requests, totals.overheads, totals.cache_hits_semantic) == (0, 2, 0)
    assert totals.tokens["input_tokens"] == 1000  # the attempt's; the hit billed none
    assert measure_records(e.ledger.records()) == []


def test_an_unpriced_summarizer_is_an_unknown_cost_not_zero() -> None:
    e = engine()
    with overhead_of("compression"), pytest.warns(UserWarning, match="my-local-model"):
        rec = e.record_call(model="my-local-model", usage=U)
    # the lever is named although the amount is unknown
    assert (rec.outcome, rec.cost_usd, rec.baseline_cost_usd, rec.savings_usd) == (
        "overhead", None, 0, {"compression": 0}
    )  # fmt: skip
    assert e.ledger.totals().unpriced_calls == 1
    # A projection bills it where it is priced, and names it where it is not.
    e.record_call(model="gpt-4o", usage=U)
    [request] = measure_records(e.ledger.records())
    assert [(m, lever) for m, _, lever in request.overhead] == [("my-local-model", "compression")]
    with pytest.raises(ConfigurationError, match=r"without a price \(my-local-model\)"):
        project([request], requests_per_day=100, baseline_model="gpt-4o")
    priced_catalog = PriceCatalog.default().with_overrides(
        {"my-local-model": {"usd_per_mtok_input": "2.5", "usd_per_mtok_output": "10"}}
    )
    p = project([request], requests_per_day=100, baseline_model="gpt-4o", catalog=priced_catalog)
    assert p.scenario("compression").savings_usd_per_month < 0  # the summarizer is billed


def test_bad_levers_are_refused_with_the_fix() -> None:
    bad = overhead_of("routing")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"unknown lever 'routing'.*compression, memory"):
        bad.__enter__()
    assert current_overhead() is None
    catalog = PriceCatalog.default()
    for outcome, lever in (("overhead", None), ("model", "memory"), ("overhead", "routing")):
        with pytest.raises(ConfigurationError, match="pass both, or neither"):
            attribute_savings(
                catalog,
                model="gpt-4o-mini",
                usage=U,
                baseline_model="gpt-4o",
                outcome=outcome,  # type: ignore[arg-type]
                charged_to=lever,  # type: ignore[arg-type]
            )
    # Tokens kept out belong to the request whose tokens they were, not to a lever's call.
    e = engine()
    with (
        overhead_of("compression"),
        pytest.raises(ConfigurationError, match="record_removed_tokens"),
    ):
        e.record_call(model="gpt-4o-mini", usage=U, removed_input_tokens={"compression": 500})
    assert len(e.ledger) == 0


def test_overhead_records_round_trip_and_only_they_may_lose_compression(tmp_path: Path) -> None:
    e = engine()
    with overhead_of("compression"):
        e.record_call(model="gpt-4o-mini", usage=U)
    path = e.ledger.to_jsonl(tmp_path / "ledger.jsonl")
    back = CostLedger.from_jsonl(path).records()
    assert [(r.outcome, r.savings_usd) for r in back] == [("overhead", {"compression": -MINI_COST})]
    row = json.loads(path.read_text("utf-8"))
    row["outcome"] = "model"  # the same negative compression on an ordinary call
    path.write_text(json.dumps(row) + "\n", "utf-8")
    with pytest.raises(ValueError, match=r"savings_usd\.compression cannot be negative"):
        CostLedger.from_jsonl(path)


def test_a_projection_bills_a_levers_calls_when_the_lever_is_on() -> None:
    """A summarizer dearer than what it keeps out: the projection must not say it saves."""
    e = engine()
    for _ in range(3):
        with overhead_of("compression"):
            e.record_call(model="gpt-4o", usage=U)  # a frontier summarizer: $0.0035 a call
        e.record_removed_tokens(200, lever="compression")  # $0.0005 kept out
        e.record_call(model="gpt-4o", usage=U)
    with overhead_of("cache_semantic"):  # a verifier's call, for the last request
        e.record_call(model="gpt-4o-mini", usage=U)
    e.record_call(model="gpt-4o", usage=U)
    measured = measure_records(e.ledger.records())
    assert [m.model for m in measured] == ["gpt-4o"] * 4  # the levers' calls are no requests
    assert [len(m.overhead) for m in measured] == [1, 1, 1, 1]
    assert [m.overhead[0][2] for m in measured] == ["compression"] * 3 + ["cache_semantic"]
    p = project(measured, requests_per_day=1000, baseline_model="gpt-4o", days_per_month=1)
    scale = Decimal(1000) / 4
    per_call = Decimal("0.0035")  # 1000 x $2.50/M + 100 x $10/M
    # compression on: 3 summaries paid, 3 x 200 tokens not sent
    kept_out = 3 * 200 * Decimal("2.5") / 1_000_000
    compression = p.scenario("compression")
    # (each scenario's spend is rounded to cents, so their difference may be a cent off)
    expected = (kept_out - 3 * per_call) * scale  # -$2.25
    assert abs(compression.savings_usd_per_month - expected) <= Decimal("0.01")
    assert compression.savings_usd_per_month < 0
    # cache on (no hits in the sample): only the verifier's call, a loss
    assert abs(p.scenario("cache").savings_usd_per_month + MINI_COST * scale) <= Decimal("0.01")
    assert p.scenario("cache").savings_usd_per_month < 0
    assert p.scenario("routing").savings_usd_per_month == 0  # the levers' calls are not made


async def test_the_mark_stays_in_its_own_task() -> None:
    inside, outside = asyncio.Event(), asyncio.Event()
    seen: dict[str, object] = {}

    async def summarizer() -> None:
        with overhead_of("memory"):
            inside.set()
            await outside.wait()
            seen["summarizer"] = current_overhead()

    async def request() -> None:
        await inside.wait()
        seen["request"] = current_overhead()
        outside.set()

    await asyncio.gather(summarizer(), request())
    assert seen == {"summarizer": "memory", "request": None}
    assert current_overhead() is None


# -- the engine's summarizers run their model calls inside the mark -------------------


def words(text: str) -> int:
    return len(text.split())


CHUNKS = ["The bridge opened in 1937 after four years of work. " * 20]


async def test_abstractive_summaries_are_compression_overhead() -> None:
    seen: list[object] = []

    def chat(messages: list[Message]) -> str:
        seen.append(current_overhead())
        return "Opened in 1937."

    async def achat(messages: list[Message]) -> str:
        seen.append(current_overhead())
        return "Opened in 1937."

    cfg = AbstractiveConfig()
    summarize_abstractive("When?", CHUNKS, chat, cfg, count_tokens=words)
    await asummarize_abstractive("When?", CHUNKS, achat, cfg, count_tokens=words)
    assert seen == ["compression", "compression"] and current_overhead() is None


async def test_memory_summaries_are_memory_overhead() -> None:
    seen: list[object] = []
    history = [
        Message("user" if i % 2 == 0 else "assistant", f"Turn {i} about trip plans to city {i}.")
        for i in range(40)
    ]
    config = MemoryConfig(window_tokens=40, flush_min_tokens=20, summary_tokens=30)

    def chat(messages: list[Message]) -> str:
        seen.append(current_overhead())
        return "They planned a trip."

    async def achat(messages: list[Message]) -> str:
        seen.append(current_overhead())
        return "They planned a trip."

    sync = flush(history, MemoryState(), config, count_tokens=words, chat=chat, force=True)
    n = len(seen)
    aio = await aflush(history, MemoryState(), config, count_tokens=words, achat=achat, force=True)
    assert n > 0 and sync.state.summarizer_calls == n == aio.state.summarizer_calls
    assert seen == ["memory"] * (2 * n) and current_overhead() is None
