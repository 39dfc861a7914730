"""Which answers a costopt cache served, told to the cost handlers and not to the caller.

A cost handler must know that an answer came from the cache: it is priced as a
hit, not as a call. A flag in the answer's own metadata would tell every caller
whether someone else asked the same question first (a side channel across
tenants). Instead the cache adapters note here each answer object they serve
(or, for a replayed stream, the run it belongs to), and the handlers take the
note when they record the call. Notes hold their object (so its identity
cannot be reused while noted) and are bounded, so answers no handler records
cannot grow this without limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any

__all__ = ["SERVED", "ServedNotes"]


class ServedNotes:
    """A bounded, thread-safe note per served answer object or run key.

    Args:
        max_notes: notes kept at most (oldest dropped first).
    """

    def __init__(self, max_notes: int = 8192) -> None:
        self.max_notes = max_notes
        self._notes: OrderedDict[Hashable, tuple[Any, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def _put(self, key: Hashable, holder: Any, info: Mapping[str, Any]) -> None:
        with self._lock:
            self._notes[key] = (holder, dict(info))
            self._notes.move_to_end(key)
            while len(self._notes) > self.max_notes:
                self._notes.popitem(last=False)

    def note(self, answer: object, info: Mapping[str, Any]) -> None:
        """Note that the cache served ``answer`` (a message, a response or its raw dict)."""
        self._put(("obj", id(answer)), answer, info)

    def note_run(self, run_key: Hashable, info: Mapping[str, Any]) -> None:
        """Note that the cache served the run ``run_key`` (e.g. a replayed stream)."""
        self._put(("run", run_key), None, info)

    def take(self, answer: object) -> dict[str, Any] | None:
        """The note on ``answer``, removed; ``None`` if the cache did not serve it."""
        key = ("obj", id(answer))
        with self._lock:
            entry = self._notes.get(key)
            if entry is None or entry[0] is not answer:
                return None
            del self._notes[key]
        return entry[1]

    def take_run(self, run_key: Hashable) -> dict[str, Any] | None:
        """The note on run ``run_key``, removed; ``None`` if there is none."""
        with self._lock:
            entry = self._notes.pop(("run", run_key), None)
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._notes)


#: The process-wide notes the cache adapters write and the cost handlers read.
SERVED = ServedNotes()
