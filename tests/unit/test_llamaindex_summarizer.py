"""LlamaIndex ``ContextSummarizerPostprocessor``: nodes cut to answering sentences."""

from __future__ import annotations

from llama_index.core.schema import (
    IndexNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

from costopt_core.context.summarize import SummarizerConfig
from costopt_core.engine import CostEngine
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder
from llamaindex_costopt.summarizer import SUMMARY_METADATA_KEY, ContextSummarizerPostprocessor

QUERY = "When did the Golden Gate Bridge open?"


def nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(
            node=TextNode(
                id_="n1",
                text="The Golden Gate Bridge opened in 1937. It is painted International Orange. "
                "Fog often hides its towers. The bridge is 2,737 metres long.",
                metadata={"source": "bridge.txt"},
                relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="doc-1")},
            ),
            score=0.8,
        ),
        NodeWithScore(
            node=TextNode(id_="n2", text="Penguins live in the south. They cannot fly."),
            score=0.3,
        ),
    ]


def make(**kwargs: object) -> tuple[ContextSummarizerPostprocessor, CostEngine]:
    engine = CostEngine(embedder=FakeEmbedder())
    return ContextSummarizerPostprocessor(engine=engine, **kwargs), engine  # type: ignore[arg-type]


def test_postprocess_keeps_answering_sentences() -> None:
    post, engine = make(config=SummarizerConfig(budget_ratio=None, budget_tokens=12))
    src = nodes()
    out = post.postprocess_nodes(src, query_bundle=QueryBundle(QUERY))
    assert [n.node.node_id for n in out] == ["n1"]
    node = out[0].node
    assert isinstance(node, TextNode)
    assert node.text == "The Golden Gate Bridge opened in 1937."
    assert out[0].score == 0.8
    assert node.metadata["source"] == "bridge.txt"
    assert node.source_node is not None and node.source_node.node_id == "doc-1"
    count = engine.tokens.count
    assert node.metadata[SUMMARY_METADATA_KEY] == {
        "tokens_before": count(src[0].node.get_content()),
        "tokens_after": count(node.text),
    }
    # the bookkeeping never reaches the LLM's prompt
    assert "costopt" not in node.get_content(metadata_mode=MetadataMode.LLM)
    assert src[0].node.get_content().endswith("metres long.")  # originals untouched


def test_summarized_nodes_keep_their_class_templates_and_fields() -> None:
    # Nodes used to be rebuilt as plain TextNodes: the templates that shape the
    # LLM's view of a node and a subclass's own fields were lost.
    text = "The bridge opened in 1932. It is painted grey. Gulls nest on it."
    templated = TextNode(
        id_="t1",
        text=text,
        metadata={"source": "bridges.pdf", "page": 4},
        text_template="<doc>\n{metadata_str}\n---\n{content}\n</doc>",
        metadata_template="[{key}] {value}",
        metadata_separator=" | ",
        embedding=[0.1, 0.2],
    )
    index = IndexNode(id_="i1", text=text, index_id="bridges-index", metadata={"k": "v"})
    post, _ = make(config=SummarizerConfig(budget_ratio=None, budget_tokens=8))
    query = "When did the bridge open?"
    (first,) = (
        n.node for n in post.postprocess_nodes([NodeWithScore(node=templated)], query_str=query)
    )
    (second,) = (
        n.node for n in post.postprocess_nodes([NodeWithScore(node=index)], query_str=query)
    )
    assert isinstance(first, TextNode) and isinstance(second, IndexNode)
    assert first.get_content(metadata_mode=MetadataMode.LLM) == (
        "<doc>\n[source] bridges.pdf | [page] 4\n---\nThe bridge opened in 1932.\n</doc>"
    )
    assert (first.text_template, first.metadata_template, first.metadata_separator) == (
        templated.text_template,
        templated.metadata_template,
        " | ",
    )
    assert first.embedding is None  # it was the whole text's
    assert second.index_id == "bridges-index" and second.node_id == "i1"
    assert second.text == "The bridge opened in 1932."
    # the sources are untouched
    assert templated.text == text and templated.embedding == [0.1, 0.2]
    assert SUMMARY_METADATA_KEY not in templated.metadata
    assert SUMMARY_METADATA_KEY not in templated.excluded_llm_metadata_keys
    assert index.text == text and index.metadata == {"k": "v"}


