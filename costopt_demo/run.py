"""Runs the demo workload through a LangChain chain and a LlamaIndex LLM, one ledger."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from llama_index.core.instrumentation.dispatcher import instrument_tags
from llama_index.core.llms import ChatMessage
from tqdm import tqdm

from costopt_core import CostEngine
from costopt_core.testing import Script
from costopt_demo.workload import SYSTEM_PROMPT, TIERS, build_workload
from langchain_costopt import CostCallbackHandler
from langchain_costopt.testing import ScriptedChatModel
from llamaindex_costopt import CostEventHandler
from llamaindex_costopt.testing import ScriptedLLM


@dataclass
class DemoResult:
    engine: CostEngine
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
    requests = build_workload(n, seed)
    handler = CostCallbackHandler(engine)
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM_PROMPT), ("human", "{q}")])
    li_handler = CostEventHandler(engine)
    li_handler.attach()
    try:
        for i, req in enumerate(tqdm(requests, desc="demo", unit="req", disable=not progress)):
            script = Script([req.response])
            if i % 2 == 0:
                chain = prompt | ScriptedChatModel(script=script) | StrOutputParser()
                chain.invoke(
                    {"q": req.question},
                    config={
                        "callbacks": [handler],
                        "metadata": {"costopt_tenant": req.tenant, "costopt_tier": req.tier},
                    },
                )
            else:
                llm = ScriptedLLM(script=script, usage_format="anthropic")
                tags = {"costopt_tenant": req.tenant, "costopt_tier": req.tier}
                with instrument_tags(tags):
                    llm.chat(
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
    return DemoResult(engine, time.perf_counter() - start, ledger_path)
