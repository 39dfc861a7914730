"""Load: concurrent requests through cache + router + cost handler, and a long run's memory.

The stack and the workload are those of ``tests/integration/test_load.py``:
``CachedChatModel(RouterChatModel(tiers))`` with a ``CostCallbackHandler``,
tier models that sleep ``--latency-ms`` per call, four tenants, hot prompts
asked many times side by side plus one-off prompts. Reported per load: p50/p99
latency per request, requests/s, whether the ledger is exact (one record per
request, totals equal to the figures computed by hand, one model call per
distinct miss, every answer its own tenant's), and model calls against distinct
misses. Each load runs twice, with ``invoke`` and with streams (identical
streams in flight share one call). The long run records calls into a bounded
ledger and stores answers in
a bounded memory cache, reading the peak RSS after each segment: it should
flatten once the bounds are reached.

    python benchmarks/load.py --out benchmarks/results/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import _common
from _common import print_table, write_json

from costopt_core import CostEngine, CostLedger, Usage
from costopt_core.cache import CachedResponse, CacheRequest, MemoryCacheBackend, SemanticCache
from costopt_core.tenancy import tenant_scope
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message
from tests.integration.test_load import (
    SMALL,
    TENANTS,
    Stack,
    aanswer,
    answer,
    build,
    check,
    workload,
)


def _summary(
    name: str, stack: Stack, reqs: list[tuple[str, str]], answers: list[str], lat: list[float]
) -> dict[str, Any]:
    wall = lat.pop()  # the last entry is the whole run's wall time
    try:
        check(stack, reqs, answers)
        exact = True
    except AssertionError:
        exact = False
    q = statistics.quantiles(lat, n=100)
    return {
        "load": name,
        "requests": len(reqs),
        "distinct_misses": len(set(reqs)),
        "model_calls": stack.small.script.calls + stack.frontier.script.calls,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": q[98] * 1000,
        "requests_per_s": len(reqs) / wall,
        "records": len(stack.engine.ledger),
        "cost_usd": format(stack.engine.ledger.totals().cost_usd, "f"),
        "exact": exact,
    }


def run_async(requests: int, latency_s: float, *, streams: bool = False) -> dict[str, Any]:
    stack = build(latency_s)
    hot = max(1, requests // 100)
    reqs = workload(hot=hot, repeats=10, unique=requests - hot * 10 * len(TENANTS))
    cfg = {"callbacks": [stack.handler]}
    lat: list[float] = []

    async def one(tenant: str, prompt: str) -> str:
        t0 = time.perf_counter()
        with tenant_scope(tenant):
            out = await aanswer(stack, prompt, cfg, streams=streams)
        lat.append(time.perf_counter() - t0)
        return out

    async def main() -> list[str]:
        return list(await asyncio.gather(*(one(t, p) for t, p in reqs)))

    t0 = time.perf_counter()
    answers = asyncio.run(main())
    lat.append(time.perf_counter() - t0)
    kind = "astream" if streams else "async"
    return _summary(f"{kind} x{len(reqs)}", stack, reqs, answers, lat)


def run_threads(
    requests: int, threads: int, latency_s: float, *, streams: bool = False
) -> dict[str, Any]:
    stack = build(latency_s)
    hot = max(1, requests // 200)
    reqs = workload(hot=hot, repeats=threads, unique=requests - hot * threads * len(TENANTS))
    cfg = {"callbacks": [stack.handler]}

    def one(req: tuple[str, str]) -> tuple[str, float]:
        t0 = time.perf_counter()
        with tenant_scope(req[0]):
            out = answer(stack, req[1], cfg, streams=streams)
        return out, time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, reqs))
    lat = [s for _, s in results] + [time.perf_counter() - t0]
    kind = "threads streaming" if streams else "threads"
    return _summary(f"{threads} {kind} x{len(reqs)}", stack, reqs, [a for a, _ in results], lat)


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size in MB (Linux: /proc and ru_maxrss in KB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        current = pages * resource.getpagesize() / 2**20
    except OSError:
        current = float("nan")
    return current, peak


def run_long(records: int, segments: int, max_records: int, max_entries: int) -> dict[str, Any]:
    fixed = datetime(2026, 11, 21, 12, tzinfo=UTC)
    ledger = CostLedger(max_records=max_records)
    engine = CostEngine(ledger=ledger, embedder=FakeEmbedder(), clock=lambda: fixed)
    backend = MemoryCacheBackend(max_entries=max_entries)
    cache = SemanticCache(backend, embedder=FakeEmbedder())
    usage = Usage(input_tokens=1000, output_tokens=100)
    per = records // segments
    rows = []
    t0 = time.perf_counter()
    for s in range(segments):
        for i in range(s * per, (s + 1) * per):
            engine.record_call(model=SMALL, usage=usage, tenant=TENANTS[i % 4])
            if i % 4 == 0:  # a quarter of the calls store a new answer
                req = CacheRequest(messages=(Message("user", f"question {i}"),), tenant="acme")
                cache.store(req, CachedResponse(text=f"answer {i}"))
        cur, peak = _rss_mb()
        rows.append(
            {
                "records": (s + 1) * per,
                "records_held": len(ledger.records()),
                "cache_entries": backend.stats().entries,
                "rss_mb": round(cur, 1),
                "peak_rss_mb": round(peak, 1),
            }
        )
    want = engine.cost(SMALL, usage)
    assert want is not None
    exact = ledger.totals().cost_usd == want * per * segments
    return {
        "records": per * segments,
        "max_records": max_records,
        "max_entries": max_entries,
        "seconds": time.perf_counter() - t0,
        "totals_exact": exact,
        "segments": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--async-requests", type=int, default=5000)
    ap.add_argument("--thread-requests", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--latency-ms", type=float, default=50.0, help="tier model latency")
    ap.add_argument("--long-records", type=int, default=200_000)
    ap.add_argument("--segments", type=int, default=5)
    ap.add_argument("--max-records", type=int, default=1000)
    ap.add_argument("--max-entries", type=int, default=1000)
    ap.add_argument("--out", help="write the JSON result here")
    args = ap.parse_args()

    latency = args.latency_ms / 1000
    # Each load also streamed: identical streams in flight share one call.
    loads = [
        run_async(args.async_requests, latency),
        run_threads(args.thread_requests, args.threads, latency),
        run_async(args.async_requests, latency, streams=True),
        run_threads(args.thread_requests, args.threads, latency, streams=True),
    ]
    print_table(
        f"Load through CachedChatModel(RouterChatModel) + CostCallbackHandler "
        f"(tier latency {args.latency_ms:g} ms)",
        ["load", "p50 ms", "p99 ms", "req/s", "model calls / distinct misses", "records exact"],
        [
            [
                r["load"],
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['requests_per_s']:.0f}",
                f"{r['model_calls']} / {r['distinct_misses']}",
                "yes" if r["exact"] else "NO",
            ]
            for r in loads
        ],
    )
    long = run_long(args.long_records, args.segments, args.max_records, args.max_entries)
    print_table(
        f"Long run: ledger max_records={args.max_records}, memory cache "
        f"max_entries={args.max_entries} (totals exact: {'yes' if long['totals_exact'] else 'NO'})",
        ["records", "records held", "cache entries", "RSS MB", "peak RSS MB"],
        [
            [s["records"], s["records_held"], s["cache_entries"], s["rss_mb"], s["peak_rss_mb"]]
            for s in long["segments"]
        ],
    )
    write_json(
        args.out,
        {
            "benchmark": "load",
            "tier_latency_ms": args.latency_ms,
            "loads": loads,
            "long_run": long,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    )


if __name__ == "__main__":
    _ = _common
    main()
