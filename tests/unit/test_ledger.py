"""CostLedger: totals, dimensions, thread safety, retention and export."""

from __future__ import annotations

import json
import threading
import warnings
from decimal import Decimal
from typing import Any

import pytest

from costopt_core import CallRecord, ConfigurationError, CostEngine, CostLedger, Usage
from costopt_core.types import LEVERS

MINI = Usage(input_tokens=1000, output_tokens=100)  # gpt-4o-mini: $0.00015 + $0.00006


def test_totals_by_dimension_are_exact(engine: CostEngine) -> None:
    engine.record_call(model="gpt-4o-mini", usage=MINI, tier="small", tenant="a")
    engine.record_call(model="gpt-4o", usage=MINI, tier="frontier", tenant="b")
    engine.record_call(model="gpt-4o-mini", usage=MINI, tier="small", tenant="a")
    t = engine.ledger.totals()
    assert t.calls == 3
    # 2 x gpt-4o-mini (0.00021) + 1 x gpt-4o (0.0025 + 0.001)
    assert t.cost_usd == Decimal("0.00021") * 2 + Decimal("0.0035")
    assert t.baseline_cost_usd == Decimal("0.0035") * 3
    by_tenant = engine.ledger.totals_by("tenant")
    assert by_tenant["a"].cost_usd == Decimal("0.00042")
    assert by_tenant["b"].cost_usd == Decimal("0.0035")
    assert engine.ledger.tier_distribution() == {"small": 2 / 3, "frontier": 1 / 3}
    assert t.tokens["input_tokens"] == 3000
    assert (
        engine.ledger.savings_by_lever()["routing"] == (Decimal("0.0035") - Decimal("0.00021")) * 2
    )


def test_every_lever_listed_and_sum_matches(engine: CostEngine) -> None:
    engine.record_call(model="gpt-4o-mini", usage=MINI, outcome="cache_semantic")
    levers = engine.ledger.savings_by_lever()
    assert list(levers) == list(LEVERS)
    t = engine.ledger.totals()
    assert sum(levers.values()) == t.total_savings_usd == Decimal("0.0035")
    assert t.cost_usd == 0
    assert t.cache_hit_rate == 1.0


def test_escalations_are_not_requests(engine: CostEngine) -> None:
    engine.record_call(model="gpt-4o-mini", usage=MINI, outcome="escalated", tier="small")
    engine.record_call(model="gpt-4o", usage=MINI, tier="frontier")
    t = engine.ledger.totals()
    assert (t.calls, t.requests, t.escalations) == (2, 1, 1)
    # The wasted cheap attempt is paid for out of routing savings.
    assert t.cost_usd == Decimal("0.00371")
    assert t.baseline_cost_usd == Decimal("0.0035")
    assert engine.ledger.savings_by_lever()["routing"] == Decimal("-0.00021")


def test_unknown_model_is_counted_but_not_priced(engine: CostEngine) -> None:
    with pytest.warns(UserWarning, match="no price for model 'my-finetune'"):
        rec = engine.record_call(model="my-finetune", usage=MINI)
    assert rec.cost_usd is None
    t = engine.ledger.totals()
    # no call could be priced: the money is unknown, never $0
    assert (t.calls, t.unpriced_calls, t.cost_usd) == (1, 1, None)
    # an unpriced call must not inflate savings with its baseline
    assert t.baseline_cost_usd is None
    assert t.total_savings_usd is None and t.savings_fraction is None


