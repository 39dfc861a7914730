"""Which answers a costopt cache served, told to the cost handlers and not to the caller.

A cost handler must know that an answer came from the cache: it is priced as a
hit, not as a call. A flag in the answer's own metadata would tell every caller
whether someone else asked the same question first (a side channel across
tenants). Instead the cache adapters note here each answer object they serve
(for a replayed stream: its chunks), and the handlers take the
note when they record the call. Notes hold their object (so its identity
cannot be reused while noted) and are bounded, so answers no handler records
cannot grow this without limit. A handler taking a note names its run (the
framework's run or span id): every other handler of that run (two ledgers,
say an application's and a ``track_costs`` block's) then learns the same.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costopt_core.cache.entry import CacheHit
    from costopt_core.types import CallOutcome

__all__ = [
    "PAID_INFO",
    "SERVED",
    "SHARED_INFO",
    "ServedNotes",
    "served_info",
    "served_outcome",
]


class ServedNotes:
    """A bounded, thread-safe note per served answer object.

    Args:
        max_notes: notes kept at most (oldest dropped first).
    """

    def __init__(self, max_notes: int = 8192) -> None:
        self.max_notes = max_notes
        self._notes: OrderedDict[int, tuple[Any, dict[str, Any]]] = OrderedDict()
        # Notes already taken, by the run that took them (bounded alike).
        self._runs: OrderedDict[Any, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, answer: object, info: Mapping[str, Any]) -> None:
        """Note that the cache served ``answer`` (a generation, a chunk or a raw dict)."""
        key = id(answer)
        with self._lock:
            self._notes[key] = (answer, dict(info))
            self._notes.move_to_end(key)
            while len(self._notes) > self.max_notes:
                self._notes.popitem(last=False)

    def take(self, answer: object, run: Any = None) -> dict[str, Any] | None:
        """The note on ``answer``, removed; ``None`` if the cache did not serve it.

        Args:
            answer: The answer object a handler is recording.
            run: The run (or span) id the handler records it under. A note taken
                under a run is kept for that run, so the other handlers of the
                same run find it although the first one removed it.
        """
        if not self._notes and not self._runs:
            # Every recorded call asks, and with no cache serving there is never
            # a note: skip the lock (reading a dict's size is atomic).
            return None
        key = id(answer)
        with self._lock:
            entry = self._notes.get(key)
            if entry is None or entry[0] is not answer:
                return None if run is None else self._runs.get(run)
            del self._notes[key]
            if run is not None:
                self._runs[run] = entry[1]
                while len(self._runs) > self.max_notes:
                    self._runs.popitem(last=False)
        return entry[1]

    def noted(self, answer: object) -> bool:
        """Whether ``answer`` carries a note no handler has taken yet."""
        entry = self._notes.get(id(answer))  # a dict read is atomic: no lock
        return entry is not None and entry[0] is answer

    def __len__(self) -> int:
        with self._lock:
            return len(self._notes)


#: The process-wide notes the cache adapters write and the cost handlers read.
SERVED = ServedNotes()


#: The note on an answer replayed from an identical request's call in flight:
#: an exact hit (it cost this request nothing).
SHARED_INFO: Mapping[str, Any] = {"cache": "exact", "similarity": 1.0}


#: The note that takes an earlier one back: the answer was this request's
#: model call after all (it was the first to read a shared stream to its end).
PAID_INFO: Mapping[str, Any] = {"cache": None}


def served_info(hit: CacheHit) -> dict[str, Any]:
    """What a cost handler learns about a hit: the cache tier that served it, and how similar."""
    return {"cache": hit.tier, "similarity": round(float(hit.similarity), 4)}


def served_outcome(info: Mapping[str, Any]) -> CallOutcome | None:
    """The ledger outcome of an answer a note describes; ``None`` if no cache served it.

    A note is :func:`served_info`'s, or the ``costopt`` metadata a cache or a
    router put on the answer (a router's says which tier answered, not a cache).
    """
    tier = info.get("cache")
    if tier == "exact":
        return "cache_exact"
    if tier == "semantic":
        return "cache_semantic"
    return None
