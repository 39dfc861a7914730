"""RelevanceThresholdRetriever: standard retriever tests, threshold cases, scores, ledger."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore
from langchain_tests.integration_tests import RetrieversIntegrationTests

from costopt_core.context.relevance import RelevanceConfig
from costopt_core.engine import CostEngine
from costopt_core.errors import ConfigurationError
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder
from langchain_costopt.relevance import (
    DEFAULT_SCORE_KEYS,
    METADATA_KEY,
    RelevanceThresholdRetriever,
    _metadata_score,
)

TEXTS = [
    "The Eiffel Tower is a wrought iron lattice tower in Paris.",
    "The Eiffel Tower in Paris opened in 1889 for the World's Fair.",
    "Paris is the capital of France and its largest city.",
    "Bananas are berries while strawberries are not.",
    "The Great Barrier Reef is the largest coral reef system.",
    "Mount Everest is the highest mountain above sea level.",
]
QUERY = "When did the Eiffel Tower in Paris open?"


class BagOfWords(Embeddings):
    """LangChain face of the engine's hashed bag-of-words fake: similar words, similar vectors."""

    def __init__(self) -> None:
        self.fake = FakeEmbedder(dim=256)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.fake.embed(texts)]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def memory_store(texts: list[str] = TEXTS) -> InMemoryVectorStore:
    store = InMemoryVectorStore(BagOfWords())
    store.add_texts(texts, metadatas=[{"n": i} for i in range(len(texts))])
    return store


class ScriptedStore(VectorStore):
    """A store that returns fixed (document, score) pairs, with or without a relevance function."""

    def __init__(
        self,
        scores: list[float],
        relevance_fn: Callable[[float], float] | None = None,
        texts: list[str] = TEXTS,
    ) -> None:
        self.pairs = [
            (Document(page_content=texts[i], metadata={"n": i}), s) for i, s in enumerate(scores)
        ]
        self.relevance_fn = relevance_fn
        self.calls: list[tuple[str, int, dict[str, Any]]] = []

    @classmethod
    def from_texts(cls, *args: Any, **kwargs: Any) -> ScriptedStore:
        raise NotImplementedError

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        self.calls.append(("score", k, kwargs))
        return self.pairs[:k]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.relevance_fn is None:
            raise NotImplementedError
        return self.relevance_fn


class MetadataScoreRetriever(BaseRetriever):
    """A reranker-like retriever that puts its scores in metadata (or none)."""

    docs: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return list(self.docs)


def tokens(engine: CostEngine, texts: list[str]) -> int:
    return sum(engine.tokens.count(t) for t in texts)


# -- the standard suite ------------------------------------------------------------------
STANDARD_STORE = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
STANDARD_STORE.add_texts(TEXTS)


class TestRelevanceRetrieverStandard(RetrieversIntegrationTests):
    """Data where k results pass: distinct texts, no score cutoff."""

    @property
    def retriever_constructor(self) -> type[RelevanceThresholdRetriever]:
        return RelevanceThresholdRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"vectorstore": STANDARD_STORE, "k": 4, "engine": CostEngine()}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


# -- threshold cases ---------------------------------------------------------------------
def test_threshold_keeps_relevant_documents_with_store_scores() -> None:
    store = memory_store()
    engine = CostEngine()
    raw = store.similarity_search_with_score(QUERY, k=6)
    r = RelevanceThresholdRetriever(
        vectorstore=store, k=6, engine=engine, config=RelevanceConfig(absolute_threshold=0.3)
    )
    docs = r.invoke(QUERY)
    expected = [d.page_content for d, s in raw if s >= 0.3]
    assert len(expected) < 6  # the threshold has something to drop
    assert [d.page_content for d in docs] == expected
    by_text = {d.page_content: s for d, s in raw}
    for d in docs:
        assert d.metadata[METADATA_KEY] == pytest.approx(max(0.0, by_text[d.page_content]))
        assert "n" in d.metadata  # the store's metadata is carried over


def test_returned_documents_are_copies() -> None:
    store = memory_store()
    r = RelevanceThresholdRetriever(vectorstore=store, k=3, engine=CostEngine())
    docs = r.invoke(QUERY)
    assert all(METADATA_KEY in d.metadata for d in docs)
    for d in store.similarity_search(QUERY, k=6):
        assert METADATA_KEY not in d.metadata
    assert all(METADATA_KEY not in v["metadata"] for v in store.store.values())


