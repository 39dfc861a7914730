"""Runs the demo workload through a LangChain chain and a LlamaIndex LLM, one ledger.

Both halves use the same levers: the semantic cache (tenant-safe, on the
engine's offline MiniLM embedder) in front of a router over three tiers of
stand-in models, and the cost handler recording every call. The LangChain
half is a RAG chain: its help-centre context goes through the relevance
filter and the extractive summarizer before it reaches the prompt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from llama_index.core.llms import ChatMessage
from tqdm import tqdm

from costopt_core import CostEngine, tenant_scope
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.testing import Script
from costopt_demo.knowledge import build_context
from costopt_demo.workload import SYSTEM_PROMPT, TIERS, build_workload, tier_response
from langchain_costopt import CachedChatModel, CostCallbackHandler
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CachedLLM, CostEventHandler
from llamaindex_costopt.router import RouterLLM
from llamaindex_costopt.testing import ScriptedLLM


@dataclass
class DemoResult:
    engine: CostEngine
    cache: CacheEngine
    seconds: float
    ledger_path: Path | None


def run_demo(
    n: int = 300, *, seed: int = 7, out_dir: Path | None = None, progress: bool = True
) -> DemoResult:
    """Run ``n`` requests (half LangChain, half LlamaIndex) and return the engine.

    Args:
        n: number of requests.
        seed: workload seed.
        out_dir: where to write the ledger (JSONL); nothing is written if None.
        progress: show a progress bar.
    """
    start = time.perf_counter()
    engine = CostEngine(baseline_model=TIERS["frontier"])
    cache = CacheEngine(embedder=engine.embedder)

    lc_tiers = {
        tier: ScriptedChatModel(script=Script([tier_response(tier)]), model_name=model)
        for tier, model in TIERS.items()
    }
    lc_model = CachedChatModel(
        model=RouterChatModel(tiers=lc_tiers, engine=engine), semantic_cache=cache
    )
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM_PROMPT), ("human", "Help-centre articles:\n{context}\n\nQuestion: {q}")]
    )
    # RAG: only the relevant articles, cut to the sentences that answer, reach the prompt.
    context = build_context(engine)
    chain = (
        RunnablePassthrough.assign(context=itemgetter("q") | context)
        | prompt
        | lc_model
        | StrOutputParser()
    )
    handler = CostCallbackHandler(engine)

    li_tiers = {
        tier: ScriptedLLM(script=Script([tier_response(tier)]), usage_format="anthropic")
        for tier in TIERS
    }
    li_llm = CachedLLM(llm=RouterLLM(tiers=li_tiers, engine=engine), semantic_cache=cache)
    li_handler = CostEventHandler(engine).attach()
    try:
        requests = build_workload(n, seed)
        for i, req in enumerate(tqdm(requests, desc="demo", unit="req", disable=not progress)):
            with tenant_scope(req.tenant):
                if i % 2 == 0:
                    chain.invoke({"q": req.question}, config={"callbacks": [handler]})
                else:
                    li_llm.chat(
                        [
                            ChatMessage(role="system", content=SYSTEM_PROMPT),
                            ChatMessage(role="user", content=req.question),
                        ]
                    )
    finally:
        li_handler.detach()
    ledger_path = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        ledger_path = engine.ledger.to_jsonl(out_dir / "demo-ledger.jsonl")
    return DemoResult(engine, cache, time.perf_counter() - start, ledger_path)
