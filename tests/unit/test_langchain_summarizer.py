"""LangChain ``ContextSummarizer``: documents cut to answering sentences, savings in the ledger."""

from __future__ import annotations

import importlib.util

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from costopt_core.context.summarize import SummarizerConfig
from costopt_core.engine import CostEngine
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder
from langchain_costopt.summarizer import SUMMARY_METADATA_KEY, ContextSummarizer

DOCS = [
    Document(
        page_content="The Golden Gate Bridge opened in 1937. It is painted International Orange. "
        "Fog often hides its towers. The bridge is 2,737 metres long.",
        metadata={"source": "bridge.txt"},
        id="d1",
    ),
    Document(
        page_content="Penguins live in the southern hemisphere. They cannot fly.",
        metadata={"source": "birds.txt"},
        id="d2",
    ),
    Document(page_content="   ", metadata={"source": "blank.txt"}, id="d3"),
]
QUERY = "When did the Golden Gate Bridge open?"


def make(**kwargs: object) -> tuple[ContextSummarizer, CostEngine]:
    engine = CostEngine(embedder=FakeEmbedder())
    return ContextSummarizer(engine=engine, **kwargs), engine  # type: ignore[arg-type]


def test_compress_documents_keeps_answering_sentences() -> None:
    summarizer, engine = make(config=SummarizerConfig(budget_ratio=None, budget_tokens=12))
    out = summarizer.compress_documents(DOCS, QUERY)
    # The blank page comes back as it was: nothing to cut (an image-only PDF page).
    assert [d.id for d in out] == ["d1", "d3"]
    assert out[1].page_content == "   "
    doc = out[0]
    assert doc.page_content == "The Golden Gate Bridge opened in 1937."
    assert doc.metadata["source"] == "bridge.txt"
    meta = doc.metadata[SUMMARY_METADATA_KEY]
    count = engine.tokens.count
    assert meta == {
        "tokens_before": count(DOCS[0].page_content),
        "tokens_after": count(doc.page_content),
    }
    # the originals are untouched copies
    assert SUMMARY_METADATA_KEY not in DOCS[0].metadata
    assert DOCS[0].page_content.endswith("metres long.")


def test_savings_recorded_under_compression() -> None:
    summarizer, engine = make(
        config=SummarizerConfig(budget_ratio=0.3, ratio_floor_tokens=0), tenant="acme"
    )
    out = summarizer.compress_documents(DOCS, QUERY)
    before = sum(engine.tokens.count(d.page_content) for d in DOCS)
    after = sum(engine.tokens.count(d.page_content) for d in out)
    records = engine.ledger.records()
    assert len(records) == 1
    rec = records[0]
    assert rec.outcome == "removed" and rec.framework == "langchain" and rec.tenant == "acme"
    assert rec.usage.input_tokens == before - after > 0
    assert set(rec.savings_usd) == {"compression"}


def test_tenant_from_scope_and_switch_off() -> None:
    cut = SummarizerConfig(budget_ratio=0.3, ratio_floor_tokens=0)
    summarizer, engine = make(config=cut)
    with tenant_scope("globex"):
        summarizer.compress_documents(DOCS, QUERY)
    assert engine.ledger.records()[0].tenant == "globex"
    quiet, quiet_engine = make(config=cut, record_savings=False)
    quiet.compress_documents(DOCS, QUERY)
    assert quiet_engine.ledger.records() == []


def test_empty_documents() -> None:
    summarizer, engine = make()
    assert summarizer.compress_documents([], QUERY) == []
    assert engine.ledger.records() == []


async def test_sync_async_parity() -> None:
    summarizer, _ = make(config=SummarizerConfig(budget_ratio=0.5, ratio_floor_tokens=0))
    sync = summarizer.compress_documents(DOCS, QUERY)
    asyn = await summarizer.acompress_documents(DOCS, QUERY)
    assert sync == asyn
    assert len(summarizer.engine.ledger.records()) == 2  # type: ignore[union-attr]


class _ListRetriever(BaseRetriever):
    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: object) -> list[Document]:
        return self.docs


