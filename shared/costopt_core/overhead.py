"""Model calls a saving lever makes itself, charged to that lever.

A context summarizer or a memory summarizer calls a model so that later calls
send fewer tokens; a semantic cache's verifier may call one to judge a hit.
An all-frontier run never makes such a call, so it has no baseline: priced as
an ordinary call it would be compared with the frontier model and book a
routing "saving" that never happened. The engine runs such a call inside
:func:`overhead_of` (a context variable, so every framework's handler sees it
in the call's own context, threads and tasks included), and records whatever
is called inside with outcome ``overhead``: the cost as billed, a $0
baseline, and the cost as a negative saving of the lever, so the lever's
figure is what it saved net of what it spent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import get_args

from costopt_core.errors import ConfigurationError
from costopt_core.types import CACHE_OUTCOMES, CallOutcome, OverheadLever, Usage

__all__ = ["OverheadLever", "current_overhead", "overhead_of", "recorded_as"]

#: What a summary a cache served was billed: nothing.
_NOTHING_BILLED = Usage(input_tokens=0, output_tokens=0)

_current: ContextVar[OverheadLever | None] = ContextVar("costopt_overhead", default=None)


@contextmanager
def overhead_of(lever: OverheadLever) -> Iterator[None]:
    """Record the model calls made inside as ``lever``'s overhead.

    Args:
        lever: ``compression`` (a context summarizer), ``memory`` (a
            conversation summarizer) or ``cache_semantic`` (a cache verifier).

    Raises:
        ConfigurationError: ``lever`` is not one of those.
    """
    if lever not in get_args(OverheadLever):
        raise ConfigurationError(
            f"overhead_of: unknown lever {lever!r}; the levers that call a model are "
            f"{', '.join(get_args(OverheadLever))}"
        )
    token = _current.set(lever)
    try:
        yield
    finally:
        _current.reset(token)


def current_overhead() -> OverheadLever | None:
    """The lever whose model call is running now, or ``None`` (an ordinary call)."""
    return _current.get()


def recorded_as(
    outcome: CallOutcome, usage: Usage
) -> tuple[CallOutcome, Usage, OverheadLever | None]:
    """How a call recorded now is priced: outcome, billed usage, and the lever it is charged to.

    Inside :func:`overhead_of`, whatever served the lever's request is that
    lever's ``overhead``: a call or an escalated attempt with its usage, and an
    answer a cache served with none billed (it costs $0 and, being no
    request, is no cache hit either). A ``removed`` record is no call and
    stays as it is; outside the mark everything does.
    """
    lever = _current.get()
    if lever is None or outcome == "removed":
        return outcome, usage, None
    if outcome in CACHE_OUTCOMES:
        return "overhead", _NOTHING_BILLED, lever
    return "overhead", usage, lever
