"""set_llm_cache's cache partitions by each model run's tenant, batch elements included.

LangChain hands a cache no run; the config in effect is the caller's in a
``batch`` element's thread or task, and a model invoked directly puts none in
effect. A handler noting each run's tenant at its start closes both gaps.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from costopt_core import CostEngine
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder
from langchain_costopt import CostCallbackHandler, SemanticCache
from langchain_costopt.cache import _RUN
from langchain_costopt.testing import ScriptedChatModel

Q = {"q": "What is our internal discount code?"}
TENANTS = ("acme", "globex", "acme", "initech")


@pytest.fixture
def model() -> Any:
    set_llm_cache(SemanticCache(CacheEngine(embedder=FakeEmbedder())))
    try:
        yield ScriptedChatModel.from_texts([f"A{i}" for i in range(20)])
    finally:
        set_llm_cache(None)


def _configs(engine: CostEngine | None = None) -> list[Any]:
    cbs = [CostCallbackHandler(engine)] if engine is not None else []
    # One element at a time (each still in the batch's own worker thread or
    # task): LangChain's cache lookup and update are separate calls, so two of
    # acme's elements running at once could both miss, and which answer acme
    # gets would be a race.
    return [
        {"metadata": {"costopt_tenant": t}, "callbacks": cbs, "max_concurrency": 1} for t in TENANTS
    ]


@pytest.mark.parametrize("how", ["batch", "abatch", "model_batch"])
async def test_batch_elements_never_share_another_tenants_answer(model: Any, how: str) -> None:
    engine = CostEngine()
    chain = ChatPromptTemplate.from_template("{q}") | model | StrOutputParser()
    if how == "batch":
        outs = chain.batch([Q] * 4, config=_configs(engine))
    elif how == "abatch":
        outs = await chain.abatch([Q] * 4, config=_configs(engine))
    else:
        msgs = [Q["q"]] * 4
        outs = [m.content for m in model.batch(msgs, config=_configs(engine))]
    # acme's two elements share (the second a hit); the others have their own.
    assert len({outs[0], outs[1], outs[3]}) == 3
    assert outs[2] == outs[0]
    assert model.script.calls == 3
    booked = sorted((r.tenant, r.outcome) for r in engine.ledger.records())
    assert booked == [
        ("acme", "cache_exact"),
        ("acme", "model"),
        ("globex", "model"),
        ("initech", "model"),
    ]


async def test_a_model_invoked_directly_partitions_by_its_configs_tenant(model: Any) -> None:
    first = model.invoke("the code?", config={"metadata": {"costopt_tenant": "acme"}})
    other = await model.ainvoke("the code?", config={"metadata": {"costopt_tenant": "globex"}})
    again = model.invoke("the code?", config={"metadata": {"costopt_tenant": "acme"}})
    assert first.content != other.content
    assert again.content == first.content
    assert model.script.calls == 2


def test_tenant_scope_still_partitions_and_no_note_outlives_its_run(model: Any) -> None:
    with tenant_scope("acme"):
        a = model.invoke("the code?")
    with tenant_scope("globex"):
        g = model.invoke("the code?")
    assert a.content != g.content
    assert _RUN.get() is None  # each run gave its note back when it ended


def test_runs_started_together_leave_no_note_behind(model: Any) -> None:
    # generate over several prompts starts every run before any ends, and ends
    # them in start order: each takes its own note out, wherever it sits.
    from langchain_core.messages import HumanMessage

    model.generate([[HumanMessage("first?")], [HumanMessage("second?")]])
    assert _RUN.get() is None


def test_a_completion_model_never_reads_a_chat_runs_note() -> None:
    # A completion model's cache is read before its run starts: a note there is
    # someone else's (one a stream closed in another context left behind).
    from langchain_core.language_models.fake import FakeListLLM

    from langchain_costopt.cache import _Noted

    set_llm_cache(SemanticCache(CacheEngine(embedder=FakeEmbedder())))
    llm = FakeListLLM(responses=["ACME-SECRET", "GLOBEX-fresh"])
    try:
        with tenant_scope("acme"):
            llm.invoke("what is the discount code?")
        token = _RUN.set(_Noted(uuid4(), "acme", None))  # a stale chat note
        try:
            with tenant_scope("globex"):
                out = llm.invoke("what is the discount code?")
        finally:
            _RUN.reset(token)
    finally:
        set_llm_cache(None)
    assert out == "GLOBEX-fresh"


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "batch", "abatch"])
async def test_a_completion_model_reads_its_runs_tenant(how: str) -> None:
    """A tenant in the run's metadata of a completion model invoked or batched
    directly was missed (its cache is read before the run starts and no config
    is in effect): tenant B was served tenant A's answer. Found by a review."""
    from langchain_core.language_models.fake import FakeListLLM

    engine = CacheEngine(embedder=FakeEmbedder())
    set_llm_cache(SemanticCache(engine))
    llm = FakeListLLM(responses=["A-SECRET", "B-own", "unused"])
    q = "what is our discount code?"

    def meta(tenant: str) -> dict[str, Any]:
        return {"metadata": {"costopt_tenant": tenant}}

    async def ask(tenants: list[str]) -> list[str]:
        if how == "invoke":
            return [llm.invoke(q, config=meta(t)) for t in tenants]
        if how == "ainvoke":
            return [await llm.ainvoke(q, config=meta(t)) for t in tenants]
        configs: Any = [meta(t) for t in tenants]
        if how == "batch":
            return llm.batch([q] * len(tenants), config=configs)
        return await llm.abatch([q] * len(tenants), config=configs)

    try:
        first = await ask(["A", "B"])
        again = await ask(["B", "A"])
    finally:
        set_llm_cache(None)
    assert first == ["A-SECRET", "B-own"]
    assert again == ["B-own", "A-SECRET"]  # each tenant's own answer, from the cache
    assert engine.stats().exact_hits == 2
