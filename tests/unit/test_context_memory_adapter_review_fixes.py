"""Review fixes in the context and memory adapters (LangChain and LlamaIndex).

1. The LlamaIndex postprocessors book their ``compression`` savings in the
   ledger of the ``CostEventHandler`` that records the query (not the current
   engine), so the abstractive summarizer's overhead and its saving net out there.
2. A summarizing memory with a model summarizer books its ``memory`` savings
   where its summarizer's calls are recorded (a LangChain handler passed only
   in a call's config, an attached LlamaIndex handler), so the lever nets out.
3. A memory's ``engine=`` of the wrong kind is refused when it is built.
4. A blank question leaves the context whole and books nothing.
5. The LlamaIndex relevance postprocessor never drops two nodes whose visible
   content differs (media, metadata that is the content) as duplicates.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode

from costopt_core import CostEngine, engine_scope
from costopt_core.context.summarize import SummarizerConfig
from costopt_core.errors import ConfigurationError
from costopt_core.ledger import CostLedger
from costopt_core.memory import MemoryConfig
from costopt_core.testing import FakeEmbedder
from langchain_costopt import (
    AbstractiveContextSummarizer,
    ContextSummarizer,
    CostCallbackHandler,
    SummarizingChatMessageHistory,
    SummarizingMemoryTransform,
    summarize_messages,
)
from langchain_costopt.memory import asummarize_messages
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import (
    AbstractiveSummarizerPostprocessor,
    ContextSummarizerPostprocessor,
    CostEventHandler,
    RelevanceThresholdPostprocessor,
    SummarizingMemory,
)
from llamaindex_costopt.testing import ScriptedLLM

QUESTION = "When did the Eiffel Tower open?"
LONG_TEXT = "The Eiffel Tower opened in 1889. " + " ".join(
    f"Filler sentence {i} is about gardening and soil quality." for i in range(40)
)
FACTS = " ".join(
    f"Fact number {i}: the warehouse in city {i} stores {i * 10} pallets of goods."
    for i in range(30)
)
MEMORY = MemoryConfig(
    window_tokens=64,
    flush_min_tokens=64,
    flush_max_tokens=128,
    summary_tokens=128,
    recall_tokens=64,
)


@pytest.fixture(autouse=True)
def _quiet_deprecations() -> Iterator[None]:
    # RunnableWithMessageHistory and the in-memory history are deprecated in
    # langchain-core 1.6 but still shipped and used; their warnings are noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def make_engine() -> CostEngine:
    return CostEngine(embedder=FakeEmbedder())


def by_outcome(ledger: CostLedger, outcome: str) -> list[Any]:
    return [r for r in ledger.records() if r.outcome == outcome]


def lever_sum(ledger: CostLedger, lever: str, outcomes: tuple[str, ...]) -> Decimal:
    """The ``lever`` savings of the records with these outcomes, summed by hand."""
    return sum(
        (r.savings_usd.get(lever, Decimal(0)) for r in ledger.records() if r.outcome in outcomes),
        Decimal(0),
    )


# -- 1. LlamaIndex postprocessors: the handler's ledger ------------------------------
@pytest.fixture
def attached() -> Iterator[CostEngine]:
    """An app engine with a CostEventHandler attached, inside another current engine.

    The current engine (``engine_scope``) is where the savings went before the
    fix; it must stay empty.
    """
    app, elsewhere = make_engine(), make_engine()
    handler = CostEventHandler(app, tenant="acme").attach()
    try:
        with engine_scope(elsewhere):
            yield app
    finally:
        handler.detach()
    assert elsewhere.ledger.records() == []


def test_li_relevance_and_extractive_savings_go_to_the_attached_handlers_ledger(
    attached: CostEngine,
) -> None:
    nodes = [
        NodeWithScore(node=TextNode(text=LONG_TEXT, id_="a"), score=0.9),
        NodeWithScore(node=TextNode(text=LONG_TEXT, id_="b"), score=0.8),  # a duplicate
    ]
    kept, result = RelevanceThresholdPostprocessor().select(nodes)
    assert [n.node.node_id for n in kept] == ["a"] and result.tokens_removed > 0
    out = ContextSummarizerPostprocessor().postprocess_nodes(kept, QueryBundle(QUESTION))
    assert out[0].node.get_content().startswith("The Eiffel Tower opened in 1889.")

    removed = by_outcome(attached.ledger, "removed")
    assert [r.usage.input_tokens for r in removed] == [
        result.tokens_removed,
        len_tokens(attached, LONG_TEXT) - len_tokens(attached, out[0].node.get_content()),
    ]
    assert {r.tenant for r in removed} == {"acme"}
    compression = attached.ledger.savings_by_lever()["compression"]
    assert compression == lever_sum(attached.ledger, "compression", ("removed",)) > 0


def len_tokens(engine: CostEngine, text: str) -> int:
    return engine.tokens.count(text, None)


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_li_abstractive_saving_and_overhead_net_out_in_the_handlers_ledger(
    attached: CostEngine, sync: bool
) -> None:
    llm = ScriptedLLM.from_texts(["Opened 1889."], model="gpt-4o-mini")
    post = AbstractiveSummarizerPostprocessor(llm=llm)
    nodes = [NodeWithScore(node=TextNode(text=LONG_TEXT), score=0.9)]
    if sync:
        out = post.postprocess_nodes(nodes, QueryBundle(QUESTION))
    else:
        out = await post.apostprocess_nodes(nodes, QueryBundle(QUESTION))
    assert [n.node.get_content() for n in out] == ["Opened 1889."]

    overhead = by_outcome(attached.ledger, "overhead")
    removed = by_outcome(attached.ledger, "removed")
    assert len(overhead) == 1 and overhead[0].cost_usd > 0
    assert [r.usage.input_tokens for r in removed] == [
        len_tokens(attached, LONG_TEXT) - len_tokens(attached, "Opened 1889.")
    ]
    # The lever is the saving net of the summarizer's own call, in one ledger.
    compression = attached.ledger.savings_by_lever()["compression"]
    assert compression == removed[0].savings_usd["compression"] - overhead[0].cost_usd
    assert compression > 0


# -- 2. memory: savings where the summarizer's calls are recorded ---------------------
def assert_memory_nets_out(app: CostEngine, elsewhere: CostEngine) -> None:
    removed = by_outcome(app.ledger, "removed")
    overhead = by_outcome(app.ledger, "overhead")
    assert removed and overhead, "both the savings and the summarizer's calls in the app's ledger"
    assert {r.model for r in overhead} == {"gpt-4o-mini"}
    memory = app.ledger.savings_by_lever()["memory"]
    assert memory == lever_sum(app.ledger, "memory", ("removed", "overhead"))
    assert memory == sum((r.savings_usd["memory"] for r in removed), Decimal(0)) - sum(
        (r.cost_usd for r in overhead), Decimal(0)
    )
    assert memory > 0
    # Nothing lands in the current engine: no saving, no second record of the summarizer.
    assert elsewhere.ledger.records() == []


def test_lc_history_books_memory_savings_in_the_config_handlers_ledger() -> None:
    app, elsewhere = make_engine(), make_engine()
    summarizer = ScriptedChatModel.from_texts(["User gave locker codes."], model="gpt-4o-mini")
    history = SummarizingChatMessageHistory(
        InMemoryChatMessageHistory(), config=MEMORY, summarizer=summarizer
    )
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{question}")]
    )
    model = ScriptedChatModel.from_texts(
        [f"Reply {i}: got it, I have noted that down." for i in range(20)], model="gpt-4o"
    )
    chat = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: history,
        input_messages_key="question",
        history_messages_key="history",
    )
    handler = CostCallbackHandler(app)  # passed in each call's config only
    with engine_scope(elsewhere):
        for i in range(12):
            chat.invoke(
                {"question": f"My locker {i} code is {4000 + i}. Remember it please."},
                config={"configurable": {"session_id": "s"}, "callbacks": [handler]},
            )
    assert_memory_nets_out(app, elsewhere)
    assert len(by_outcome(app.ledger, "model")) == 12


def test_li_memory_books_memory_savings_in_the_attached_handlers_ledger() -> None:
    app, elsewhere = make_engine(), make_engine()
    handler = CostEventHandler(app).attach()
    try:
        with engine_scope(elsewhere):
            llm = ScriptedLLM.from_texts(
                [f"Reply {i}: got it, I have noted that down for you." for i in range(20)],
                model="gpt-4o",
            )
            memory = SummarizingMemory.from_defaults(
                config=MEMORY,
                llm=llm,
                summarizer=ScriptedLLM.from_texts(["User gave locker codes."], model="gpt-4o-mini"),
            )
            chat = SimpleChatEngine.from_defaults(llm=llm, memory=memory)
            for i in range(12):
                chat.chat(f"My locker {i} code is {4000 + i}. Remember it please.")
    finally:
        handler.detach()
    assert_memory_nets_out(app, elsewhere)
    assert len(by_outcome(app.ledger, "model")) == 12


# -- 3. a memory's engine= is checked when built ----------------------------------------
ENGINE_ERROR = r"engine='my-engine': engine must be a costopt_core\.CostEngine.*pass CostEngine\("


def test_lc_memory_entry_points_refuse_an_engine_that_is_not_one() -> None:
    with pytest.raises(ConfigurationError, match="SummarizingChatMessageHistory: " + ENGINE_ERROR):
        SummarizingChatMessageHistory(
            InMemoryChatMessageHistory(),
            engine="my-engine",  # type: ignore[arg-type]
        )
    with pytest.raises(ConfigurationError, match="SummarizingMemoryTransform: " + ENGINE_ERROR):
        SummarizingMemoryTransform(engine="my-engine")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="summarize_messages: " + ENGINE_ERROR):
        summarize_messages([HumanMessage("hi")], engine="my-engine")  # type: ignore[arg-type]


async def test_lc_asummarize_messages_refuses_an_engine_that_is_not_one() -> None:
    with pytest.raises(ConfigurationError, match="asummarize_messages: " + ENGINE_ERROR):
        await asummarize_messages([HumanMessage("hi")], engine="my-engine")  # type: ignore[arg-type]


def test_li_memory_refuses_an_engine_that_is_not_one_saying_the_fix() -> None:
    with pytest.raises(ConfigurationError, match="SummarizingMemory: " + ENGINE_ERROR):
        SummarizingMemory.from_defaults(engine="my-engine")


def test_lc_memory_still_works_with_a_real_engine() -> None:
    engine = make_engine()
    result = summarize_messages([HumanMessage("hi"), AIMessage("hello")], engine=engine)
    assert [m.content for m in result.messages] == ["hi", "hello"]


# -- 4. a blank question ------------------------------------------------------------------
BLANK = ["", "   ", "\n\t "]


@pytest.mark.parametrize("query", BLANK, ids=repr)
async def test_lc_summarizers_leave_documents_whole_for_a_blank_question(query: str) -> None:
    engine = make_engine()
    docs = [Document(FACTS, metadata={"source": "a"}), Document(LONG_TEXT, id="b")]
    extractive = ContextSummarizer(
        engine=engine, config=SummarizerConfig(budget_ratio=0.4, ratio_floor_tokens=0)
    )
    llm = ScriptedChatModel.from_texts(["short"], model="gpt-4o-mini")
    abstractive = AbstractiveContextSummarizer(llm=llm, engine=engine)
    for out in (
        extractive.compress_documents(docs, query),
        await extractive.acompress_documents(docs, query),
        abstractive.compress_documents(docs, query),
        await abstractive.acompress_documents(docs, query),
    ):
        assert list(out) == docs
    assert engine.ledger.records() == []
    assert engine.ledger.savings_by_lever()["compression"] == 0


@pytest.mark.parametrize("query", BLANK, ids=repr)
async def test_li_summarizers_leave_nodes_whole_for_a_blank_question(query: str) -> None:
    engine = make_engine()
    nodes = [
        NodeWithScore(node=TextNode(text=FACTS, id_="a"), score=0.9),
        NodeWithScore(node=TextNode(text=LONG_TEXT, id_="b"), score=0.5),
    ]
    extractive = ContextSummarizerPostprocessor(
        engine=engine, config=SummarizerConfig(budget_ratio=0.4, ratio_floor_tokens=0)
    )
    llm = ScriptedLLM.from_texts(["short"], model="gpt-4o-mini")
    abstractive = AbstractiveSummarizerPostprocessor(llm=llm, engine=engine)
    bundle = QueryBundle(query_str=query)
    for out in (
        extractive.postprocess_nodes(nodes, query_bundle=bundle),
        await extractive.apostprocess_nodes(nodes, query_bundle=bundle),
        abstractive.postprocess_nodes(nodes, query_bundle=bundle),
        await abstractive.apostprocess_nodes(nodes, query_bundle=bundle),
    ):
        assert [n.node for n in out] == [n.node for n in nodes]
        assert [n.node.get_content() for n in out] == [FACTS, LONG_TEXT]
    assert engine.ledger.records() == []


def test_a_real_question_is_still_summarized() -> None:
    engine = make_engine()
    post = ContextSummarizerPostprocessor(
        engine=engine, config=SummarizerConfig(budget_ratio=0.4, ratio_floor_tokens=0)
    )
    nodes = [NodeWithScore(node=TextNode(text=FACTS), score=0.9)]
    out = post.postprocess_nodes(nodes, query_bundle=QueryBundle("How many pallets in city 7?"))
    assert len_tokens(engine, out[0].node.get_content()) < len_tokens(engine, FACTS)
    assert len(by_outcome(engine.ledger, "removed")) == 1


# -- 5. duplicates by what the model sees ---------------------------------------------------
def select(nodes: list[NodeWithScore]) -> tuple[list[str], dict[int, str]]:
    kept, result = RelevanceThresholdPostprocessor(engine=make_engine()).select(nodes)
    return [n.node.node_id for n in kept], dict(result.dropped)


def test_li_images_with_the_same_caption_are_not_duplicates() -> None:
    caption = "A photo of a landmark in Paris, taken from across the river at dusk."
    nodes = [
        NodeWithScore(
            node=ImageNode(id_="eiffel", text=caption, image_url="https://x/eiffel.png"), score=0.91
        ),
        NodeWithScore(
            node=ImageNode(id_="louvre", text=caption, image_url="https://x/louvre.png"), score=0.90
        ),
        NodeWithScore(
            node=ImageNode(id_="eiffel2", text=caption, image_url="https://x/eiffel.png"),
            score=0.89,
        ),
        NodeWithScore(node=ImageNode(id_="bare1", image_url="https://x/a.png"), score=0.88),
        NodeWithScore(node=ImageNode(id_="bare2", image_path="/img/b.png"), score=0.87),
    ]
    # The same image twice is still a duplicate; different images never are.
    assert select(nodes) == (["eiffel", "louvre", "bare1", "bare2"], {2: "duplicate"})


def test_li_long_identical_text_with_different_images_is_not_a_duplicate() -> None:
    nodes = [
        NodeWithScore(
            node=ImageNode(id_="a", text=LONG_TEXT, image_url="https://x/a.png"), score=0.9
        ),
        NodeWithScore(
            node=ImageNode(id_="b", text=LONG_TEXT, image_url="https://x/b.png"), score=0.8
        ),
    ]
    assert select(nodes) == (["a", "b"], {})


def test_li_tables_kept_in_metadata_are_not_duplicates() -> None:
    nodes = [
        NodeWithScore(
            node=TextNode(
                id_="t1", text="Table", metadata={"table": "sales 2024: 1.2M; 2023: 0.9M"}
            ),
            score=0.9,
        ),
        NodeWithScore(
            node=TextNode(id_="t2", text="Table", metadata={"table": "staff 2024: 120; 2023: 95"}),
            score=0.8,
        ),
        NodeWithScore(
            node=TextNode(id_="t3", text="", metadata={"table": "rent 2024: 40k"}), score=0.7
        ),
    ]
    assert select(nodes) == (["t1", "t2", "t3"], {})


def test_li_one_passage_from_two_files_is_still_a_duplicate() -> None:
    passage = "The Eiffel Tower is a wrought iron lattice tower on the Champ de Mars in Paris."
    nodes = [
        NodeWithScore(
            node=TextNode(id_="a", text=passage, metadata={"file_name": "a.pdf"}), score=0.9
        ),
        NodeWithScore(
            node=TextNode(id_="b", text=passage, metadata={"file_name": "b.pdf"}), score=0.8
        ),
    ]
    assert select(nodes) == (["a"], {1: "duplicate"})


def test_li_a_sentence_from_two_files_with_long_labels_is_still_a_duplicate() -> None:
    """The 'metadata outweighs the text' rule also caught one short passage with
    ordinary labels (file name, page, a long section title): both copies kept."""
    text = "Refunds are processed within five business days of the request."

    def node(i: str, file_name: str, score: float) -> NodeWithScore:
        labels = {
            "file_name": file_name,
            "page_label": "3",
            "section": "Billing and payments: frequently asked questions",
        }
        return NodeWithScore(node=TextNode(id_=i, text=text, metadata=labels), score=score)

    kept, dropped = select([node("a", "faq_2023.pdf", 0.9), node("b", "faq_2023_copy.pdf", 0.8)])
    assert kept == ["a"] and dropped == {1: "duplicate"}
