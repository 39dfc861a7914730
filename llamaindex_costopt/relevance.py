"""``RelevanceThresholdPostprocessor``: keep only the retrieved nodes worth their tokens.

A node postprocessor for any LlamaIndex retriever or query engine. It reads
``NodeWithScore.score`` as similarity, higher is better, as LlamaIndex
documents it (declare another convention in the config when yours differs),
lets the engine (:func:`costopt_core.context.relevance.select_relevant`)
choose, and books the tokens of the dropped nodes in the ledger as
``compression`` savings. Nodes are never modified: the result is new
``NodeWithScore`` objects around the same nodes, in the engine's order.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field, ValidationError

from costopt_core.context.relevance import (
    RelevanceConfig,
    RelevanceResult,
    ScoredChunk,
    with_default_convention,
)
from costopt_core.context.relevance import select_relevant as _select
from costopt_core.engine import CostEngine
from costopt_core.errors import check_arguments, config_error
from llamaindex_costopt.handler import engine_for, resolve_tenant

__all__ = ["RelevanceThresholdPostprocessor"]

# The media a node carries besides its text (ImageNode's fields; Node's resources).
_MEDIA_FIELDS = ("image", "image_path", "image_url")
_MEDIA_RESOURCES = ("image_resource", "audio_resource", "video_resource")
_WORD = re.compile(r"\w+")


def _media_digest(node: BaseNode) -> str:
    """A short digest of the media ``node`` carries ("" if none): the image the model sees."""
    parts = [f"{name}={v}" for name in _MEDIA_FIELDS if (v := getattr(node, name, None))]
    for name in _MEDIA_RESOURCES:
        resource = getattr(node, name, None)
        if resource is not None and resource.hash:
            parts.append(f"{name}={resource.hash}")
    if not parts:
        return ""
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


#: A node text of fewer words is a caption: its metadata is compared too.
_CAPTION_WORDS = 6


def _dedupe_text(node: BaseNode) -> str:
    """What near-duplicate detection compares for ``node``: the content the model sees.

    The node's text without its metadata labels, so one passage indexed from
    two files (``file_name``, ``page_label`` differ) is still a duplicate.
    But two nodes whose visible content differs must never compare equal:

    * when the text is too short to tell passages apart (a caption such as
      "Table", or none), the metadata the LLM reads is the content (a table
      or a record kept in metadata), and the node is compared by its whole
      LLM view; a passage of a sentence or more is compared by its text,
      whatever labels it carries;
    * a node with media (an ``ImageNode``'s image, a ``Node``'s image,
      audio or video resource) has every word tagged with a digest of that
      media. The engine compares word shingles, so nodes with different
      media share none (never duplicates, whatever their text), while nodes
      with the same media, or none, compare by their text as before.
    """
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    seen = node.get_content(metadata_mode=MetadataMode.LLM)
    if len(_WORD.findall(text)) < _CAPTION_WORDS:
        text = seen
    digest = _media_digest(node)
    if not digest:
        return text
    words = _WORD.findall(text)
    return " ".join(f"{w}_{digest}" for w in words) if words else f"media_{digest}"


class RelevanceThresholdPostprocessor(BaseNodePostprocessor):
    """Drops retrieved nodes that fail the relevance cutoffs, using their own scores.

    Args:
        config: the cutoffs; ``RelevanceConfig()`` drops only near-duplicates.
            Scores are read as similarity (``score_convention="similarity"``)
            unless the config sets a convention: LlamaIndex scores are
            "higher is more relevant", and nodes need not come in score order
            (after ``LongContextReorder``), so their order says nothing.
        engine: ledger and token counter; if omitted, the engine of the
            ``CostEventHandler`` that records the query's LLM calls, else
            ``current_engine()`` (see :func:`~llamaindex_costopt.handler.engine_for`).
        record_savings: book the dropped nodes' tokens as savings.
        tenant: tenant of the savings record; otherwise
            the one :func:`~llamaindex_costopt.handler.resolve_tenant` finds (instrument tags,
            ``track_costs``, ``tenant_scope``, the recording handler's).
        token_model: model whose tokenizer counts the nodes.
        score_output: ``original`` keeps each node's score as the retriever
            gave it; ``similarity`` replaces it with the normalised
            similarity in [0, 1] (``None`` for unscored nodes).

    Nodes are counted as the LLM sees them (``MetadataMode.LLM``) and
    compared for near-duplicates by their content: the text without the
    metadata labels (one passage indexed from two files is still a
    duplicate), the media (two different images are never duplicates), and
    the metadata too under a caption of a few words (a table kept in metadata).

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
        # The ledger of the handler that records the query's calls, as the
        # summarizers and the memory book theirs.
        engine = engine_for(self.engine)
        result = _select(
            [
                ScoredChunk(
                    n.node.get_content(metadata_mode=MetadataMode.LLM),
                    n.score,
                    dedupe_text=_dedupe_text(n.node),
                )
                for n in nodes
            ],
            # NodeWithScore's documented convention, not a guess from the
            # order: a reorder before this step made similarities look like
            # distances and dropped the best node.
            with_default_convention(self.config, "similarity"),
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
