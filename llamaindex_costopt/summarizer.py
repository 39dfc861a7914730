"""``ContextSummarizerPostprocessor``: LlamaIndex nodes cut to the sentences that answer the query.

A node postprocessor for any query engine or retriever pipeline: each node's
text is cut to the sentences the extractive summarizer of
``costopt_core.context.summarize`` keeps for the query, under a token budget,
with no LLM call. The decision is the engine's; this class only turns nodes
into strings and back.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field, ValidationError, field_validator
from llama_index.core.llms import LLM, ChatResponse
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode

from costopt_core.cache.component import ComponentCache
from costopt_core.checks import check_component_cache, check_summarizer_config
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
from costopt_core.engine import CostEngine
from costopt_core.errors import check_arguments, config_error
from costopt_core.types import Message
from llamaindex_costopt._checks import check_engine, check_llm
from llamaindex_costopt.handler import engine_for, resolve_tenant
from llamaindex_costopt.memory import to_llamaindex_message

__all__ = [
    "SUMMARY_METADATA_KEY",
    "AbstractiveSummarizerPostprocessor",
    "ContextSummarizerPostprocessor",
]

#: Metadata key of a summarized node: ``{"tokens_before", "tokens_after"}``;
#: kept out of the LLM's and the embedder's view of the node.
SUMMARY_METADATA_KEY = "costopt_summary"


def _question(query_bundle: QueryBundle | None) -> str | None:
    """The question to summarize for; ``None`` when there is none, or it is blank.

    A blank question selects nothing: cutting the context for it would only
    keep sentences at random, so the nodes go through unchanged, as without one.
    """
    if query_bundle is None or blank_question(query_bundle.query_str):
        return None
    return query_bundle.query_str


def _answer_text(answer: ChatResponse) -> str:
    """The summary text of the model's answer; ``""`` when the answer has no text.

    ``ChatMessage.content`` is ``None`` when the answer holds no text block (a
    refusal, a filtered or an empty answer). ``str()`` would turn that into the
    text "None", a "summary" shorter than any context, which would replace
    every node; ``""`` makes the engine keep the original nodes instead.
    """
    return answer.message.content or ""


def _with_text(node: BaseNode, text: str, metadata: dict[str, Any]) -> BaseNode:
    """A copy of ``node`` holding ``text`` and ``metadata``; the source node is untouched.

    A copy, not a fresh ``TextNode``: the templates that shape what the LLM
    sees (``text_template``, ``metadata_template``, ``metadata_separator``)
    and a subclass's own fields (``IndexNode.index_id``, an image) stay.
    Mutable containers are new objects, and the embedding, which was of
    the whole text, is dropped.
    """
    copy = node.model_copy(
        update={
            "metadata": metadata,
            "relationships": dict(node.relationships),
            "excluded_llm_metadata_keys": [*node.excluded_llm_metadata_keys, SUMMARY_METADATA_KEY],
            "excluded_embed_metadata_keys": [
                *node.excluded_embed_metadata_keys,
                SUMMARY_METADATA_KEY,
            ],
            "embedding": None,
        }
    )
    copy.set_content(text)
    return copy


class _Postprocessor(BaseNodePostprocessor):
    """What both summarizers share: the engine, the tokenizer and booking the cut."""

    engine: CostEngine | None = Field(default=None, exclude=True)
    model: str | None = None
    tenant: str | None = None
    record_savings: bool = True

    def __init__(self, **data: Any) -> None:
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
        # The ledger of the handler that records the query's calls (the
        # abstractive summarizer's own call among them, as ``overhead``), so
        # ``compression`` nets out there.
        return engine_for(self.engine)

    def _count(self, text: str) -> int:
        return self._engine().tokens.count(text, self.model)

    def _book(self, removed_tokens: int) -> None:
        if self.record_savings:
            self._engine().record_removed_tokens(
                removed_tokens,
                lever="compression",
                model=self.model,
                tenant=resolve_tenant(self.tenant),
                framework="llamaindex",
            )


class ContextSummarizerPostprocessor(_Postprocessor):
    """Keeps the sentences of retrieved nodes that answer the query, under a token budget.

    Returns new ``NodeWithScore`` objects (same score) holding copies of
    the source nodes (same class, id, metadata, relationships and templates)
    with the kept sentences in their original order as text, plus
    ``metadata["costopt_summary"]`` (hidden from the LLM and the embedder).
    Nodes with nothing kept are dropped; without a query (or with a blank
    one) the nodes are returned unchanged and nothing is recorded. The
    removed tokens are recorded in the engine's ledger under the
    ``compression`` lever.

    Args:
        config: budget and scoring (``SummarizerConfig()``: 40% of the tokens).
        engine: embedder, token counter and ledger; if None, the engine of
            the ``CostEventHandler`` that records the query's LLM calls, else
            the current engine (see :func:`~llamaindex_costopt.handler.engine_for`).
        model: the model the context is for: picks the tokenizer and labels
            the ledger record.
        tenant: tenant of the ledger record; otherwise
            the one :func:`~llamaindex_costopt.handler.resolve_tenant` finds (instrument tags,
            ``track_costs``, ``tenant_scope``, the recording handler's).
        record_savings: record removed tokens in the ledger.

    Raises:
        ConfigurationError: ``config`` is not a ``SummarizerConfig`` or
            ``engine`` not a ``CostEngine``.

    Example:
        >>> query_engine = index.as_query_engine(  # doctest: +SKIP
        ...     node_postprocessors=[ContextSummarizerPostprocessor()]
        ... )
    """

    config: SummarizerConfig = Field(default_factory=SummarizerConfig)

    @classmethod
    def class_name(cls) -> str:
        return "costopt_context_summarizer"

    @staticmethod
    def _texts(nodes: list[NodeWithScore]) -> list[str]:
        return [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]

    def _finish(self, nodes: list[NodeWithScore], result: SummaryResult) -> list[NodeWithScore]:
        out = []
        for chunk in result.chunks:
            source = nodes[chunk.index]
            old = source.node
            metadata: dict[str, Any] = dict(old.metadata)
            metadata[SUMMARY_METADATA_KEY] = {
                "tokens_before": chunk.tokens_before,
                "tokens_after": chunk.tokens_after,
            }
            out.append(
                NodeWithScore(node=_with_text(old, chunk.text, metadata), score=source.score)
            )
        self._book(result.removed_tokens)
        return out

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        question = _question(query_bundle)
        if question is None or not nodes:
            return list(nodes)
        result = summarize_extractive(
            question,
            self._texts(nodes),
            self.config,
            embed=self._engine().embedder.embed,
            count_tokens=self._count,
        )
        return self._finish(nodes, result)

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        question = _question(query_bundle)
        if question is None or not nodes:
            return list(nodes)
        result = await asummarize_extractive(
            question,
            self._texts(nodes),
            self.config,
            aembed=self._engine().embedder.aembed,
            count_tokens=self._count,
        )
        return self._finish(nodes, result)


class AbstractiveSummarizerPostprocessor(_Postprocessor):
    """Has a cheap LLM rewrite the retrieved nodes into one short summary node.

    Returns one ``NodeWithScore`` (the best score of the inputs) holding the
    summary, with ``metadata["costopt_summary"]`` (tokens before and after,
    source node ids; hidden from the LLM and the embedder), or the nodes
    unchanged when the summary is empty or not shorter, or the query is
    missing or blank (no LLM call then). Summaries are cached
    by (query, nodes, prompt) when a ``cache`` is given. The LLM's own call is
    priced by the cost handler attached to it; the tokens removed are
    recorded under ``compression``.

    Args:
        llm: the cheap LLM that writes the summary.
        config: prompt and length (``AbstractiveConfig()``: 256 tokens).
        cache: a ``ComponentCache`` to reuse summaries (one name per model).
        engine: token counter and ledger; if None, the engine of the
            ``CostEventHandler`` that records the query's LLM calls (this
            LLM's among them), else the current engine (see
            :func:`~llamaindex_costopt.handler.engine_for`).
        model: the model the context is for (tokenizer and ledger label).
        tenant: tenant of the ledger record; otherwise
            the one :func:`~llamaindex_costopt.handler.resolve_tenant` finds (instrument tags,
            ``track_costs``, ``tenant_scope``, the recording handler's).
        record_savings: record removed tokens in the ledger.

    Raises:
        ConfigurationError: ``llm`` is not a LlamaIndex LLM (a model name, say),
            ``config`` not an ``AbstractiveConfig``, ``cache`` not a
            ``ComponentCache`` or ``engine`` not a ``CostEngine``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: LLM
    config: AbstractiveConfig = Field(default_factory=AbstractiveConfig)
    cache: ComponentCache | None = Field(default=None, exclude=True)

    _check_llm = field_validator("llm", mode="before")(check_llm)

    _check_cache = field_validator("cache", mode="before")(check_component_cache)

    @classmethod
    def class_name(cls) -> str:
        return "costopt_abstractive_summarizer"

    def _chat(self, messages: list[Message]) -> str:
        return _answer_text(self.llm.chat([to_llamaindex_message(m) for m in messages]))

    async def _achat(self, messages: list[Message]) -> str:
        return _answer_text(await self.llm.achat([to_llamaindex_message(m) for m in messages]))

    def _finish(
        self, nodes: list[NodeWithScore], result: AbstractiveSummary
    ) -> list[NodeWithScore]:
        if not result.summarized:
            return list(nodes)
        self._book(result.removed_tokens)
        node = TextNode(
            text=result.text,
            metadata={
                SUMMARY_METADATA_KEY: {
                    "tokens_before": result.tokens_before,
                    "tokens_after": result.tokens_after,
                    "sources": [n.node.node_id for n in nodes],
                }
            },
            excluded_llm_metadata_keys=[SUMMARY_METADATA_KEY],
            excluded_embed_metadata_keys=[SUMMARY_METADATA_KEY],
        )
        scores = [n.score for n in nodes if n.score is not None]
        return [NodeWithScore(node=node, score=max(scores) if scores else None)]

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        question = _question(query_bundle)
        if question is None or not nodes:
            return list(nodes)
        result = summarize_abstractive(
            question,
            ContextSummarizerPostprocessor._texts(nodes),
            self._chat,
            self.config,
            count_tokens=self._count,
            cache=self.cache,
        )
        return self._finish(nodes, result)

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        question = _question(query_bundle)
        if question is None or not nodes:
            return list(nodes)
        result = await asummarize_abstractive(
            question,
            ContextSummarizerPostprocessor._texts(nodes),
            self._achat,
            self.config,
            count_tokens=self._count,
            cache=self.cache,
        )
        return self._finish(nodes, result)
