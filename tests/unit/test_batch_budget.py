"""Budgets of batch jobs: checked at batch rates before a flush submits, held until collected."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from costopt_core import Budget, CostEngine, Message
from costopt_core.batch import BatchJob, BatchLimits, BatchRequest
from costopt_core.budgets import BudgetDecision, evaluate_budget
from costopt_core.errors import BatchError, BudgetExceededError
from costopt_core.testing import FakeEmbedder
from tests.unit.test_batch_job import FakeRemote

MODEL = "claude-sonnet-4-5"  # $3 / $15 per Mtok real time, $1.50 / $7.50 in a batch
MTOK = Decimal(1_000_000)


def remote(*, hold: bool = False) -> FakeRemote:
    """A provider batch API in memory, two requests a batch; batches end on the first
    poll unless ``hold`` (then ``release()`` ends them)."""
    return FakeRemote(limits=BatchLimits(max_requests=2, max_bytes=10_000_000), hold=hold)


class Store:
    """A budget store that holds nothing: it logs what the ledger reserves and releases."""

    def __init__(self) -> None:
        self.reserved: list[tuple[str | None, Decimal, str | None]] = []
        self.released: list[tuple[str | None, str]] = []

    def reserve(
        self,
        budgets: Sequence[Budget],
        tenant: str | None,
        estimate: Decimal,
        call_id: str | None,
        now: datetime,
        *,
        hold_ttl_s: float | None = None,
    ) -> list[BudgetDecision]:
        decisions = [evaluate_budget(b, Decimal(0), estimate) for b in budgets]
        if all(d.action != "block" for d in decisions):
            self.reserved.append((tenant, estimate, call_id))
        return decisions

    def release(
        self, budgets: Sequence[Budget], tenant: str | None, call_id: str, now: datetime
    ) -> None:
        self.released.append((tenant, call_id))

    def spent(self, tenant: str | None, period: str, now: datetime) -> Decimal:
        return Decimal(0)


def requests(n: int, *, max_tokens: int | None = 1000, tenants: Sequence[str | None] = ()) -> list:
    params = {} if max_tokens is None else {"max_tokens": max_tokens}
    return [
        BatchRequest(
            id=f"r{i}",
            model=MODEL,
            messages=(Message(role="user", content=f"question number {i}"),),
            params=params,
            tenant=tenants[i] if tenants else None,
        )
        for i in range(n)
    ]


def batch_estimate(engine: CostEngine, reqs: Sequence[BatchRequest]) -> Decimal:
    """What the requests may cost at batch rates: every allowed answer token, and every
    prompt token at the dearest input rate, a 1-hour cache write ($6 per Mtok, $3 in a
    batch), counted with cl100k_base and so padded by a quarter for Claude."""
    total = Decimal(0)
    for r in reqs:
        tokens = engine.tokens.count_messages(r.messages, r.model).tokens
        padded = math.ceil(tokens * 5 / 4)
        total += (padded * Decimal("3.00") + r.params.get("max_tokens", 0) * Decimal("7.50")) / MTOK
    return total


def engine_with(*budgets: Budget) -> CostEngine:
    return CostEngine(embedder=FakeEmbedder(), budgets=budgets)


def test_a_flush_over_a_block_budget_is_refused_before_anything_is_submitted() -> None:
    engine = engine_with(Budget(limit_usd=Decimal("0.01"), period="day", policy="block"))
    api = remote()
    job = BatchJob(api, ":memory:", name="j", engine=engine)
    reqs = requests(4)
    expected = batch_estimate(engine, reqs)
    assert expected > Decimal("0.03")  # 4 x 1000 answer tokens at $7.50 per Mtok
    job.enqueue(reqs)
    with pytest.raises(BudgetExceededError) as info:
        job.flush()
    assert info.value.estimate_usd == expected
    assert api.submitted == []
    assert job.status().queued == 4  # kept, as after a provider's refusal
    assert engine.ledger.totals().calls == 0
    with pytest.raises(BudgetExceededError):
        job.wait()
    assert api.submitted == []


def test_the_estimate_is_at_batch_rates_so_a_batch_under_the_limit_runs() -> None:
    engine = engine_with()
    reqs = requests(4)
    estimate = batch_estimate(engine, reqs)
    # Between the batch estimate and the sync one (twice it): only batch rates let it run.
    limit = estimate * Decimal("1.5")
    engine.ledger.add_budget(Budget(limit_usd=limit, period="day", policy="block"))
    api = remote()
    job = BatchJob(api, ":memory:", name="j", engine=engine)
    results = job.run(reqs)
    assert [r.status for r in results] == ["succeeded"] * 4
    assert api.submitted == [["r0", "r1"], ["r2", "r3"]]
    assert engine.ledger.totals().calls == 4


def test_one_check_per_tenant_with_its_requests_summed(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_with(Budget(limit_usd=Decimal(100), period="day", policy="block"))
    calls: list[tuple[str | None, Decimal | None, str | None]] = []

    def spy(
        tenant: str | None = None,
        estimate_usd: Decimal | None = None,
        *,
        call_id=None,
        hold_ttl_s=None,
    ):
        calls.append((tenant, estimate_usd, call_id))
        return []

    monkeypatch.setattr(engine, "check_budget", spy)
    reqs = requests(3, tenants=["b", "a", "b"]) + requests(1, max_tokens=None)[:1]
    reqs[3] = BatchRequest(id="r3", model=MODEL, messages=reqs[3].messages)
    job = BatchJob(remote(), ":memory:", name="j", engine=engine)
    job.enqueue(reqs)
    job.flush()
    assert [(t, e) for t, e, _ in calls] == [
        (None, batch_estimate(engine, [reqs[3]])),
        ("a", batch_estimate(engine, [reqs[1]])),
        ("b", batch_estimate(engine, [reqs[0], reqs[2]])),
    ]
    ids = [c for _, _, c in calls]
    assert all(c is not None and c.startswith("batch:j:hold:") for c in ids)
    assert len(set(ids)) == 3


def test_the_hold_lasts_until_the_results_are_recorded() -> None:
    engine = engine_with(Budget(limit_usd=Decimal(1), period="day", policy="block"))
    store = Store()
    engine.ledger.budget_store = store
    api = remote(hold=True)
    job = BatchJob(api, ":memory:", name="j", engine=engine)
    reqs = requests(3)
    job.enqueue(reqs)
    job.flush()
    assert len(store.reserved) == 1
    tenant, estimate, hold_id = store.reserved[0]
    assert (tenant, estimate) == (None, batch_estimate(engine, reqs))
    job.poll()
    assert store.released == []  # still running: still held
    api.release()
    job.poll()
    assert store.released == [(None, hold_id)]
    assert engine.ledger.totals().calls == 3


def test_a_reattached_job_object_settles_the_hold(tmp_path: Any) -> None:
    engine = engine_with(Budget(limit_usd=Decimal(1), period="day", policy="block"))
    store = Store()
    engine.ledger.budget_store = store
    api = remote(hold=True)
    path = tmp_path / "q.db"
    BatchJob(api, path, name="j", engine=engine).enqueue(requests(2))
    BatchJob(api, path, name="j", engine=engine).flush()
    api.release()
    BatchJob(api, path, name="j", engine=engine).wait()
    assert store.released == [(None, store.reserved[0][2])]


def test_a_failed_submit_releases_the_hold() -> None:
    engine = engine_with(Budget(limit_usd=Decimal(1), period="day", policy="block"))
    store = Store()
    engine.ledger.budget_store = store
    api = remote()
    api.fail_submit = BatchError("provider down")
    job = BatchJob(api, ":memory:", name="j", engine=engine)
    job.enqueue(requests(2))
    with pytest.raises(BatchError, match="provider down"):
        job.flush()
    assert store.released == [(None, store.reserved[0][2])]


def test_a_refusal_for_one_tenant_releases_the_others_holds() -> None:
    engine = engine_with(
        Budget(limit_usd=Decimal(1), period="day", policy="block", tenant="a"),
        Budget(limit_usd=Decimal("0.001"), period="day", policy="block", tenant="b"),
    )
    store = Store()
    engine.ledger.budget_store = store
    api = remote()
    job = BatchJob(api, ":memory:", name="j", engine=engine)
    job.enqueue(requests(2, tenants=["a", "b"]))
    with pytest.raises(BudgetExceededError):
        job.flush()
    assert [t for t, _, _ in store.reserved] == ["a"]
    assert store.released == [("a", store.reserved[0][2])]
    assert api.submitted == []


def test_async_flush_is_refused_too() -> None:
    engine = engine_with(Budget(limit_usd=Decimal("0.01"), period="day", policy="block"))
    api = remote()
    job = BatchJob(api, ":memory:", name="j", engine=engine)
    reqs = requests(4)

    async def go() -> None:
        await job.aenqueue(reqs)
        await job.aflush()

    with pytest.raises(BudgetExceededError) as info:
        asyncio.run(go())
    assert info.value.estimate_usd == batch_estimate(engine, reqs)
    assert api.submitted == []


def test_no_budget_no_check(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_with()
    monkeypatch.setattr(engine, "check_budget", lambda *a, **k: pytest.fail("checked"))
    job = BatchJob(remote(), ":memory:", name="j", engine=engine)
    assert len(job.run(requests(2))) == 2


def test_a_requests_tools_are_held_for_as_a_synchronous_calls_are() -> None:
    from costopt_core.batch.budget import request_estimate

    engine = engine_with()
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    [plain] = requests(1)
    with_tools = BatchRequest(
        id="t", model=MODEL, messages=plain.messages, params={**plain.params, "tools": [tool] * 20}
    )
    bare = request_estimate(engine, plain, "batch")
    assert bare == batch_estimate(engine, [plain])
    held = request_estimate(engine, with_tools, "batch")
    assert held == bare + engine.tool_tokens([tool] * 20, MODEL) * Decimal("3.00") / MTOK
    # The same bound as a synchronous call's check, at batch rates.
    sync = engine.estimate(MODEL, plain.messages, max_output_tokens=1000, tools=[tool] * 20)
    assert held is not None and sync is not None and held * 2 == sync