def test_thread_safety_totals_exact(engine: CostEngine) -> None:
    n_threads, per_thread = 16, 500

    def work(i: int) -> None:
        for _ in range(per_thread):
            engine.record_call(model="gpt-4o-mini", usage=MINI, tenant=f"t{i % 4}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t = engine.ledger.totals()
    assert t.calls == n_threads * per_thread
    assert t.cost_usd == Decimal("0.00021") * n_threads * per_thread
    by_tenant = engine.ledger.totals_by("tenant")
    assert {k: v.calls for k, v in by_tenant.items()} == {f"t{i}": 2000 for i in range(4)}
    assert len(engine.ledger.records()) == n_threads * per_thread


def test_retention_bound_keeps_totals_exact(clock) -> None:
    engine = CostEngine(ledger=CostLedger(max_records=10, clock=clock), clock=clock)
    for _ in range(25):
        engine.record_call(model="gpt-4o-mini", usage=MINI)
    assert len(engine.ledger.records()) == 10
    assert engine.ledger.totals().calls == 25
    assert engine.ledger.totals().cost_usd == Decimal("0.00021") * 25


def test_an_export_past_max_records_warns_how_many_calls_it_leaves_out(clock, tmp_path) -> None:
    # It used to export the 10 held records of 25 calls without a word: a report
    # built from the file showed 40% of the spend.
    engine = CostEngine(ledger=CostLedger(max_records=10, clock=clock), clock=clock)
    ids = [engine.record_call(model="gpt-4o-mini", usage=MINI).call_id for _ in range(25)]
    expected = (
        r"CostLedger\.to_jsonl exports 10 of the 25 calls this ledger counted: the records "
        r"of 15 older calls are not held in memory \(max_records=10 keeps only the latest "
        r"ones\).*To export every call, create the ledger with max_records=None"
    )
    with pytest.warns(UserWarning, match=expected) as caught:
        path = engine.ledger.to_jsonl(tmp_path / "ledger.jsonl")
    assert caught[0].filename == __file__  # points at the caller's line
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["call_id"] for line in lines] == ids[-10:]  # the latest, as documented
    with pytest.warns(UserWarning, match=r"CostLedger\.to_records exports 10 of the 25"):
        assert len(engine.ledger.to_records()) == 10
    with pytest.warns(UserWarning, match=r"CostLedger\.to_csv exports 10 of the 25"):
        assert len(engine.ledger.to_csv().splitlines()) == 11  # header + 10 rows


def test_an_export_of_every_call_does_not_warn(engine: CostEngine, tmp_path) -> None:
    for _ in range(3):
        engine.record_call(model="gpt-4o-mini", usage=MINI)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.ledger.to_jsonl(tmp_path / "ledger.jsonl")
        assert len(engine.ledger.to_records()) == 3


def test_an_export_of_a_shared_ledger_names_from_redis_records() -> None:
    ledger = CostLedger()
    held = CallRecord.from_dict(CostEngine().record_call(model="gpt-4o-mini", usage=MINI).to_dict())
    combo = ("gpt-4o-mini", None, None, None, "model", "sync")
    ledger.load_shared({combo: {"calls": 5, "cost": 1}}, [held])  # as from_redis reads
    with pytest.warns(UserWarning, match=r"exports 1 of the 5 calls.*larger records="):
        assert len(ledger.to_records()) == 1


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="max_records"):
        CostLedger(max_records=0)
    with pytest.raises(ConfigurationError, match="dimension"):
        CostLedger().totals_by("colour")  # type: ignore[arg-type]


def test_jsonl_round_trip_preserves_money(engine: CostEngine, tmp_path) -> None:
    engine.record_call(
        model="claude-sonnet-4-5",
        usage=Usage(
            input_tokens=5000,
            output_tokens=300,
            cache_read_tokens=3000,
            cache_write_5m_tokens=1000,
            cache_write_1h_tokens=0,
        ),
        tenant="acme",
        tier="mid",
        removed_input_tokens={"compression": 1200},
    )
    engine.record_call(model="gpt-4o-mini", usage=MINI, outcome="cache_exact")
    path = engine.ledger.to_jsonl(tmp_path / "ledger.jsonl")
    back = CostLedger.from_jsonl(path)
    assert [r.to_dict() for r in back.records()] == engine.ledger.to_records()
    assert back.totals().to_dict() == engine.ledger.totals().to_dict()
    first = json.loads(path.read_text().splitlines()[0])
    assert isinstance(first["cost_usd"], str)  # money never goes through float


def test_from_jsonl_reports_the_bad_line(tmp_path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"call_id": "x"}\n')
    with pytest.raises(ConfigurationError, match=r"bad.jsonl:1"):
        CostLedger.from_jsonl(p)
    with pytest.raises(ConfigurationError, match="does not exist"):
        CostLedger.from_jsonl(tmp_path / "missing.jsonl")


def test_csv_export_has_a_row_per_call(engine: CostEngine, tmp_path) -> None:
    engine.record_call(model="gpt-4o-mini", usage=MINI, tier="small")
    engine.record_call(model="gpt-4o", usage=MINI, tier="frontier")
    text = engine.ledger.to_csv(tmp_path / "l.csv")
    lines = text.strip().splitlines()
    assert len(lines) == 3
    assert "savings_routing_usd" in lines[0]
    assert (tmp_path / "l.csv").read_bytes().decode() == text


