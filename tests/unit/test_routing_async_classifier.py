"""Async routing awaits the classifier's ``apredict``: the event loop is never blocked.

A learned classifier embeds the prompt; with an embedder that does I/O the
sync ``predict`` on the event loop stalls every other task. The sync paths
keep calling ``predict``; both twins reach the same decision.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from llama_index.core.llms import ChatMessage

from costopt_core import Budget, CostEngine, Usage
from costopt_core.routing.router import Router
from costopt_core.routing.tiers import Tiers
from costopt_core.testing import Script, ScriptedResponse
from costopt_core.types import Message
from langchain_costopt import CostCallbackHandler
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CostEventHandler
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM

U = Usage(1000, 100)
TIERS = Tiers.from_mapping({"small": "gpt-4o-mini", "frontier": "gpt-4o"})


class AsyncOnly:
    """Starts at the frontier on the sync path, at the small tier on the async one.

    Which tier answered tells which method ran; ``calls`` counts both.
    """

    name = "async-only"
    n_tiers = 2

    def __init__(self) -> None:
        self.calls: list[str] = []

    def predict(self, items: Any) -> Any:
        self.calls.append("predict")
        return np.array([[0.0, 1.0] for _ in items])

    async def apredict(self, items: Any) -> Any:
        await asyncio.sleep(0)  # a real embedder's I/O would yield here
        self.calls.append("apredict")
        return np.array([[0.9, 1.0] for _ in items])


class SyncOnly:
    """A classifier without ``apredict`` (the protocol's minimum)."""

    name = "sync-only"
    n_tiers = 2

    def predict(self, items: Any) -> Any:
        return np.array([[0.9, 1.0] for _ in items])


def _lc(*, classifier: Any) -> RouterChatModel:
    def tier(text: str, model: str) -> ScriptedChatModel:
        rs = [ScriptedResponse(text, U, model=model) for _ in range(4)]
        return ScriptedChatModel(script=Script(rs), model_name=model)

    return RouterChatModel(
        tiers={"small": tier("small", "gpt-4o-mini"), "frontier": tier("big", "gpt-4o")},
        classifier=classifier,
    )


def _li(*, classifier: Any) -> RouterLLM:
    def tier(text: str, model: str) -> ScriptedLLM:
        return ScriptedLLM(script=Script([ScriptedResponse(text, U, model=model)] * 4))

    return RouterLLM(
        tiers={"small": tier("small", "gpt-4o-mini"), "frontier": tier("big", "gpt-4o")},
        classifier=classifier,
    )


async def test_router_aroute_awaits_apredict_and_route_calls_predict() -> None:
    clf = AsyncOnly()
    router = Router(TIERS, classifier=clf)
    msgs = [Message("user", "What is 2 + 2?")]
    assert (await router.aroute(msgs)).tier == "small"
    assert router.route(msgs).tier == "frontier"
    assert clf.calls == ["apredict", "predict"]


async def test_aroute_falls_back_to_predict_without_apredict() -> None:
    router = Router(TIERS, classifier=SyncOnly())
    msgs = [Message("user", "What is 2 + 2?")]
    assert (await router.aroute(msgs)) == router.route(msgs)


async def test_router_chat_model_async_paths_use_apredict() -> None:
    clf = AsyncOnly()
    router = _lc(classifier=clf)
    assert (await router.ainvoke("hi")).content == "small"
    chunks = [c async for c in router.astream("hi")]
    assert "".join(str(c.content) for c in chunks) == "small"
    assert clf.calls == ["apredict", "apredict"]
    assert router.invoke("hi").content == "big"
    assert clf.calls[-1] == "predict"


async def test_router_llm_async_paths_use_apredict() -> None:
    clf = AsyncOnly()
    router = _li(classifier=clf)
    msgs = [ChatMessage(role="user", content="hi")]
    assert (await router.achat(msgs)).message.content == "small"
    assert (await router.acomplete("hi")).text == "small"
    items = [item async for item in await router.astream_chat(msgs)]
    assert items[-1].message.content == "small"
    assert clf.calls == ["apredict"] * 3
    assert router.chat(msgs).message.content == "big"
    assert clf.calls[-1] == "predict"


class Counting(SyncOnly):
    def __init__(self, p_small: float) -> None:
        self.p = p_small
        self.n = 0

    def predict(self, items: Any) -> Any:
        self.n += 1
        return np.array([[self.p, 1.0] for _ in items])


@pytest.mark.parametrize("sync", [True, False])
async def test_router_llm_downshift_classifies_once(sync: bool) -> None:
    # The budget is checked after routing (priced at the decided tier); a
    # downshift moves that decision down instead of classifying again.
    engine = CostEngine()
    engine.ledger.add_budget(Budget(limit_usd=1, policy="downshift"))
    engine.record_call(model="gpt-4o", usage=Usage(100_000, 70_000))  # most of $1 spent
    clf = Counting(0.1)
    router = _li(classifier=clf)
    handler = CostEventHandler(engine).attach()
    try:
        msgs = [ChatMessage(role="user", content="a hard question")]
        out = router.chat(msgs) if sync else await router.achat(msgs)
    finally:
        handler.detach()
    assert out.message.content == "small"
    assert clf.n == 1
    reason = out.raw["costopt"]["route"]["decision"]["reason"]
    assert "downshifted to small" in reason


@pytest.mark.parametrize("sync", [True, False])
async def test_router_chat_model_downshift_twins_agree(sync: bool) -> None:
    engine = CostEngine()
    engine.ledger.add_budget(Budget(limit_usd=1, policy="downshift"))
    engine.record_call(model="gpt-4o", usage=Usage(100_000, 70_000))
    router = _lc(classifier=Counting(0.1))
    cfg = {"callbacks": [CostCallbackHandler(engine)]}
    out = router.invoke("hard", config=cfg) if sync else await router.ainvoke("hard", config=cfg)
    assert out.content == "small"
    assert "downshifted" in out.response_metadata["costopt"]["route"]["decision"]["reason"]
