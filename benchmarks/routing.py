"""Model routing on real per-prompt correctness: cost vs quality against baselines.

Data (``../shared/data/routing/``, see its README): RouterBench ARC-Challenge
and Winogrande (train/test files, 11 models with their real per-prompt cost)
and RouteLLM MMLU (Mixtral-8x7B vs GPT-4-1106 correctness, 57 subject files,
no costs). No model is called: a router's choice is scored with the recorded
correctness and cost of the model it picks.

Protocol (``README.md`` of the data): everything is fitted and calibrated on
the train split only, then every test prompt is routed.

- Tiers come from the train split by a fixed rule, not by hand: the frontier
  is the model with the best train quality; the tiers are the models on the
  upper convex hull of (mean cost, mean quality) from the cheapest model up to
  the frontier (a model under the hull is beaten, at its own cost, by mixing
  two hull models at random), at most ``--max-tiers`` of them (the hull
  points whose removal loses the least area go first).
- Learned router: :class:`LearnedClassifier` on the all-MiniLM-L6-v2
  embedding of :func:`routing_text` (the end of the prompt) and request
  features, calibrated with 5-fold cross-validation on train
  (:func:`cross_validated_probs`, then :func:`calibrate_from_predictions`
  with the default "path" search: traffic split between two adjacent tiers
  at a time). Its test curve is the train Pareto front of those settings,
  each applied unchanged to test, plus each tier alone. Decisions are
  cost-aware (thresholds scaled by the prompt's token count, known before
  the call); ``learned_uniform`` is the same model with plain thresholds.
- Heuristic router: :class:`HeuristicClassifier` (no training), thresholds
  chosen on train the same way.
- Baselines on test: always-frontier, always-cheapest, every single model,
  the random router (random mixing of tiers: the upper envelope of the tier
  points), and the oracle (cheapest tier with the best answer; also over all
  models).

Metrics per router on test: ``cost_reduction_at_95pct`` (1 - cost / frontier
cost at the cheapest curve point with quality >= 95% of the frontier's),
``cost_fraction_at_frontier_quality`` (cheapest point at >= frontier quality),
``apgr`` for two-model sets (RouteLLM: mean performance gap recovered over the
share of calls sent to the strong model, 0..1, with the endpoints at
always-weak and always-strong) and ``apgr_cost`` (the same over normalised
cost, the axis a cost-aware router optimises); the top-level ``apgr`` is
``learned_uniform``'s (every call priced alike, as RouteLLM's routers see it)
and ``apgr_cost`` the cost-aware ``learned`` router's. Also the setting calibrated on
train for 95% ("calibrated": its realised test quality and cost; and
"conservative", calibrated to clear 95% by 1.645 standard errors), and
whether the curve ever falls below the best single model with no greater
test cost. Decision latency: features + classifier + ``choose_tier`` for one
test prompt at a time, given its embedding (wall time, and the thread's CPU
time, which leaves out the waits a loaded machine adds).

Data handling: RouterBench prompts are stored as a Python list literal and
are read as the joined list; rows where any model's score is missing are
dropped (20 ARC train rows, 8 test; none in Winogrande) so every router is
scored on the same prompts. RouteLLM files have no costs: each prompt is
priced with the catalog's list prices (``gpt-4-1106-preview`` resolves to
gpt-4-turbo at $10/$30 per million tokens, Mixtral-8x7B-Instruct to $0.60/$0.60)
on its input tokens (cl100k token counter, chat framing included) plus
``--mc-output-tokens`` (3) output tokens: the answer to a multiple-choice
question is a letter (``--prices FILE`` prices a model the catalog lacks).
A RouteLLM set without a train file is split 50/50 by a fixed seed
(``--seed``), as is a RouterBench-format file with no ``_train``/``_test``
counterpart. RouterBench models are the columns that have both a score and a
``<model>|total_cost`` column in both files (whatever their order; a model
missing from one split is left out and named in ``notes``); RouteLLM models
are the columns whose values are all True/False or 0..1 (an index or text
column is not a model). The frontier is always chosen on train (best
quality), never by name, and the subject router's weak/strong models are the
cheap and frontier tiers, not the column order. Each data set's key is its
file name without split and extension; a cost-quality PNG per data set is
written next to ``--out``.

Embeddings are cached per text in ``--cache-dir`` (outside the repository):
on 2 shared cores the first run embeds ~17,000 texts in 15-30 minutes, a
rerun takes a few minutes.

    python benchmarks/routing.py --out benchmarks/results/routing.json
    python benchmarks/routing.py --data ../shared/data/routing/routellm_mmlu
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import itertools
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import numpy as np
import numpy.typing as npt
from _common import open_text, print_table, require, write_json

from costopt_core.embeddings import Embedder, SentenceTransformerEmbedder
from costopt_core.pricing import PriceCatalog, estimate_cost
from costopt_core.routing import (
    CalibrationReport,
    Encoded,
    HeuristicClassifier,
    LearnedClassifier,
    calibrate_from_predictions,
    choose_tier,
    choose_tiers,
    cost_scales,
    cross_validated_probs,
    extract_features,
    routing_text,
)
from costopt_core.tokens import default_counter
from costopt_core.types import Message

DEFAULT_ROOT = _common.DATA / "routing"
TARGET = 0.95
# The conservative calibration asks the train (out-of-fold) quality to clear the
# target by this many standard errors: a one-sided 95% bound.
SAFETY_Z = 1.645
FArr = npt.NDArray[np.float64]

csv.field_size_limit(sys.maxsize)


# -- data ----------------------------------------------------------------------


@dataclass
class Split:
    """Prompts with per-model score and cost matrices (columns = ``models``)."""

    prompts: list[str]
    scores: FArr  # (n, n_models) in [0, 1]
    costs: FArr  # (n, n_models) USD
    dropped: int = 0
    # The answer each model gave (a choice letter), when the set records responses.
    answers: list[list[str | None]] | None = None
    # Index of the file each prompt came from (a RouteLLM directory: one per subject).
    sources: npt.NDArray[np.int64] | None = None


@dataclass
class DataSet:
    key: str
    kind: str  # "routerbench" or "routellm"
    models: list[str]
    train: Split
    test: Split
    notes: list[str] = field(default_factory=list)


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open_text(path) as fh:
        return list(csv.DictReader(fh))


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".gz", ".csv"):
        name = name.removesuffix(ext)
    return name


def _prompt_text(raw: str) -> str:
    # RouterBench stores the prompt as a Python list literal of strings.
    if raw.startswith("[") and raw.endswith("]"):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n".join(value)
    return raw


def _num(x: str) -> float:
    x = x.strip()
    if x in ("True", "true"):
        return 1.0
    if x in ("False", "false"):
        return 0.0
    try:
        return float(x)
    except ValueError:
        return math.nan


_CHOICE = re.compile(r"^\W*([A-E])(?![A-Za-z])")


def _choice(response: str) -> str | None:
    """The choice letter a multiple-choice response starts with (``"['B\\n']"`` -> B)."""
    match = _CHOICE.match(_prompt_text(response or "").strip())
    return match.group(1) if match else None


def _routerbench_split(rows: list[dict[str, str]], models: list[str]) -> Split:
    prompts = [_prompt_text(r["prompt"]) for r in rows]
    S = np.array([[_num(r[m]) for m in models] for r in rows], dtype=np.float64)
    C = np.array([[_num(r[f"{m}|total_cost"]) for m in models] for r in rows], dtype=np.float64)
    keep = np.logical_not(np.isnan(S).any(axis=1) | np.isnan(C).any(axis=1))
    has_answers = all(f"{m}|model_response" in rows[0] for m in models) if rows else False
    answers = [
        [_choice(r[f"{m}|model_response"]) for m in models]
        for r, k in zip(rows, keep.tolist(), strict=True)
        if k
    ]
    return Split(
        prompts=[p for p, k in zip(prompts, keep.tolist(), strict=True) if k],
        scores=S[keep],
        costs=C[keep],
        dropped=int((~keep).sum()),
        answers=answers if has_answers else None,
    )


def _routerbench_models(path: Path, columns: Sequence[str]) -> list[str]:
    """Models with both a score column and a ``<model>|total_cost`` column, in file order."""
    names = set(columns)
    models = [
        c.removesuffix("|total_cost")
        for c in columns
        if c.endswith("|total_cost") and c.removesuffix("|total_cost") in names
    ]
    if not models:
        raise SystemExit(
            f"{path}: no RouterBench model columns (a '<model>' score column with a "
            "'<model>|total_cost' column)"
        )
    return models


def is_routerbench(columns: Sequence[str]) -> bool:
    return any(c.endswith("|total_cost") for c in columns)


def load_routerbench(train_path: Path, test_path: Path) -> DataSet:
    train_rows, test_rows = _read_rows(train_path), _read_rows(test_path)
    for path, rows in ((train_path, train_rows), (test_path, test_rows)):
        if not rows:
            raise SystemExit(f"{path}: no rows")
    in_train = _routerbench_models(train_path, list(train_rows[0]))
    in_test = set(_routerbench_models(test_path, list(test_rows[0])))
    models = [m for m in in_train if m in in_test]
    notes: list[str] = []
    only = sorted(set(in_train) ^ in_test)
    if only:
        print(f"  models not in both {train_path.name} and {test_path.name}, left out: {only}")
        notes.append(f"left out (not in both train and test): {', '.join(only)}")
    if not models:
        raise SystemExit(f"{train_path} and {test_path} share no model")
    train = _routerbench_split(train_rows, models)
    test = _routerbench_split(test_rows, models)
    key = _split_name(train_path)[0]
    notes = [
        f"dropped rows with a missing score: {train.dropped} train, {test.dropped} test",
        "prompt = the stored list literal, joined",
        "cost = the recorded total_cost of the chosen model",
        *notes,
    ]
    return DataSet(key, "routerbench", models, train, test, notes)


def load_routerbench_unsplit(path: Path, seed: int) -> DataSet:
    """A RouterBench-format file with no train/test counterpart: split 50/50 by ``seed``."""
    rows = _read_rows(path)
    if not rows:
        raise SystemExit(f"{path}: no rows")
    models = _routerbench_models(path, list(rows[0]))
    full = _routerbench_split(rows, models)
    notes = [
        f"one file, {len(full.prompts)} prompts, split 50/50 with seed {seed}",
        f"dropped rows with a missing score: {full.dropped}",
        "prompt = the stored list literal, joined",
        "cost = the recorded total_cost of the chosen model",
    ]
    return DataSet(_stem(path), "routerbench", models, *_halves(full, seed), notes)


def _halves(full: Split, seed: int) -> tuple[Split, Split]:
    """``full`` split 50/50 at random by ``seed`` (train, test), each in file order."""
    perm = np.random.default_rng(seed).permutation(len(full.prompts))
    half = len(full.prompts) // 2

    def part(ix: npt.NDArray[np.int64]) -> Split:
        return Split(
            [full.prompts[i] for i in ix],
            full.scores[ix],
            full.costs[ix],
            answers=None if full.answers is None else [full.answers[i] for i in ix],
            sources=None if full.sources is None else full.sources[ix],
        )

    return part(np.sort(perm[:half])), part(np.sort(perm[half:]))


def _score_columns(rows: list[dict[str, str]]) -> list[str]:
    """RouteLLM columns that hold a model's score: every value True/False or 0..1.

    An index column (unnamed) and text columns (a subject, the answer letter)
    are not models.
    """
    out = []
    for c in rows[0]:
        if c == "prompt" or not c or c.startswith("Unnamed") or "|" in c:
            continue
        values = [_num(r[c] or "") for r in rows if (r[c] or "").strip()]
        if values and all(0.0 <= v <= 1.0 for v in values):
            out.append(c)
    return out


def _mc_costs(prompts: list[str], models: list[str], catalog: PriceCatalog, out_tok: int) -> FArr:
    counter = default_counter()
    C = np.zeros((len(prompts), len(models)), dtype=np.float64)
    for j, m in enumerate(models):
        price = catalog.get(m, warn=False)
        if price is None:
            raise SystemExit(
                f"no catalog price for model {m!r}: pass --prices FILE, a JSON object such as "
                f'{{"{m}": {{"usd_per_mtok_input": 1.0, "usd_per_mtok_output": 2.0}}}}'
            )
        for i, p in enumerate(prompts):
            tokens = counter.count_messages([Message(role="user", content=p)], m).tokens
            c = estimate_cost(price, tokens, out_tok)
            assert c is not None
            C[i, j] = float(c)
    return C


def load_routellm(
    files: list[Path], key: str, catalog: PriceCatalog, out_tok: int, seed: int
) -> DataSet:
    prompts: list[str] = []
    scores: list[list[float]] = []
    sources: list[int] = []
    models: list[str] | None = None
    for file_index, f in enumerate(files):
        rows = _read_rows(f)
        if not rows:
            continue
        if "prompt" not in rows[0]:
            raise SystemExit(f"{f}: no 'prompt' column (RouteLLM format: prompt, then per model)")
        cols = _score_columns(rows)
        if not cols:
            raise SystemExit(f"{f}: no model score columns (True/False or 0..1 per prompt)")
        if models is None:
            models = cols
        elif set(cols) != set(models):
            raise SystemExit(f"{f}: model columns {cols} differ from {models}")
        for r in rows:
            prompts.append(r["prompt"])
            scores.append([_num(r[m]) for m in models])
            sources.append(file_index)
    if models is None:
        raise SystemExit(f"no rows in {files}")
    S = np.array(scores, dtype=np.float64)
    keep = np.logical_not(np.isnan(S).any(axis=1))
    prompts = [p for p, k in zip(prompts, keep.tolist(), strict=True) if k]
    S = S[keep]
    src = np.array(sources, dtype=np.int64)[keep]
    C = _mc_costs(prompts, models, catalog, out_tok)
    notes = [
        f"{len(files)} file(s), {len(prompts)} prompts, split 50/50 with seed {seed}",
        f"priced with catalog list prices on input tokens + {out_tok} output tokens",
        f"dropped {int((~keep).sum())} rows with a missing score",
    ]
    full = Split(prompts, S, C, sources=src)
    return DataSet(key, "routellm", models, *_halves(full, seed), notes)


def discover(paths: Sequence[str], catalog: PriceCatalog, out_tok: int, seed: int) -> list[DataSet]:
    """Data sets from ``--data`` arguments (or the default routing folder).

    A ``<name>_train`` or ``<name>_test`` file is one RouterBench-format pair
    (the other split next to it, compressed or not); any other CSV file is one
    set split 50/50 (``--seed``), RouterBench format when it has
    ``<model>|total_cost`` columns, else RouteLLM format; a directory of
    RouteLLM-format CSVs is one set named after it (RouteLLM's MMLU: one file
    per subject), while a folder holding ``*_train``/``*_test`` or
    RouterBench-format files (such as the default ``../shared/data/routing/``)
    (or a folder of subdirectories) is searched like the default: each
    train/test pair, each other CSV file (as above), and each subdirectory is
    one data set.
    """
    out: list[DataSet] = []
    if not paths:
        return _discover_root(require(DEFAULT_ROOT), catalog, out_tok, seed)
    for raw in paths:
        p = require(Path(raw))
        if p.is_dir() and (_is_root(p) or not _csvs(p)):
            found = _discover_root(p, catalog, out_tok, seed)
            if not found:
                raise SystemExit(f"{p}: no .csv or .csv.gz files in it or its subdirectories")
            out.extend(found)
        elif p.is_dir():
            out.append(_load_dir(p, catalog, out_tok, seed))
        else:
            out.append(_file_set(p, catalog, out_tok, seed))
    keys = [ds.key for ds in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise SystemExit(f"several data sets are named {dup}: rename a file (the key is its name)")
    return out


def _file_set(p: Path, catalog: PriceCatalog, out_tok: int, seed: int) -> DataSet:
    if _split_name(p)[1]:
        return _pair(p)
    if is_routerbench(_header(p)):
        return load_routerbench_unsplit(p, seed)
    return load_routellm([p], _stem(p), catalog, out_tok, seed)


def _csvs(d: Path) -> list[Path]:
    return sorted(f for f in d.glob("*.csv*") if f.name.endswith((".csv", ".csv.gz")))


def _is_root(d: Path) -> bool:
    """A folder of separate sets: train/test pairs or RouterBench files, not one RouteLLM set."""
    return any(_split_name(f)[1] or is_routerbench(_header(f)) for f in _csvs(d))


def _header(path: Path) -> list[str]:
    with open_text(path) as fh:
        return next(csv.reader(fh), [])


def _split_name(path: Path) -> tuple[str, str | None]:
    """(``key``, ``"train"``/``"test"``) for ``<key>_train.csv[.gz]``; (stem, None) otherwise."""
    stem = _stem(path)
    for split in ("train", "test"):
        if stem.endswith(f"_{split}"):
            return stem.removesuffix(f"_{split}"), split
    return stem, None


def _discover_root(root: Path, catalog: PriceCatalog, out_tok: int, seed: int) -> list[DataSet]:
    out = []
    seen: set[str] = set()
    for f in _csvs(root):
        key, split = _split_name(f)
        if split is not None:
            if key in seen:
                continue  # the other split of a pair already read
            seen.add(key)
        out.append(_file_set(f, catalog, out_tok, seed))
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if _csvs(sub):
            out.append(_load_dir(sub, catalog, out_tok, seed))
    return out


def _pair(path: Path) -> DataSet:
    key, split = _split_name(path)
    ext = path.name.removeprefix(_stem(path))
    other = "test" if split == "train" else "train"
    counterpart = path.with_name(f"{key}_{other}{ext}")
    if not counterpart.exists():  # the other split compressed or not
        alt = ext.removesuffix(".gz") if ext.endswith(".gz") else ext + ".gz"
        if path.with_name(f"{key}_{other}{alt}").exists():
            counterpart = path.with_name(f"{key}_{other}{alt}")
    train, test = (path, counterpart) if split == "train" else (counterpart, path)
    require(train)
    require(test)
    return load_routerbench(train, test)


def _load_dir(d: Path, catalog: PriceCatalog, out_tok: int, seed: int) -> DataSet:
    files = _csvs(d)
    if _is_root(d):
        raise SystemExit(
            f"{d}: a subdirectory is one RouteLLM-format data set; pass its train/test or "
            "RouterBench files (or the folder itself) with --data"
        )
    return load_routellm(files, d.name, catalog, out_tok, seed)


# -- tiers -----------------------------------------------------------------------


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def select_tiers(quality: FArr, cost: FArr, max_tiers: int) -> list[int]:
    """Model indices of the tiers (cheap -> frontier), from train means only."""
    frontier = int(max(range(len(quality)), key=lambda j: (quality[j], -cost[j])))
    cand = [j for j in range(len(quality)) if cost[j] <= cost[frontier]]
    cand.sort(key=lambda j: (cost[j], -quality[j]))
    # Upper hull (monotone chain), then keep only points that add quality.
    hull: list[int] = []
    for j in cand:
        pt = (cost[j], quality[j])
        while (
            len(hull) >= 2
            and _cross((cost[hull[-2]], quality[hull[-2]]), (cost[hull[-1]], quality[hull[-1]]), pt)
            >= 0
        ):
            hull.pop()
        hull.append(j)
    hull = [j for i, j in enumerate(hull) if i == 0 or quality[j] > quality[hull[i - 1]]]
    if hull[-1] != frontier:
        hull.append(frontier)
    while len(hull) > max_tiers:
        # Drop the interior point whose removal loses the least hull area.
        def loss(i: int) -> float:
            a, b, c = hull[i - 1], hull[i], hull[i + 1]
            return abs(_cross((cost[a], quality[a]), (cost[b], quality[b]), (cost[c], quality[c])))

        hull.pop(min(range(1, len(hull) - 1), key=loss))
    return hull


# -- embeddings ------------------------------------------------------------------


def embed_cached(
    texts: list[str], embedder: Embedder, cache_file: Path | None
) -> npt.NDArray[np.float32]:
    keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
    known: dict[str, npt.NDArray[np.float32]] = {}
    if cache_file is not None and cache_file.exists():
        with np.load(cache_file, allow_pickle=False) as z:
            known = dict(zip(z["keys"].tolist(), z["vecs"], strict=True))
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if missing:
        t0 = time.perf_counter()
        vecs = embedder.embed([t for _, t in missing])
        dt = time.perf_counter() - t0
        print(f"  embedded {len(missing)} texts in {dt:.0f} s ({len(missing) / dt:.0f}/s)")
        known.update({k: v for (k, _), v in zip(missing, vecs, strict=True)})
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            ks = sorted(known)
            np.savez(cache_file, keys=np.array(ks), vecs=np.stack([known[k] for k in ks]))
    else:
        print(f"  embeddings: all {len(texts)} from {cache_file}")
    out: npt.NDArray[np.float32] = np.stack([known[k] for k in keys]).astype(np.float32)
    return out


# -- evaluation --------------------------------------------------------------------


@dataclass
class Point:
    cost: float  # total USD on the split
    quality: float  # mean score
    shares: tuple[float, ...]  # per tier
    thresholds: tuple[float, ...] = ()


def route_points(
    probs: FArr,
    settings: Sequence[Sequence[float]],
    labels: FArr,
    costs: FArr,
    scale: FArr,
    margin: float = 0.0,
) -> list[Point]:
    rows = np.arange(len(probs))
    out = []
    for th in settings:
        chosen, _ = choose_tiers(probs, th, margin=margin, cost_scale=scale)
        shares = np.bincount(chosen, minlength=probs.shape[1]) / len(chosen)
        out.append(
            Point(
                cost=float(costs[rows, chosen].sum()),
                quality=float(labels[rows, chosen].mean()),
                shares=tuple(float(s) for s in shares),
                thresholds=tuple(th),
            )
        )
    return out


def anchors(n_tiers: int) -> list[tuple[float, ...]]:
    """Threshold settings that send everything to one tier."""
    out = []
    for t in range(n_tiers):
        th = [math.inf] * t + [-math.inf] * (n_tiers - 1 - t)
        out.append(tuple(th))
    return out


def upper_envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Concave upper envelope (cheapest first) of (cost, quality) points."""
    pts = sorted(points, key=lambda p: (p[0], -p[1]))
    hull: list[tuple[float, float]] = []
    for p in pts:
        if hull and p[1] <= hull[-1][1]:
            continue
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    return hull


