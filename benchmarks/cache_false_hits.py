"""Adversarial cache pairs: prompts that embed alike but ask different things.

Quora's pairs measure the cache on questions people wrote; this set measures it
on the near misses an application meets: the same words with one slot changed
(output language, format, length, audience, quantifier, comparative, role,
unit, time), the same words in another order, one token changed in pasted
code, a shared RAG context or preamble with another final question, the same
follow-up after two different conversations, and the same kinds in Spanish,
German and French; plus true paraphrases, which should still be served. Each
pair is stored one way and looked up the other, both directions, under the
shipped defaults (default embedder, guards and pair check), next to raw cosine
at redisvl's (0.90) and GPTCache's (0.80) default thresholds.

The set (``benchmarks/data/false_hit_pairs.jsonl``, 408 pairs) was written by
a review of this cache, and some guard word lists were extended from the
classes it found: the figures on it are optimistic. ``--data`` takes any file
of the same format (one JSON object per line: ``category``, ``same``, ``a``,
``b``; a prompt is a string or a list of ``[role, text]`` turns).

    python benchmarks/cache_false_hits.py --out benchmarks/results/cache_false_hits.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, open_text, print_table, write_json

from costopt_core.cache import CachedResponse, CacheRequest, SemanticCache
from costopt_core.cache.keys import semantic_text
from costopt_core.types import Message, Usage

DEFAULT_DATA = REPO / "benchmarks" / "data" / "false_hit_pairs.jsonl"
BASELINES = {"redisvl_default_0.90": 0.90, "gptcache_default_0.80": 0.80}


def messages(prompt: str | list[list[str]]) -> tuple[Message, ...]:
    if isinstance(prompt, str):
        return (Message("user", prompt),)
    return tuple(Message(role, text) for role, text in prompt)


def load(path: Path) -> list[dict[str, Any]]:
    with open_text(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def served_by_cache(cache: SemanticCache, pairs: list[dict[str, Any]]) -> list[bool]:
    """Whether the default cache serves either direction of each pair."""
    answer = CachedResponse(text="cached answer", model="m", usage=Usage(10, 5))
    out = []
    for i, pair in enumerate(pairs):
        hit = False
        for j, (stored, asked) in enumerate(((pair["a"], pair["b"]), (pair["b"], pair["a"]))):
            tenant = f"pair-{i}-{j}"  # one partition per lookup: pairs never meet
            cache.store(CacheRequest(messages(stored), tenant=tenant), answer)
            hit |= cache.lookup(CacheRequest(messages(asked), tenant=tenant)) is not None
        out.append(hit)
    return out


def cosines(cache: SemanticCache, pairs: list[dict[str, Any]]) -> np.ndarray:
    texts_a = [semantic_text(messages(p["a"]), cache.config.context_turns) for p in pairs]
    texts_b = [semantic_text(messages(p["b"]), cache.config.context_turns) for p in pairs]
    va, vb = cache.embedder.embed(texts_a), cache.embedder.embed(texts_b)
    return np.sum(np.asarray(va) * np.asarray(vb), axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="pairs, one JSON object per line")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    pairs = load(Path(args.data))
    started = time.perf_counter()
    cache = SemanticCache()
    ours = served_by_cache(cache, pairs)
    sims = cosines(cache, pairs)
    rows: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"pairs": 0, "costopt": 0, **{name: 0 for name in BASELINES}}
    )
    for pair, hit, sim in zip(pairs, ours, sims, strict=True):
        for key in (pair["category"], "ALL different" if not pair["same"] else "ALL same"):
            row = rows[key]
            row["same"] = pair["same"]
            row["pairs"] += 1
            row["costopt"] += hit
            for name, threshold in BASELINES.items():
                row[name] += bool(sim >= threshold)

    order = sorted(rows, key=lambda k: (k.startswith("ALL"), rows[k]["same"], k))
    print_table(
        "Pairs served (either direction): different questions should not be, paraphrases should",
        ["category", "same?", "pairs", "costopt", "cosine 0.90", "cosine 0.80"],
        [
            [k, "yes" if rows[k]["same"] else "no", rows[k]["pairs"], rows[k]["costopt"]]
            + [rows[k][name] for name in BASELINES]
            for k in order
        ],
    )
    different, same = rows["ALL different"], rows["ALL same"]
    summary = {
        "different_pairs": different["pairs"],
        "different_served": {
            "costopt": different["costopt"],
            **{n: different[n] for n in BASELINES},
        },
        "paraphrase_pairs": same["pairs"],
        "paraphrases_served": {"costopt": same["costopt"], **{n: same[n] for n in BASELINES}},
    }
    print(json.dumps(summary))
    write_json(
        args.out,
        {
            "benchmark": "cache_false_hits",
            "data": str(args.data),
            "summary": summary,
            "per_category": {k: dict(rows[k]) for k in order},
            "run_seconds": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
