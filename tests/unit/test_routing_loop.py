"""The engine's shared call-loop pieces: may_escalate, costliest_estimate, drive/adrive."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator
from decimal import Decimal
from typing import Any

import pytest

from costopt_core.routing.router import (
    Router,
    RouterConfig,
    RouteRun,
    adrive,
    costliest_estimate,
    drive,
)
from costopt_core.routing.tiers import Tier, Tiers
from costopt_core.routing.validators import Answer, ValidatorConfig

TIERS = Tiers([Tier("cheap", ("a", "a2")), Tier("mid", ("b",)), Tier("frontier", ("c",))])
NO_CHECKS = ValidatorConfig(
    empty=False,
    refusal=False,
    tool_calls=False,
    structured=False,
    truncated=False,
    min_mean_logprob=None,
)


def _run(tier_index: int = 0, **config: Any) -> RouteRun:
    router = Router(TIERS, config=RouterConfig(**config))
    decision = router.route([])
    run = router.start(decision)
    run.tier_index = tier_index
    assert run.next() is not None
    return run


def test_may_escalate_below_the_last_tier_with_escalations_left() -> None:
    assert _run().may_escalate()


def test_may_escalate_is_false_on_the_last_tier() -> None:
    assert not _run(tier_index=2).may_escalate()


def test_may_escalate_is_false_without_escalations_left_or_validation() -> None:
    assert not _run(max_escalations=0).may_escalate()
    assert not _run(validate_answers=False).may_escalate()


def test_may_escalate_is_false_when_no_validator_is_on() -> None:
    router = Router(TIERS, validators=NO_CHECKS)
    run = router.start(router.route([]))
    run.tier_index = 0
    run.next()
    assert not run.may_escalate()
    router = Router(TIERS, validators=dataclasses.replace(NO_CHECKS, empty=True))
    run = router.start(router.route([]))
    run.tier_index = 0
    run.next()
    assert run.may_escalate()


def test_may_escalate_agrees_with_answered_after_an_escalation() -> None:
    run = _run(max_escalations=1)
    assert run.answered(Answer(text="")) == "empty"  # escalated once: none left
    assert run.next() is not None
    assert not run.may_escalate()
    assert run.answered(Answer(text="")) is None  # kept: may_escalate said so


def test_costliest_estimate_is_the_dearest_priced_one() -> None:
    log = logging.getLogger("test")
    assert costliest_estimate([Decimal("1"), None, Decimal("3")], log) == Decimal("3")
    assert costliest_estimate([None, None], log) is None
    assert costliest_estimate([], log) is None


def test_costliest_estimate_logs_an_error_and_gives_none(caplog: pytest.LogCaptureFixture) -> None:
    def failing() -> Generator[Decimal, None, None]:
        yield Decimal("1")
        raise ValueError("no tokenizer")

    log = logging.getLogger("costopt.test")
    with caplog.at_level(logging.ERROR, logger="costopt.test"):
        assert costliest_estimate(failing(), log) is None
    assert [r.name for r in caplog.records] == ["costopt.test"]
    assert "could not estimate" in caplog.records[0].getMessage()


def _loop(log: list[str]) -> Generator[str, Any, str]:
    """Asks "a", then "b" when "a" fails; returns what it was sent."""
    for name in ("a", "b"):
        try:
            got = yield name
        except Exception as exc:
            log.append(f"{name} failed: {exc}")
            continue
        return f"{name}={got}"
    raise LookupError("nothing answered")


def _call(name: str) -> str:
    if name == "a":
        raise RuntimeError("down")
    return name.upper()


async def _acall(name: str) -> str:
    return _call(name)


@pytest.mark.parametrize("sync", [True, False])
async def test_drivers_throw_errors_in_and_return_the_loops_value(sync: bool) -> None:
    log: list[str] = []
    out = drive(_loop(log), _call) if sync else await adrive(_loop(log), _acall)
    assert out == "b=B"
    assert log == ["a failed: down"]


@pytest.mark.parametrize("sync", [True, False])
async def test_drivers_raise_what_the_loop_raises(sync: bool) -> None:
    def fail(name: str) -> str:
        raise RuntimeError(name)

    async def afail(name: str) -> str:
        raise RuntimeError(name)

    with pytest.raises(LookupError):
        drive(_loop([]), fail) if sync else await adrive(_loop([]), afail)


@pytest.mark.parametrize("sync", [True, False])
async def test_drivers_let_the_loop_see_a_base_exception(sync: bool) -> None:
    seen: list[str] = []

    def loop() -> Generator[str, Any, None]:
        try:
            yield "x"
        except BaseException:
            seen.append("cleaned up")
            raise

    def interrupt(name: str) -> None:
        raise KeyboardInterrupt

    async def ainterrupt(name: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drive(loop(), interrupt) if sync else await adrive(loop(), ainterrupt)
    assert seen == ["cleaned up"]
