"""``ContextSummarizer``: a LangChain document compressor that keeps only the answering sentences.

Drop it into ``ContextualCompressionRetriever`` (or call it on any list of
documents): each document's ``page_content`` is cut to the sentences the
extractive summarizer of ``costopt_core.context.summarize`` keeps for the
query, under a token budget, with no LLM call. The decision is the engine's;
this class only turns documents into strings and back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import BaseCallbackManager, Callbacks
from langchain_core.documents import Document
from langchain_core.documents.compressor import BaseDocumentCompressor
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig, ensure_config
from pydantic import ConfigDict, Field, ValidationError, field_validator

from costopt_core.cache.component import ComponentCache
from costopt_core.checks import (
    check_component_cache,
    check_engine,
    check_summarizer_config,
    check_type,
)
from costopt_core.context.summarize import (
    AbstractiveConfig,
    AbstractiveSummary,
    SummarizerConfig,
    SummaryResult,
    asummarize_abstractive,
    asummarize_extractive,
    blank_question,
    summarize_abstractive,
    summarize_extractive,
)
from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import check_arguments, config_error
from costopt_core.types import Message
from langchain_costopt._convert import to_langchain_message
from langchain_costopt.callbacks import engine_for, run_tenant

__all__ = ["SUMMARY_METADATA_KEY", "AbstractiveContextSummarizer", "ContextSummarizer"]

#: Metadata key of a summarized document: ``{"tokens_before", "tokens_after"}``.
SUMMARY_METADATA_KEY = "costopt_summary"


class _Compressor(BaseDocumentCompressor):
    """What both summarizers share: the engine, the tokenizer and booking the cut."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: CostEngine | None = None
    model: str | None = None
    tenant: str | None = None
    record_savings: bool = True

    def __init__(self, **data: Any) -> None:
        # A bad setting is the engine's ConfigurationError naming the value and
        # the fix, as every other component (and the LlamaIndex twins) raises,
        # not pydantic's ValidationError.
        check_arguments(type(self).__name__, data, type(self))
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self).__name__, exc) from None

    _check_engine = field_validator("engine", mode="before")(check_engine)

    @field_validator("config", mode="before", check_fields=False)
    @classmethod
    def _check_config(cls, value: Any) -> Any:
        # Each summarizer's own config class (a dict of its fields is accepted too).
        return check_summarizer_config(value, cls.model_fields["config"].annotation)

    def _engine(self) -> CostEngine:
        return self.engine or current_engine()

    def _count(self, text: str) -> int:
        return self._engine().tokens.count(text, self.model)

    def _book(self, removed_tokens: int, callbacks: Callbacks | None) -> None:
        """Record the removed tokens, under the tenant of the run they were cut in.

        Args:
            removed_tokens: tokens kept out of the prompt.
            callbacks: what ``compress_documents`` was handed: a run's callback
                manager (``ContextualCompressionRetriever`` passes one) carries
                the run's metadata; otherwise the enclosing runnable's config does.
        """
        if not self.record_savings:
            return
        config = ensure_config()
        handlers: Callbacks | None
        metadata: dict[str, Any] | None
        if isinstance(callbacks, BaseCallbackManager):
            metadata, handlers = callbacks.metadata, callbacks
        else:
            metadata, handlers = config.get("metadata"), config.get("callbacks")
        engine = engine_for(self.engine, handlers)
        engine.record_removed_tokens(
            removed_tokens,
            lever="compression",
            model=self.model,
            # The run's tenant, as the cost handler books the run's model calls.
            tenant=run_tenant(metadata, own=self.tenant),
            framework="langchain",
        )


