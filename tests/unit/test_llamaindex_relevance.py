"""RelevanceThresholdPostprocessor: hand-made node lists, a VectorStoreIndex end to end, ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from pydantic import PrivateAttr

from costopt_core.context.relevance import RelevanceConfig
from costopt_core.engine import CostEngine
from costopt_core.errors import ConfigurationError
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder
from llamaindex_costopt.relevance import RelevanceThresholdPostprocessor
from llamaindex_costopt.testing import ScriptedLLM

TEXTS = [
    "The Eiffel Tower is a wrought iron lattice tower in Paris.",
    "The Eiffel Tower in Paris opened in 1889 for the World's Fair.",
    "Paris is the capital of France and its largest city.",
    "Bananas are berries while strawberries are not.",
    "The Great Barrier Reef is the largest coral reef system.",
    "Mount Everest is the highest mountain above sea level.",
]
QUERY = "When did the Eiffel Tower in Paris open?"


class BagOfWordsEmbedding(BaseEmbedding):
    """LlamaIndex face of the engine's hashed bag-of-words fake (offline, deterministic)."""

    _fake: Any = PrivateAttr(default_factory=lambda: FakeEmbedder(dim=256))

    def _get_text_embedding(self, text: str) -> list[float]:
        return [float(x) for x in self._fake.embed([text])[0]]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


def scored(scores: list[float | None], texts: list[str] = TEXTS) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=texts[i], id_=f"n{i}", metadata={"i": i}), score=s)
        for i, s in enumerate(scores)
    ]


def ids(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.node_id for n in nodes]


def llm_tokens(engine: CostEngine, nodes: list[NodeWithScore]) -> int:
    return sum(
        engine.tokens.count(n.node.get_content(metadata_mode=MetadataMode.LLM)) for n in nodes
    )


def test_threshold_on_hand_made_nodes() -> None:
    nodes = scored([0.9, 0.7, 0.4, 0.2])
    pp = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(absolute_threshold=0.5), engine=CostEngine()
    )
    out = pp.postprocess_nodes(nodes, query_str=QUERY)
    assert ids(out) == ["n0", "n1"]
    assert [n.score for n in out] == [0.9, 0.7]  # original scores by default
    assert out[0].node is nodes[0].node  # same node, new wrapper
    assert out[0] is not nodes[0]
    assert nodes[0].node.metadata == {"i": 0}


def test_numpy_scores_are_scores() -> None:
    """Rerankers give numpy scalars; a cutoff must apply to them, NaN is no score."""
    nodes = scored([0.9, 0.7, 0.4, 0.2])
    # Set after construction, so pydantic does not coerce them to float.
    nodes[0].score = np.float32(0.95)  # type: ignore[assignment]
    nodes[2].score = np.float32(0.02)  # type: ignore[assignment]
    nodes[3].score = np.float32("nan")  # type: ignore[assignment]
    pp = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(absolute_threshold=0.5, unscored_policy="drop"),
        engine=CostEngine(),
        score_output="similarity",
    )
    out = pp.postprocess_nodes(nodes, query_str=QUERY)
    assert ids(out) == ["n0", "n1"]
    assert [n.score for n in out] == pytest.approx([0.95, 0.7])


def test_cutoffs_compose_and_min_k_keeps_the_top_node() -> None:
    nodes = scored([0.95, 0.9, 0.6, 0.55, 0.2, 0.05])
    cfg = RelevanceConfig(absolute_threshold=0.1, relative_to_top=0.5, gap_detection=True)
    pp = RelevanceThresholdPostprocessor(config=cfg, engine=CostEngine())
    assert ids(pp.postprocess_nodes(nodes)) == ["n0", "n1"]
    impossible = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(absolute_threshold=1.0), engine=CostEngine()
    )
    assert ids(impossible.postprocess_nodes(scored([0.3, 0.2]))) == ["n0"]


