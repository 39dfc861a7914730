"""The LangChain half of the demo: a RAG chain, chat sessions with memory, a batch lane.

Every model call goes through the semantic cache in front of a router over
the stand-in tiers, and is priced by a ``CostCallbackHandler``. The
help-centre context of each question is fetched from a vector store, then
cut by the relevance filter and the extractive summarizer. Chat sessions
keep their history in a summarizing chat history; e-mail tickets are
queued and sent through the batch runnable at the provider's batch rates.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.vectorstores import InMemoryVectorStore

from costopt_core import CostEngine
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.local import LocalModel
from costopt_core.memory import MemoryConfig
from costopt_core.routing.router import RouterConfig
from costopt_demo.knowledge import ARTICLES, RELEVANCE, TOP_K
from costopt_demo.standins import StandIn, StandInBatchAPI, StandInChatModel
from costopt_demo.workload import LOCAL_TIER, SYSTEM_PROMPT
from langchain_costopt import (
    CachedChatModel,
    ContextSummarizer,
    CostCallbackHandler,
    RelevanceThresholdRetriever,
)
from langchain_costopt.batch import BatchHandle, BatchRunnable
from langchain_costopt.local import LocalChatModel
from langchain_costopt.memory import SummarizingChatMessageHistory
from langchain_costopt.router import RouterChatModel

__all__ = ["EngineEmbeddings", "LangChainApp", "SessionStore", "build_context"]

# The retrieved context is a system message of its own, after the static system
# prompt and before the conversation: the semantic cache then embeds just the
# customer's words, and only shares answers between requests given the same context.
_CONTEXT = "Help-centre articles for the latest question:\n{context}"


class EngineEmbeddings(Embeddings):
    """LangChain embeddings over the engine's embedder (offline MiniLM)."""

    def __init__(self, engine: CostEngine) -> None:
        self.engine = engine

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in v] for v in self.engine.embedder.embed(texts)]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class SessionStore(BaseChatMessageHistory):
    """One chat session's messages, in memory: the store the summarizing history wraps.

    (Any ``BaseChatMessageHistory`` backend would do: Redis, SQL, ...)
    """

    def __init__(self) -> None:
        self.messages: list[BaseMessage] = []

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self.messages.extend(messages)

    def clear(self) -> None:
        self.messages = []


def build_context(engine: CostEngine) -> Runnable[str, str]:
    """question -> the help-centre context to send: vector search over the articles,
    relevance filtering of the hits, then extractive summarization of the rest."""
    store = InMemoryVectorStore(EngineEmbeddings(engine))
    store.add_documents([Document(text, metadata={"title": t}) for t, text in ARTICLES.items()])
    retriever = RelevanceThresholdRetriever(
        vectorstore=store, k=TOP_K, engine=engine, config=RELEVANCE
    )
    summarizer = ContextSummarizer(engine=engine)

    def context(question: str) -> str:
        docs = summarizer.compress_documents(retriever.invoke(question), question)
        return "\n".join(f"[{d.metadata.get('title', '')}] {d.page_content}" for d in docs)

    return RunnableLambda(context, name="help_centre_context")


