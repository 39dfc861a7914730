"""Reading ledger records back: one reader for ``report`` and ``project``, the engine's
money rules enforced on each line, and errors that name the field and the fix."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costopt_core import CostEngine, Usage
from costopt_core.cli import app
from costopt_core.errors import ConfigurationError
from costopt_core.ledger import CostLedger
from costopt_core.types import LEVERS, CallRecord
from costopt_core.workload import WorkloadSample, measure_records

U = Usage(input_tokens=1200, output_tokens=150)
HOW = "CostLedger.to_jsonl(path)"


def _export(engine: CostEngine, path: Path) -> list[dict[str, Any]]:
    """A small ledger of every kind of call the engine records, exported to ``path``."""
    engine.record_call(model="gpt-4o-mini", usage=U, tier="small", tenant="a")
    engine.record_call(model="gpt-4o-mini", usage=U, tier="small", outcome="escalated")
    engine.record_call(model="gpt-4o", usage=U, tier="frontier")
    engine.record_call(model="gpt-4o-mini", usage=U, outcome="cache_exact", tenant="a")
    engine.record_call(model="gpt-4o-mini", usage=U, mode="batch", tier="small")
    engine.record_removed_tokens(800, lever="memory", tenant="a")
    engine.record_call(model="gpt-4o-mini", usage=U, removed_input_tokens={"compression": 900})
    engine.ledger.to_jsonl(path)
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


def _cli(*args: str) -> Any:
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(app, list(args))


def _one_line(text: str) -> str:
    """CLI output with rich's box and wrapping removed."""
    return re.sub(r"[\s│╭╮╰╯─]+", " ", text)


# -- 1. costopt project reads a ledger as costopt report does -------------------


def test_a_sample_ledger_counts_a_call_id_seen_twice_once_as_report_does(
    engine: CostEngine, tmp_path: Path
) -> None:
    rows = _export(engine, tmp_path / "one.jsonl")
    double = _write(tmp_path / "double.jsonl", rows + rows)

    single = WorkloadSample.from_jsonl(tmp_path / "one.jsonl")
    twice = WorkloadSample.from_jsonl(double)
    assert len(twice) == len(single) == len(rows) == 7
    assert [r.call_id for r in twice.records] == [r["call_id"] for r in rows]
    assert measure_records(twice.records) == measure_records(single.records)
    # the same calls costopt report totals
    assert len(twice.records) == CostLedger.from_jsonl(double).totals().calls


def test_cli_project_on_a_doubled_ledger_matches_the_ledger_itself(
    engine: CostEngine, tmp_path: Path
) -> None:
    rows = _export(engine, tmp_path / "one.jsonl")
    double = _write(tmp_path / "double.jsonl", rows + rows)
    once = _cli("project", str(tmp_path / "one.jsonl"), "-n", "1000")
    twice = _cli("project", str(double), "-n", "1000")
    assert once.exit_code == twice.exit_code == 0, twice.output
    # 5 requests: the escalated attempt and the removal belong to other calls
    assert "measured on 5 sample requests" in _one_line(twice.output)
    assert "escalations 20.0%" in _one_line(twice.output)
    assert _one_line(twice.output) == _one_line(once.output)


# -- 2. amounts the engine never writes are refused --------------------------


def _bad(tmp_path: Path, row: Any) -> str:
    """The error of CostLedger.from_jsonl and of costopt report/project on ``row``."""
    path = _write(tmp_path / "bad.jsonl", [row])
    with pytest.raises(ConfigurationError) as info:
        CostLedger.from_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}:1: not a costopt ledger record: ")
    assert HOW in message
    if isinstance(row, dict):  # else a sample reads it as a request, which it is not either
        with pytest.raises(ConfigurationError) as sample_info:
            WorkloadSample.from_jsonl(path)
        assert str(sample_info.value) == message
    res = _cli("report", str(path))
    assert res.exit_code == 2
    assert "bad.jsonl:1" in _one_line(res.output)
    return message


def _model_row(engine: CostEngine) -> dict[str, Any]:
    return engine.record_call(model="gpt-4o-mini", usage=U).to_dict()


def test_a_negative_cost_or_baseline_is_refused(engine: CostEngine, tmp_path: Path) -> None:
    row = _model_row(engine)
    message = _bad(tmp_path, {**row, "cost_usd": "-3"})
    assert "cost_usd cannot be negative, got '-3'" in message
    message = _bad(tmp_path, {**row, "baseline_cost_usd": "-0.5"})
    assert "baseline_cost_usd cannot be negative, got '-0.5'" in message