def test_distance_scores_and_similarity_output() -> None:
    nodes = scored([0.1, 0.3, 0.9])  # cosine distances, best first
    pp = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(score_convention="cosine_distance", absolute_threshold=0.5),
        engine=CostEngine(),
        score_output="similarity",
    )
    out = pp.postprocess_nodes(nodes)
    assert ids(out) == ["n0", "n1"]
    assert [n.score for n in out] == pytest.approx([0.9, 0.7])
    _, result = pp.select(nodes)
    assert result.convention == "cosine_distance"
    assert result.dropped == {2: "below_threshold"}


def test_scores_out_of_rank_order_are_still_similarities() -> None:
    # LongContextReorder puts the best node last: [0.8, 0.6, 0.72, 0.91]. The
    # default reads NodeWithScore scores as similarity (LlamaIndex's convention),
    # not as distances guessed from the order, so the 0.91 node is kept.
    from llama_index.core.postprocessor import LongContextReorder

    ranked = scored([0.91, 0.8, 0.72, 0.6])
    reordered = LongContextReorder().postprocess_nodes(ranked, QueryBundle(QUERY))
    assert [n.score for n in reordered] == [0.8, 0.6, 0.72, 0.91]
    cfg = RelevanceConfig(relative_to_top=0.8, min_k=0)
    pp = RelevanceThresholdPostprocessor(config=cfg, engine=CostEngine())
    kept, result = pp.select(reordered)
    assert result.convention == "similarity"
    assert ids(kept) == ["n1", "n0"] and [n.score for n in kept] == [0.8, 0.91]
    assert ids(pp.postprocess_nodes(ranked)) == ["n0", "n1"]
    # Two nodes come back ascending ([0.8, 0.91]), which no detection can tell
    # from distances: only the declared convention keeps the 0.91 node.
    pair = LongContextReorder().postprocess_nodes(scored([0.91, 0.8]), QueryBundle(QUERY))
    assert [n.score for n in pair] == [0.8, 0.91]
    strict = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(relative_to_top=0.9, min_k=0), engine=CostEngine()
    )
    kept, result = strict.select(pair)
    assert result.convention == "similarity" and ids(kept) == ["n0"]
    # A convention set in the config is the user's: an explicit "auto" still
    # detects distances sorted ascending, as a store returns them.
    auto = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(score_convention="auto", absolute_threshold=0.5),
        engine=CostEngine(),
    )
    kept, result = auto.select(scored([0.1, 0.3, 0.9]))
    assert result.convention == "cosine_distance" and ids(kept) == ["n0", "n1"]
    # ... and the stricter detection keeps the best of the reordered list there too.
    auto = RelevanceThresholdPostprocessor(
        config=cfg.model_copy(update={"score_convention": "auto"}), engine=CostEngine()
    )
    kept, result = auto.select(reordered)
    assert result.convention == "similarity" and ids(kept) == ["n1", "n0"]


def test_unscored_nodes_follow_the_policy() -> None:
    nodes = scored([None, 0.8, None, 0.1])
    keep = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(absolute_threshold=0.5, unscored_policy="keep_after_scored"),
        engine=CostEngine(),
    )
    assert ids(keep.postprocess_nodes(nodes)) == ["n1", "n0", "n2"]
    drop = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(unscored_policy="drop"), engine=CostEngine()
    )
    assert ids(drop.postprocess_nodes(nodes)) == ["n1", "n3"]


def test_duplicates_and_token_budget() -> None:
    texts = [TEXTS[0], TEXTS[0], TEXTS[1], TEXTS[2]]
    engine = CostEngine()
    nodes = scored([0.9, 0.88, 0.8, 0.7], texts)
    budget = llm_tokens(engine, [nodes[0], nodes[2]])
    pp = RelevanceThresholdPostprocessor(config=RelevanceConfig(token_budget=budget), engine=engine)
    kept, result = pp.select(nodes)
    assert ids(kept) == ["n0", "n2"]
    assert result.dropped == {1: "duplicate", 3: "token_budget"}