def envelope_points(env: list[tuple[float, float]], steps: int = 50) -> list[Point]:
    out = []
    for (c0, q0), (c1, q1) in itertools.pairwise(env):
        for a in np.linspace(0, 1, steps, endpoint=False):
            out.append(Point(c0 + a * (c1 - c0), q0 + a * (q1 - q0), ()))
    out.append(Point(env[-1][0], env[-1][1], ()))
    return out


def _area_under_pgr(points: Sequence[tuple[float, float]]) -> float:
    """Trapezoid area under (share or cost in 0..1, PGR) points, with (0, 0) and (1, 1)."""
    xs, ys = zip(*sorted([(0.0, 0.0), (1.0, 1.0), *points]), strict=True)
    return float(np.trapezoid(ys, xs))


def curve_metrics(
    points: list[Point],
    *,
    frontier_q: float,
    frontier_c: float,
    weak_q: float,
    weak_c: float,
    two_model: bool,
    singles: list[tuple[float, float]],
) -> dict[str, Any]:
    at95 = [p for p in points if p.quality >= TARGET * frontier_q - 1e-12]
    atf = [p for p in points if p.quality >= frontier_q - 1e-12]
    out: dict[str, Any] = {
        "cost_reduction_at_95pct": (1 - min(p.cost for p in at95) / frontier_c) if at95 else None,
        "cost_fraction_at_frontier_quality": (min(p.cost for p in atf) / frontier_c)
        if atf
        else None,
        "max_quality": max(p.quality for p in points),
    }
    best95 = min(at95, key=lambda p: p.cost) if at95 else None
    out["tier_shares_at_95pct"] = list(best95.shares) if best95 and best95.shares else None
    if two_model and frontier_q != weak_q:
        gap = frontier_q - weak_q
        # Endpoints: always-weak and always-strong; PGR clipped as RouteLLM does not (kept raw).
        out["apgr"] = _area_under_pgr(
            [(p.shares[-1], (p.quality - weak_q) / gap) for p in points if p.shares]
        )
        span = frontier_c - weak_c
        out["apgr_cost"] = _area_under_pgr(
            [
                (min(1.0, max(0.0, (p.cost - weak_c) / span)), (p.quality - weak_q) / gap)
                for p in points
            ]
        )
    else:
        out["apgr"] = out["apgr_cost"] = None
    # Never below the best single model that costs no more.
    shortfalls = []
    for p in points:
        best = max((q for c, q in singles if c <= p.cost + 1e-12), default=None)
        if best is not None:
            shortfalls.append(best - p.quality)
    worst = max(shortfalls) if shortfalls else 0.0
    out["points_below_best_single"] = int(sum(s > 1e-12 for s in shortfalls))
    out["max_shortfall_vs_best_single"] = max(0.0, worst)
    return out