@pytest.mark.parametrize("lever", ["cache_exact", "cache_semantic", "compression", "memory"])
def test_a_negative_saving_of_a_lever_that_cannot_lose_money_is_refused(
    engine: CostEngine, tmp_path: Path, lever: str
) -> None:
    row = _model_row(engine)
    # the total still adds up: only the sign is wrong
    savings = {"routing": str(Decimal(row["savings_usd"]["routing"]) + 1), lever: "-1"}
    message = _bad(tmp_path, {**row, "savings_usd": savings})
    assert f"savings_usd.{lever} cannot be negative, got '-1'" in message
    assert "only batch, provider_cache, routing can cost more" in message


def test_negative_savings_the_engine_writes_still_load(engine: CostEngine, tmp_path: Path) -> None:
    escalated = engine.record_call(model="gpt-4o-mini", usage=U, outcome="escalated")
    dearer = engine.record_call(model="claude-opus-4-1", usage=U)  # above the gpt-4o baseline
    cache_write = engine.record_call(
        model="claude-sonnet-4-5",
        usage=Usage(input_tokens=5000, output_tokens=10, cache_write_1h_tokens=4000),
    )
    assert escalated.savings_usd["routing"] < 0
    assert dearer.savings_usd["routing"] < 0
    assert cache_write.savings_usd["provider_cache"] < 0
    path = engine.ledger.to_jsonl(tmp_path / "ledger.jsonl")
    back = CostLedger.from_jsonl(path).records()
    assert [r.savings_usd for r in back] == [escalated.savings_usd, dearer.savings_usd,
                                             cache_write.savings_usd]  # fmt: skip


def test_an_unknown_lever_is_refused(engine: CostEngine, tmp_path: Path) -> None:
    row = {**_model_row(engine), "cost_usd": "0", "baseline_cost_usd": "5"}
    message = _bad(tmp_path, {**row, "savings_usd": {"magic": "5"}})
    assert (
        f"savings_usd has an unknown lever 'magic' (amount '5'); the levers are {', '.join(LEVERS)}"
        in message
    )


def test_levers_that_do_not_add_up_to_the_saving_are_refused(
    engine: CostEngine, tmp_path: Path
) -> None:
    row = {**_model_row(engine), "cost_usd": "0.001", "baseline_cost_usd": "0.004"}
    message = _bad(tmp_path, {**row, "savings_usd": {"routing": "0.3"}})
    assert (
        "savings_usd adds up to $0.3 but baseline_cost_usd - cost_usd is $0.003 (0.004 - 0.001)"
        in message
    )
    message = _bad(tmp_path, {**row, "savings_usd": {}})
    assert "savings_usd adds up to $0 but baseline_cost_usd - cost_usd is $0.003" in message


def test_levers_rounded_to_micro_dollars_or_with_an_unknown_cost_still_load(
    engine: CostEngine, tmp_path: Path
) -> None:
    rows = [
        # each amount rounded to 6 decimals: off by up to half a micro-dollar each
        {**_model_row(engine), "cost_usd": "0.000001", "baseline_cost_usd": "0.000004",
         "savings_usd": {"routing": "0.0000025", "provider_cache": "0.0000010"}},
        # cost unknown: the levers cannot be checked against it
        {**_model_row(engine), "cost_usd": None, "baseline_cost_usd": "0.004",
         "savings_usd": {"compression": "0.002"}},
    ]  # fmt: skip
    ledger = CostLedger.from_jsonl(_write(tmp_path / "ok.jsonl", rows))
    assert [r.savings_usd for r in ledger.records()] == [
        {"routing": Decimal("0.0000025"), "provider_cache": Decimal("0.0000010")},
        {"compression": Decimal("0.002")},
    ]