def test_summary_table_mentions_levers_and_tiers(engine: CostEngine) -> None:
    engine.record_call(model="gpt-4o-mini", usage=MINI, tier="small")
    text = engine.ledger.summary_table()
    assert "Savings by lever" in text
    assert "routing" in text and "small" in text
    assert "$0.003290" in text  # 0.0035 - 0.00021


def test_listener_errors_do_not_propagate(engine: CostEngine) -> None:
    seen: list[CallRecord] = []
    engine.ledger.subscribe(seen.append)
    engine.ledger.subscribe(lambda r: 1 / 0)
    engine.record_call(model="gpt-4o-mini", usage=MINI)
    assert len(seen) == 1


# --------------------------------------------------------------------------- deferred folding


def _one_at_a_time(records: list[CallRecord]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Totals and per-tenant totals of a ledger that folds after every call."""
    ledger = CostLedger()
    for r in records:
        ledger.add(r)
        ledger.totals()  # a read folds what is pending
    return ledger.totals().to_dict(), {
        str(k): v.to_dict() for k, v in ledger.totals_by("tenant").items()
    }


def test_folding_in_batches_gives_the_same_totals_as_one_call_at_a_time(
    engine: CostEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import costopt_core.ledger as ledger_module

    monkeypatch.setattr(ledger_module, "_FOLD_EVERY", 7)
    with pytest.warns(UserWarning):
        for i in range(40):
            engine.record_call(
                model=("gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "no-such-model")[i % 4],
                usage=Usage(input_tokens=1000 + i, output_tokens=i, cache_read_tokens=i),
                tenant=("a", "b", None)[i % 3],
                tier=("small", "frontier")[i % 2],
                outcome=("model", "model", "cache_exact", "escalated", "cache_semantic")[i % 5],
            )
    records = engine.ledger.records()
    assert len(engine.ledger) == 40  # calls folded and pending alike
    totals, by_tenant = _one_at_a_time(records)
    assert engine.ledger.totals().to_dict() == totals
    assert {str(k): v.to_dict() for k, v in engine.ledger.totals_by("tenant").items()} == by_tenant
    assert engine.ledger.totals().calls == 40
    unpriced = sum(r.cost_usd is None for r in records)
    assert unpriced and engine.ledger.totals().unpriced_calls == unpriced
    # cache hits consumed no tokens
    assert engine.ledger.totals().tokens["output_tokens"] == sum(
        r.usage.output_tokens or 0 for r in records if r.outcome in ("model", "escalated")
    )


def test_spend_windows_across_days_in_one_fold(clock) -> None:
    from datetime import timedelta

    ledger = CostLedger(clock=clock)
    engine = CostEngine(ledger=ledger, clock=clock)
    day_one = clock.now
    engine.record_call(model="gpt-4o", usage=MINI, tenant="a")  # $0.0035
    clock.now = day_one + timedelta(days=1)
    engine.record_call(model="gpt-4o", usage=MINI, tenant="a")
    engine.record_call(model="gpt-4o", usage=MINI, tenant="b")
    clock.now = day_one  # a late record of the first day, after the window moved on
    engine.record_call(model="gpt-4o", usage=MINI, tenant="a")
    clock.now = day_one + timedelta(days=1)
    # nothing was read in between, so all four are folded together
    assert ledger.spent("a", "day") == Decimal("0.0035")
    assert ledger.spent(None, "day") == Decimal("0.0070")
    assert ledger.spent("a", "total") == Decimal("0.0035") * 3
    assert ledger.spent(None, "total") == Decimal("0.0035") * 4


def test_listeners_see_each_record_when_it_is_added(engine: CostEngine) -> None:
    seen: list[CallRecord] = []
    engine.ledger.subscribe(seen.append)
    for i in range(3):
        rec = engine.record_call(model="gpt-4o-mini", usage=MINI, call_id=f"c{i}")
        assert seen[-1] is rec  # not held back until the next read
    engine.record_call(model="gpt-4o-mini", usage=MINI, call_id="c0")
    assert len(seen) == 3  # a repeated call id is neither recorded nor announced


def test_has_budgets(engine: CostEngine) -> None:
    from costopt_core import Budget

    assert not engine.ledger.has_budgets
    engine.ledger.add_budget(Budget(limit_usd=Decimal(1)))
    assert engine.ledger.has_budgets


def test_record_init_takes_the_dataclass_fields_in_order() -> None:
    import dataclasses
    import inspect
    from datetime import UTC, datetime

    names = [f.name for f in dataclasses.fields(CallRecord)]
    assert list(inspect.signature(CallRecord).parameters) == names
    rec = CallRecord("x", datetime(2026, 1, 1, tzinfo=UTC), "m", MINI, None, None, {})
    assert rec.tags == {} and rec.mode == "sync" and rec.outcome == "model"
    assert rec == dataclasses.replace(rec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.model = "other"  # type: ignore[misc]


# -- calls recorded now, their records built at the next read ------------------------


def _deferred_and_eager(clock: Any = None) -> tuple[CostEngine, CostEngine]:
    import uuid

    kw: dict[str, Any] = {} if clock is None else {"clock": clock}
    lazy, eager = CostEngine(**kw), CostEngine(**kw)
    calls = [
        ("gpt-4o-mini", MINI, "model", "small", "acme"),
        (
            "gpt-4o",
            Usage(input_tokens=2000, output_tokens=50, cache_read_tokens=1024),
            "model",
            None,
            None,
        ),
        ("claude-sonnet-4-5", MINI, "cache_semantic", "mid", "acme"),
        ("acme-llm-7b", MINI, "model", None, "beta"),  # unknown: cost None
    ]
    for model, usage, outcome, tier, tenant in calls:
        run = uuid.uuid4()
        kwargs: dict[str, Any] = dict(
            model=model, usage=usage, tier=tier, tenant=tenant, outcome=outcome,
            framework="langchain", latency_ms=1.5,
        )  # fmt: skip
        with pytest.warns(UserWarning) if model.startswith("acme") else _nothing():
            lazy.record_call_deferred(call_id=run, **kwargs)
        with pytest.warns(UserWarning) if model.startswith("acme") else _nothing():
            eager.record_call(call_id=str(run), **kwargs)
    return lazy, eager


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


def test_deferred_calls_build_the_records_record_call_builds() -> None:
    from datetime import UTC, datetime

    frozen = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    lazy, eager = _deferred_and_eager(lambda: frozen)
    assert [r.to_dict() for r in lazy.ledger.records()] == [
        r.to_dict() for r in eager.ledger.records()
    ]
    assert lazy.ledger.totals() == eager.ledger.totals()
    assert lazy.ledger.totals_by("tenant") == eager.ledger.totals_by("tenant")
    assert lazy.ledger.spent("acme", "day") == eager.ledger.spent("acme", "day") > 0


def test_deferred_calls_on_the_default_clock_keep_their_utc_time_and_day() -> None:
    from datetime import UTC, datetime

    before = datetime.now(UTC)
    lazy, eager = _deferred_and_eager()
    after = datetime.now(UTC)
    recs = lazy.ledger.records()
    assert all(before <= r.timestamp <= after and r.timestamp.tzinfo is UTC for r in recs)
    # Budget windows are keyed by the UTC day taken from the raw time.
    assert lazy.ledger.spent(None, "day") == eager.ledger.spent(None, "day")
    assert lazy.ledger.spent("beta", "month") == 0  # the unknown model's call costs None


def test_utc_day_of_posix_seconds_matches_datetime() -> None:
    from datetime import UTC, datetime

    from costopt_core.ledger import _utc_day

    for ts in (0.0, 86_399.999, 86_400.0, 1_790_000_000.25, -1.5):
        assert _utc_day(ts) == datetime.fromtimestamp(ts, UTC).date()


def test_a_run_reported_twice_is_counted_once_when_deferred() -> None:
    import uuid

    engine = CostEngine()
    run = uuid.uuid4()
    for _ in range(2):  # two handlers on one engine see the same LLM run
        engine.record_call_deferred(model="gpt-4o-mini", usage=MINI, call_id=run)
    assert len(engine.ledger) == 1
    [rec] = engine.ledger.records()
    assert rec.call_id == str(run)


def test_records_are_built_once_and_kept() -> None:
    import uuid

    engine = CostEngine()
    for _ in range(3):
        engine.record_call_deferred(model="gpt-4o-mini", usage=MINI, call_id=uuid.uuid4())
    first = engine.ledger.records()
    assert all(isinstance(r, CallRecord) for r in first)
    assert [id(r) for r in engine.ledger.records()] == [id(r) for r in first]


def test_a_listener_sees_a_deferred_call_as_it_is_made() -> None:
    import uuid

    engine = CostEngine()
    seen: list[CallRecord] = []
    engine.ledger.subscribe(seen.append)
    run = uuid.uuid4()
    priced = engine.record_call_deferred(model="gpt-4o-mini", usage=MINI, call_id=run)
    assert [r.call_id for r in seen] == [str(run)]
    assert seen[0].cost_usd == priced.cost_usd == Decimal("0.00021")


def test_deferred_calls_from_many_threads_total_exactly() -> None:
    import uuid

    engine = CostEngine()
    n_threads, per_thread = 8, 700  # past the inbox's drain size, so drains race appends

    def work() -> None:
        for _ in range(per_thread):
            engine.record_call_deferred(model="gpt-4o-mini", usage=MINI, call_id=uuid.uuid4())
            if _ % 97 == 0:
                engine.ledger.totals()  # reads (and drains) while others append

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t = engine.ledger.totals()
    assert t.calls == len(engine.ledger) == n_threads * per_thread
    assert t.cost_usd == Decimal("0.00021") * n_threads * per_thread
    assert len(engine.ledger.records()) == n_threads * per_thread


def test_records_read_between_calls_build_only_the_new_ones() -> None:
    import uuid

    engine = CostEngine()
    engine.record_call_deferred(model="gpt-4o-mini", usage=MINI, call_id=uuid.uuid4())
    first = engine.ledger.records()
    engine.record_call(model="gpt-4o", usage=MINI)  # an eager record between two calls
    runs = [uuid.uuid4() for _ in range(2)]
    for run in runs:
        engine.record_call_deferred(model="gpt-4o-mini", usage=MINI, call_id=run)
    again = engine.ledger.records()
    assert again[0] is first[0]
    assert [r.model for r in again] == ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]
    assert [r.call_id for r in again[2:]] == [str(r) for r in runs]


def test_a_run_is_counted_once_across_a_listener_being_subscribed() -> None:
    import uuid

    engine = CostEngine()
    run = uuid.uuid4()
    engine.record_call_deferred(model="gpt-4o-mini", usage=MINI, call_id=run)
    seen: list[CallRecord] = []
    engine.ledger.subscribe(seen.append)
    engine.record_call_deferred(model="gpt-4o-mini", usage=MINI, call_id=run)  # a second handler
    assert len(engine.ledger) == 1 and seen == []


def test_a_run_reported_by_id_and_by_its_string_is_counted_once() -> None:
    import uuid

    engine = CostEngine()
    run = uuid.uuid4()
    engine.record_call_deferred(model="gpt-4o-mini", usage=MINI, call_id=run)
    engine.record_call(model="gpt-4o-mini", usage=MINI, call_id=str(run))
    [rec] = engine.ledger.records()
    assert engine.ledger.add(rec) is False  # a record read back is the same call
    assert len(engine.ledger) == 1


def test_a_call_recorded_while_a_listener_subscribes_reaches_it() -> None:
    import uuid

    engine = CostEngine()
    ledger = engine.ledger
    seen: list[CallRecord] = []
    subscribed = threading.Event()
    enqueue = ledger._enqueue

    def enqueue_after_subscribe(item: Any) -> None:
        # The caller found no listener; one is subscribed before its call is queued.
        threading.Thread(target=lambda: (ledger.subscribe(seen.append), subscribed.set())).start()
        subscribed.wait()
        enqueue(item)

    ledger._enqueue = enqueue_after_subscribe  # type: ignore[method-assign]
    run = uuid.uuid4()
    engine.record_call_deferred(model="gpt-4o-mini", usage=MINI, call_id=run)
    ledger._enqueue = enqueue  # type: ignore[method-assign]
    assert [r.call_id for r in seen] == [str(run)]
    assert len(ledger) == 1


def test_a_call_half_a_microsecond_before_midnight_is_booked_on_its_records_day() -> None:
    from datetime import UTC, datetime

    from costopt_core.ledger import _utc_day

    feb_1 = datetime(2026, 2, 1, tzinfo=UTC).timestamp()
    for ts in (feb_1 - 2e-7, feb_1 - 1e-3, feb_1):
        assert _utc_day(ts) == datetime.fromtimestamp(ts, UTC).date()


def test_a_group_of_unpriced_calls_only_costs_unknown_not_zero(engine: CostEngine) -> None:
    with pytest.warns(UserWarning, match="no price"):
        engine.record_call(model="my-finetune-v1", usage=MINI, tenant="acme")
    engine.record_call(model="gpt-4o-mini", usage=MINI, tenant="globex")
    by_tenant = engine.ledger.totals_by("tenant")
    acme, globex = by_tenant["acme"], by_tenant["globex"]
    assert (acme.cost_usd, acme.baseline_cost_usd, acme.total_savings_usd) == (None, None, None)
    assert acme.savings_fraction is None and acme.priced_calls == 0
    assert acme.to_dict()["cost_usd"] is None and acme.to_dict()["savings_usd"] is None
    assert globex.cost_usd == Decimal("0.00021") and globex.unpriced_calls == 0
    # mixed: the money sums the priced calls and says how many are left out
    total = engine.ledger.totals()
    assert total.cost_usd == Decimal("0.00021") and total.unpriced_calls == 1
    assert total.priced_calls == 1
    by_model = engine.ledger.totals_by("model")
    assert by_model["my-finetune-v1"].cost_usd is None
    # an unpriced bucket folded after a priced one (or before) leaves the sum alone
    assert CostLedger().totals().cost_usd == 0  # no calls: nothing spent


def test_report_tables_show_unknown_and_count_unpriced_calls(engine: CostEngine) -> None:
    from costopt_core.report import format_breakdown

    with pytest.warns(UserWarning, match="no price"):
        engine.record_call(model="my-finetune-v1", usage=MINI, tenant="acme")
        engine.record_call(model="my-finetune-v1", usage=MINI, tenant="globex")
    engine.record_call(model="gpt-4o-mini", usage=MINI, tenant="globex")
    table = format_breakdown(engine.ledger, "tenant")
    head, _, globex, acme = table.splitlines()[1:]
    assert head.split()[-1] == "unpriced"
    # the dearest priced group first, the unknown one last, never "$0.000000"
    assert globex.split() == ["globex", "2", "$0.000210", "$0.003500", "$0.003290", "94.0%", "1"]
    assert acme.split() == ["acme", "1", "unknown", "unknown", "unknown", "-", "1"]
    summary = engine.ledger.summary_table()
    assert "2 calls on unpriced models are not in the money" in summary
    # nothing priced at all: every sum and saving reads "unknown", none "$0"
    unknown = CostEngine(clock=engine.clock)
    with pytest.warns(UserWarning, match="no price"):
        unknown.record_call(model="my-finetune-v1", usage=MINI, tenant="acme")
    text = unknown.ledger.summary_table()
    assert "$0" not in text and "1 call on unpriced models is not in the money" in text
    assert "$0" not in format_breakdown(unknown.ledger, "tenant")
    # a fully priced ledger keeps its table without the column
    priced = CostEngine(clock=engine.clock)
    priced.record_call(model="gpt-4o-mini", usage=MINI, tenant="acme")
    assert "unpriced" not in format_breakdown(priced.ledger, "tenant")


def test_cli_report_by_tenant_shows_an_unpriced_tenant_as_unknown(
    engine: CostEngine, tmp_path
) -> None:
    from typer.testing import CliRunner

    from costopt_core.cli import app

    with pytest.warns(UserWarning, match="no price"):
        engine.record_call(model="my-finetune-v1", usage=MINI, tenant="acme")
    engine.record_call(model="gpt-4o-mini", usage=MINI, tenant="globex")
    path = engine.ledger.to_jsonl(tmp_path / "ledger.jsonl")
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    res = runner.invoke(app, ["report", str(path), "--by", "tenant"])
    assert res.exit_code == 0, res.output
    by_tenant = res.output.split("By tenant")[1].splitlines()
    [acme] = [line for line in by_tenant if line.startswith("acme")]
    assert acme.split() == ["acme", "1", "unknown", "unknown", "unknown", "-", "1"]


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("-0.014088", "-$0.014088"),
        ("-1234.567", "-$1,234.57"),
        ("-2.5", "-$2.5000"),
        ("-0.0000001", "$0.000000"),  # rounds to zero: no negative zero
        ("0", "$0.000000"),
        ("0.25", "$0.250000"),
        ("150", "$150.00"),
    ],
)
def test_money_puts_the_sign_before_the_dollar_and_never_shows_negative_zero(
    amount: str, shown: str
) -> None:
    from costopt_core.report import _pct, usd

    assert usd(Decimal(amount)) == shown
    assert _pct(-0.0001) == "0.0%"
    assert _pct(-0.2) == "-20.0%"