def calibrated_on_test(
    report: CalibrationReport, probs: FArr, labels: FArr, costs: FArr, scale: FArr
) -> dict[str, Any]:
    (pt,) = route_points(probs, [report.thresholds], labels, costs, scale, report.margin)
    fq, fc = float(labels[:, -1].mean()), float(costs[:, -1].sum())
    return {
        "thresholds": [t if math.isfinite(t) else str(t) for t in report.thresholds],
        "train_expected_quality_fraction": report.expected_quality / report.frontier_quality,
        "train_expected_cost_reduction": report.expected_cost_reduction,
        "test_quality": pt.quality,
        "test_quality_fraction": pt.quality / fq if fq else None,
        "test_cost_reduction": 1 - pt.cost / fc,
        "test_tier_shares": list(pt.shares),
        "met_target_on_test": pt.quality >= TARGET * fq - 1e-12,
    }


def measure_latency(
    clf: LearnedClassifier,
    report: CalibrationReport,
    prompts: list[str],
    vecs: npt.NDArray[np.float32],
    embedder: Embedder,
    n: int = 300,
) -> dict[str, float]:
    """Per request: features + classifier + decision, given the embedding; and the embedding."""
    idx = list(range(min(n, len(prompts))))
    times, cpu = [], []
    for i in idx:
        t0, c0 = time.perf_counter(), time.thread_time()
        feats = (extract_features(prompts[i]),)
        probs = clf.predict_encoded(Encoded(features=feats, embeddings=vecs[i : i + 1]))
        choose_tier(
            probs[0],
            report.thresholds,
            margin=report.margin,
            cost_scale=report.cost_scale(feats[0].tokens),
            tier_names=report.tier_names,
        )
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    emb = []
    for i in idx[:30]:
        t0 = time.perf_counter()
        embedder.embed([routing_text(prompts[i])])
        emb.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    cpu.sort()
    return {
        "load_average_1min": os.getloadavg()[0],
        "cpus": os.cpu_count() or 0,
        "decision_ms_median": statistics.median(times),
        "decision_ms_p95": times[int(0.95 * (len(times) - 1))],
        # CPU time of the calling thread: the work itself, without the waits for
        # a core that a loaded machine adds to the wall time.
        "decision_cpu_ms_median": statistics.median(cpu),
        "decision_cpu_ms_p95": cpu[int(0.95 * (len(cpu) - 1))],
        "embedding_ms_median": statistics.median(emb),
        "requests": len(times),
        "stored_neighbours": len(clf._bank) if clf._bank is not None else 0,
    }