def test_query_str_and_ledger() -> None:
    post, engine = make(config=SummarizerConfig(budget_ratio=0.4, ratio_floor_tokens=0))
    with tenant_scope("acme"):
        out = post.postprocess_nodes(nodes(), query_str=QUERY)
    before = sum(engine.tokens.count(n.node.get_content()) for n in nodes())
    after = sum(engine.tokens.count(n.node.get_content()) for n in out)
    (rec,) = engine.ledger.records()
    assert rec.outcome == "removed" and rec.framework == "llamaindex" and rec.tenant == "acme"
    assert rec.usage.input_tokens == before - after > 0
    assert set(rec.savings_usd) == {"compression"}


def test_no_query_or_no_nodes_pass_through() -> None:
    post, engine = make()
    src = nodes()
    assert post.postprocess_nodes(src) == src
    assert post.postprocess_nodes([], query_str=QUERY) == []
    assert engine.ledger.records() == []


def test_record_savings_off() -> None:
    post, engine = make(record_savings=False)
    post.postprocess_nodes(nodes(), query_str=QUERY)
    assert engine.ledger.records() == []


async def test_sync_async_parity() -> None:
    post, engine = make(config=SummarizerConfig(budget_ratio=0.5, ratio_floor_tokens=0))
    sync = post.postprocess_nodes(nodes(), query_str=QUERY)
    asyn = await post.apostprocess_nodes(nodes(), query_str=QUERY)
    assert [(n.node.node_id, n.node.get_content(), n.score) for n in sync] == [
        (n.node.node_id, n.node.get_content(), n.score) for n in asyn
    ]
    assert len(engine.ledger.records()) == 2


# -- abstractive -------------------------------------------------------------------

_LONG = (
    "The Golden Gate Bridge opened in 1937 after four years of work. "
    "It is painted International Orange so that ships can see it in fog. "
) * 3


def _summarizer_llm(text: str = "Opened in 1937.") -> object:
    from costopt_core import Usage
    from costopt_core.testing import Script, ScriptedResponse
    from llamaindex_costopt.testing import ScriptedLLM

    return ScriptedLLM(
        script=Script(
            [ScriptedResponse(text, Usage(input_tokens=90, output_tokens=5), model="gpt-4o-mini")]
        )
    )


def _long_nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=_LONG, id_="gg"), score=0.8),
        NodeWithScore(node=TextNode(text="San Francisco has hills. " * 8, id_="sf"), score=0.5),
    ]


def test_abstractive_postprocessor_summarizes_and_books_the_cut() -> None:
    from llamaindex_costopt import track_costs
    from llamaindex_costopt.summarizer import AbstractiveSummarizerPostprocessor

    post = AbstractiveSummarizerPostprocessor(llm=_summarizer_llm())
    with track_costs() as costs:
        out = post.postprocess_nodes(_long_nodes(), QueryBundle("When did the bridge open?"))
    assert len(out) == 1 and out[0].node.get_content() == "Opened in 1937."
    assert out[0].score == 0.8
    meta = out[0].node.metadata[SUMMARY_METADATA_KEY]
    assert meta["sources"] == ["gg", "sf"]
    totals = costs.ledger.totals()
    # The summarizer's LLM call is priced by the block's handler, as compression's
    # overhead: it is no request, and the all-frontier run never made it.
    assert totals.requests == 0 and totals.overheads == 1
    assert totals.removed_input_tokens == meta["tokens_before"] - meta["tokens_after"]
    by_outcome = {r.outcome: r for r in costs.ledger.records()}
    call, cut = by_outcome["overhead"], by_outcome["removed"]
    assert call.cost_usd and call.baseline_cost_usd == 0
    assert call.savings_usd == {"compression": -call.cost_usd}
    levers = costs.ledger.savings_by_lever()
    assert levers["compression"] == cut.savings_usd["compression"] - call.cost_usd
    assert levers["routing"] == 0


