"""Pick the semantic-cache threshold from labelled prompt pairs.

The right similarity threshold depends on the embedder, the guards and the
traffic, so it is measured rather than guessed: given pairs ``(prompt_a,
prompt_b, label)`` (label 1 = the same question, so serving ``a``'s answer to
``b`` is right), :func:`calibrate_threshold` returns the lowest threshold
whose pairwise precision, with the guards applied, reaches a target. Lowest
because, among the thresholds that are precise enough, it serves the most
hits.

The embedding step is the only I/O; :func:`calibrate_from_scores` is the pure
part, on precomputed similarities, and is what the benchmark reuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np
import numpy.typing as npt

from costopt_core.cache.defaults import DEFAULT_PAIR_GATE, DEFAULT_PAIR_SKIP
from costopt_core.cache.guards import GuardConfig, check_guards
from costopt_core.cache.pair_model import PairScorer, default_pair_model, pair_scores
from costopt_core.errors import ConfigurationError

__all__ = [
    "CalibrationResult",
    "CurvePoint",
    "SupportsEmbed",
    "calibrate_from_scores",
    "calibrate_pair_threshold",
    "calibrate_threshold",
    "guard_verdicts",
    "pair_similarities",
    "read_whole",
    "wilson_lower_bound",
]

#: Thresholds reported in the curve unless the caller passes its own grid.
DEFAULT_GRID: tuple[float, ...] = tuple(round(0.5 + 0.01 * i, 2) for i in range(51))
#: Pair-check probabilities reported in the curve.
PAIR_GRID: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


class SupportsEmbed(Protocol):
    """The one method calibration needs from an ``Embedder``."""

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """L2-normalised float32 vectors, one row per text."""
        ...


@dataclass(frozen=True)
class CurvePoint:
    """Pairwise quality of the decision at one threshold.

    Attributes:
        threshold: lowest similarity accepted.
        precision: accepted label-1 pairs / accepted pairs (1.0 when none
            is accepted: a cache that serves nothing serves nothing wrong).
        recall: accepted label-1 pairs / label-1 pairs.
        accepted: pairs the decision would serve.
        false_hits: accepted label-0 pairs.
        false_hit_rate: false hits / label-0 pairs.
    """

    threshold: float
    precision: float
    recall: float
    accepted: int
    false_hits: int
    false_hit_rate: float


@dataclass(frozen=True)
class CalibrationResult:
    """The chosen threshold and the curve it was chosen from.

    Attributes:
        threshold: the lowest threshold whose precision reaches the target;
            ``1.0`` when none does (``reached`` is then ``False``).
        precision: pairwise precision at ``threshold`` (the point estimate).
        recall: pairwise recall at ``threshold``.
        n_pairs: labelled pairs used.
        target_precision: the precision asked for.
        reached: whether any threshold met the target.
        curve: precision/recall at each grid threshold, ascending.
        confidence: when set, the target was checked against the Wilson
            lower bound of precision at this one-sided confidence level.
        precision_lower_bound: that lower bound at ``threshold`` (``None``
            without ``confidence``).
    """

    threshold: float
    precision: float
    recall: float
    n_pairs: int
    target_precision: float
    reached: bool
    curve: tuple[CurvePoint, ...]
    confidence: float | None = None
    precision_lower_bound: float | None = None


def wilson_lower_bound(
    successes: npt.ArrayLike, trials: npt.ArrayLike, z: float
) -> npt.NDArray[np.float64]:
    """One-sided Wilson score lower bound of a binomial proportion (vectorised).

    Args:
        successes: counts of successes.
        trials: counts of trials (0 gives a bound of 0).
        z: the normal quantile of the confidence level (1.645 for 95%).

    Returns:
        The lower bounds, as float64.
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.maximum(np.asarray(trials, dtype=np.float64), 1e-12)
    p = k / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lb: npt.NDArray[np.float64] = np.clip((centre - margin) / (1 + z2 / n), 0.0, 1.0)
    return lb


