"""RouterChatModel: a held-back tier stream that breaks part way is recorded.

While an answer may still escalate, the router reads a cheap tier's stream to
its end before passing any of it on. A stream that fails after some chunks
was billed for its prompt and what it sent, and no cost handler sees a
router's tier calls: the router records it (usage of the chunks read, else
unknown, never $0) and falls back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from costopt_core import CostEngine, Usage
from costopt_core.testing import Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel
from tests.conftest import CheapFirst


class Breaking(BaseChatModel):
    """Streams two chunks, then fails (a dropped connection); ``error`` picks how."""

    usage_first: bool = True
    error: str = "connection"

    @property
    def _llm_type(self) -> str:
        return "breaking"

    def _generate(self, messages: list[BaseMessage], *a: Any, **k: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("unused"))])

    def _chunks(self) -> Iterator[ChatGenerationChunk]:
        usage = {"input_tokens": 1000, "output_tokens": 0, "total_tokens": 1000}
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                "Par",
                usage_metadata=usage if self.usage_first else None,  # type: ignore[arg-type]
                response_metadata={"model_name": "gpt-4o-mini"},
            )
        )
        yield ChatGenerationChunk(message=AIMessageChunk("tial"))

    def _fail(self) -> BaseException:
        return ConnectionError("peer closed") if self.error == "connection" else KeyboardInterrupt()

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._chunks()
        raise self._fail()

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks():
            await asyncio.sleep(0)
            yield chunk
        raise self._fail()


def _router(small: BaseChatModel) -> RouterChatModel:
    big = ScriptedChatModel(
        script=Script([ScriptedResponse("Full answer.", Usage(1000, 100), model="gpt-4o")]),
        model_name="gpt-4o",
    )
    return RouterChatModel(tiers={"small": small, "frontier": big}, classifier=CheapFirst())


async def _stream(router: RouterChatModel, sync: bool, cfg: dict[str, Any]) -> str:
    if sync:
        chunks = list(router.stream("Explain it.", config=cfg))
    else:
        chunks = [c async for c in router.astream("Explain it.", config=cfg)]
    return "".join(str(c.content) for c in chunks)


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("usage_first", [True, False])
async def test_a_held_back_stream_that_breaks_is_recorded_then_falls_back(
    sync: bool, usage_first: bool
) -> None:
    engine = CostEngine()
    router = _router(Breaking(usage_first=usage_first))
    out = await _stream(router, sync, {"callbacks": [CostCallbackHandler(engine)]})
    assert out == "Full answer."
    records = [(r.model, r.outcome, r.cost_usd) for r in engine.ledger.records()]
    broken = [r for r in records if r[0] == "gpt-4o-mini"]
    # Retried once on the same model (retries_per_model=1): two billed attempts.
    assert len(broken) == 2
    assert all(outcome == "escalated" for _, outcome, _ in broken)
    # 1000 input tokens at gpt-4o-mini's $0.15/M; unknown usage is unpriced, not $0.
    want = Decimal("0.00015") if usage_first else None
    assert all(cost == want for _, _, cost in broken)
    assert [r for r in records if r[0] == "gpt-4o"] == [("gpt-4o", "model", Decimal("0.0035"))]


def test_a_held_back_stream_interrupted_part_way_is_recorded_once() -> None:
    engine = CostEngine()
    router = _router(Breaking(error="interrupt"))
    with pytest.raises(KeyboardInterrupt):
        list(router.stream("Explain it.", config={"callbacks": [CostCallbackHandler(engine)]}))
    records = [(r.model, r.outcome) for r in engine.ledger.records()]
    assert records == [("gpt-4o-mini", "model")]