@dataclass
class LangChainApp:
    """The LangChain half: built once, then fed requests by :mod:`costopt_demo.run`.

    Args:
        engine: the one engine both halves record into.
        cache: the semantic cache both halves share.
        stand_ins: tier -> stand-in model, cheap to frontier.
        batch_stand_in: the model tickets go to, through its batch API.
        memory: the summarizing memory's budgets.
        routing: the routing policy (thresholds per tier).
        queue_dir: where the batch queue's SQLite file lives.
        flush_size: tickets queued before a batch is submitted.
        local: a real local model (llama.cpp) that replaces the small tier's stand-in.
    """

    engine: CostEngine
    cache: CacheEngine
    stand_ins: Mapping[str, StandIn]
    batch_stand_in: StandIn
    memory: MemoryConfig
    routing: RouterConfig
    queue_dir: Path
    flush_size: int = 20
    handles: list[BatchHandle] = field(default_factory=list)
    local: LocalModel | None = None

    def __post_init__(self) -> None:
        self.handler = CostCallbackHandler(self.engine)
        tiers: dict[str, Any] = {t: StandInChatModel.of(s) for t, s in self.stand_ins.items()}
        if self.local is not None:
            tiers[LOCAL_TIER] = LocalChatModel(local=self.local)
        router = RouterChatModel(
            tiers=tiers,
            router_config=self.routing,
            engine=self.engine,
        )
        self.router = router
        self.model = CachedChatModel(model=router, semantic_cache=self.cache)
        with_context = RunnablePassthrough.assign(
            context=itemgetter("q") | build_context(self.engine)
        )

        # One-off questions: RAG chain.
        prompt = ChatPromptTemplate.from_messages(
            [("system", SYSTEM_PROMPT), ("system", _CONTEXT), ("human", "{q}")]
        )
        self.chain = with_context | prompt | self.model | StrOutputParser()

        # Chat sessions: the same RAG step, the history kept by the summarizing memory.
        # A turn deep in a conversation is seldom worth a cache lookup (its meaning
        # depends on the turns before it), so sessions go straight to the router.
        # The articles change with every question, so they come after the history:
        # the system prompt and the history stay a stable prefix from turn to turn,
        # which the provider's prompt cache (and the local model's) reuses.
        session_prompt = ChatPromptTemplate.from_messages(
            [
                ("system", SYSTEM_PROMPT),
                MessagesPlaceholder("history"),
                ("system", _CONTEXT),
                ("human", "{q}"),
            ]
        )
        self._histories: dict[str, SummarizingChatMessageHistory] = {}
        with warnings.catch_warnings():
            # Deprecated in favour of LangGraph persistence, still the plain-LCEL way.
            warnings.filterwarnings("ignore", message="RunnableWithMessageHistory")
            self.sessions = RunnableWithMessageHistory(
                with_context | session_prompt | self.router,
                self._history,
                input_messages_key="q",
                history_messages_key="history",
            )

        # E-mail tickets: the prompt is built when the ticket arrives, answered in batches.
        self.ticket_prompt = with_context | prompt
        self.batcher = BatchRunnable(
            StandInChatModel.of(self.batch_stand_in),
            provider=StandInBatchAPI(self.batch_stand_in),
            queue_path=self.queue_dir / "langchain-batch-queue.sqlite",
            engine=self.engine,
            poll_interval_s=0.01,
            progress=False,
        )
        self._queued: list[tuple[PromptValue, str]] = []

    def _history(self, session_id: str) -> SummarizingChatMessageHistory:
        if session_id not in self._histories:
            self._histories[session_id] = SummarizingChatMessageHistory(
                SessionStore(),
                config=self.memory,
                engine=self.engine,
                model=self.engine.baseline_model,
            )
        return self._histories[session_id]

    def ask(self, question: str) -> str:
        """Answer a one-off question with the RAG chain."""
        return self.chain.invoke({"q": question}, config={"callbacks": [self.handler]})

    def chat(self, session: str, message: str) -> str:
        """Answer one turn of a chat session."""
        config: Any = {"configurable": {"session_id": session}, "callbacks": [self.handler]}
        return str(self.sessions.invoke({"q": message}, config=config).text)

    def queue_ticket(self, question: str, tenant: str) -> None:
        """Prepare a ticket's prompt now; submit a batch once ``flush_size`` are queued."""
        self._queued.append((self.ticket_prompt.invoke({"q": question}), tenant))
        if len(self._queued) >= self.flush_size:
            self.flush()

    def flush(self) -> None:
        """Submit the queued tickets as one batch job (it runs while traffic goes on)."""
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        configs: list[Any] = [{"metadata": {"costopt_tenant": tenant}} for _, tenant in queued]
        self.handles.append(self.batcher.submit([p for p, _ in queued], configs))

    def collect(self) -> list[BaseMessage]:
        """Flush what is queued, wait for every batch job, and return the ticket answers."""
        self.flush()
        answers: list[BaseMessage] = []
        for handle in self.handles:
            answers += handle.results()
        return answers

    def close(self) -> None:
        self.batcher.provider.close()  # type: ignore[attr-defined]
        self.batcher.close()
