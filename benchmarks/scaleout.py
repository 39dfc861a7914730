"""Scale-out: records/s into the shared Redis ledger from 1, 2 and 4 processes, and the
latency one record adds to a call.

Every record is written synchronously (one atomic script, one round trip) before
the call returns, so a crash loses nothing already recorded (there is no flush
interval to lose). The added latency is the median per-record time of
``engine.record_call`` with the sink attached minus without it, measured in the
same process (median of several runs). Target: <= 1 ms p50 added.

    python benchmarks/scaleout.py --out benchmarks/results/scaleout.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
import uuid
from typing import Any

from _common import REPO, print_table, write_json

from costopt_core import CostEngine, Usage
from costopt_core.redis_ledger import RedisLedger

USAGE = Usage(input_tokens=1000, output_tokens=100)


def _record_many(engine: CostEngine, n: int, tag: str) -> list[float]:
    """Per-record wall times (ms) of ``n`` calls recorded through ``engine``."""
    times = []
    for k in range(n):
        t0 = time.perf_counter()
        engine.record_call(
            model="gpt-4o-mini", usage=USAGE, tenant=f"t{k % 8}", tier="small", call_id=f"{tag}{k}"
        )
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def added_latency(url: str, n: int, runs: int) -> dict[str, float]:
    """p50 / p99 per record with and without the Redis sink, in one process."""
    local_p50, shared_p50, shared_p99 = [], [], []
    for r in range(runs):
        local = CostEngine()
        local_times = _record_many(local, n, f"l{r}-")
        shared = CostEngine()
        sink = RedisLedger(url, namespace="bench-" + uuid.uuid4().hex[:8]).attach(shared)
        _record_many(shared, 50, f"warm{r}-")  # connection and script load
        shared_times = _record_many(shared, n, f"s{r}-")
        assert sink.errors == 0, "the sink failed during the benchmark"
        local_p50.append(statistics.median(local_times))
        shared_p50.append(statistics.median(shared_times))
        shared_p99.append(statistics.quantiles(shared_times, n=100)[98])
    base, with_sink = statistics.median(local_p50), statistics.median(shared_p50)
    return {
        "local_p50_ms": base,
        "shared_p50_ms": with_sink,
        "shared_p99_ms": statistics.median(shared_p99),
        "added_p50_ms": with_sink - base,
    }


def _worker(url: str, ns: str, n: int, tag: str, start: Any, out: Any) -> None:
    engine = CostEngine()
    RedisLedger(url, namespace=ns).attach(engine)
    _record_many(engine, 20, tag + "w")
    start.wait()
    t0 = time.perf_counter()
    _record_many(engine, n, tag)
    out.put(time.perf_counter() - t0)


def throughput(url: str, procs: int, n: int) -> dict[str, float]:
    """Records per second into one namespace from ``procs`` processes at once."""
    ctx = mp.get_context("spawn")
    ns = "bench-" + uuid.uuid4().hex[:8]
    start, out = ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(url, ns, n, f"p{i}-", start, out)) for i in range(procs)
    ]
    for w in workers:
        w.start()
    time.sleep(3.0)  # let every worker import and warm up
    start.set()
    durations = [out.get(timeout=300) for _ in workers]
    for w in workers:
        w.join()
    from costopt_core import CostLedger

    recorded = CostLedger.from_redis(url, namespace=ns, records=0).totals().calls
    expected = procs * (n + 20)
    return {
        "processes": procs,
        "records": procs * n,
        "records_per_s": procs * n / max(durations),
        "all_recorded": recorded == expected,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=2000, help="records per process")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--redis-url", help="an existing Redis; default: start the test server")
    ap.add_argument("--out")
    args = ap.parse_args()

    server = None
    url = args.redis_url
    if url is None:
        sys.path.insert(0, str(REPO))
        from tests.redis_server import RedisServer

        server = RedisServer().start()
        url = server.url
    try:
        latency = added_latency(url, args.records, args.runs)
        rates = [throughput(url, p, args.records) for p in (1, 2, 4)]
    finally:
        if server is not None:
            server.stop()
    print_table(
        "Latency per recorded call (ms, median of runs)",
        ["", "p50", "p99"],
        [
            ["in-process ledger only", f"{latency['local_p50_ms']:.3f}", "-"],
            [
                "+ Redis sink",
                f"{latency['shared_p50_ms']:.3f}",
                f"{latency['shared_p99_ms']:.3f}",
            ],
            ["added by the sink", f"{latency['added_p50_ms']:.3f}", "-"],
        ],
    )
    print()
    print_table(
        "Records/s into one shared ledger",
        ["processes", "records", "records/s", "all recorded"],
        [
            [r["processes"], r["records"], f"{r['records_per_s']:,.0f}", r["all_recorded"]]
            for r in rates
        ],
    )
    ok = latency["added_p50_ms"] <= 1.0
    print(f"\ntarget <= 1 ms p50 added: {'met' if ok else 'NOT met'}")
    write_json(
        args.out,
        {
            "latency": latency,
            "throughput": rates,
            "target_added_p50_ms": 1.0,
            "target_met": ok,
            "records_per_process": args.records,
            "runs": args.runs,
        },
    )


if __name__ == "__main__":
    main()