class ContextSummarizer(_Compressor):
    """Keeps the sentences of retrieved documents that answer the query, under a token budget.

    Documents come back as copies with the kept sentences as ``page_content``
    (original order, metadata kept, plus ``metadata["costopt_summary"]`` with
    the document's tokens before and after); documents with nothing kept are
    dropped. A blank question (empty or whitespace) returns the documents
    unchanged and records nothing. The removed tokens are recorded in the
    engine's ledger under the ``compression`` lever.

    Args:
        config: budget and scoring (``SummarizerConfig()``: 40% of the tokens).
        engine: embedder, token counter and ledger; the process default if None.
        model: the model the context is for: picks the tokenizer and labels
            the ledger record.
        tenant: tenant of the ledger record; otherwise the run's (its
            metadata's ``costopt_tenant``, as the cost handler reads it), else
            ``tenant_scope``'s.
        record_savings: record removed tokens in the ledger.

    Example (``langchain-classic`` installed)::

        from langchain_classic.retrievers import ContextualCompressionRetriever

        retriever = ContextualCompressionRetriever(
            base_compressor=ContextSummarizer(), base_retriever=vector_store.as_retriever()
        )
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: SummarizerConfig = Field(default_factory=SummarizerConfig)

    def _finish(
        self, documents: Sequence[Document], result: SummaryResult, callbacks: Callbacks | None
    ) -> list[Document]:
        out = []
        for chunk in result.chunks:
            doc = documents[chunk.index]
            metadata = dict(doc.metadata)
            metadata[SUMMARY_METADATA_KEY] = {
                "tokens_before": chunk.tokens_before,
                "tokens_after": chunk.tokens_after,
            }
            out.append(Document(page_content=chunk.text, metadata=metadata, id=doc.id))
        self._book(result.removed_tokens, callbacks)
        return out

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Documents cut to the sentences that answer ``query`` (unchanged if it is blank)."""
        if blank_question(query):
            return list(documents)
        result = summarize_extractive(
            query,
            [d.page_content for d in documents],
            self.config,
            embed=self._engine().embedder.embed,
            count_tokens=self._count,
        )
        return self._finish(documents, result, callbacks)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async twin of :meth:`compress_documents` (the embedder's ``aembed``)."""
        if blank_question(query):
            return list(documents)
        result = await asummarize_extractive(
            query,
            [d.page_content for d in documents],
            self.config,
            aembed=self._engine().embedder.aembed,
            count_tokens=self._count,
        )
        return self._finish(documents, result, callbacks)

    def __repr_args__(self) -> Any:  # keep the engine (and its ledger) out of reprs
        return [(k, v) for k, v in super().__repr_args__() if k != "engine"]


class AbstractiveContextSummarizer(_Compressor):
    """Has a cheap chat model rewrite the retrieved documents into one short summary.

    Returns one ``Document`` holding the summary (``metadata["costopt_summary"]``
    names the sources and the tokens before and after), or the documents
    unchanged when the model's summary is empty or not shorter, or the
    question is blank (no model call then). Summaries are
    cached by (query, documents, prompt) when a ``cache`` is given. The
    model's own call is a run of the caller's chain, so the caller's cost
    handler prices it; the tokens removed are recorded under ``compression``.

    Args:
        llm: the cheap chat model that writes the summary.
        config: prompt and length (``AbstractiveConfig()``: 256 tokens).
        cache: a ``ComponentCache`` to reuse summaries (one name per model).
        engine: token counter and ledger; the enclosing ``track_costs``
            block's, else the process default, if None.
        model: the model the context is for (tokenizer and ledger label).
        tenant: tenant of the ledger record; otherwise the run's (its
            metadata's ``costopt_tenant``, as the cost handler reads it), else
            ``tenant_scope``'s.
        record_savings: record removed tokens in the ledger.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: BaseChatModel
    config: AbstractiveConfig = Field(default_factory=AbstractiveConfig)
    cache: ComponentCache | None = None

    @field_validator("llm", mode="before")
    @classmethod
    def _check_llm(cls, value: Any) -> Any:
        return check_type(
            value,
            BaseChatModel,
            "llm must be a LangChain chat model instance",
            "pass the model object, e.g. ChatOpenAI(model='gpt-4o-mini'), not its name",
        )

    _check_cache = field_validator("cache", mode="before")(check_component_cache)

    def _run_config(self, callbacks: Callbacks | None) -> RunnableConfig:
        return {"callbacks": callbacks, "run_name": "costopt_context_summarizer"}

    def _finish(
        self,
        documents: Sequence[Document],
        result: AbstractiveSummary,
        callbacks: Callbacks | None,
    ) -> Sequence[Document]:
        if not result.summarized:
            return documents
        self._book(result.removed_tokens, callbacks)
        sources = [d.id or d.metadata.get("source") for d in documents]
        summary = {
            "tokens_before": result.tokens_before,
            "tokens_after": result.tokens_after,
            "sources": sources,
        }
        return [Document(page_content=result.text, metadata={SUMMARY_METADATA_KEY: summary})]

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """One summary of ``documents`` written for ``query`` (unchanged if it is blank)."""
        if blank_question(query):
            return documents
        config = self._run_config(callbacks)
        result = summarize_abstractive(
            query,
            [d.page_content for d in documents],
            lambda messages: str(
                self.llm.invoke([to_langchain_message(m) for m in messages], config).text
            ),
            self.config,
            count_tokens=self._count,
            cache=self.cache,
        )
        return self._finish(documents, result, callbacks)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async twin of :meth:`compress_documents`."""
        if blank_question(query):
            return documents
        config = self._run_config(callbacks)

        async def achat(messages: list[Message]) -> str:
            answer = await self.llm.ainvoke([to_langchain_message(m) for m in messages], config)
            return str(answer.text)

        result = await asummarize_abstractive(
            query,
            [d.page_content for d in documents],
            achat,
            self.config,
            count_tokens=self._count,
            cache=self.cache,
        )
        return self._finish(documents, result, callbacks)

    def __repr_args__(self) -> Any:  # keep the engine (and its ledger) out of reprs
        return [(k, v) for k, v in super().__repr_args__() if k not in ("engine", "cache")]