# -- one data set ----------------------------------------------------------------------


def _cascade(split: Split, group: Sequence[int], frontier: int) -> tuple[float, float]:
    """(quality, cost) of: ask every model of ``group``; same answer -> keep it, else frontier."""
    assert split.answers is not None
    g = list(group)
    agree = np.array(
        [row[g[0]] is not None and all(row[j] == row[g[0]] for j in g) for row in split.answers]
    )
    quality = np.where(agree, split.scores[:, g[0]], split.scores[:, frontier]).mean()
    cost = split.costs[:, g].sum() + split.costs[~agree, frontier].sum()
    return float(quality), float(cost)


def agreement_cascade(ds: DataSet, frontier: int, max_group: int = 3) -> dict[str, Any] | None:
    """A post-call check no prompt-only router has: the cheaper models' recorded answers.

    Every group of 2..``max_group`` non-frontier models that costs less than the
    frontier model (on train) is asked; when they all
    give the same choice it is kept, otherwise the frontier model answers
    (FrugalGPT-style agreement escalation). The group is chosen on train (the
    cheapest one matching the frontier's train quality, else the best one) and
    scored on test; ``best_on_test`` is the cheapest group that matches the
    frontier's test quality when chosen on test itself, an optimistic bound.
    """
    tr, te = ds.train, ds.test
    if tr.answers is None or te.answers is None:
        return None
    others = [j for j in range(len(ds.models)) if j != frontier]
    f_c_tr = tr.costs[:, frontier].sum()
    # Only groups that cost less than the frontier model alone can save anything.
    groups = [
        g
        for n in range(2, max_group + 1)
        for g in itertools.combinations(others, n)
        if tr.costs[:, list(g)].sum() < f_c_tr
    ]
    if not groups:
        return None
    f_q_tr, f_q_te = tr.scores[:, frontier].mean(), te.scores[:, frontier].mean()
    f_c_te = float(te.costs[:, frontier].sum())
    on_train = {g: _cascade(tr, g, frontier) for g in groups}
    reaching = [g for g in groups if on_train[g][0] >= f_q_tr - 1e-12]
    if reaching:
        chosen = min(reaching, key=lambda g: on_train[g][1])
    else:
        chosen = max(groups, key=lambda g: (on_train[g][0], -on_train[g][1]))
    on_test = {g: _cascade(te, g, frontier) for g in groups}
    matching = [g for g in groups if on_test[g][0] >= f_q_te - 1e-12]
    bound = min(matching, key=lambda g: on_test[g][1]) if matching else None

    def row(g: tuple[int, ...], qc: tuple[float, float]) -> dict[str, Any]:
        return {
            "models": [ds.models[j] for j in g],
            "quality": qc[0],
            "cost": qc[1],
            "cost_fraction": qc[1] / f_c_te,
            "quality_fraction": qc[0] / f_q_te,
        }

    return {
        "chosen_on_train": row(chosen, on_test[chosen])
        | {"reaches_frontier_on_train": bool(reaching)},
        "best_on_test": None if bound is None else row(bound, on_test[bound]),
        "groups_tried": len(groups),
    }


