"""Runs the demo workload through the LangChain and LlamaIndex halves, into one ledger.

One engine, one semantic cache and one set of stand-in models serve both
halves. One-off questions alternate between the LangChain RAG chain and the
LlamaIndex query engine; chat sessions alternate between
``RunnableWithMessageHistory`` and ``ContextChatEngine``, both with
summarizing memory; e-mail tickets are queued and answered in batch jobs.
Levers at work: routing, the exact and semantic cache, the provider's prompt
cache, relevance filtering and summarization of the retrieved context, the
summarizing memory and batch pricing.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from costopt_core import ConfigurationError, CostEngine, tenant_scope
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.charts import ledger_chart
from costopt_core.local import LocalModel, LocalModelConfig, local_model_available
from costopt_core.memory import MemoryConfig
from costopt_core.routing.router import RouterConfig
from costopt_demo.langchain_app import LangChainApp
from costopt_demo.llamaindex_app import LlamaIndexApp
from costopt_demo.standins import StandIn
from costopt_demo.workload import BATCH_MODEL, SYSTEM_PROMPT, TIERS, DemoRequest, build_workload

__all__ = ["MEMORY", "ROUTING", "DemoResult", "run_demo"]

#: A support chat's memory: a short verbatim window, summaries folded in batches.
MEMORY = MemoryConfig(
    window_tokens=256,
    flush_min_tokens=192,
    flush_max_tokens=384,
    summary_tokens=256,
    facts_tokens=96,
    recall_tokens=128,
)

#: The real local small tier (LangChain half): the whole prompt fits one call, a
#: support answer is its first paragraph, a few sentences (a longer one is cut, and
#: the router escalates it), and generation uses every CPU (llama.cpp's default is
#: half of them, for hyper-threaded cores).
LOCAL_MODEL = LocalModelConfig(
    n_ctx=8192, max_tokens=48, stop=("\n\n",), n_threads=max(1, os.cpu_count() or 1)
)

#: This app's routing policy: plain how-to asks go to the small tier, the
#: multi-step ones (compare, explain step by step, write code) to the frontier.
ROUTING = RouterConfig(thresholds=(0.3, 0.7))


@dataclass
class DemoResult:
    """What a demo run leaves behind.

    Attributes:
        engine: the engine both halves recorded into (its ``ledger`` holds every call).
        cache: the semantic cache both halves shared.
        seconds: wall time of the run.
        ledger_path: the ledger export (JSONL), if written.
        chart_path: the savings chart (PNG), if written (needs matplotlib).
        local: the small tier was the real local model (llama.cpp), not a stand-in.
    """

    engine: CostEngine
    cache: CacheEngine
    seconds: float
    ledger_path: Path | None
    chart_path: Path | None = None
    local: bool = False


def _serve(req: DemoRequest, lc: LangChainApp, li: LlamaIndexApp) -> None:
    with tenant_scope(req.tenant):
        if req.kind == "ticket":
            lc.queue_ticket(req.question, req.tenant)
        elif req.kind == "turn":
            assert req.session is not None
            app = lc if req.framework == "langchain" else li
            app.chat(req.session, req.question)
        elif req.framework == "langchain":
            lc.ask(req.question)
        else:
            li.ask(req.question)


def run_demo(
    n: int = 300,
    *,
    seed: int = 7,
    out_dir: Path | None = None,
    progress: bool = True,
    local: bool | None = None,
) -> DemoResult:
    """Run ``n`` requests through both halves and return the engine with its ledger.

    Args:
        n: number of requests (one-off questions, session turns, tickets).
        seed: workload seed.
        out_dir: where to write the ledger (``demo-ledger.jsonl``) and the chart
            (``demo-savings.png``); nothing is written if None.
        progress: show a progress bar.
        local: serve the LangChain half's small tier with the real local model
            (SmolLM2-135M on llama.cpp); ``None`` uses it where the ``local``
            extra is installed.
    """
    start = time.perf_counter()
    if local is None:
        local = local_model_available()
    local_model = LocalModel(LOCAL_MODEL) if local else None
    engine = CostEngine(baseline_model=TIERS["frontier"])
    cache = CacheEngine(embedder=engine.embedder)
    stand_ins = {
        tier: StandIn(model, tier, engine.tokens, SYSTEM_PROMPT) for tier, model in TIERS.items()
    }
    batch_stand_in = StandIn(BATCH_MODEL, "mid", engine.tokens, SYSTEM_PROMPT)
    requests = build_workload(n, seed)

    # The batch queue is working state, not output: it lives in a directory removed afterwards.
    with tempfile.TemporaryDirectory(prefix="costopt-demo-") as queue_dir:
        lc = LangChainApp(
            engine,
            cache,
            stand_ins,
            batch_stand_in,
            MEMORY,
            ROUTING,
            Path(queue_dir),
            local=local_model,
        )
        # One half on the local model is enough to show the hybrid ladder and keeps
        # the run within minutes on two cores (a local answer takes ~1-2 s there).
        li = LlamaIndexApp(engine, cache, stand_ins, MEMORY, ROUTING)
        li.attach()
        try:
            for req in tqdm(requests, desc="demo", unit="req", disable=not progress):
                _serve(req, lc, li)
            lc.collect()
        finally:
            li.detach()
            lc.close()
            if local_model is not None:
                local_model.close()

    ledger_path = chart_path = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        ledger_path = engine.ledger.to_jsonl(out_dir / "demo-ledger.jsonl")
        chart_path = _chart(engine, out_dir / "demo-savings.png", n)
    seconds = time.perf_counter() - start
    return DemoResult(engine, cache, seconds, ledger_path, chart_path, local=bool(local))


def _chart(engine: CostEngine, path: Path, n: int) -> Path | None:
    """The savings chart, or None without matplotlib (the demo runs without it)."""
    try:
        return ledger_chart(
            engine.ledger,
            path,
            title=(
                f"costopt demo: {n} support requests, LangChain + LlamaIndex "
                "(stand-in models priced as the provider models they stand for)"
            ),
        )
    except ConfigurationError:
        return None