def test_min_k_keeps_the_top_document_under_an_impossible_threshold() -> None:
    store = memory_store()
    top = store.similarity_search(QUERY, k=1)[0]
    r = RelevanceThresholdRetriever(
        vectorstore=store,
        k=5,
        engine=CostEngine(),
        config=RelevanceConfig(absolute_threshold=1.0, relative_to_top=1.0),
    )
    docs = r.invoke(QUERY)
    assert [d.page_content for d in docs] == [top.page_content]


def test_relative_and_max_k_and_k_kwarg() -> None:
    store = ScriptedStore([0.9, 0.85, 0.5, 0.4], relevance_fn=lambda s: s)
    r = RelevanceThresholdRetriever(
        vectorstore=store, k=4, engine=CostEngine(), config=RelevanceConfig(relative_to_top=0.5)
    )
    assert [d.metadata["n"] for d in r.invoke(QUERY)] == [0, 1, 2]
    assert [d.metadata["n"] for d in r.invoke(QUERY, k=2)] == [0, 1]
    assert store.calls[-1][1] == 2  # k reached the store
    capped = RelevanceThresholdRetriever(
        vectorstore=store, k=4, engine=CostEngine(), config=RelevanceConfig(max_k=1)
    )
    assert [d.metadata["n"] for d in capped.invoke(QUERY)] == [0]


def test_duplicates_in_the_store_are_dropped() -> None:
    store = memory_store([TEXTS[0], TEXTS[0], TEXTS[1], TEXTS[3]])
    r = RelevanceThresholdRetriever(vectorstore=store, k=4, engine=CostEngine())
    contents = [d.page_content for d in r.invoke(QUERY)]
    assert contents.count(TEXTS[0]) == 1
    assert len(contents) == 3


# -- score conventions ------------------------------------------------------------------------
def test_distance_store_without_relevance_function_is_auto_detected() -> None:
    store = ScriptedStore([0.1, 0.3, 0.9, 1.2])  # cosine distances, best first
    r = RelevanceThresholdRetriever(
        vectorstore=store, k=4, engine=CostEngine(), config=RelevanceConfig(absolute_threshold=0.5)
    )
    docs = r.invoke(QUERY)
    assert [d.metadata["n"] for d in docs] == [0, 1]
    assert [d.metadata[METADATA_KEY] for d in docs] == pytest.approx([0.9, 0.7])


def test_declared_convention_uses_raw_scores() -> None:
    d = [math.sqrt(2 - 2 * c) for c in (0.9, 0.6, 0.2)]  # L2 on unit vectors
    store = ScriptedStore(d, relevance_fn=lambda s: 1 - s / math.sqrt(2))
    r = RelevanceThresholdRetriever(
        vectorstore=store,
        k=3,
        engine=CostEngine(),
        config=RelevanceConfig(score_convention="l2", absolute_threshold=0.5),
    )
    docs = r.invoke(QUERY)
    assert [x.metadata[METADATA_KEY] for x in docs] == pytest.approx([0.9, 0.6])


@pytest.mark.filterwarnings("ignore:Relevance scores must be between 0 and 1")
def test_auto_prefers_the_store_relevance_function() -> None:
    # raw scores are distances; the store's own function turns them into relevance
    store = ScriptedStore([0.2, 0.4, 1.6], relevance_fn=lambda d: 1 - d)
    r = RelevanceThresholdRetriever(
        vectorstore=store, k=3, engine=CostEngine(), config=RelevanceConfig(absolute_threshold=0.5)
    )
    docs = r.invoke(QUERY)
    assert [x.metadata[METADATA_KEY] for x in docs] == pytest.approx([0.8, 0.6])


def test_declared_relevance_needs_a_relevance_function() -> None:
    store = ScriptedStore([0.2, 0.4])
    r = RelevanceThresholdRetriever(
        vectorstore=store,
        k=2,
        engine=CostEngine(),
        config=RelevanceConfig(score_convention="relevance"),
    )
    with pytest.raises(ConfigurationError, match="ScriptedStore has no relevance-score"):
        r.invoke(QUERY)