def _call_share_apgr(score: FArr, weak: FArr, strong: FArr, seed: int) -> float:
    """APGR of sending the highest-``score`` prompts to the strong model (ties in random order)."""
    order = np.lexsort((np.random.default_rng(seed).random(len(score)), -score))
    gap = strong.mean() - weak.mean()
    points = []
    for share in np.linspace(0.0, 1.0, 101):
        send = np.zeros(len(score), dtype=bool)
        send[order[: round(share * len(score))]] = True
        points.append((float(share), (np.where(send, strong, weak).mean() - weak.mean()) / gap))
    return _area_under_pgr(points)


def subject_router(ds: DataSet, seed: int, weak_j: int, strong_j: int) -> dict[str, Any] | None:
    """APGR of a router that is told each prompt's subject (its source file).

    It sends prompts to the strong model in the order of their subject's mean
    gain (strong minus weak score) on train; weak and strong are the cheap and
    the frontier tier (model indices ``weak_j``, ``strong_j``), whatever the
    column order. ``test_oracle`` takes that gain
    from the test prompts themselves: the most any per-subject rule can reach.
    Only for two-model sets read from several files (RouteLLM's MMLU: one per
    subject).
    """
    tr, te = ds.train, ds.test
    if len(ds.models) != 2 or weak_j == strong_j or tr.sources is None or te.sources is None:
        return None
    if len(np.unique(tr.sources)) < 2:
        return None
    weak, strong = te.scores[:, weak_j], te.scores[:, strong_j]
    if strong.mean() == weak.mean():
        return None

    def gain(split: Split, subject: int) -> float:
        rows = split.scores[split.sources == subject]
        return float((rows[:, strong_j] - rows[:, weak_j]).mean()) if len(rows) else 0.0

    subjects = np.unique(te.sources)
    from_train = {int(s): gain(tr, int(s)) for s in subjects}
    from_test = {int(s): gain(te, int(s)) for s in subjects}
    return {
        "apgr": _call_share_apgr(
            np.array([from_train[int(s)] for s in te.sources]), weak, strong, seed
        ),
        "apgr_test_oracle": _call_share_apgr(
            np.array([from_test[int(s)] for s in te.sources]), weak, strong, seed
        ),
        "subjects": len(subjects),
    }


