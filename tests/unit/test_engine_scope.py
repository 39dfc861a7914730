"""Components without an engine of their own record into the enclosing track_costs block."""

from __future__ import annotations

from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from costopt_core import CostEngine, current_engine, default_engine, engine_scope
from costopt_core.context import SummarizerConfig
from langchain_costopt import ContextSummarizer
from langchain_costopt import track_costs as lc_track_costs
from llamaindex_costopt import ContextSummarizerPostprocessor
from llamaindex_costopt import track_costs as li_track_costs

TEXT = (
    "The Golden Gate Bridge opened in 1937. It is painted International Orange. "
    "Fog often hides its towers. The bridge is 2,737 metres long. Gulls nest under it."
)
QUESTION = "When did the Golden Gate Bridge open?"
# TEXT is under the default's 64-token floor, which would send it whole.
CUT = SummarizerConfig(ratio_floor_tokens=0)


def test_engine_scope_nests_and_restores() -> None:
    outer, inner = CostEngine(), CostEngine()
    assert current_engine() is default_engine()
    with engine_scope(outer):
        assert current_engine() is outer
        with engine_scope(inner):
            assert current_engine() is inner
        assert current_engine() is outer
    assert current_engine() is default_engine()


def test_langchain_component_records_into_the_track_costs_block() -> None:
    summarizer = ContextSummarizer(config=CUT)
    before = len(default_engine().ledger)
    with lc_track_costs() as costs:
        docs = summarizer.compress_documents([Document(TEXT)], QUESTION)
    assert "1937" in docs[0].page_content
    saved = costs.ledger.savings_by_lever()["compression"]
    assert saved > 0 and costs.ledger.totals().removed_input_tokens > 0
    # The block's engine is a child of the default one: its records are there once.
    assert len(default_engine().ledger) == before + len(costs.ledger)
    assert default_engine().ledger.records()[-1] == costs.ledger.records()[-1]


def test_llamaindex_component_records_into_the_track_costs_block() -> None:
    post = ContextSummarizerPostprocessor(config=CUT)
    nodes = [NodeWithScore(node=TextNode(text=TEXT), score=0.9)]
    before = len(default_engine().ledger)
    with li_track_costs() as costs:
        out = post.postprocess_nodes(nodes, QueryBundle(QUESTION))
    assert "1937" in out[0].node.get_content()
    assert costs.ledger.savings_by_lever()["compression"] > 0
    assert len(default_engine().ledger) == before + len(costs.ledger)