# -- wrapped retrievers ---------------------------------------------------------------------------
def test_wrapped_retriever_scores_from_metadata_and_unscored_policy() -> None:
    docs = [
        Document(page_content=TEXTS[0], metadata={"relevance_score": 0.92}),
        Document(page_content=TEXTS[2], metadata={"score": 0.15}),
        Document(page_content=TEXTS[1]),  # no score
        Document(page_content=TEXTS[4], metadata={"relevance_score": 0.05}),
    ]
    inner = MetadataScoreRetriever(docs=docs)
    cfg = RelevanceConfig(absolute_threshold=0.5)
    keep = RelevanceThresholdRetriever(retriever=inner, k=4, engine=CostEngine(), config=cfg)
    got = keep.invoke(QUERY)
    assert [d.page_content for d in got] == [TEXTS[0], TEXTS[1]]
    assert got[1].metadata[METADATA_KEY] is None
    drop = RelevanceThresholdRetriever(
        retriever=inner,
        k=4,
        engine=CostEngine(),
        config=RelevanceConfig(absolute_threshold=0.5, unscored_policy="drop"),
    )
    assert [d.page_content for d in drop.invoke(QUERY)] == [TEXTS[0]]
    assert "costopt_relevance" not in docs[0].metadata  # the inner documents are untouched


def test_wrapped_retriever_reads_numpy_scores() -> None:
    """Rerankers (FlashRank) store numpy scalars: they are scores, not "no score"."""
    docs = [
        Document(page_content=TEXTS[0], metadata={"relevance_score": np.float32(0.95)}),
        Document(page_content=TEXTS[3], metadata={"relevance_score": np.float32(0.02)}),
        Document(page_content=TEXTS[1], metadata={"score": np.float64(0.7)}),
        Document(page_content=TEXTS[4], metadata={"score": np.int64(0)}),
        # a bool or NaN is not a score: the next key is read
        Document(page_content=TEXTS[2], metadata={"relevance_score": True, "score": 0.1}),
        Document(page_content=TEXTS[5], metadata={"relevance_score": np.float32("nan")}),
    ]
    r = RelevanceThresholdRetriever(
        retriever=MetadataScoreRetriever(docs=docs),
        k=6,
        engine=CostEngine(),
        config=RelevanceConfig(absolute_threshold=0.5, unscored_policy="drop"),
    )
    got = r.invoke(QUERY)
    assert [d.page_content for d in got] == [TEXTS[0], TEXTS[1]]
    assert [d.metadata[METADATA_KEY] for d in got] == pytest.approx([0.95, 0.7])
    assert _metadata_score({"relevance_score": True, "score": 0.1}, DEFAULT_SCORE_KEYS) == 0.1
    assert _metadata_score({"relevance_score": math.nan}, DEFAULT_SCORE_KEYS) is None
    assert _metadata_score({"score": Decimal("0.5")}, DEFAULT_SCORE_KEYS) is None


def test_wrapped_retriever_is_cut_to_k() -> None:
    docs = [Document(page_content=t, metadata={"score": 0.9 - i / 10}) for i, t in enumerate(TEXTS)]
    engine = CostEngine()
    r = RelevanceThresholdRetriever(retriever=MetadataScoreRetriever(docs=docs), k=2, engine=engine)
    assert [d.page_content for d in r.invoke(QUERY)] == TEXTS[:2]
    assert engine.ledger.records()[0].usage.input_tokens == tokens(engine, TEXTS[2:])


def test_vectorstore_retriever_is_unwrapped_for_scores() -> None:
    store = memory_store()
    inner = store.as_retriever(search_kwargs={"k": 6})
    r = RelevanceThresholdRetriever(
        retriever=inner, k=6, engine=CostEngine(), config=RelevanceConfig(absolute_threshold=0.3)
    )
    got = r.invoke(QUERY)
    assert all(d.metadata[METADATA_KEY] >= 0.3 for d in got[1:])
    assert 1 <= len(got) < 6


# -- ledger ----------------------------------------------------------------------------------------
def test_ledger_gets_removed_tokens_as_compression_savings() -> None:
    store = ScriptedStore([0.9, 0.8, 0.2, 0.1], relevance_fn=lambda s: s)
    engine = CostEngine()
    r = RelevanceThresholdRetriever(
        vectorstore=store, k=4, engine=engine, config=RelevanceConfig(absolute_threshold=0.5)
    )
    with tenant_scope("acme"):
        r.invoke(QUERY)
    [rec] = engine.ledger.records()
    removed = tokens(engine, TEXTS[2:4])
    assert rec.outcome == "removed"
    assert rec.usage.input_tokens == removed
    assert rec.framework == "langchain"
    assert rec.tenant == "acme"
    # gpt-4o baseline input price: $2.50 per million tokens
    assert rec.savings_usd == {"compression": Decimal(removed) * Decimal("2.5") / 10**6}
    assert engine.ledger.savings_by_lever()["compression"] > 0