def run_dataset(
    ds: DataSet,
    embedder: Embedder,
    cache_dir: Path | None,
    max_tiers: int,
    seed: int,
    png_dir: Path | None = None,
) -> dict[str, Any]:
    print(f"\n== {ds.key}: {len(ds.train.prompts)} train, {len(ds.test.prompts)} test prompts")
    tr, te = ds.train, ds.test
    q_tr, c_tr = tr.scores.mean(axis=0), tr.costs.mean(axis=0)
    tiers = select_tiers(q_tr, c_tr, max_tiers)
    names = [ds.models[j] for j in tiers]
    print(f"  tiers (from train): {' -> '.join(names)}")
    Ltr, Ctr = tr.scores[:, tiers], tr.costs[:, tiers]
    Lte, Cte = te.scores[:, tiers], te.costs[:, tiers]

    texts_tr = [routing_text(p) for p in tr.prompts]
    texts_te = [routing_text(p) for p in te.prompts]
    cache = cache_dir / f"{ds.key}.npz" if cache_dir else None
    vecs = embed_cached(texts_tr + texts_te, embedder, cache)
    Etr, Ete = vecs[: len(texts_tr)], vecs[len(texts_tr) :]
    t0 = time.perf_counter()
    enc_tr = Encoded(tuple(extract_features(p) for p in tr.prompts), Etr)
    enc_te = Encoded(tuple(extract_features(p) for p in te.prompts), Ete)
    print(f"  features: {time.perf_counter() - t0:.1f} s")
    _, ref = cost_scales(enc_tr.tokens)
    scale_te, _ = cost_scales(enc_te.tokens, reference_tokens=ref)

    n_t = len(tiers)
    f_q, f_c = float(Lte[:, -1].mean()), float(Cte[:, -1].sum())
    w_q, w_c = float(Lte[:, 0].mean()), float(Cte[:, 0].sum())
    two_model = len(ds.models) == 2
    singles = [
        (float(te.costs[:, j].sum()), float(te.scores[:, j].mean())) for j in range(len(ds.models))
    ]
    common: dict[str, Any] = dict(
        frontier_q=f_q, frontier_c=f_c, weak_q=w_q, weak_c=w_c, two_model=two_model, singles=singles
    )

    routers: dict[str, Any] = {}
    curves: dict[str, list[Point]] = {}

    # Learned: out-of-fold scores on train -> thresholds; fit on all train -> test.
    t0 = time.perf_counter()
    learned = LearnedClassifier(None, seed=seed)
    oof = cross_validated_probs(learned, enc_tr, Ltr, folds=5, seed=seed)
    learned.fit_encoded(enc_tr, Ltr)
    P_te = learned.predict_encoded(enc_te)
    fit_s = time.perf_counter() - t0
    heur = HeuristicClassifier(n_t)
    H_tr, H_te = heur.predict_encoded(enc_tr), heur.predict_encoded(enc_te)

    reports: dict[str, CalibrationReport] = {}
    for name, p_tr, p_te, aware in (
        ("learned", oof, P_te, True),
        ("learned_uniform", oof, P_te, False),
        ("heuristic", H_tr, H_te, True),
    ):
        kw: dict[str, Any] = dict(
            tokens=enc_tr.tokens, tier_names=names, target_quality=TARGET, cost_aware=aware,
            folds=5 if name != "heuristic" else 0, classifier=name,
        )  # fmt: skip
        rep = calibrate_from_predictions(p_tr, Ltr, Ctr, **kw)
        safe = calibrate_from_predictions(p_tr, Ltr, Ctr, safety_z=SAFETY_Z, **kw)
        reports[name] = rep
        sc = scale_te if aware else np.ones(len(Lte))
        # The train Pareto settings, plus each tier alone (a setting of every router).
        settings = [cp.thresholds for cp in rep.curve] + anchors(n_t)
        pts = sorted(route_points(p_te, settings, Lte, Cte, sc), key=lambda p: p.cost)
        curves[name] = pts
        routers[name] = curve_metrics(pts, **common) | {
            "calibrated": calibrated_on_test(rep, p_te, Lte, Cte, sc),
            "calibrated_conservative": calibrated_on_test(safe, p_te, Lte, Cte, sc),
        }

    # Random router: random mixing of tiers -> the upper envelope of the tier points.
    tier_pts = [(float(Cte[:, t].sum()), float(Lte[:, t].mean())) for t in range(n_t)]
    env = upper_envelope(tier_pts)
    rnd = envelope_points(env)
    if two_model:
        # For APGR the random router's share of strong calls equals its cost share.
        for p in rnd:
            a = (p.cost - w_c) / (f_c - w_c) if f_c != w_c else 1.0
            p.shares = (1 - a, a)
    curves["random"] = rnd
    routers["random"] = curve_metrics(rnd, **common)

    rows = np.arange(len(Lte))
    best = Lte.max(axis=1, keepdims=True)
    oracle_tier = np.argmax(Lte >= best - 1e-12, axis=1)  # cheapest tier with the best answer
    order = np.argsort(te.costs, axis=1)
    S_sorted = np.take_along_axis(te.scores, order, axis=1)
    best_all = S_sorted.max(axis=1, keepdims=True)
    oracle_all = order[rows, np.argmax(S_sorted >= best_all - 1e-12, axis=1)]
    fixed = {
        "always_frontier": (f_c, f_q),
        "always_cheapest": (w_c, w_q),
        "oracle_tiers": (float(Cte[rows, oracle_tier].sum()), float(Lte[rows, oracle_tier].mean())),
        "oracle_all_models": (
            float(te.costs[rows, oracle_all].sum()),
            float(te.scores[rows, oracle_all].mean()),
        ),
    }
    for name, (c, q) in fixed.items():
        routers[name] = {
            "cost": c,
            "quality": q,
            "cost_fraction": c / f_c,
            "quality_fraction": q / f_q,
        }

    subjects = subject_router(ds, seed, tiers[0], tiers[-1])
    if subjects is not None:
        routers["subject_router"] = subjects
    cascade = agreement_cascade(ds, ds.models.index(names[-1]))
    if cascade is not None:
        routers["answer_agreement_cascade"] = cascade
    lat = measure_latency(learned, reports["learned"], te.prompts, Ete, embedder)
    lm = routers["learned"]
    result: dict[str, Any] = {
        "kind": ds.kind,
        "n_train": len(tr.prompts),
        "n_test": len(te.prompts),
        "models": ds.models,
        "tiers": names,
        "frontier_model": names[-1],
        "frontier_quality": f_q,
        "frontier_cost": f_c,
        "cost_fraction_at_frontier_quality": lm["cost_fraction_at_frontier_quality"],
        "cost_reduction_at_95pct": lm["cost_reduction_at_95pct"],
        # Each APGR on the router that optimises its axis: RouteLLM's routers
        # treat every call as costing the same, as learned_uniform does; the
        # default learned router spends by cost (its call-share APGR is in
        # routers.learned).
        "apgr": routers["learned_uniform"]["apgr"],
        "apgr_router": "learned_uniform",
        "apgr_cost": lm["apgr_cost"],
        "apgr_cost_router": "learned",
        "curve": [
            {
                "cost": p.cost,
                "cost_fraction": p.cost / f_c,
                "quality": p.quality,
                "quality_fraction": p.quality / f_q,
                "tier_shares": list(p.shares),
                "thresholds": [t if math.isfinite(t) else str(t) for t in p.thresholds],
            }
            for p in curves["learned"]
        ],
        "routers": routers,
        "single_models": {
            m: {"cost": c, "quality": q, "cost_fraction": c / f_c}
            for m, (c, q) in zip(ds.models, singles, strict=True)
        },
        "train_calibration": {k: r.to_dict() | {"curve": None} for k, r in reports.items()},
        "decision_latency": lat,
        "fit_seconds": fit_s,
        "notes": ds.notes,
    }
    print_dataset(ds.key, result)
    if png_dir is not None:
        plot(ds.key, curves, singles, ds.models, f_c, png_dir)
    return result


