"""Cache lookup latency, embedding excluded: memory and Redis backends vs raw redisvl.

Entries are unit vectors of all-MiniLM-L6-v2's size (384); each lookup is a
full engine lookup (exact tier, scoped vector search, threshold and guards)
with the vector precomputed, so only the cache's own work is timed. With the
vector at hand the engine reads the exact key and searches in one round trip
on Redis (``CombinedLookup``); the ``redis_exact_first`` row times the other
path, a prompt the embedder has not seen: the exact read, then the search. The
baseline is redisvl's ``SemanticCache.check`` on the same vectors and server,
timed in alternating rounds with ours (``--rounds``; the medians and the median
ratio are reported, since the machine's noise moves both alike). Half the
lookups reword a stored prompt (a hit the guards pass), half are fresh. Also
checks that the hit/miss decisions of the memory and Redis backends agree with
exact search (the vectors are random: the hardest case for HNSW), and that a
request's prompt is embedded once even when the cache looks up and stores it.

    python benchmarks/cache_latency.py --out benchmarks/results/cache_latency.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from _common import REPO, print_table, write_json

from costopt_core.cache import (
    CacheConfig,
    CachedResponse,
    CacheRequest,
    MemoryCacheBackend,
    SemanticCache,
)
from costopt_core.cache.backend import CacheBackend
from costopt_core.cache.keys import prepare
from costopt_core.embeddings import CachingEmbedder
from costopt_core.types import Message, Usage

DIM = 384
TARGET_MEMORY_P50_MS = 2.0


class TableEmbedder:
    """Looks vectors up instead of computing them: the timing excludes embedding."""

    def __init__(self, table: dict[str, npt.NDArray[np.float32]]) -> None:
        self.table = table
        self.calls = 0

    @property
    def dim(self) -> int:
        return DIM

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        return np.stack([self.table[t] for t in texts])

    async def aembed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.embed(texts)


class AtHandEmbedder(TableEmbedder):
    """A table whose vectors are all at hand before the lookup, as a shared
    embedder's LRU has them for a prompt the router (or an earlier request)
    embedded."""

    def known(self, text: str) -> npt.NDArray[np.float32] | None:
        return self.table.get(text)


def unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# fmt: off
_WORDS = (
    "account", "billing", "invoice", "refund", "password", "login", "email", "export",
    "import", "report", "chart", "dashboard", "webhook", "token", "plan", "seat", "team",
    "project", "folder", "file", "upload", "download", "sync", "backup", "restore", "alert",
    "budget", "quota", "limit", "region", "cluster", "node", "queue", "worker", "cache",
    "index", "search", "filter", "sort", "tag", "label", "theme", "language", "timezone",
    "currency", "receipt", "order", "cart", "coupon", "shipping", "address", "profile",
    "avatar", "device", "session", "browser", "mobile", "desktop",
)
# fmt: on


def _phrase(i: int) -> str:
    """A distinct digit-free phrase per ``i`` (the cache's number guard ignores words)."""
    n = len(_WORDS)
    return f"{_WORDS[i % n]} {_WORDS[(i // n) % n]} {_WORDS[(i // n // n) % n]}"


def workload(n: int, queries: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    vecs = unit(rng, n)
    texts = [f"how do i change the {_phrase(i)} settings" for i in range(n)]
    # Half the queries reword a stored prompt with a nearby vector: hits the guards
    # pass, so the served path (candidate fields read and decoded) is timed too.
    # The other half are fresh (misses).
    pick = rng.integers(0, n, size=queries // 2)
    near = vecs[pick] + rng.normal(scale=0.01, size=(len(pick), DIM)).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    q_vecs = np.concatenate([near, unit(rng, queries - len(pick))])
    q_texts = [f"how can i change the {_phrase(int(i))} settings" for i in pick] + [
        f"where is the {_phrase(n + j)} page" for j in range(queries - len(pick))
    ]
    return {"vecs": vecs, "texts": texts, "q_vecs": q_vecs, "q_texts": q_texts}


def bench_scope() -> str:
    """The scope every workload entry and query of tenant "bench" falls in."""
    return prepare(CacheRequest((Message("user", "x"),), tenant="bench"), 2).scope


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each timing figure's median over repeated runs."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def fill(cache: SemanticCache, backend: CacheBackend, w: dict[str, Any], tenant: str) -> None:
    """Insert entries directly through the backend (bulk load, not part of the timing)."""
    from costopt_core.cache.entry import CacheEntry

    resp = CachedResponse(text="a cached answer", model="gpt-4o-mini", usage=Usage(100, 20))
    for text, vec in zip(w["texts"], w["vecs"], strict=True):
        prep = prepare(CacheRequest((Message("user", text),), tenant=tenant), 2)
        backend.put(
            CacheEntry(
                key=prep.key,
                scope=prep.scope,
                namespace=prep.namespace,
                prompt_text=prep.text,
                response=resp,
                vector=vec,
                created_at=time.time(),
            )
        )


def time_lookups(lookup: Callable[[int], Any], n: int) -> dict[str, float]:
    for j in range(min(50, n)):  # warm-up
        lookup(j)
    times = []
    for j in range(n):
        t = time.perf_counter()
        lookup(j)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[int(len(times) * 0.99) - 1],
        "mean_ms": statistics.fmean(times),
    }


def engine_lookup(
    backend: CacheBackend, w: dict[str, Any], *, at_hand: bool = True, filled: bool = False
) -> tuple[SemanticCache, Callable]:
    """A filled cache and a ``lookup(j)`` over the workload's queries.

    ``at_hand``: the embedder has every query's vector before the lookup asks.
    """
    table = dict(zip(w["q_texts"], w["q_vecs"], strict=True))
    embedder = AtHandEmbedder(table) if at_hand else TableEmbedder(table)
    cache = SemanticCache(backend, embedder=embedder, config=CacheConfig(similarity_threshold=0.9))
    if not filled:
        fill(cache, backend, w, tenant="bench")
    reqs = [CacheRequest((Message("user", t),), tenant="bench") for t in w["q_texts"]]
    return cache, lambda j: cache.lookup(reqs[j % len(reqs)])


def bench_engine(
    backend: CacheBackend, w: dict[str, Any], queries: int, rounds: int
) -> dict[str, Any]:
    _, lookup = engine_lookup(backend, w)
    runs = [time_lookups(lookup, queries) for _ in range(rounds)]
    return median_run(runs) | served(lookup, queries)


def served(lookup: Callable[[int], Any], queries: int) -> dict[str, int]:
    """Semantic hits over one pass of the queries (counted here: a Redis cache's
    stats() are shared by every cache on its prefix)."""
    hits = sum(1 for j in range(queries) if (h := lookup(j)) is not None and h.tier == "semantic")
    return {"semantic_hits": hits, "lookups": queries}


def agreement(
    w: dict[str, Any], search: Callable[[npt.NDArray[np.float32]], int | None], threshold: float
) -> float:
    """Share of queries whose hit/miss decision and hit entry match exact search.

    ``search(q)`` is the backend's answer: the row of ``w["vecs"]`` it would
    serve at ``threshold``, or None for a miss.
    """
    same = 0
    for q in w["q_vecs"]:
        sims = w["vecs"] @ q
        best = int(np.argmax(sims))
        want = best if sims[best] >= threshold else None
        same += search(q) == want
    return same / len(w["q_vecs"])


def decision_agreement(w: dict[str, Any], threshold: float = 0.9) -> dict[str, Any]:
    backend = MemoryCacheBackend(max_entries=len(w["vecs"]) + 1)
    cache = SemanticCache(backend, embedder=TableEmbedder({}))
    fill(cache, backend, w, tenant="bench")
    index = backend._scopes[(bench_scope(), DIM)]
    same = 0
    for q in w["q_vecs"]:
        a = index.search(q, 1)
        e = index.exact_search(q, 1)
        hit_a = bool(a) and a[0][1] >= threshold
        hit_e = bool(e) and e[0][1] >= threshold
        same += hit_a == hit_e and (not hit_a or a[0][0] == e[0][0])
    return {"uses_hnsw": index.uses_hnsw, "agreement": same / len(w["q_vecs"])}


def redis_agreement(backend: CacheBackend, w: dict[str, Any], threshold: float = 0.9) -> float:
    """Share of queries whose Redis hit/miss decision and hit entry match exact search."""
    scope = bench_scope()
    row = {text: i for i, text in enumerate(w["texts"])}

    def served(q: npt.NDArray[np.float32]) -> int | None:
        hits = backend.search(scope, q, 1, now=time.time(), min_similarity=threshold)
        return row[hits[0][0].prompt_text] if hits and hits[0][1] >= threshold else None

    return agreement(w, served, threshold)


def redisvl_check(url: str, w: dict[str, Any]) -> tuple[Any, Callable]:
    """redisvl's own SemanticCache, filled with the same entries, and ``check(j)``."""
    from redisvl.extensions.cache.llm import SemanticCache as RedisVLCache
    from redisvl.utils.vectorize import CustomVectorizer

    zero = [0.0] * DIM
    vectorizer = CustomVectorizer(embed=lambda text: zero)
    cache = RedisVLCache(
        name=f"bench_{uuid.uuid4().hex[:8]}",
        redis_url=url,
        distance_threshold=0.1,
        vectorizer=vectorizer,
        overwrite=True,
    )
    for text, vec in zip(w["texts"], w["vecs"], strict=True):
        cache.store(prompt=text, response="a cached answer", vector=vec.tolist())
    q = [v.tolist() for v in w["q_vecs"]]
    return cache, lambda j: cache.check(vector=q[j % len(q)])


def bench_redis_pair(url: str, w: dict[str, Any], queries: int, rounds: int) -> dict[str, Any]:
    """Our Redis backend and redisvl, timed in alternating rounds on one server.

    The machine's noise moves both alike within a round, so the ratio of the
    medians over rounds is the figure to trust, not either latency alone.
    """
    from costopt_core.cache.redis_backend import RedisCacheBackend

    backend = RedisCacheBackend(url, prefix=f"bench{len(w['vecs'])}", socket_timeout_s=5.0)
    cache, ours = engine_lookup(backend, w)
    _, cold = engine_lookup(backend, w, at_hand=False, filled=True)
    theirs_cache, theirs = redisvl_check(url, w)
    scope, qv = bench_scope(), w["q_vecs"]
    k, threshold = cache.config.top_k, cache.similarity_threshold

    def search_only(j: int) -> Any:
        # The backend's share of a lookup: the vector search step alone.
        return backend.search(scope, qv[j % len(qv)], k, now=time.time(), min_similarity=threshold)

    ours_runs, theirs_runs, search_runs, cold_runs = [], [], [], []
    try:
        redis_agrees = redis_agreement(backend, w, threshold)
        for _ in range(rounds):
            ours_runs.append(time_lookups(ours, queries))
            theirs_runs.append(time_lookups(theirs, queries))
            search_runs.append(time_lookups(search_only, queries))
            cold_runs.append(time_lookups(cold, queries))
        ours_served, cold_served = served(ours, queries), served(cold, queries)
    finally:
        backend.clear()
        theirs_cache.delete()

    redis_row: dict[str, Any] = median_run(ours_runs) | {
        **ours_served,
        "p50_ms_per_round": [r["p50_ms"] for r in ours_runs],
    }
    base = median_run(theirs_runs) | {"p50_ms_per_round": [r["p50_ms"] for r in theirs_runs]}
    cold_row: dict[str, Any] = median_run(cold_runs) | {
        **cold_served,
        "vs_redisvl_p50_ratio": statistics.median(
            o["p50_ms"] / t["p50_ms"] for o, t in zip(cold_runs, theirs_runs, strict=True)
        ),
    }
    return {
        "redis": redis_row,
        "redis_exact_first": cold_row,
        "redisvl_baseline": base,
        "redis_decisions": {"agreement": redis_agrees},
        "redis_search_step": median_run(search_runs),
        "redis_vs_redisvl_p50_ratio": statistics.median(
            o["p50_ms"] / t["p50_ms"] for o, t in zip(ours_runs, theirs_runs, strict=True)
        ),
    }


def embed_once_check() -> dict[str, Any]:
    from costopt_core.testing import FakeEmbedder

    inner = FakeEmbedder(dim=DIM)
    cache = SemanticCache(embedder=CachingEmbedder(inner))
    request = CacheRequest((Message("user", "How do I reset my password?"),))
    cache.get_or_call(request, lambda: CachedResponse(text="Use the link.", usage=Usage(9, 3)))
    # A router sharing the engine's embedder asks for the same text again.
    cache.embedder.embed(["How do I reset my password?"])
    return {"texts_embedded": inner.texts_embedded}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5, help="alternating Redis/redisvl rounds")
    ap.add_argument("--redis-url", help="an existing Redis Stack; default: start the test server")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    server = None
    url = args.redis_url
    if not args.no_redis and url is None:
        sys.path.insert(0, str(REPO))
        from tests.redis_server import RedisServer

        server = RedisServer().start()
        url = server.url
    results: dict[str, Any] = {"sizes": {}}
    try:
        for n in sizes:
            w = workload(n, args.queries)
            row: dict[str, Any] = {
                "memory": bench_engine(
                    MemoryCacheBackend(max_entries=n + 1), w, args.queries, args.rounds
                ),
                "memory_decisions": decision_agreement(w),
            }
            if url:
                row |= bench_redis_pair(url, w, args.queries, args.rounds)
            results["sizes"][str(n)] = row
            print(f"  {n} entries done", file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
    results["embed_once"] = embed_once_check()

    rows = []
    for n, r in results["sizes"].items():
        for name in ("memory", "redis", "redis_exact_first", "redisvl_baseline"):
            if name in r:
                # One backend: both Redis rows make the same decisions.
                agrees = r.get(f"{name.removesuffix('_exact_first')}_decisions", {}).get(
                    "agreement"
                )
                exact = "exact" if agrees is None else f"{agrees:.4f}"
                rows.append(
                    [n, name, f"{r[name]['p50_ms']:.3f}", f"{r[name]['p99_ms']:.3f}", exact]
                )
    print_table(
        f"Cache lookup latency, embedding excluded ({args.queries} lookups, half hits)",
        ["entries", "backend", "p50 ms", "p99 ms", "decisions = exact search"],
        rows,
    )
    big = results["sizes"].get(str(max(sizes)), {})
    summary = {
        "memory_p50_ms_at_max": big.get("memory", {}).get("p50_ms"),
        "memory_target_p50_ms": TARGET_MEMORY_P50_MS,
        "redis_vs_redisvl_p50_ratio": {
            n: r["redis_vs_redisvl_p50_ratio"]
            for n, r in results["sizes"].items()
            if "redis_vs_redisvl_p50_ratio" in r
        },
        "texts_embedded_per_request": results["embed_once"]["texts_embedded"],
    }
    print(summary)
    write_json(args.out, {"benchmark": "cache_latency", "summary": summary, **results})


if __name__ == "__main__":
    main()