def pair_similarities(
    pairs: Sequence[tuple[str, str]], embedder: SupportsEmbed
) -> npt.NDArray[np.float32]:
    """Cosine similarity of each pair, embedding every distinct text once.

    Args:
        pairs: ``(text_a, text_b)`` tuples.
        embedder: returns unit-length vectors, so a dot product is the cosine.

    Returns:
        One float32 similarity per pair.
    """
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    index: dict[str, int] = {}
    for a, b in pairs:
        index.setdefault(a, len(index))
        index.setdefault(b, len(index))
    vecs = np.asarray(embedder.embed(list(index)), dtype=np.float32)
    ia = np.fromiter((index[a] for a, _ in pairs), dtype=np.int64, count=len(pairs))
    ib = np.fromiter((index[b] for _, b in pairs), dtype=np.int64, count=len(pairs))
    sims: npt.NDArray[np.float32] = np.einsum("ij,ij->i", vecs[ia], vecs[ib]).astype(np.float32)
    return sims


def guard_verdicts(pairs: Iterable[tuple[str, str]], config: GuardConfig) -> list[str | None]:
    """The guards' reason (or ``None`` = pass) for each pair, cache holding ``a``, query ``b``.

    Args:
        pairs: ``(text_a, text_b)`` tuples; ``text_a`` is the stored prompt.
        config: the guards to apply.

    Returns:
        One verdict per pair.
    """
    return [check_guards(b, a, config) for a, b in pairs]


#: The lowest threshold calibration returns: CacheConfig takes thresholds > 0.
_LOWEST_THRESHOLD = 0.01


def _point(
    t: float,
    sims: npt.NDArray[np.float32],
    pos: npt.NDArray[np.bool_],
    ok: npt.NDArray[np.bool_],
    n_pos: int,
    n_neg: int,
) -> CurvePoint:
    acc = ok & (sims >= np.float32(t))
    tp = int(np.count_nonzero(acc & pos))
    n = int(np.count_nonzero(acc))
    fp = n - tp
    return CurvePoint(
        threshold=float(t),
        precision=tp / n if n else 1.0,
        recall=tp / n_pos if n_pos else 0.0,
        accepted=n,
        false_hits=fp,
        false_hit_rate=fp / n_neg if n_neg else 0.0,
    )


def read_whole(
    pairs: Sequence[tuple[str, str]], embedder: object, scorer: PairScorer | None = None
) -> npt.NDArray[np.bool_]:
    """Per pair, whether the cache could serve it semantically at all: both
    prompts read whole by the embedder (``KnowsWindow.fits``) and, with the
    pair check, the pair read whole by the pair model (``PairModel.fits``;
    a near-identical pair skips the model only then). The cache matches
    anything else exactly only, so calibration must not count it as served.
    """
    fits = getattr(embedder, "fits", None)
    pair_fits = getattr(scorer, "fits", None) if scorer is not None else None
    known: dict[str, bool] = {}

    def text_fits(text: str) -> bool:
        if text not in known:
            known[text] = True if fits is None else bool(fits(text))
        return known[text]

    return np.array(
        [
            text_fits(a) and text_fits(b) and (pair_fits is None or bool(pair_fits(a, b)))
            for a, b in pairs
        ],
        dtype=bool,
    )


