"""The LlamaIndex half of the demo: a query engine and chat engines with memory.

A ``VectorStoreIndex`` over the same help-centre articles (embedded with the
engine's offline MiniLM through :class:`EngineEmbedding`, no hub download)
feeds a ``RetrieverQueryEngine`` for one-off questions and a
``ContextChatEngine`` per chat session. Both run the retrieved nodes through
the relevance postprocessor and the extractive summarizer, answer with the
cached router over the stand-in tiers, and are priced by a
``CostEventHandler``; sessions keep their history in ``SummarizingMemory``.
Every component gets its LLM and embed model explicitly: the global
``Settings`` are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.chat_engine import ContextChatEngine
from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import ChatPromptTemplate
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import TextNode
from pydantic import ConfigDict, Field

from costopt_core import CostEngine
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.memory import MemoryConfig
from costopt_core.routing.router import RouterConfig
from costopt_demo.knowledge import ARTICLES, RELEVANCE, TOP_K
from costopt_demo.standins import StandIn, StandInLLM
from costopt_demo.workload import SYSTEM_PROMPT
from llamaindex_costopt import (
    CachedLLM,
    ContextSummarizerPostprocessor,
    CostEventHandler,
    RelevanceThresholdPostprocessor,
    SummarizingMemory,
)
from llamaindex_costopt.router import RouterLLM

__all__ = ["EngineEmbedding", "LlamaIndexApp"]

# As in the LangChain half, the context is a system message of its own, so the
# semantic cache embeds the question alone and shares answers only under the same context.
_QA_TEMPLATE = ChatPromptTemplate(
    message_templates=[
        ChatMessage(role="system", content=SYSTEM_PROMPT),
        ChatMessage(role="system", content="Help-centre articles for the question:\n{context_str}"),
        ChatMessage(role="user", content="{query_str}"),
    ]
)
# ContextChatEngine puts its context template before the system prompt; the
# system prompt goes first in the template instead, so the static prefix the
# provider's prompt cache serves stays at the start of every call.
_CHAT_CONTEXT = SYSTEM_PROMPT + "\nHelp-centre articles for the latest message:\n{context_str}\n"


class EngineEmbedding(BaseEmbedding):
    """A LlamaIndex embed model over the engine's embedder (offline MiniLM, LRU-cached)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: CostEngine = Field(exclude=True)
    model_name: str = "all-MiniLM-L6-v2 (costopt engine)"

    @classmethod
    def class_name(cls) -> str:
        return "costopt_demo_engine_embedding"

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in v] for v in self.engine.embedder.embed(texts)]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


@dataclass
class LlamaIndexApp:
    """The LlamaIndex half: built once, then fed requests by :mod:`costopt_demo.run`.

    Args:
        engine: the one engine both halves record into.
        cache: the semantic cache both halves share.
        stand_ins: tier -> stand-in model, cheap to frontier.
        memory: the summarizing memory's budgets.
        routing: the routing policy (thresholds per tier).
    """

    engine: CostEngine
    cache: CacheEngine
    stand_ins: Mapping[str, StandIn]
    memory: MemoryConfig
    routing: RouterConfig

    def __post_init__(self) -> None:
        router = RouterLLM(
            tiers={tier: StandInLLM.of(s) for tier, s in self.stand_ins.items()},
            router_config=self.routing,
            engine=self.engine,
        )
        self.router = router
        self.llm = CachedLLM(llm=router, semantic_cache=self.cache)
        index = VectorStoreIndex(
            [TextNode(text=text, metadata={"title": title}) for title, text in ARTICLES.items()],
            embed_model=EngineEmbedding(engine=self.engine),
        )
        self.retriever = index.as_retriever(similarity_top_k=TOP_K)
        self.postprocessors: list[Any] = [
            RelevanceThresholdPostprocessor(config=RELEVANCE, engine=self.engine),
            ContextSummarizerPostprocessor(engine=self.engine),
        ]
        self.query_engine = RetrieverQueryEngine.from_args(
            self.retriever,
            llm=self.llm,
            node_postprocessors=self.postprocessors,
            text_qa_template=_QA_TEMPLATE,
        )
        self._chats: dict[str, ContextChatEngine] = {}
        self._handler = CostEventHandler(self.engine)

    def attach(self) -> None:
        """Start pricing LlamaIndex LLM events into the engine."""
        self._handler.attach()

    def detach(self) -> None:
        self._handler.detach()

    def ask(self, question: str) -> str:
        """Answer a one-off question with the query engine."""
        return str(self.query_engine.query(question))

    def chat(self, session: str, message: str) -> str:
        """Answer one turn of a chat session (one chat engine and memory per session)."""
        if session not in self._chats:
            memory = SummarizingMemory.from_defaults(
                engine=self.engine, model=self.engine.baseline_model, config=self.memory
            )
            self._chats[session] = ContextChatEngine.from_defaults(
                retriever=self.retriever,
                llm=self.router,  # sessions skip the cache, as in the LangChain half
                memory=memory,
                node_postprocessors=self.postprocessors,
                context_template=_CHAT_CONTEXT,
            )
        return str(self._chats[session].chat(message))
