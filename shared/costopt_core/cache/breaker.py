"""A circuit breaker, so a dead backend is not hammered on every request.

After ``failures`` consecutive errors the breaker opens: calls skip the
backend (the cache behaves as a miss) for ``reset_s`` seconds, then one trial
call is let through (half-open); success closes it, failure opens it again.
State changes are pure functions of the clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker"]

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self, failures: int = 5, reset_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self._errors = 0
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()
        self.opened_count = 0

    @property
    def state(self) -> State:
        with self._lock:
            return self._state()

    def _state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at >= self.reset_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether the next call may go to the backend."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial:
                self._trial = True  # exactly one trial call at a time
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._errors = 0
            self._opened_at = None
            self._trial = False

    def abandon(self) -> None:
        """An allowed call ended without an outcome (cancelled): free the trial slot."""
        with self._lock:
            self._trial = False

    def failure(self) -> None:
        with self._lock:
            self._errors += 1
            if self._trial or self._errors >= self.failures:
                if self._opened_at is None or self._trial:
                    self.opened_count += 1
                self._opened_at = self.clock()
                self._trial = False