def test_explicit_tenant_wins_and_nothing_removed_records_nothing() -> None:
    store = ScriptedStore([0.9, 0.8, 0.2], relevance_fn=lambda s: s)
    engine = CostEngine()
    RelevanceThresholdRetriever(vectorstore=store, k=3, engine=engine).invoke(QUERY)
    assert len(engine.ledger) == 0
    cfg = RelevanceConfig(absolute_threshold=0.5)
    with tenant_scope("other"):
        RelevanceThresholdRetriever(
            vectorstore=store, k=3, engine=engine, config=cfg, tenant="acme"
        ).invoke(QUERY)
    assert [r.tenant for r in engine.ledger.records()] == ["acme"]


def test_record_savings_off() -> None:
    store = ScriptedStore([0.9, 0.1], relevance_fn=lambda s: s)
    engine = CostEngine()
    r = RelevanceThresholdRetriever(
        vectorstore=store,
        k=2,
        engine=engine,
        record_savings=False,
        config=RelevanceConfig(absolute_threshold=0.5),
    )
    assert len(r.invoke(QUERY)) == 1
    assert len(engine.ledger) == 0


# -- sync / async parity ------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["store", "scripted", "retriever"])
async def test_sync_async_parity(source: str) -> None:
    cfg = RelevanceConfig(absolute_threshold=0.3)

    def build(engine: CostEngine) -> RelevanceThresholdRetriever:
        if source == "store":
            return RelevanceThresholdRetriever(
                vectorstore=memory_store(), k=5, engine=engine, config=cfg
            )
        if source == "scripted":
            store = ScriptedStore([0.1, 0.3, 0.9, 1.2])
            return RelevanceThresholdRetriever(vectorstore=store, k=4, engine=engine, config=cfg)
        docs = [
            Document(page_content=t, metadata={"score": 1 - i / 5}) for i, t in enumerate(TEXTS)
        ]
        inner = MetadataScoreRetriever(docs=docs)
        return RelevanceThresholdRetriever(retriever=inner, k=5, engine=engine, config=cfg)

    sync_engine, async_engine = CostEngine(), CostEngine()
    sync_docs = build(sync_engine).invoke(QUERY)
    async_docs = await build(async_engine).ainvoke(QUERY)
    assert [(d.page_content, d.metadata) for d in sync_docs] == [
        (d.page_content, d.metadata) for d in async_docs
    ]
    assert [r.usage.input_tokens for r in sync_engine.ledger.records()] == [
        r.usage.input_tokens for r in async_engine.ledger.records()
    ]
    assert len(sync_engine.ledger) == 1


# -- configuration ---------------------------------------------------------------------------------
def test_configuration_errors_name_the_value() -> None:
    store = memory_store()
    with pytest.raises(ConfigurationError, match="exactly one of vectorstore= or retriever="):
        RelevanceThresholdRetriever(k=3)
    with pytest.raises(ConfigurationError, match="exactly one"):
        RelevanceThresholdRetriever(vectorstore=store, retriever=store.as_retriever())
    with pytest.raises(ConfigurationError, match="k=0"):
        RelevanceThresholdRetriever(vectorstore=store, k=0)
    with pytest.raises(ConfigurationError, match="absolute_threshold=2"):
        RelevanceThresholdRetriever(vectorstore=store, config={"absolute_threshold": 2})
    r = RelevanceThresholdRetriever(vectorstore=store, engine=CostEngine())
    with pytest.raises(ConfigurationError, match="k must be a positive int, got -1"):
        r.invoke(QUERY, k=-1)


# -- review 3: the wrapped retriever's k, the run's tenant ----------------------------------------
@pytest.mark.parametrize("search_type", ["similarity", "mmr"])
async def test_a_wrapped_vectorstore_retrievers_k_is_kept(search_type: str) -> None:
    store = memory_store()
    kwargs: dict[str, Any] = {"k": 2}
    if search_type == "mmr":
        kwargs["fetch_k"] = 6
    base = store.as_retriever(search_type=search_type, search_kwargs=kwargs)
    engine = CostEngine()
    wrapped = RelevanceThresholdRetriever(retriever=base, engine=engine)
    assert len(wrapped.invoke(QUERY)) == len(await wrapped.ainvoke(QUERY)) == 2
    assert len(engine.ledger) == 0  # nothing fetched only to be dropped
    # The wrapper's own k, when given, still wins (as invoke(k=...) does).
    explicit = RelevanceThresholdRetriever(retriever=base, k=1, engine=CostEngine())
    assert len(explicit.invoke(QUERY)) == 1
    assert len(wrapped.invoke(QUERY, k=1)) == 1
    if search_type == "similarity":
        wider = RelevanceThresholdRetriever(retriever=base, k=5, engine=CostEngine())
        assert len(wider.invoke(QUERY)) == 5


