"""RouterLLM validates a streamed answer as RouterChatModel does: a cheap tier's
stream is held back, validated, and then passed on as it came or escalated."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage, CompletionResponse
from pydantic import Field

from costopt_core import CostEngine, Usage
from costopt_core.testing import Script, ScriptedResponse
from llamaindex_costopt import CostEventHandler, track_costs
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM
from tests.conftest import CheapFirst

U = Usage(1000, 100)
MSGS = [ChatMessage(role="user", content="What is 2+2?")]
HEDGE = "I'm not sure, sorry."
HOWS = ["stream_chat", "astream_chat", "stream_complete", "astream_complete"]


class Tracked(ScriptedLLM):
    """A scripted LLM that notes each stream it has sent to its end."""

    ended: list[str] = Field(default_factory=list)

    def _completion_chunks(self, r: ScriptedResponse) -> Generator[CompletionResponse, None, None]:
        yield from super()._completion_chunks(r)
        self.ended.append(r.text)


def tracked(*texts: str, model: str) -> Tracked:
    return Tracked(script=Script([ScriptedResponse(t, U, model=model) for t in texts]))


def router(small: ScriptedLLM, big: ScriptedLLM, **kw: Any) -> RouterLLM:
    return RouterLLM(tiers={"small": small, "frontier": big}, classifier=CheapFirst(), **kw)


async def stream(r: RouterLLM, how: str, seen: Tracked | None = None) -> tuple[list[Any], int]:
    """The chunks the user gets, and how many of ``seen``'s streams had ended by the first."""
    if how == "stream_chat":
        gen: Any = r.stream_chat(MSGS)
    elif how == "stream_complete":
        gen = r.stream_complete("2+2?")
    elif how == "astream_chat":
        gen = await r.astream_chat(MSGS)
    else:
        gen = await r.astream_complete("2+2?")
    chunks: list[Any] = []
    ended_at_first = -1
    if how.startswith("a"):
        async for c in gen:
            chunks.append(c)
            ended_at_first = len(seen.ended) if seen and len(chunks) == 1 else ended_at_first
    else:
        for c in gen:
            chunks.append(c)
            ended_at_first = len(seen.ended) if seen and len(chunks) == 1 else ended_at_first
    return chunks, ended_at_first


def as_sent(chunks: list[Any], how: str) -> list[tuple[type, str | None, str | None]]:
    """Each chunk's type, cumulative text and delta."""
    if how.endswith("complete"):
        return [(type(c), c.text, c.delta) for c in chunks]
    return [(type(c), c.message.content, c.delta) for c in chunks]


def sent_by(text: str, how: str, model: str) -> list[tuple[type, str | None, str | None]]:
    """What a tier LLM streams for ``text`` itself, chunk by chunk."""
    llm = tracked(text, model=model)
    gen = llm.stream_complete("q") if how.endswith("complete") else llm.stream_chat(MSGS)
    return as_sent(list(gen), how)


def outcomes(chunks: list[Any]) -> list[str]:
    return [a["outcome"] for a in chunks[-1].raw["costopt"]["route"]["attempts"]]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(("cheap", "reason"), [(HEDGE, "refusal_or_hedge"), ("", "empty")])
async def test_a_weak_cheap_stream_escalates_and_only_the_frontiers_chunks_are_sent(
    how: str, cheap: str, reason: str
) -> None:
    small, big = tracked(cheap, model="gpt-4o-mini"), tracked("It is 4", model="gpt-4o")
    engine = CostEngine()
    with track_costs(engine):
        chunks, _ = await stream(router(small, big), how)
    assert as_sent(chunks, how) == sent_by("It is 4", how, "gpt-4o")
    assert outcomes(chunks) == [f"escalated: {reason}", "kept"]
    assert chunks[-1].raw["costopt"]["route"]["tier"] == "frontier"
    assert [(r.model, r.outcome, r.tier) for r in engine.ledger.records()] == [
        ("gpt-4o-mini", "escalated", "small"),
        ("gpt-4o", "model", "frontier"),
    ]


@pytest.mark.parametrize("how", HOWS)
async def test_a_good_cheap_stream_is_held_to_its_end_then_sent_as_it_came(how: str) -> None:
    small, big = tracked("four is the answer", model="gpt-4o-mini"), tracked("4", model="gpt-4o")
    chunks, ended_at_first = await stream(router(small, big), how, seen=small)
    # Validated before any of it was sent; then sent chunk by chunk, unchanged.
    assert ended_at_first == 1
    assert as_sent(chunks, how) == sent_by("four is the answer", how, "gpt-4o-mini")
    assert len(chunks) == 5
    assert outcomes(chunks) == ["kept"]
    assert (small.script.calls, big.script.calls) == (1, 0)


@pytest.mark.parametrize("how", HOWS)
async def test_validate_streams_false_streams_the_first_tier_as_it_comes_and_keeps_it(
    how: str,
) -> None:
    # The same weak cheap stream the default router escalates ...
    held_small, held_big = tracked(HEDGE, model="gpt-4o-mini"), tracked("4", model="gpt-4o")
    held, _ = await stream(router(held_small, held_big), how)
    assert outcomes(held) == ["escalated: refusal_or_hedge", "kept"]
    # ... is passed on as it comes, and kept, without validation.
    small, big = tracked(HEDGE, model="gpt-4o-mini"), tracked("4", model="gpt-4o")
    chunks, ended_at_first = await stream(
        router(small, big, validate_streams=False), how, seen=small
    )
    assert ended_at_first == 0
    assert as_sent(chunks, how) == sent_by(HEDGE, how, "gpt-4o-mini")
    assert outcomes(chunks) == ["kept"]
    assert big.script.calls == 0


@pytest.mark.parametrize("how", HOWS)
async def test_a_discarded_stream_is_recorded_as_a_discarded_answer_is(how: str) -> None:
    def records(engine: CostEngine) -> list[tuple[Any, ...]]:
        return [(r.model, r.outcome, r.tier, r.usage, r.cost_usd) for r in engine.ledger.records()]

    answered, streamed = CostEngine(), CostEngine()
    handler = CostEventHandler(answered).attach()
    try:
        r = router(tracked(HEDGE, model="gpt-4o-mini"), tracked("It is 4", model="gpt-4o"))
        r.chat(MSGS) if how.endswith("chat") else r.complete("2+2?")
    finally:
        handler.detach()
    handler = CostEventHandler(streamed).attach()
    try:
        r = router(tracked(HEDGE, model="gpt-4o-mini"), tracked("It is 4", model="gpt-4o"))
        await stream(r, how)
    finally:
        handler.detach()
    assert records(streamed) == records(answered)
    assert [x[1] for x in records(streamed)] == ["escalated", "model"]
