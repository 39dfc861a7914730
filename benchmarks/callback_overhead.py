"""Per-call overhead of the cost handler + ledger, LangChain and LlamaIndex.

The baseline is the same scripted model call without the handler, measured in
the same process, interleaved run by run so machine noise hits both alike.
Target: under 50 microseconds median per call.

    python benchmarks/callback_overhead.py --out benchmarks/results/callback_overhead.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable
from typing import Any

import _common
from _common import per_call_us, print_table, write_json

from costopt_core import CostEngine, Usage
from costopt_core.testing import Script, ScriptedResponse

TARGET_US = 50.0
RESPONSE = ScriptedResponse(
    "Paris.",
    Usage(input_tokens=1200, output_tokens=40, cache_read_tokens=1024),
    model="gpt-4o-mini",
)


def paired(bare: Callable[[], Any], tracked: Callable[[], Any], calls: int, runs: int) -> dict:
    for _ in range(calls // 4):  # warm-up: imports, encodings, first-call caches
        bare()
        tracked()
    base, withh = [], []
    for run in range(runs):
        # Alternate which of the pair goes first, so a drift of the machine's
        # speed during a run does not always land on the same side.
        if run % 2:
            withh.append(per_call_us(tracked, calls))
            base.append(per_call_us(bare, calls))
        else:
            base.append(per_call_us(bare, calls))
            withh.append(per_call_us(tracked, calls))
    return _summary(base, withh)


def _summary(base: list[float], withh: list[float]) -> dict[str, Any]:
    overheads = [w - b for w, b in zip(withh, base, strict=True)]
    return {
        "bare_us_median": statistics.median(base),
        "tracked_us_median": statistics.median(withh),
        "overhead_us_median": statistics.median(overheads),
        # The mean includes what only some runs pay: the ledger folding a batch
        # of calls into its totals, a full garbage collection.
        "overhead_us_mean": statistics.fmean(overheads),
        "overhead_us_runs": overheads,
    }


def bench_langchain(calls: int, runs: int) -> dict:
    from langchain_core.callbacks import BaseCallbackHandler

    from langchain_costopt import CostCallbackHandler
    from langchain_costopt.testing import ScriptedChatModel

    class NoopHandler(BaseCallbackHandler):
        run_inline = True
        raise_error = True

        # Handles the events CostCallbackHandler handles. (Without this, LangChain
        # would raise NotImplementedError and fall back to on_llm_start, a detour
        # of several us that a real handler never takes.)
        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            pass

    engine = CostEngine()
    model = ScriptedChatModel(script=Script([RESPONSE]))
    handler = CostCallbackHandler(engine)
    cfg = {"callbacks": [handler]}
    noop_cfg = {"callbacks": [NoopHandler()]}
    res = paired(lambda: model.invoke("hi"), lambda: model.invoke("hi", config=cfg), calls, runs)
    # What LangChain itself spends dispatching to any handler, for reference.
    ref = paired(
        lambda: model.invoke("hi"), lambda: model.invoke("hi", config=noop_cfg), calls, runs
    )
    res["framework_dispatch_us_median"] = ref["overhead_us_median"]
    res["recorded"] = len(engine.ledger)
    return res


def bench_llamaindex(calls: int, runs: int) -> dict:
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events import BaseEvent
    from llama_index.core.llms import ChatMessage

    from llamaindex_costopt import CostEventHandler
    from llamaindex_costopt.testing import ScriptedLLM

    class NoopHandler(BaseEventHandler):
        @classmethod
        def class_name(cls) -> str:
            return "NoopHandler"

        def handle(self, event: BaseEvent, **kwargs: Any) -> None:
            pass

    engine = CostEngine()
    llm = ScriptedLLM(script=Script([RESPONSE]))
    msgs = [ChatMessage(role="user", content="hi")]

    def call() -> Any:
        return llm.chat(msgs)

    def measure(attach: Callable[[], object], detach: Callable[[], object]) -> dict[str, Any]:
        # Attach/detach around each measured block so the bare runs see no handler.
        for _ in range(calls // 4):
            call()
        base, withh = [], []
        for _ in range(runs):
            base.append(per_call_us(call, calls))
            attach()
            try:
                withh.append(per_call_us(call, calls))
            finally:
                detach()
        return _summary(base, withh)

    handler = CostEventHandler(engine)
    res = measure(handler.attach, handler.detach)
    # What LlamaIndex itself spends dispatching events to any handler, for reference.
    root = get_dispatcher()
    noop = NoopHandler()
    ref = measure(
        lambda: root.add_event_handler(noop),
        lambda: setattr(root, "event_handlers", [h for h in root.event_handlers if h is not noop]),
    )
    res["framework_dispatch_us_median"] = ref["overhead_us_median"]
    res["recorded"] = len(engine.ledger)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Many short paired runs: on a shared machine the median of 21 pairs moves
    # less with bursts of noise than the median of a few long ones.
    ap.add_argument("--calls", type=int, default=1000, help="calls per run")
    ap.add_argument("--runs", type=int, default=21, help="runs (the median is reported)")
    ap.add_argument("--out", help="write the JSON result here")
    args = ap.parse_args()

    results = {
        "langchain": bench_langchain(args.calls, args.runs),
        "llamaindex": bench_llamaindex(args.calls, args.runs),
    }
    rows = [
        [
            fw,
            f"{r['bare_us_median']:.1f}",
            f"{r['tracked_us_median']:.1f}",
            f"{r['overhead_us_median']:.1f}",
            "yes" if r["overhead_us_median"] < TARGET_US else "NO",
        ]
        for fw, r in results.items()
    ]
    for row, r in zip(rows, results.values(), strict=True):
        row.insert(4, f"{r['framework_dispatch_us_median']:.1f}")
    print_table(
        f"Cost handler overhead per call ({args.runs} runs x {args.calls} calls, median)",
        [
            "framework",
            "bare us",
            "with handler us",
            "overhead us",
            "of which no-op handler us",
            f"< {TARGET_US:.0f} us",
        ],
        rows,
    )
    write_json(
        args.out,
        {
            "benchmark": "callback_overhead",
            "target_us": TARGET_US,
            "overhead_us_median": {fw: r["overhead_us_median"] for fw, r in results.items()},
            "details": results,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    )


if __name__ == "__main__":
    _ = _common
    main()
