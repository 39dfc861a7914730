"""``RelevanceThresholdRetriever``: a retriever that returns only the chunks worth sending.

It wraps a vector store or any retriever, reads the scores the store already
computed (no re-embedding, unlike ``EmbeddingsFilter``), and lets the engine
(:func:`costopt_core.context.relevance.select_relevant`) decide which
documents to keep. The tokens of the dropped documents are booked in the
ledger as ``compression`` savings.

Where the scores come from:

- a ``VectorStore`` (or a ``VectorStoreRetriever`` with ``search_type
  "similarity"``, unwrapped to its store): with ``score_convention="auto"``,
  a store whose convention is known is searched with
  ``similarity_search_with_score`` and that convention; any other with
  ``similarity_search_with_relevance_scores`` (the store's own normalisation,
  convention ``relevance``), falling back to ``similarity_search_with_score``
  and auto-detection when the store has no relevance function. A declared
  convention uses ``similarity_search_with_score`` (``relevance``: the
  relevance-score search).
- any other retriever: the first of ``score_keys`` found in each document's
  metadata (rerankers and hybrid retrievers put it there); documents with
  none follow the config's ``unscored_policy``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any, TypeGuard

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from pydantic import Field, ValidationError, model_validator

from costopt_core.context.relevance import (
    RelevanceConfig,
    RelevanceResult,
    ResolvedConvention,
    ScoreConvention,
    ScoredChunk,
    select_relevant,
)
from costopt_core.engine import CostEngine
from costopt_core.errors import ConfigurationError, check_arguments, config_error
from langchain_costopt.callbacks import engine_for, run_tenant

__all__ = ["DEFAULT_SCORE_KEYS", "METADATA_KEY", "RelevanceThresholdRetriever"]

#: Metadata key of a returned document's similarity in [0, 1] (``None``: unscored).
METADATA_KEY = "costopt_relevance"
#: Metadata keys a wrapped retriever's score is read from, first found wins.
DEFAULT_SCORE_KEYS: tuple[str, ...] = (
    "relevance_score",
    "score",
    "similarity_score",
    "similarity",
    "_score",
)
# Stores whose ``similarity_search_with_score`` convention is fixed and known.
_KNOWN_STORES: dict[str, ResolvedConvention] = {"InMemoryVectorStore": "similarity"}

Scored = Sequence[tuple[Document, float | None]]


def _metadata_score(metadata: dict[str, Any], keys: Sequence[str]) -> float | None:
    """The first real-number score among ``keys`` in a document's metadata.

    Rerankers store numpy scalars (FlashRank: ``np.float32``), which are not
    ``float`` instances but are registered as :class:`numbers.Real`; checking
    for ``int | float`` alone read them as "no score" and silently disabled
    every cutoff. Booleans and NaN are not scores, so the next key is tried.

    Args:
        metadata: the document's metadata.
        keys: the keys to read, first found wins.

    Returns:
        The score as a ``float``, or ``None`` when no key holds a real number.
    """
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, Real) and not isinstance(value, bool):
            score = float(value)
            if not math.isnan(score):
                return score
    return None


def _positive_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class RelevanceThresholdRetriever(BaseRetriever):
    """Keeps the retrieved documents that pass the relevance cutoffs.

    Args:
        vectorstore: the store to search (give this or ``retriever``).
        retriever: any retriever to wrap (scores read from metadata).
        config: the cutoffs; ``RelevanceConfig()`` drops only near-duplicates.
        k: documents to fetch from the store; at most this many are returned.
            When omitted, ``search_kwargs["k"]`` if given, else a wrapped
            retriever's own: a ``VectorStoreRetriever``'s ``search_kwargs["k"]``,
            another retriever's ``k`` field; else 4. ``invoke(query, k=...)``
            overrides it per call.
        search_kwargs: extra arguments to the store's search (``filter``...);
            a ``"k"`` here is taken as ``k`` (the ``as_retriever`` habit).
        score_keys: metadata keys holding a wrapped retriever's score.
        engine: ledger and token counter; ``current_engine()`` if omitted.
        record_savings: book the dropped documents' tokens as savings.
        tenant: tenant of the savings record; if omitted, the run's (its
            metadata's ``costopt_tenant``, as the cost handler reads it), else
            ``current_tenant()``.
        token_model: model whose tokenizer counts the documents.

    Each returned document is a copy with its similarity in
    ``metadata["costopt_relevance"]``; the store's documents are not changed.

    Example:
        >>> retriever = RelevanceThresholdRetriever(  # doctest: +SKIP
        ...     vectorstore=store, k=8, config=RelevanceConfig(relative_to_top=0.8)
        ... )
        >>> docs = retriever.invoke("when did the tower open?")  # doctest: +SKIP
    """

    vectorstore: VectorStore | None = None
    retriever: BaseRetriever | None = None
    config: RelevanceConfig = Field(default_factory=RelevanceConfig)
    k: int = Field(4, ge=1)
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    score_keys: tuple[str, ...] = DEFAULT_SCORE_KEYS
    engine: CostEngine | None = Field(None, exclude=True)
    record_savings: bool = True
    tenant: str | None = None
    token_model: str | None = None

    def __init__(self, **kwargs: Any) -> None:
        check_arguments("RelevanceThresholdRetriever", kwargs, type(self))
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error("RelevanceThresholdRetriever", exc) from None

    @model_validator(mode="after")
    def _one_source(self) -> RelevanceThresholdRetriever:
        if (self.vectorstore is None) == (self.retriever is None):
            raise ValueError("give exactly one of vectorstore= or retriever=")
        return self

    @model_validator(mode="after")
    def _search_k(self) -> RelevanceThresholdRetriever:
        # search_kwargs={"k": 8} is how as_retriever takes k; passed on to the
        # search next to k=... it raised "got multiple values for keyword
        # argument 'k'" on the first query. It is taken as k when unambiguous.
        if "k" not in self.search_kwargs:
            return self
        k = self.search_kwargs["k"]
        if not _positive_int(k):
            raise ValueError(
                f"search_kwargs={{'k': {k!r}}}: k must be a positive int; "
                "pass the number of documents as k=8"
            )
        if "k" in self.model_fields_set and k != self.k:
            raise ValueError(
                f"k={self.k} and search_kwargs={{'k': {k!r}}} disagree; give the number "
                f"of documents once, e.g. k={k} and no 'k' in search_kwargs"
            )
        return self

    # -- where the documents and scores come from ---------------------------------------
    def _store(self) -> tuple[VectorStore | None, dict[str, Any]]:
        # k goes to the search as its own argument (see _k), never twice.
        own = {k: v for k, v in self.search_kwargs.items() if k != "k"}
        if self.vectorstore is not None:
            return self.vectorstore, own
        r = self.retriever
        if isinstance(r, VectorStoreRetriever) and r.search_type == "similarity":
            kwargs = {k: v for k, v in r.search_kwargs.items() if k != "k"}
            return r.vectorstore, {**kwargs, **own}
        return None, {}

    def _method(self, store: VectorStore) -> tuple[bool, ScoreConvention]:
        """(use the relevance-score search, convention of the scores it returns)."""
        declared = self.config.score_convention
        if declared == "relevance":
            return True, "relevance"
        if declared != "auto":
            return False, declared
        known = _KNOWN_STORES.get(type(store).__name__)
        if known is not None:
            return False, known
        return True, "relevance"

    def _no_relevance(self, store: VectorStore) -> ScoreConvention:
        if self.config.score_convention == "relevance":
            raise ConfigurationError(
                f"{type(store).__name__} has no relevance-score function; declare the "
                "convention of its similarity_search_with_score scores instead "
                "(e.g. score_convention='cosine_distance')"
            )
        return "auto"

    def _from_metadata(self, docs: Sequence[Document]) -> Scored:
        return [(doc, _metadata_score(doc.metadata, self.score_keys)) for doc in docs]

    def _search(
        self, query: str, k: int, run_manager: CallbackManagerForRetrieverRun
    ) -> tuple[Scored, ScoreConvention]:
        store, kwargs = self._store()
        if store is None:
            assert self.retriever is not None
            docs = self.retriever.invoke(query, config={"callbacks": run_manager.get_child()})
            return self._from_metadata(docs), self.config.score_convention
        relevance, convention = self._method(store)
        if relevance:
            try:
                found = store.similarity_search_with_relevance_scores(query, k=k, **kwargs)
                return found, "relevance"
            except NotImplementedError:
                convention = self._no_relevance(store)
        return store.similarity_search_with_score(query, k=k, **kwargs), convention

    async def _asearch(
        self, query: str, k: int, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> tuple[Scored, ScoreConvention]:
        store, kwargs = self._store()
        if store is None:
            assert self.retriever is not None
            docs = await self.retriever.ainvoke(
                query, config={"callbacks": run_manager.get_child()}
            )
            return self._from_metadata(docs), self.config.score_convention
        relevance, convention = self._method(store)
        if relevance:
            try:
                found = await store.asimilarity_search_with_relevance_scores(query, k=k, **kwargs)
                return found, "relevance"
            except NotImplementedError:
                convention = self._no_relevance(store)
        return await store.asimilarity_search_with_score(query, k=k, **kwargs), convention

    # -- the decision (shared by sync and async) ---------------------------------------------
    def _wrapped_k(self) -> int | None:
        """The wrapped retriever's own k (the number it was set up to return), if any."""
        r = self.retriever
        k = (
            r.search_kwargs.get("k")
            if isinstance(r, VectorStoreRetriever)
            else getattr(r, "k", None)
        )
        return k if _positive_int(k) else None

    def _k(self, kwargs: dict[str, Any]) -> int:
        if "k" in kwargs:
            k = kwargs["k"]
        elif "k" in self.model_fields_set:
            k = self.k
        elif "k" in self.search_kwargs:
            k = self.search_kwargs["k"]  # checked against k= by _search_k
        else:
            # A wrapped retriever set up for k results keeps that k: the wrapper's
            # default would fetch more than it returns (and book them as dropped)
            # or cut what it returns.
            k = self._wrapped_k() or self.k
        if not _positive_int(k):
            raise ConfigurationError(f"k must be a positive int, got {k!r}")
        return k

    def _keep(
        self,
        found: Scored,
        convention: ScoreConvention,
        k: int,
        metadata: dict[str, Any] | None = None,
        handlers: Sequence[Any] = (),
    ) -> list[Document]:
        engine = engine_for(self.engine, handlers)
        cfg = self.config
        # At most k come back, whatever the wrapped retriever returned.
        max_k = k if cfg.max_k is None else min(cfg.max_k, k)
        cfg = cfg.model_copy(
            update={
                "score_convention": convention,
                "max_k": max_k,
                "min_k": min(cfg.min_k, max_k),
            }
        )
        result = select_relevant(
            [ScoredChunk(doc.page_content, score) for doc, score in found],
            cfg,
            count_tokens=lambda text: engine.tokens.count(text, self.token_model),
        )
        self._record(engine, result, metadata)
        return [
            found[i][0].model_copy(
                update={"metadata": {**found[i][0].metadata, METADATA_KEY: result.similarities[i]}}
            )
            for i in result.kept
        ]

    def _record(
        self, engine: CostEngine, result: RelevanceResult, metadata: dict[str, Any] | None
    ) -> None:
        if not self.record_savings:
            return
        engine.record_removed_tokens(
            result.tokens_removed,
            lever="compression",
            model=self.token_model,
            # The run's tenant, as the cost handler books the run's model calls.
            tenant=run_tenant(metadata, own=self.tenant),
            framework="langchain",
            tags={"component": "relevance"},
        )

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k = self._k(kwargs)
        found, convention = self._search(query, k, run_manager)
        return self._keep(found, convention, k, run_manager.metadata, run_manager.handlers)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k = self._k(kwargs)
        found, convention = await self._asearch(query, k, run_manager)
        return self._keep(found, convention, k, run_manager.metadata, run_manager.handlers)