def test_ledger_records_removed_tokens_as_compression() -> None:
    engine = CostEngine()
    nodes = scored([0.9, 0.8, 0.3, 0.2])
    pp = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(absolute_threshold=0.5), engine=engine
    )
    with tenant_scope("acme"):
        pp.postprocess_nodes(nodes)
    [rec] = engine.ledger.records()
    removed = llm_tokens(engine, nodes[2:])
    assert rec.outcome == "removed"
    assert rec.usage.input_tokens == removed
    assert (rec.framework, rec.tenant) == ("llamaindex", "acme")
    assert rec.savings_usd == {"compression": Decimal(removed) * Decimal("2.5") / 10**6}


def test_no_record_when_nothing_removed_or_switched_off() -> None:
    engine = CostEngine()
    RelevanceThresholdPostprocessor(engine=engine).postprocess_nodes(scored([0.9, 0.8]))
    RelevanceThresholdPostprocessor(
        engine=engine, record_savings=False, config=RelevanceConfig(absolute_threshold=0.85)
    ).postprocess_nodes(scored([0.9, 0.8]))
    assert len(engine.ledger) == 0


async def test_sync_async_parity() -> None:
    cfg = RelevanceConfig(relative_to_top=0.6)
    sync_engine, async_engine = CostEngine(), CostEngine()
    nodes = scored([0.9, 0.7, 0.5, 0.2])
    sync_out = RelevanceThresholdPostprocessor(config=cfg, engine=sync_engine).postprocess_nodes(
        nodes, QueryBundle(QUERY)
    )
    async_out = await RelevanceThresholdPostprocessor(
        config=cfg, engine=async_engine
    ).apostprocess_nodes(nodes, QueryBundle(QUERY))
    assert ids(sync_out) == ids(async_out) == ["n0", "n1"]
    assert [r.usage.input_tokens for r in sync_engine.ledger.records()] == [
        r.usage.input_tokens for r in async_engine.ledger.records()
    ]
    assert len(sync_engine.ledger) == 1


def index() -> VectorStoreIndex:
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    return VectorStoreIndex(nodes=nodes, embed_model=BagOfWordsEmbedding())


def test_vector_store_index_end_to_end() -> None:
    idx = index()
    raw = idx.as_retriever(similarity_top_k=6).retrieve(QUERY)
    expected = [n.node.node_id for n in raw if (n.score or 0.0) >= 0.3]
    assert 1 <= len(expected) < 6
    engine = CostEngine()
    pp = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(absolute_threshold=0.3), engine=engine
    )
    assert ids(pp.postprocess_nodes(raw, query_str=QUERY)) == expected
    assert engine.ledger.records()[0].usage.input_tokens == llm_tokens(
        engine, [n for n in raw if n.node.node_id not in expected]
    )


def test_query_engine_uses_the_postprocessor() -> None:
    engine = CostEngine()
    pp = RelevanceThresholdPostprocessor(
        config=RelevanceConfig(absolute_threshold=0.3), engine=engine
    )
    qe = index().as_query_engine(
        llm=ScriptedLLM.from_texts(["1889."]), similarity_top_k=6, node_postprocessors=[pp]
    )
    response = qe.query(QUERY)
    assert str(response) == "1889."
    sources = [n.node.node_id for n in response.source_nodes]
    assert "n1" in sources
    assert 1 <= len(sources) < 6
    assert len(engine.ledger) == 1


def test_configuration_errors_name_the_value() -> None:
    with pytest.raises(ConfigurationError, match="score_output='raw'"):
        RelevanceThresholdPostprocessor(score_output="raw")
    with pytest.raises(ConfigurationError, match="min_k=-1"):
        RelevanceThresholdPostprocessor(config={"min_k": -1})
    with pytest.raises(ConfigurationError, match=r"relative_to_top=1\.5"):
        RelevanceConfig(relative_to_top=1.5)


def test_savings_are_booked_under_the_track_costs_tenant() -> None:
    # The block's LLM calls are booked under its tenant; so must the nodes it drops.
    from llamaindex_costopt import track_costs

    pp = RelevanceThresholdPostprocessor(config=RelevanceConfig(absolute_threshold=0.5))
    with track_costs(tenant="acme") as costs:
        pp.postprocess_nodes(scored([0.9, 0.8, 0.3, 0.2]))
    [rec] = costs.ledger.records()
    assert (rec.outcome, rec.tenant) == ("removed", "acme")