# -- output ------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _f(x: float | None, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _cal(cal: dict[str, Any] | None) -> str:
    if cal is None:
        return "-"
    return f"{cal['test_quality_fraction']:.1%} q, save {cal['test_cost_reduction']:.1%}"


def print_dataset(key: str, r: dict[str, Any]) -> None:
    f_c = r["frontier_cost"]
    rows = []
    for m, v in sorted(r["single_models"].items(), key=lambda kv: kv[1]["cost"]):
        tag = " [tier]" if m in r["tiers"] else ""
        rows.append([m + tag, _f(v["quality"]), f"{v['cost']:.4f}", _pct(v["cost"] / f_c)])
    for name in ("always_cheapest", "always_frontier", "oracle_tiers", "oracle_all_models"):
        v = r["routers"][name]
        rows.append([name, _f(v["quality"]), f"{v['cost']:.4f}", _pct(v["cost_fraction"])])
    print_table(
        f"{key}: single models and fixed routers (test)",
        ["router", "quality", "cost $", "cost/frontier"],
        rows,
    )
    rows = []
    for name in ("random", "heuristic", "learned_uniform", "learned"):
        v = r["routers"][name]
        cal = v.get("calibrated")
        rows.append(
            [
                name,
                _pct(v["cost_reduction_at_95pct"]),
                _pct(v["cost_fraction_at_frontier_quality"]),
                _f(v["apgr"]),
                _f(v["apgr_cost"]),
                _f(v["max_quality"]),
                str(v["points_below_best_single"]),
                _cal(cal),
                _cal(v.get("calibrated_conservative")),
            ]
        )
    print_table(
        f"{key}: routers on test (frontier quality {r['frontier_quality']:.3f}, cost ${f_c:.4f})",
        [
            "router",
            "save@95%",
            "cost@frontier-q",
            "APGR",
            "APGR(cost)",
            "max q",
            "pts<single",
            "calibrated@95%",
            "conservative@95%",
        ],
        rows,
    )
    pts = r["curve"]
    if pts:
        pick = np.unique(np.round(np.linspace(0, len(pts) - 1, min(12, len(pts)))).astype(int))
        print_table(
            f"{key}: learned router curve (test; thresholds from train)",
            ["cost/frontier", "quality", "quality/frontier", "tier shares"],
            [
                [
                    _pct(pts[i]["cost_fraction"]),
                    _f(pts[i]["quality"]),
                    _pct(pts[i]["quality_fraction"]),
                    " ".join(f"{s:.0%}" for s in pts[i]["tier_shares"]),
                ]
                for i in pick
            ],
        )
    for name in ("learned", "heuristic"):
        v = r["routers"][name]
        shares = v["tier_shares_at_95pct"]
        cal = v["calibrated"]["test_tier_shares"]
        print(
            f"  {name} tier shares ({' / '.join(r['tiers'])}): at the 95% curve point "
            + ("-" if shares is None else " ".join(f"{x:.0%}" for x in shares))
            + "; calibrated setting "
            + " ".join(f"{x:.0%}" for x in cal)
        )
    subjects = r["routers"].get("subject_router")
    if subjects is not None:
        print(
            f"  a router told each prompt's subject ({subjects['subjects']} subjects): APGR "
            f"{subjects['apgr']:.3f} with the gains of train, "
            f"{subjects['apgr_test_oracle']:.3f} with those of test itself"
        )
    cascade = r["routers"].get("answer_agreement_cascade")
    if cascade is not None:
        chosen = cascade["chosen_on_train"]
        train_note = "" if chosen["reaches_frontier_on_train"] else ", none reaches it on train"
        for label, v in (
            (f"chosen on train{train_note}", chosen),
            ("best group chosen on test", cascade["best_on_test"]),
        ):
            print(
                f"  answer-agreement cascade ({label}): "
                + (
                    "never reaches the frontier's quality"
                    if v is None
                    else f"quality {v['quality']:.3f} at {v['cost_fraction']:.0%} of the "
                    f"frontier's cost ({' + '.join(m.split('/')[-1] for m in v['models'])})"
                )
            )
    lat = r["decision_latency"]
    print(
        f"  decision latency beyond the embedding: median {lat['decision_ms_median']:.3f} ms, "
        f"p95 {lat['decision_ms_p95']:.3f} ms wall; CPU median "
        f"{lat['decision_cpu_ms_median']:.3f} ms, p95 {lat['decision_cpu_ms_p95']:.3f} ms "
        f"({lat['stored_neighbours']} stored prompts); "
        f"the embedding itself: median {lat['embedding_ms_median']:.1f} ms "
        f"(load average {lat['load_average_1min']:.1f} on {lat['cpus']} CPUs)"
    )