def calibrate_from_scores(
    similarities: npt.ArrayLike,
    labels: npt.ArrayLike,
    guard_pass: npt.ArrayLike | None = None,
    *,
    target_precision: float = 0.9,
    confidence: float | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
) -> CalibrationResult:
    """The pure core of :func:`calibrate_threshold`, on precomputed scores.

    Every distinct similarity of a guard-passing pair is a candidate
    threshold; the pairs are swept from the most similar down, so precision
    at every candidate costs one cumulative sum.

    Args:
        similarities: one cosine similarity per pair.
        labels: one 0/1 label per pair.
        guard_pass: ``True`` where the guards accept the pair (all ``True``
            when omitted: the raw-similarity baseline).
        target_precision: the pairwise precision to reach, in (0, 1].
        confidence: ``None`` compares the measured precision with the
            target; a level such as ``0.95`` compares its one-sided Wilson
            lower bound instead, so a threshold chosen on a few hundred
            pairs still holds on pairs it was not chosen on.
        grid: thresholds to report in the curve.

    Returns:
        The lowest threshold with precision >= target, and the curve.

    Raises:
        ConfigurationError: empty input, mismatched lengths, labels other
            than 0/1, a target outside (0, 1] or a confidence outside (0.5, 1).
    """
    if not 0.0 < target_precision <= 1.0:
        raise ConfigurationError(f"target_precision must be in (0, 1], got {target_precision}")
    if confidence is not None and not 0.5 < confidence < 1.0:
        raise ConfigurationError(f"confidence must be in (0.5, 1), got {confidence}")
    sims = np.asarray(similarities, dtype=np.float32).ravel()
    y = np.asarray(labels).ravel()
    ok = np.ones(sims.shape, dtype=bool) if guard_pass is None else np.asarray(guard_pass, bool)
    if sims.size == 0:
        raise ConfigurationError("calibration needs at least one labelled pair")
    if y.shape != sims.shape or ok.shape != sims.shape:
        raise ConfigurationError(
            f"similarities ({sims.size}), labels ({y.size}) and guard verdicts "
            f"({ok.size}) must have one entry per pair"
        )
    if not np.isin(y, (0, 1)).all():
        raise ConfigurationError("labels must be 0 or 1")
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())

    # Sweep the accepted pairs from the most similar down. A threshold equal
    # to a pair's similarity accepts every pair at least that similar, so
    # precision can only be read at the last pair of each run of ties.
    order = np.argsort(-sims[ok], kind="stable")
    s_sorted = sims[ok][order]
    tp = np.cumsum(pos[ok][order])
    n = np.arange(1, s_sorted.size + 1)
    last_of_tie = np.append(s_sorted[1:] != s_sorted[:-1], True)[: s_sorted.size]
    prec = tp / np.maximum(n, 1)
    if confidence is None:
        score = prec
    else:
        score = wilson_lower_bound(tp, n, NormalDist().inv_cdf(confidence))
    # A tiny tolerance so a precision of exactly 0.9 (9 of 10) meets 0.9.
    good = np.flatnonzero(last_of_tie & (score >= target_precision - 1e-12))

    curve = tuple(_point(t, sims, pos, ok, n_pos, n_neg) for t in sorted(grid))
    if good.size == 0:
        at = _point(1.0, sims, pos, ok, n_pos, n_neg)
        return CalibrationResult(
            threshold=1.0,
            precision=at.precision,
            recall=at.recall,
            n_pairs=int(sims.size),
            target_precision=target_precision,
            reached=False,
            curve=curve,
            confidence=confidence,
        )
    i = int(good[-1])  # the lowest qualifying threshold
    # float32 rounding puts a text's similarity to itself a hair above 1.0; a
    # threshold above 1 would serve nothing, and CacheConfig refuses it.
    threshold = min(1.0, float(s_sorted[i]))
    precision, recall = float(prec[i]), float(tp[i]) / n_pos if n_pos else 0.0
    if threshold < _LOWEST_THRESHOLD:
        # CacheConfig takes thresholds > 0 only: a pair at or below 0 (every
        # labelled pair a duplicate, however unlike) is left out instead.
        threshold = _LOWEST_THRESHOLD
        at = _point(threshold, sims, pos, ok, n_pos, n_neg)
        precision, recall = at.precision, at.recall
    return CalibrationResult(
        threshold=threshold,
        precision=precision,
        recall=recall,
        n_pairs=int(sims.size),
        target_precision=target_precision,
        reached=True,
        curve=curve,
        confidence=confidence,
        precision_lower_bound=None if confidence is None else float(score[i]),
    )


