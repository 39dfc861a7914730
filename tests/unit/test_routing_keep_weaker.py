"""When every tier above a re-asked answer fails, the router returns that answer.

A hedge from the cheap tier is what the user would have had without the
router's second opinion; an error because the frontier is down is worse.
``RouterConfig(keep_weaker_answer=False)`` raises instead, as before.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.llms import ChatMessage

from costopt_core import CostEngine, Usage
from costopt_core.errors import RoutingError
from costopt_core.routing.router import RouterConfig
from costopt_core.testing import Script, ScriptedResponse
from langchain_costopt import CostCallbackHandler
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CostEventHandler
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM
from tests.conftest import CheapFirst

U = Usage(1000, 100)
HEDGE = "I'm not sure, sorry."


def _script(model: str, fails: bool) -> Script:
    if fails:
        return Script([ScriptedResponse("", U, model=model, error=TimeoutError("frontier down"))])
    return Script([ScriptedResponse(HEDGE, U, model=model)])


def _lc(keep: bool) -> RouterChatModel:
    small = ScriptedChatModel(script=_script("gpt-4o-mini", False), model_name="gpt-4o-mini")
    big = ScriptedChatModel(script=_script("gpt-4o", True), model_name="gpt-4o")
    return RouterChatModel(
        tiers={"small": small, "frontier": big},
        classifier=CheapFirst(),
        router_config=RouterConfig(keep_weaker_answer=keep),
    )


async def _consume(router: RouterChatModel, how: str, cfg: dict[str, Any]) -> Any:
    if how == "invoke":
        return router.invoke("refund window?", config=cfg)
    if how == "ainvoke":
        return await router.ainvoke("refund window?", config=cfg)
    chunks = (
        list(router.stream("refund window?", config=cfg))
        if how == "stream"
        else [c async for c in router.astream("refund window?", config=cfg)]
    )
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return total


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
async def test_router_chat_model_returns_the_hedge_when_the_frontier_is_down(how: str) -> None:
    engine = CostEngine()
    out = await _consume(_lc(True), how, {"callbacks": [CostCallbackHandler(engine)]})
    assert out.content == HEDGE
    route = out.response_metadata["costopt"]["route"]
    assert (route["tier"], route["model"]) == ("small", "gpt-4o-mini")
    assert route["attempts"][-1]["outcome"] == "kept: every tier above failed"
    # The hedge is the answer, recorded once as the request's call.
    assert [(r.model, r.outcome) for r in engine.ledger.records()] == [("gpt-4o-mini", "model")]


@pytest.mark.parametrize("sync", [True, False])
async def test_router_chat_model_raises_when_told_to(sync: bool) -> None:
    engine = CostEngine()
    router, cfg = _lc(False), {"callbacks": [CostCallbackHandler(engine)]}
    with pytest.raises(RoutingError):
        router.invoke("refund window?", config=cfg) if sync else await router.ainvoke(
            "refund window?", config=cfg
        )
    assert [(r.model, r.outcome) for r in engine.ledger.records()] == [("gpt-4o-mini", "escalated")]


def _li(keep: bool) -> RouterLLM:
    return RouterLLM(
        tiers={
            "small": ScriptedLLM(script=_script("gpt-4o-mini", False)),
            "frontier": ScriptedLLM(script=_script("gpt-4o", True)),
        },
        classifier=CheapFirst(),
        router_config=RouterConfig(keep_weaker_answer=keep),
    )


@pytest.mark.parametrize("how", ["chat", "achat", "stream_chat", "astream_chat"])
async def test_router_llm_returns_the_hedge_when_the_frontier_is_down(how: str) -> None:
    engine = CostEngine()
    handler = CostEventHandler(engine).attach()
    msgs = [ChatMessage(role="user", content="refund window?")]
    router = _li(True)
    try:
        if how == "chat":
            out = router.chat(msgs)
        elif how == "achat":
            out = await router.achat(msgs)
        elif how == "stream_chat":
            out = list(router.stream_chat(msgs))[-1]
        else:
            out = [r async for r in await router.astream_chat(msgs)][-1]
    finally:
        handler.detach()
    assert out.message.content == HEDGE
    assert out.raw["costopt"]["route"]["tier"] == "small"
    assert [(r.model, r.outcome) for r in engine.ledger.records()] == [("gpt-4o-mini", "model")]


def test_router_llm_raises_when_told_to() -> None:
    engine = CostEngine()
    handler = CostEventHandler(engine).attach()
    try:
        with pytest.raises(RoutingError):
            _li(False).chat([ChatMessage(role="user", content="refund window?")])
    finally:
        handler.detach()
    assert [(r.model, r.outcome) for r in engine.ledger.records()] == [("gpt-4o-mini", "escalated")]
