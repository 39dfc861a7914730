"""Batch engine: durable enqueue throughput, memory, end-to-end runs, and cost vs real time.

10,000 chat requests (about 300 characters each) go through:

- the durable SQLite queue: requests/s enqueued *and committed* (a committed
  request survives the process being killed; ``power_safe`` also survives
  power loss), in one call, in chunks of 100, and one request per call;
- peak memory of enqueueing them (tracemalloc) and the process's max RSS;
- a whole job (flush split by limits, run, collect, record in the ledger)
  over the local provider with an instant fake model, and over an instant
  fake provider batch API;
- cost: the same requests priced by the catalog at batch rates (what the
  ledger records for a provider batch API) against real time, for an OpenAI
  and an Anthropic model. Target: exactly 50%.

Target: >= 5,000 requests/s enqueued with durability on this machine.

    python benchmarks/batch.py --out benchmarks/results/batch.json
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import print_table, write_json

from costopt_core import CostEngine, Message, Usage
from costopt_core.batch import (
    BatchJob,
    BatchLimits,
    BatchQueue,
    BatchRequest,
    BatchResult,
    LocalBatchProvider,
    RemoteBatch,
)
from costopt_core.batch.queue import request_to_json
from costopt_core.testing import FakeEmbedder

TARGET_PER_S = 5_000.0
MODELS = ("gpt-4o-mini", "claude-haiku-4-5")
QUESTION = (
    "Summarise the customer's message below in one sentence and say whether it needs a "
    "human agent. Message: my order #{i} arrived with a cracked screen, the box looked fine, "
    "and I would like a replacement rather than a refund if that is possible this week."
)


def requests(n: int, model: str = "gpt-4o-mini") -> list[BatchRequest]:
    return [
        BatchRequest(
            id=f"req-{i:05d}",
            model=model,
            messages=(
                Message("system", "You are a support triage assistant."),
                Message("user", QUESTION.format(i=i)),
            ),
            params={"max_tokens": 200, "temperature": 0},
            tenant=f"tenant-{i % 7}",
        )
        for i in range(n)
    ]


def usage_of(request: BatchRequest) -> Usage:
    """Deterministic, varied token counts per request (as a provider would report)."""
    i = int(request.id.split("-")[1])
    return Usage(input_tokens=180 + (i * 37) % 900, output_tokens=20 + (i * 13) % 250)


# -- enqueue throughput ------------------------------------------------------------------
def enqueue_run(reqs: Sequence[BatchRequest], chunk: int, power_safe: bool) -> float:
    """Requests/s to enqueue ``reqs`` in calls of ``chunk`` into a fresh file."""
    with tempfile.TemporaryDirectory() as tmp:
        q = BatchQueue(Path(tmp) / "queue.db", power_safe=power_safe)
        q.counts("job")  # open the file outside the timing
        start = time.perf_counter()
        for i in range(0, len(reqs), chunk):
            q.enqueue("job", reqs[i : i + chunk], now=time.time())
        elapsed = time.perf_counter() - start
        assert q.counts("job")["queued"] == len(reqs)
        q.close()
    return len(reqs) / elapsed


def bench_enqueue(n: int, runs: int) -> dict[str, Any]:
    reqs = requests(n)
    out: dict[str, Any] = {}
    for label, chunk, safe, k in (
        ("one_call", n, False, runs),
        ("chunks_of_100", 100, False, runs),
        ("one_per_call", 1, False, max(1, runs // 2)),
        ("one_call_power_safe", n, True, runs),
        ("chunks_of_100_power_safe", 100, True, runs),
        ("one_per_call_power_safe", 1, True, 1),
    ):
        rates = [enqueue_run(reqs, chunk, safe) for _ in range(k)]
        out[label] = {
            "requests_per_s_median": statistics.median(rates),
            "runs": rates,
            "requests_per_call": chunk,
            "survives": "power loss" if safe else "process kill",
        }
    return out


def bench_memory(n: int) -> dict[str, Any]:
    reqs = requests(n)
    with tempfile.TemporaryDirectory() as tmp:
        q = BatchQueue(Path(tmp) / "queue.db")
        q.counts("job")
        tracemalloc.start()
        q.enqueue("job", reqs, now=time.time())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        q.close()
    return {
        "enqueue_peak_tracemalloc_mb": peak / 2**20,
        "queue_file_mb": size / 2**20,
        "request_json_bytes_mean": statistics.fmean(len(request_to_json(r)) for r in reqs),
    }


# -- whole jobs ----------------------------------------------------------------------------
class InstantBatchAPI:
    """A provider batch API that answers at once (no wire): measures the engine alone."""

    name = "instant"
    mode = "batch"
    limits = BatchLimits(max_requests=2_000, max_bytes=100 * 2**20)

    def __init__(self) -> None:
        self.batches: dict[str, list[BatchRequest]] = {}

    def request_size(self, request: BatchRequest) -> int:
        return len(request_to_json(request)) + 1

    def submit(self, reqs: Sequence[BatchRequest]) -> str:
        batch_id = f"batch_{len(self.batches)}"
        self.batches[batch_id] = list(reqs)
        return batch_id

    def poll(self, batch_id: str) -> RemoteBatch:
        return RemoteBatch(id=batch_id, status="ended")

    def results(self, batch_id: str) -> list[BatchResult]:
        return [answer(r) for r in self.batches[batch_id]]

    def cancel(self, batch_id: str) -> None:
        pass

    async def asubmit(self, reqs: Sequence[BatchRequest]) -> str:
        return self.submit(reqs)

    async def apoll(self, batch_id: str) -> RemoteBatch:
        return self.poll(batch_id)

    async def aresults(self, batch_id: str) -> list[BatchResult]:
        return self.results(batch_id)

    async def acancel(self, batch_id: str) -> None:
        pass


def answer(request: BatchRequest) -> BatchResult:
    return BatchResult(
        id=request.id,
        status="succeeded",
        text="Cracked screen on arrival; wants a replacement. Needs an agent: yes.",
        usage=usage_of(request),
        model=request.model,
    )


def run_job(
    make_provider: Callable[[], Any], reqs: list[BatchRequest]
) -> tuple[float, CostEngine, BatchJob]:
    engine = CostEngine(embedder=FakeEmbedder())
    with tempfile.TemporaryDirectory() as tmp:
        job = BatchJob(make_provider(), Path(tmp) / "q.db", engine=engine, poll_interval_s=0.01)
        start = time.perf_counter()
        status = job.run(reqs)
        elapsed = time.perf_counter() - start
        assert len(status) == len(reqs) and all(r.status == "succeeded" for r in status)
        job.queue.close()
    return len(reqs) / elapsed, engine, job


def bench_jobs(n: int) -> dict[str, Any]:
    local_rate, local_engine, _ = run_job(lambda: LocalBatchProvider(answer), requests(n))
    api_rate, _, _ = run_job(InstantBatchAPI, requests(n))
    return {
        "local_provider_requests_per_s": local_rate,
        "local_provider_recorded_mode": sorted({r.mode for r in local_engine.ledger.records()}),
        "batch_api_requests_per_s": api_rate,
    }


# -- cost ------------------------------------------------------------------------------
def bench_cost(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in MODELS:
        reqs = requests(n, model)
        _, engine, _ = run_job(InstantBatchAPI, reqs)
        totals = engine.ledger.totals()
        realtime = sum(
            (engine.cost(model, usage_of(r), "sync") or Decimal(0) for r in reqs), Decimal(0)
        )
        batch_cost = totals.cost_usd
        price = engine.catalog.get(model)
        out[model] = {
            "requests": totals.requests,
            "input_tokens": totals.tokens["input_tokens"],
            "output_tokens": totals.tokens["output_tokens"],
            "realtime_cost_usd": format(realtime, "f"),
            "batch_cost_usd": format(batch_cost, "f"),
            "batch_savings_usd": format(totals.savings_usd.get("batch", Decimal(0)), "f"),
            "cost_ratio_vs_realtime": format(batch_cost / realtime, "f"),
            "exactly_half": batch_cost * 2 == realtime
            and totals.savings_usd.get("batch") == realtime - batch_cost,
            "catalog_as_of": str(engine.catalog.as_of)
            if hasattr(engine.catalog, "as_of")
            else None,
            "provider": getattr(price, "provider", None),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5, help="enqueue runs (the median is reported)")
    ap.add_argument("--out", help="write the JSON result here")
    args = ap.parse_args()
    n = args.requests

    enqueue = bench_enqueue(n, args.runs)
    memory = bench_memory(n)
    jobs = bench_jobs(n)
    cost = bench_cost(n)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print_table(
        f"Durable enqueue, {n:,} requests (median of runs)",
        ["mode", "requests/call", "survives", "requests/s"],
        [
            [k, v["requests_per_call"], v["survives"], f"{v['requests_per_s_median']:,.0f}"]
            for k, v in enqueue.items()
        ],
    )
    print_table(
        "Memory and whole jobs",
        ["measure", "value"],
        [
            ["enqueue peak (tracemalloc)", f"{memory['enqueue_peak_tracemalloc_mb']:.1f} MB"],
            ["queue file", f"{memory['queue_file_mb']:.1f} MB"],
            ["process max RSS", f"{rss_mb:.0f} MB"],
            ["job over local provider", f"{jobs['local_provider_requests_per_s']:,.0f} req/s"],
            ["job over instant batch API", f"{jobs['batch_api_requests_per_s']:,.0f} req/s"],
        ],
    )
    print_table(
        f"Cost of the same {n:,} requests: batch vs real time",
        ["model", "real time $", "batch $", "batch / real time", "exactly 50%"],
        [
            [
                m,
                v["realtime_cost_usd"],
                v["batch_cost_usd"],
                v["cost_ratio_vs_realtime"],
                v["exactly_half"],
            ]
            for m, v in cost.items()
        ],
    )
    bulk = enqueue["one_call"]["requests_per_s_median"]
    write_json(
        args.out,
        {
            "benchmark": "batch",
            "requests": n,
            "target_enqueue_per_s": TARGET_PER_S,
            "enqueue_per_s": bulk,
            "enqueue_per_s_chunks_of_100": enqueue["chunks_of_100"]["requests_per_s_median"],
            "enqueue_per_s_one_per_call": enqueue["one_per_call"]["requests_per_s_median"],
            "meets_enqueue_target": bulk >= TARGET_PER_S,
            "durability": "committed in WAL before enqueue returns (synchronous=NORMAL): "
            "survives a killed process; power_safe=True (synchronous=FULL) survives power loss",
            "enqueue": enqueue,
            "memory": {**memory, "process_max_rss_mb": rss_mb},
            "jobs": jobs,
            "cost_ratio_vs_realtime": {m: v["cost_ratio_vs_realtime"] for m, v in cost.items()},
            "cost": cost,
            "machine": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
            },
        },
    )


if __name__ == "__main__":
    main()
