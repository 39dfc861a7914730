"""A served answer is a new message: it never carries the stored answer's id.

LangGraph's ``add_messages`` merges messages by id, so a hit with the first
answer's id replaced that answer in a thread that asked the same question
again, instead of adding the second one.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.messages import HumanMessage
from langgraph.graph.message import add_messages

from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.testing import FakeEmbedder
from langchain_costopt import CachedChatModel, SemanticCache
from langchain_costopt.testing import ScriptedChatModel

Q = "What are your support hours?"


def _model() -> ScriptedChatModel:
    return ScriptedChatModel.from_texts(["9 to 5.", "other"])


@pytest.mark.parametrize("how", ["global", "cached_model", "cached_model_stream"])
async def test_a_hit_is_added_to_a_thread_not_merged_into_the_first_answer(how: str) -> None:
    engine = CacheEngine(embedder=FakeEmbedder())
    if how == "global":
        model: Any = _model()
        set_llm_cache(SemanticCache(engine))
    else:
        model = CachedChatModel(model=_model(), semantic_cache=engine)
    try:
        first = model.invoke(Q)
        if how == "cached_model_stream":
            chunks = [c async for c in model.astream(Q)]
            second: Any = chunks[0]
            for c in chunks[1:]:
                second = second + c
        else:
            second = model.invoke(Q)
    finally:
        set_llm_cache(None)
    assert second.content == first.content == "9 to 5."
    assert first.id is not None and second.id != first.id
    thread = add_messages([HumanMessage(Q), first], [HumanMessage(Q), second])
    assert [m.type for m in thread] == ["human", "ai", "human", "ai"]