# -- 3. errors name the field and what a record looks like --------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: [r], "expected a JSON object (one call per line), got a list"),
        (lambda r: "text", "expected a JSON object (one call per line), got a string"),
        (
            lambda r: _drop(r, "timestamp"),
            "missing field 'timestamp' (when the call was made: an "
            "ISO 8601 date-time such as '2026-01-31T12:00:00+00:00')",
        ),
        (lambda r: _drop(r, "call_id"), "missing field 'call_id'"),
        (lambda r: _drop(r, "model"), "missing field 'model' (the model that served the call"),
        (
            lambda r: {**r, "usage": None},
            "usage must be an object of token counts, e.g. "
            '{"input_tokens": 1200, "output_tokens": 150} ({} when unknown), got null',
        ),
        (
            lambda r: {**r, "usage": {"input_tokens": "5"}},
            "usage: input_tokens must be an int or None, got '5'",
        ),
        (
            lambda r: {**r, "timestamp": 1700000000},
            "timestamp must be an ISO 8601 date-time "
            "such as '2026-01-31T12:00:00+00:00', got a number 1700000000",
        ),
        (lambda r: {**r, "timestamp": "yesterday"}, "got 'yesterday'"),
        (lambda r: {**r, "call_id": None}, "call_id must be a string, got null"),
        (lambda r: {**r, "model": ["gpt-4o"]}, "model must be a string"),
        (
            lambda r: {**r, "cost_usd": "abc"},
            "cost_usd must be a decimal string such as '0.00125', got 'abc'",
        ),
        (
            lambda r: {**r, "savings_usd": None},
            "savings_usd must be an object of "
            '{lever: amount}, e.g. {"routing": "0.0021"}, got null',
        ),
        (lambda r: {**r, "tags": None}, "tags must be an object mapping strings to strings"),
        (
            lambda r: {**r, "outcome": "hit"},
            "outcome must be one of ['model', 'cache_exact', "
            "'cache_semantic', 'escalated', 'removed', 'overhead'], got 'hit'",
        ),
        (lambda r: {**r, "mode": "async"}, "mode must be one of ['sync', 'batch'], got 'async'"),
        (lambda r: {**r, "estimated": "no"}, "estimated must be true or false, got 'no'"),
    ],
)
def test_a_bad_record_names_the_field_and_how_a_record_is_written(
    engine: CostEngine, tmp_path: Path, change: Any, expected: str
) -> None:
    message = _bad(tmp_path, change(_model_row(engine)))
    assert expected in message
    assert "object has no attribute" not in message and "not iterable" not in message


def _drop(row: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != key}


def test_ledgers_of_earlier_versions_still_load(tmp_path: Path) -> None:
    rows = [
        # the first to_dict: money via str(), so small amounts in scientific notation
        {"call_id": "a", "timestamp": "2025-06-01T10:00:00+00:00", "model": "gpt-4o-mini",
         "tier": None, "tenant": None, "framework": "langchain", "mode": "sync",
         "outcome": "model", "usage": {"input_tokens": 10, "output_tokens": 1},
         "cost_usd": "0.0000021", "baseline_cost_usd": "0.000035",
         "savings_usd": {"routing": "0.0000329"}, "latency_ms": 12.5, "estimated": False,
         "tags": {}},
        {"call_id": "b", "timestamp": "2025-06-01T10:00:01+00:00", "model": "gpt-4o-mini",
         "outcome": "escalated", "usage": {"input_tokens": 10, "output_tokens": 1},
         "cost_usd": "0.0000021", "baseline_cost_usd": "0",
         "savings_usd": {"routing": "-0.0000021"}},
        {"call_id": "c", "timestamp": "2025-06-01T10:00:02+00:00", "model": "gpt-4o-mini",
         "outcome": "cache_exact", "usage": {"input_tokens": 1, "output_tokens": 1},
         "cost_usd": "0", "baseline_cost_usd": "1.25E-5",
         "savings_usd": {"routing": "1.19E-5", "cache_exact": "6E-7"}},
        # only the required fields; a naive timestamp is read as UTC
        {"call_id": "d", "timestamp": "2025-06-01T10:00:03", "model": "gpt-4o"},
    ]  # fmt: skip
    ledger = CostLedger.from_jsonl(_write(tmp_path / "old.jsonl", rows))
    records = ledger.records()
    assert [r.call_id for r in records] == ["a", "b", "c", "d"]
    assert records[2].baseline_cost_usd == Decimal("0.0000125")
    assert records[3].usage == Usage() and records[3].cost_usd is None
    assert records[3].timestamp.tzinfo is not None
    assert ledger.totals().calls == 4


def test_from_dict_refuses_a_bad_record_with_a_value_error(engine: CostEngine) -> None:
    row = _model_row(engine)
    assert CallRecord.from_dict(row) == CallRecord.from_dict(json.loads(json.dumps(row)))
    with pytest.raises(ValueError, match="cost_usd cannot be negative"):
        CallRecord.from_dict({**row, "cost_usd": "-1"})
    with pytest.raises(ValueError, match="expected a JSON object"):
        CallRecord.from_dict(None)


def test_a_removal_under_an_unknown_lever_is_refused_when_recorded() -> None:
    # The reader refuses a lever it does not know, so the engine must not write one.
    from costopt_core import CostEngine, Usage
    from costopt_core.errors import ConfigurationError

    engine = CostEngine()
    unknown = r"unknown lever 'trim'.*'compression' or 'memory'"
    with pytest.raises(ConfigurationError, match=unknown):
        engine.record_call(
            model="gpt-4o-mini", usage=Usage(100, 10), removed_input_tokens={"trim": 100}
        )
    record = engine.record_call(
        model="gpt-4o-mini", usage=Usage(100, 10), removed_input_tokens={"memory": 100}
    )
    assert set(record.savings_usd) == {"routing", "memory"}