def calibrate_threshold(
    pairs: Sequence[tuple[str, str, int]],
    *,
    target_precision: float = 0.9,
    embedder: SupportsEmbed,
    config: GuardConfig | None = None,
    confidence: float | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
) -> CalibrationResult:
    """The lowest similarity threshold whose guarded pairwise precision reaches a target.

    Each pair is read as "the cache holds ``text_a``; would it serve its
    answer to ``text_b``?". A pair is accepted when its similarity is at
    least the threshold and the guards pass it; label 1 means accepting it
    is right.

    Args:
        pairs: ``(text_a, text_b, label)`` with label 1 (same question) or 0.
        target_precision: the pairwise precision to reach, in (0, 1].
        embedder: any object with ``embed(texts) -> unit vectors`` (e.g. the
            engine's embedder); every distinct text is embedded once.
        config: guards applied on top of the threshold (``GuardConfig()``
            when omitted, which equals the shipped defaults).
        confidence: check the target against the Wilson lower bound of
            precision at this level (e.g. ``0.95``) rather than the measured
            precision; see :func:`calibrate_from_scores`.
        grid: thresholds to report in the curve.

    Returns:
        A :class:`CalibrationResult`; ``reached`` is ``False`` (and the
        threshold 1.0) when no threshold is precise enough.

    Raises:
        ConfigurationError: no pairs, labels other than 0/1, or a target
            outside (0, 1].
    """
    if not pairs:
        raise ConfigurationError("calibration needs at least one labelled pair")
    cfg = config if config is not None else GuardConfig()
    texts = [(a, b) for a, b, _ in pairs]
    sims = pair_similarities(texts, embedder)
    verdicts = guard_verdicts(texts, cfg)
    return calibrate_from_scores(
        sims,
        [label for _, _, label in pairs],
        np.array([v is None for v in verdicts]) & read_whole(texts, embedder),
        target_precision=target_precision,
        confidence=confidence,
        grid=grid,
    )


def calibrate_pair_threshold(
    pairs: Sequence[tuple[str, str, int]],
    *,
    target_precision: float = 0.9,
    embedder: SupportsEmbed,
    pair_model: PairScorer | None = None,
    gate: float = DEFAULT_PAIR_GATE,
    skip: float | None = DEFAULT_PAIR_SKIP,
    config: GuardConfig | None = None,
    confidence: float | None = None,
    grid: Sequence[float] = PAIR_GRID,
) -> CalibrationResult:
    """The lowest ``CacheConfig.pair_threshold`` whose pairwise precision reaches a target.

    The twin of :func:`calibrate_threshold` for the pair check: a pair is
    accepted when its similarity reaches ``gate``, the guards pass it and its
    :func:`~costopt_core.cache.pair_model.pair_probability` reaches the
    threshold, or its similarity reaches ``skip``. Only pairs that clear the
    gate and guards and stay below ``skip`` are scored by the pair model, as
    in the cache.

    Args:
        pairs: ``(text_a, text_b, label)``; the cache holds ``text_a``.
        target_precision: the pairwise precision to reach, in (0, 1].
        embedder: the cache's embedder (the pair check's weights were fitted
            on the default one's similarities).
        pair_model: scores pairs; the shipped ``PairModel`` when omitted.
        gate: the cache's ``similarity_threshold`` in front of the check.
        skip: the cache's ``pair_skip_similarity``: pairs at or above it are
            accepted without the check (and not scored).
        config: guards (``GuardConfig()`` when omitted).
        confidence: check the Wilson lower bound at this level instead of the
            measured precision (see :func:`calibrate_from_scores`).
        grid: probabilities to report in the curve.

    Returns:
        A :class:`CalibrationResult` whose ``threshold`` is a probability:
        pass it as ``CacheConfig(pair_threshold=...)``.

    Raises:
        ConfigurationError: no pairs, labels other than 0/1, a target
            outside (0, 1] or a gate outside (0, 1].
    """
    if not pairs:
        raise ConfigurationError("calibration needs at least one labelled pair")
    if not 0.0 < gate <= 1.0:
        raise ConfigurationError(f"gate must be in (0, 1], got {gate}")
    cfg = config if config is not None else GuardConfig()
    texts = [(a, b) for a, b, _ in pairs]
    sims = pair_similarities(texts, embedder)
    ok = np.array([v is None for v in guard_verdicts(texts, cfg)]) & (sims >= np.float32(gate))
    scorer = pair_model if pair_model is not None else default_pair_model()
    ok &= read_whole(texts, embedder, scorer)
    logits = np.zeros(len(texts), dtype=np.float32)
    todo = np.flatnonzero(ok if skip is None else ok & (sims < np.float32(skip)))
    if todo.size:
        logits[todo] = scorer.logits([texts[i] for i in todo])
    scores = np.where(ok, pair_scores(logits, sims, skip, pairs=texts), 0.0)
    return calibrate_from_scores(
        scores,
        [label for _, _, label in pairs],
        ok,
        target_precision=target_precision,
        confidence=confidence,
        grid=grid,
    )