def plot(
    key: str, curves: dict[str, list[Point]], singles: list[tuple[float, float]],
    models: list[str], f_c: float, out_dir: Path,
) -> None:  # fmt: skip
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  matplotlib is not installed: no cost-quality PNG (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, pts in curves.items():
        xs = [p.cost / f_c for p in sorted(pts, key=lambda p: p.cost)]
        ys = [p.quality for p in sorted(pts, key=lambda p: p.cost)]
        ax.plot(xs, ys, label=name, marker="." if name != "random" else None)
    for (c, q), m in zip(singles, models, strict=True):
        ax.scatter([c / f_c], [q], color="black", s=12)
        ax.annotate(m.split("/")[-1], (c / f_c, q), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("cost / always-frontier cost (log)")
    ax.set_ylabel("quality (mean score)")
    ax.set_title(f"{key}: cost-quality on test")
    ax.legend()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"routing_{key}.png"
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"  wrote {out}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data", action="append", default=[], help="CSV file or directory (repeatable)"
    )
    ap.add_argument(
        "--out", default=None, help="write the JSON results here (and a PNG per data set by it)"
    )
    ap.add_argument("--max-tiers", type=int, default=4)
    ap.add_argument("--mc-output-tokens", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--prices",
        default=None,
        help="JSON prices for RouteLLM models the catalog lacks: {model: {usd_per_mtok_input, "
        "usd_per_mtok_output}} (or the prices.json layout); they override the catalog",
    )
    ap.add_argument(
        "--cache-dir",
        default=os.environ.get(
            "COSTOPT_BENCH_CACHE", str(Path.home() / ".cache" / "costopt" / "routing-bench")
        ),
        help="embedding cache ('' disables)",
    )
    args = ap.parse_args(argv)
    catalog = PriceCatalog.default()
    if args.prices:
        extra = json.loads(Path(args.prices).read_text("utf-8"))
        catalog = catalog.with_overrides(extra.get("models", extra))
    datasets = discover(args.data, catalog, args.mc_output_tokens, args.seed)
    embedder = SentenceTransformerEmbedder()
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    png_dir = Path(args.out).resolve().parent if args.out else None
    results = {
        ds.key: run_dataset(ds, embedder, cache_dir, args.max_tiers, args.seed, png_dir)
        for ds in datasets
    }
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
