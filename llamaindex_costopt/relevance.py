"""``RelevanceThresholdPostprocessor``: keep only the retrieved nodes worth their tokens.

A node postprocessor for any LlamaIndex retriever or query engine. It reads
``NodeWithScore.score`` (LlamaIndex vector stores report similarity, higher
is better; declare another convention in the config when yours does not),
lets the engine (:func:`costopt_core.context.relevance.select_relevant`)
choose, and books the tokens of the dropped nodes in the ledger as
``compression`` savings. Nodes are never modified: the result is new
``NodeWithScore`` objects around the same nodes, in the engine's order.
"""

from __future__ import annotations

from typing import Any, Literal

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field, ValidationError

from costopt_core.context.relevance import RelevanceConfig, RelevanceResult, ScoredChunk
from costopt_core.context.relevance import select_relevant as _select
from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import check_arguments, config_error
from llamaindex_costopt.handler import resolve_tenant

__all__ = ["RelevanceThresholdPostprocessor"]


class RelevanceThresholdPostprocessor(BaseNodePostprocessor):
    """Drops retrieved nodes that fail the relevance cutoffs, using their own scores.

    Args:
        config: the cutoffs; ``RelevanceConfig()`` drops only near-duplicates.
        engine: ledger and token counter; ``current_engine()`` if omitted.
        record_savings: book the dropped nodes' tokens as savings.
        tenant: tenant of the savings record; otherwise
            the one :func:`~llamaindex_costopt.handler.resolve_tenant` finds (instrument tags,
            ``track_costs``, ``tenant_scope``, the recording handler's).
        token_model: model whose tokenizer counts the nodes.
        score_output: ``original`` keeps each node's score as the retriever
            gave it; ``similarity`` replaces it with the normalised
            similarity in [0, 1] (``None`` for unscored nodes).

    Nodes are counted as the LLM sees them (``MetadataMode.LLM``) and
    compared for near-duplicates by their content alone.

    Example:
        >>> engine = index.as_query_engine(  # doctest: +SKIP
        ...     similarity_top_k=8,
        ...     node_postprocessors=[
        ...         RelevanceThresholdPostprocessor(config=RelevanceConfig(relative_to_top=0.8))
        ...     ],
        ... )
    """

    config: RelevanceConfig = Field(default_factory=RelevanceConfig)
    engine: CostEngine | None = Field(default=None, exclude=True)
    record_savings: bool = True
    tenant: str | None = None
    token_model: str | None = None
    score_output: Literal["original", "similarity"] = "original"

    def __init__(self, **kwargs: Any) -> None:
        check_arguments("RelevanceThresholdPostprocessor", kwargs, type(self))
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error("RelevanceThresholdPostprocessor", exc) from None

    @classmethod
    def class_name(cls) -> str:
        return "costopt_relevance_threshold_postprocessor"

    def _tenant(self) -> str | None:
        return resolve_tenant(self.tenant)

    def _record(self, engine: CostEngine, result: RelevanceResult) -> None:
        if not self.record_savings:
            return
        engine.record_removed_tokens(
            result.tokens_removed,
            lever="compression",
            model=self.token_model,
            tenant=self._tenant(),
            framework="llamaindex",
            tags={"component": "relevance"},
        )

    def select(self, nodes: list[NodeWithScore]) -> tuple[list[NodeWithScore], RelevanceResult]:
        """The kept nodes and the engine's full decision (reasons, similarities, tokens)."""
        engine = self.engine or current_engine()
        result = _select(
            [
                ScoredChunk(
                    n.node.get_content(metadata_mode=MetadataMode.LLM),
                    n.score,
                    dedupe_text=n.node.get_content(metadata_mode=MetadataMode.NONE),
                )
                for n in nodes
            ],
            self.config,
            count_tokens=lambda text: engine.tokens.count(text, self.token_model),
        )
        self._record(engine, result)
        kept = [
            NodeWithScore(
                node=nodes[i].node,
                score=result.similarities[i]
                if self.score_output == "similarity"
                else nodes[i].score,
            )
            for i in result.kept
        ]
        return kept, result

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return self.select(nodes)[0]

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        # Pure CPU work on a handful of nodes: no thread hop needed.
        return self.select(nodes)[0]