def test_a_wrapped_retrievers_own_k_caps_the_result() -> None:
    class WithK(MetadataScoreRetriever):
        k: int = 6

    docs = [Document(page_content=t, metadata={"score": 0.9}) for t in TEXTS]
    wrapped = RelevanceThresholdRetriever(retriever=WithK(docs=docs), engine=CostEngine())
    assert len(wrapped.invoke(QUERY)) == 6  # its k, not the wrapper's default of 4


@pytest.mark.parametrize("sync", [True, False])
async def test_savings_are_booked_to_the_runs_metadata_tenant(sync: bool) -> None:
    store = ScriptedStore([0.9, 0.8, 0.2, 0.1], relevance_fn=lambda s: s)
    engine = CostEngine()
    r = RelevanceThresholdRetriever(
        vectorstore=store, k=4, engine=engine, config=RelevanceConfig(absolute_threshold=0.5)
    )
    cfg: Any = {"metadata": {"costopt_tenant": "acme"}}
    with tenant_scope("other"):
        if sync:
            r.invoke(QUERY, config=cfg)
        else:
            await r.ainvoke(QUERY, config=cfg)
    assert [rec.tenant for rec in engine.ledger.records()] == ["acme"]


# -- review 4: k in search_kwargs (the as_retriever habit) ---------------------------------------
async def test_k_in_search_kwargs_is_taken_as_k() -> None:
    # Regression: search_kwargs={"k": 5} was passed on next to k=..., and the
    # first query raised "got multiple values for keyword argument 'k'".
    store = ScriptedStore([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], relevance_fn=lambda s: s)
    r = RelevanceThresholdRetriever(
        vectorstore=store, search_kwargs={"k": 5, "filter": "x"}, engine=CostEngine()
    )
    assert [d.metadata["n"] for d in r.invoke(QUERY)] == [0, 1, 2, 3, 4]
    assert [d.metadata["n"] for d in await r.ainvoke(QUERY)] == [0, 1, 2, 3, 4]
    assert store.calls[0] == ("score", 5, {"filter": "x"})  # k once, the rest passed on
    assert len(r.invoke(QUERY, k=2)) == 2  # invoke(k=...) still wins
    # The same k given both ways is not ambiguous.
    same = RelevanceThresholdRetriever(
        vectorstore=memory_store(), k=3, search_kwargs={"k": 3}, engine=CostEngine()
    )
    assert len(same.invoke(QUERY)) == 3
    # Over a wrapped VectorStoreRetriever too.
    base = memory_store().as_retriever(search_kwargs={"k": 2})
    wrapped = RelevanceThresholdRetriever(
        retriever=base, search_kwargs={"k": 5}, engine=CostEngine()
    )
    assert len(wrapped.invoke(QUERY)) == 5


def test_ambiguous_or_bad_k_in_search_kwargs_is_a_configuration_error() -> None:
    store = memory_store()
    with pytest.raises(ConfigurationError, match=r"k=3 and search_kwargs=\{'k': 8\} disagree"):
        RelevanceThresholdRetriever(vectorstore=store, k=3, search_kwargs={"k": 8})
    with pytest.raises(ConfigurationError, match=r"search_kwargs=\{'k': '8'\}.*positive int"):
        RelevanceThresholdRetriever(vectorstore=store, search_kwargs={"k": "8"})
    with pytest.raises(ConfigurationError, match=r"search_kwargs=\{'k': 0\}"):
        RelevanceThresholdRetriever(vectorstore=store, search_kwargs={"k": 0})


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_savings_go_to_the_ledger_of_the_runs_cost_handler(how: str) -> None:
    """A handler passed in the call's config, not engine=: the savings belong
    with the run's calls in its ledger, not in the ambient engine's."""
    import asyncio

    from costopt_core import engine_scope
    from langchain_costopt import CostCallbackHandler

    ambient, mine = CostEngine(), CostEngine()
    r = RelevanceThresholdRetriever(
        vectorstore=memory_store(), k=6, config=RelevanceConfig(absolute_threshold=0.3)
    )
    config: Any = {"callbacks": [CostCallbackHandler(mine)]}
    with engine_scope(ambient):
        if how == "invoke":
            r.invoke(QUERY, config=config)
        else:
            asyncio.run(r.ainvoke(QUERY, config=config))
    assert [(rec.outcome, list(rec.savings_usd)) for rec in mine.ledger.records()] == [
        ("removed", ["compression"])
    ]
    assert ambient.ledger.records() == []