async def test_abstractive_postprocessor_async_and_not_shorter() -> None:
    from llamaindex_costopt.summarizer import AbstractiveSummarizerPostprocessor

    engine = CostEngine(embedder=FakeEmbedder())
    post = AbstractiveSummarizerPostprocessor(llm=_summarizer_llm(), engine=engine)
    out = await post.apostprocess_nodes(_long_nodes(), QueryBundle("When did it open?"))
    assert [n.node.get_content() for n in out] == ["Opened in 1937."]
    verbose = AbstractiveSummarizerPostprocessor(llm=_summarizer_llm("word " * 500), engine=engine)
    nodes = _long_nodes()
    same = await verbose.apostprocess_nodes(nodes, QueryBundle("When did it open?"))
    assert [n.node.node_id for n in same] == ["gg", "sf"]
    assert engine.ledger.totals().removals == 1  # only the real summary was booked


async def test_abstractive_answer_without_text_keeps_the_nodes() -> None:
    # ChatMessage.content is None when the answer has no text block (a refusal, a
    # filtered answer): that is an empty summary, not the text "None" in place of
    # every node, and nothing is booked as removed.
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole

    from costopt_core.testing import Script, ScriptedResponse
    from llamaindex_costopt.summarizer import AbstractiveSummarizerPostprocessor
    from llamaindex_costopt.testing import ScriptedLLM

    class NoTextLLM(ScriptedLLM):
        def _chat_response(self, r: ScriptedResponse) -> ChatResponse:
            message = ChatMessage(role=MessageRole.ASSISTANT, content=None)
            return ChatResponse(message=message, raw=self._raw(r))

    engine = CostEngine(embedder=FakeEmbedder())
    llm = NoTextLLM(script=Script(["ignored", "ignored"]))
    post = AbstractiveSummarizerPostprocessor(llm=llm, engine=engine)
    query = QueryBundle("When did the bridge open?")
    sync = post.postprocess_nodes(_long_nodes(), query)
    asyn = await post.apostprocess_nodes(_long_nodes(), query)
    for out in (sync, asyn):
        assert [(n.node.node_id, n.node.get_content()) for n in out] == [
            ("gg", _LONG),
            ("sf", "San Francisco has hills. " * 8),
        ]
    assert engine.ledger.totals().removals == 0


def test_savings_are_booked_under_the_track_costs_tenant() -> None:
    from llamaindex_costopt import track_costs

    post = ContextSummarizerPostprocessor(
        config=SummarizerConfig(budget_ratio=0.4, ratio_floor_tokens=0)
    )
    engine = CostEngine(embedder=FakeEmbedder())
    with track_costs(engine, tenant="acme"):
        post.postprocess_nodes(nodes(), query_str=QUERY)
    (rec,) = engine.ledger.records()
    assert (rec.outcome, rec.tenant) == ("removed", "acme")


def test_wrong_settings_are_configuration_errors_naming_the_value() -> None:
    import pytest

    from costopt_core.errors import ConfigurationError
    from llamaindex_costopt.summarizer import AbstractiveSummarizerPostprocessor

    with pytest.raises(ConfigurationError, match=r"config='x'.*SummarizerConfig\(\.\.\.\)"):
        ContextSummarizerPostprocessor(config="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"engine='x'.*CostEngine\(\.\.\.\)"):
        ContextSummarizerPostprocessor(engine="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"llm='gpt-4o-mini'.*not its name"):
        AbstractiveSummarizerPostprocessor(llm="gpt-4o-mini")  # type: ignore[arg-type]
    # a dict of the config's fields is still a config
    post = ContextSummarizerPostprocessor(config={"budget_tokens": 12})  # type: ignore[arg-type]
    assert post.config.budget_tokens == 12