@pytest.mark.skipif(
    importlib.util.find_spec("langchain_classic") is None
    and importlib.util.find_spec("langchain") is None,
    reason="ContextualCompressionRetriever needs langchain-classic or langchain",
)
def test_inside_contextual_compression_retriever() -> None:
    try:
        from langchain_classic.retrievers import ContextualCompressionRetriever
    except ImportError:
        from langchain.retrievers import ContextualCompressionRetriever  # type: ignore[no-redef]
    summarizer, _ = make(config=SummarizerConfig(budget_ratio=None, budget_tokens=12))
    retriever = ContextualCompressionRetriever(
        base_compressor=summarizer, base_retriever=_ListRetriever(docs=DOCS)
    )
    out = retriever.invoke(QUERY)
    assert [d.page_content for d in out] == ["The Golden Gate Bridge opened in 1937.", "   "]


def test_repr_hides_engine() -> None:
    summarizer, _ = make()
    assert "engine" not in repr(summarizer)


# -- abstractive -------------------------------------------------------------------

LONG_DOCS = [
    Document(
        "The Golden Gate Bridge opened in 1937 after four years of work. "
        "It is painted International Orange so that ships can see it in fog. " * 3,
        id="gg",
    ),
    Document("San Francisco is a city in California with many hills. " * 4, id="sf"),
]


def _summarizer_model(text: str = "Opened in 1937.") -> object:
    from costopt_core import Usage
    from costopt_core.testing import Script, ScriptedResponse
    from langchain_costopt.testing import ScriptedChatModel

    return ScriptedChatModel(
        script=Script([ScriptedResponse(text, Usage(input_tokens=90, output_tokens=5))]),
        model_name="gpt-4o-mini",
    )


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_abstractive_summary_replaces_the_documents_and_books_the_cut(sync: bool) -> None:
    from langchain_costopt import track_costs
    from langchain_costopt.summarizer import AbstractiveContextSummarizer

    llm = _summarizer_model()
    compressor = AbstractiveContextSummarizer(llm=llm)
    with track_costs() as costs:
        if sync:
            out = compressor.compress_documents(LONG_DOCS, "When did the bridge open?")
        else:
            out = await compressor.acompress_documents(LONG_DOCS, "When did the bridge open?")
    assert [d.page_content for d in out] == ["Opened in 1937."]
    meta = out[0].metadata[SUMMARY_METADATA_KEY]
    assert meta["sources"] == ["gg", "sf"] and meta["tokens_after"] < meta["tokens_before"]
    totals = costs.ledger.totals()
    # The summarizer's own call is priced by the block's handler, as compression's
    # overhead: it is no request, and the all-frontier run never made it.
    assert totals.requests == 0 and totals.overheads == 1
    assert totals.removed_input_tokens == meta["tokens_before"] - meta["tokens_after"]
    by_outcome = {r.outcome: r for r in costs.ledger.records()}
    call, cut = by_outcome["overhead"], by_outcome["removed"]
    assert call.model == "gpt-4o-mini" and call.cost_usd and call.baseline_cost_usd == 0
    assert call.savings_usd == {"compression": -call.cost_usd}
    levers = costs.ledger.savings_by_lever()
    assert levers["compression"] == cut.savings_usd["compression"] - call.cost_usd
    assert levers["routing"] == 0


async def test_abstractive_keeps_documents_when_the_summary_is_not_shorter_and_caches() -> None:
    from costopt_core.cache import SemanticCache
    from costopt_core.cache.component import ComponentCache
    from langchain_costopt.summarizer import AbstractiveContextSummarizer

    engine = CostEngine(embedder=FakeEmbedder())
    verbose = AbstractiveContextSummarizer(llm=_summarizer_model("word " * 400), engine=engine)
    same = await verbose.acompress_documents(LONG_DOCS, "When did the bridge open?")
    assert list(same) == LONG_DOCS and len(engine.ledger) == 0

    cache = ComponentCache(SemanticCache(embedder=FakeEmbedder()), "summarizer:gpt-4o-mini")
    llm = _summarizer_model()
    cached = AbstractiveContextSummarizer(llm=llm, engine=engine, cache=cache)
    first = await cached.acompress_documents(LONG_DOCS, "When did the bridge open?")
    second = cached.compress_documents(LONG_DOCS, "When did the bridge open?")
    assert first[0].page_content == second[0].page_content == "Opened in 1937."
    assert llm.script.calls == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("sync", [True, False])
