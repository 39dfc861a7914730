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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from costopt_core import ConfigurationError, CostEngine, CostLedger, tenant_scope
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.charts import ledger_chart
from costopt_core.errors import CostOptError
from costopt_core.local import (
    LocalAnswer,
    LocalModel,
    LocalModelConfig,
    LocalModelError,
    local_model_available,
)
from costopt_core.memory import MemoryConfig
from costopt_core.routing.router import RouterConfig
from costopt_demo.langchain_app import LangChainApp
from costopt_demo.llamaindex_app import LlamaIndexApp
from costopt_demo.standins import StandIn
from costopt_demo.workload import BATCH_MODEL, SYSTEM_PROMPT, TIERS, DemoRequest, build_workload

__all__ = [
    "MEMORY",
    "ROUTING",
    "DemoLocalModel",
    "DemoResult",
    "LocalModelUnavailable",
    "load_local_model",
    "run_demo",
]

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


class LocalModelUnavailable(ConfigurationError):
    """The real local model was asked for (``local=True``) but cannot be loaded here."""


class DemoLocalModel(LocalModel):
    """The local model, counting the calls it answered and the ones that failed.

    The router sends a failed call on to the next tier without a record, so
    without these counts a local model that never answered looked like one
    that did. (``achat`` runs ``chat``: each call is counted once.)
    """

    def __init__(
        self, config: LocalModelConfig = LOCAL_MODEL, *, loader: Callable[[], Any] | None = None
    ) -> None:
        super().__init__(config, loader=loader)
        self.answered = 0
        self.failures: list[str] = []

    def chat(self, messages: Any, **params: Any) -> LocalAnswer:
        try:
            answer = super().chat(messages, **params)
        except CostOptError as exc:
            self.failures.append(str(exc))
            raise
        self.answered += 1
        return answer


def load_local_model(local: bool | None = None) -> tuple[DemoLocalModel | None, str | None]:
    """The real local small tier, loaded now: ``(model, None)``, or ``(None, why not)``.

    Loading before the run makes a model that cannot load fail at once, not as
    one silent fallback per routed call.

    Args:
        local: ``True``: the local model or an error; ``False``: none;
            ``None``: the local model where the ``local`` extra is installed,
            else none (the reason is returned when it is installed but fails).

    Raises:
        LocalModelUnavailable: ``local=True`` and the extra is missing or the
            model does not load.
    """
    if local is False or (local is None and not local_model_available()):
        return None, None
    model = DemoLocalModel(LOCAL_MODEL)
    try:
        model.load()
    except (ConfigurationError, LocalModelError) as exc:
        if local:
            raise LocalModelUnavailable(str(exc)) from exc
        return None, f"the local model could not be loaded, so tier 1 was a stand-in: {exc}"
    return model, None


@dataclass
class DemoResult:
    """What a demo run leaves behind.

    Attributes:
        engine: the engine both halves recorded into (its ``ledger`` holds every call).
        cache: the semantic cache both halves shared.
        seconds: wall time of the run.
        ledger_path: the ledger export (JSONL), if written.
        chart_path: the savings chart (PNG), if written (needs matplotlib).
        local: the real local model (llama.cpp) answered calls of the LangChain
            small tier (``local_calls > 0``); what answered, not what was asked for.
        local_loaded: the local model was loaded to serve that tier.
        local_calls: calls the local model answered (kept or escalated; a cache
            hit does not run it).
        local_failures: errors of the local calls that failed and went to the
            next tier, in order.
        local_note: why the local model was not used though it is installed.
    """

    engine: CostEngine
    cache: CacheEngine
    seconds: float
    ledger_path: Path | None
    chart_path: Path | None = None
    local: bool = False
    local_loaded: bool = False
    local_calls: int = 0
    local_failures: tuple[str, ...] = ()
    local_note: str | None = None


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
    local: bool | DemoLocalModel | None = None,
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
            extra is installed; a :class:`DemoLocalModel` from
            :func:`load_local_model` is used as given (and left open).

    Raises:
        LocalModelUnavailable: ``local=True`` and the local model cannot be loaded.
    """
    start = time.perf_counter()
    local_model: DemoLocalModel | None
    note = None
    owned = not isinstance(local, DemoLocalModel)  # one given is the caller's to close
    if isinstance(local, DemoLocalModel):
        local_model = local
    else:
        local_model, note = load_local_model(local)
    # Every record kept (the default ledger keeps the newest 100,000): the
    # exported ledger must hold what the summary printed, at --requests' maximum too.
    engine = CostEngine(baseline_model=TIERS["frontier"], ledger=CostLedger(max_records=None))
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
            if local_model is not None and owned:
                local_model.close()

    ledger_path = chart_path = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        ledger_path = engine.ledger.to_jsonl(out_dir / "demo-ledger.jsonl")
        chart_path = _chart(engine, out_dir / "demo-savings.png", n)
    seconds = time.perf_counter() - start
    local_calls = local_model.answered if local_model is not None else 0
    return DemoResult(
        engine,
        cache,
        seconds,
        ledger_path,
        chart_path,
        local=local_calls > 0,
        local_loaded=local_model is not None,
        local_calls=local_calls,
        local_failures=tuple(local_model.failures) if local_model is not None else (),
        local_note=note,
    )


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
