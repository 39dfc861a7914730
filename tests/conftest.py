"""Shared fixtures: engines with a fixed clock, so ledgers are reproducible."""

from __future__ import annotations

from datetime import UTC, datetime

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