async def test_savings_are_booked_to_the_runs_metadata_tenant(sync: bool) -> None:
    from langchain_core.callbacks import CallbackManager
    from langchain_core.runnables import RunnableLambda

    summarizer, engine = make(config=SummarizerConfig(budget_ratio=None, budget_tokens=12))

    async def compress(query: str) -> object:
        if sync:
            return summarizer.compress_documents(DOCS, query)
        return await summarizer.acompress_documents(DOCS, query)

    # Inside a chain run (LCEL), and handed a run's callback manager (as
    # ContextualCompressionRetriever does).
    await RunnableLambda(compress).ainvoke(QUERY, config={"metadata": {"costopt_tenant": "acme"}})
    manager = CallbackManager(handlers=[], metadata={"tenant_id": "globex"})
    summarizer.compress_documents(DOCS, QUERY, callbacks=manager)
    assert [r.tenant for r in engine.ledger.records()] == ["acme", "globex"]


# -- review 4: bad settings are ConfigurationErrors naming the value and the fix -------------
def test_bad_settings_raise_configuration_errors_with_the_fix() -> None:
    # Regression: pydantic's raw ValidationError ("Input should be a valid
    # dictionary or instance of SummarizerConfig"), unlike the LlamaIndex twins.
    from costopt_core.context import RelevanceConfig
    from costopt_core.errors import ConfigurationError
    from langchain_costopt.summarizer import AbstractiveContextSummarizer

    with pytest.raises(
        ConfigurationError,
        match=r"invalid ContextSummarizer: config=RelevanceConfig\(.*config must be a "
        r"costopt_core\.context\.summarize\.SummarizerConfig, got RelevanceConfig; build one, "
        r"e\.g\. SummarizerConfig\(\.\.\.\), or leave config out",
    ):
        ContextSummarizer(config=RelevanceConfig())
    with pytest.raises(
        ConfigurationError,
        match=r"config=\{'budget_tokens': -3\}: invalid SummarizerConfig: budget_tokens=-3: "
        r"Input should be greater than or equal to 1",
    ):
        ContextSummarizer(config={"budget_tokens": -3})
    with pytest.raises(
        ConfigurationError, match=r"engine='default': engine must be a costopt_core.CostEngine"
    ):
        ContextSummarizer(engine="default")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError,
        match=r"invalid AbstractiveContextSummarizer: llm='gpt-4o-mini': llm must be a "
        r"LangChain chat model instance, got str; pass the model object, e\.g\. "
        r"ChatOpenAI\(model='gpt-4o-mini'\), not its name",
    ):
        AbstractiveContextSummarizer(llm="gpt-4o-mini")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError,
        match=r"config must be a costopt_core\.context\.summarize\.AbstractiveConfig, "
        r"got SummarizerConfig",
    ):
        AbstractiveContextSummarizer(llm=_summarizer_model(), config=SummarizerConfig())
    with pytest.raises(ConfigurationError, match=r"cache=.*cache must be a .*ComponentCache"):
        AbstractiveContextSummarizer(llm=_summarizer_model(), cache="redis")
    # Good settings still build, a dict config included.
    assert ContextSummarizer(config={"budget_tokens": 30}).config.budget_tokens == 30


@pytest.mark.skipif(
    importlib.util.find_spec("langchain_classic") is None,
    reason="ContextualCompressionRetriever needs langchain-classic",
)
def test_savings_go_to_the_ledger_of_the_runs_cost_handler() -> None:
    """A handler passed in the call's config, not engine=: the savings belong
    with the run's calls in its ledger, not in the ambient engine's."""
    from langchain_classic.retrievers import ContextualCompressionRetriever

    from costopt_core import engine_scope
    from langchain_costopt import CostCallbackHandler

    ambient, mine = CostEngine(embedder=FakeEmbedder()), CostEngine(embedder=FakeEmbedder())
    summarizer = ContextSummarizer(config=SummarizerConfig(budget_ratio=None, budget_tokens=12))
    retriever = ContextualCompressionRetriever(
        base_compressor=summarizer, base_retriever=_ListRetriever(docs=DOCS)
    )
    with engine_scope(ambient):
        retriever.invoke(QUERY, config={"callbacks": [CostCallbackHandler(mine)]})
    assert [(r.outcome, list(r.savings_usd)) for r in mine.ledger.records()] == [
        ("removed", ["compression"])
    ]
    assert ambient.ledger.records() == []
