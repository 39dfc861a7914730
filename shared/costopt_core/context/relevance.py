"""Relevance filtering: keep the retrieved chunks worth their input tokens.

A retriever returns its top ``k`` whether or not the tail has anything to do
with the question, and every chunk is paid for on every call. This module
decides which chunks to keep from the scores the store already computed (no
re-embedding, unlike LangChain's ``EmbeddingsFilter``): it maps whatever the
store reports (cosine distance, L2, inner product, relevance) onto one
similarity scale in [0, 1], applies cutoffs that compose (absolute, relative
to the top score, largest gap, ``min_k``/``max_k``, a token budget), and drops
near-duplicate chunks by their text. Every dropped chunk comes with the reason.

It works on plain data (:class:`ScoredChunk`: text and score); the LangChain
and LlamaIndex adapters map the kept indices back to their own documents and
nodes, so metadata is never touched.

Score conventions and how each becomes a similarity ``s`` in [0, 1]. The
scale is the cosine similarity of unit vectors (clipped at 0), so one
threshold means the same whatever the store reports:

===================  ===============================  ============================
convention           the store reports                similarity
===================  ===============================  ============================
``similarity``       cosine similarity in [-1, 1]     ``clip(score)``
``cosine_distance``  ``1 - cos`` in [0, 2]            ``clip(1 - d)``
``l2``               Euclidean distance, unit vectors ``clip(1 - d**2 / 2)``
``l2_squared``       squared Euclidean (FAISS, Chroma ``clip(1 - d / 2)``
                     ``l2``), unit vectors
``inner_product``    dot product of unit vectors      ``clip(ip)``
``relevance``        the store's own [0, 1] relevance ``clip(score)``
``unbounded``        no fixed range (BM25, raw dot    ``clip(score / top score)``;
                     products of unnormalised         ``sigmoid(score)`` when no
                     vectors, cross-encoder logits)   score is above 0
===================  ===============================  ============================

``clip`` bounds to [0, 1]: a negative cosine (an opposed chunk) is as
irrelevant as an orthogonal one. Unbounded scores are a share of the top
score while it is positive (BM25 is never negative); a list with no positive
score is a cross-encoder reranker's logits (an ms-marco model's are mostly
negative), which the sigmoid maps to the model's own probability of
relevance, as sentence-transformers' ``CrossEncoder`` does for one-label
models. Dividing by a negative top score (or setting everything to 0, as
before) lost the ranking, and the relative and gap cutoffs then kept every
chunk. Cosine distance is *not* mapped with
``(2 - d) / 2``: that would put an orthogonal chunk at 0.5 and give the same
threshold a different meaning per store.

``auto`` detects the convention from the scores in rank order (best first):
scores sorted ascending as retrieved (each at least the one before, and some
higher) are distances (``l2_squared`` when one exceeds 2, which no cosine or
unit-vector L2 distance can; ``cosine_distance`` otherwise); any other list
is similarities (``similarity`` when all lie in [-1, 1], ``unbounded``
otherwise). A store sorts its distances ascending, so only that order is
evidence of distances: similarities that a step after retrieval put out of
rank order (LlamaIndex's ``LongContextReorder`` puts the best last) mostly
rise too, and reading them as distances inverted the ranking and dropped
the best chunk. The rule cannot tell a cosine distance from an L2 one, nor
a list of similarities reordered ascending from distances: declare the
convention when you know it (:func:`with_default_convention` lets an adapter
declare its framework's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from costopt_core.errors import config_error
from costopt_core.tokens import default_counter

__all__ = [
    "DROP_REASONS",
    "DropReason",
    "RelevanceConfig",
    "RelevanceResult",
    "ResolvedConvention",
    "ScoreConvention",
    "ScoredChunk",
    "UnscoredPolicy",
    "detect_convention",
    "near_duplicate",
    "normalize_scores",
    "select_relevant",
    "with_default_convention",
]

ScoreConvention = Literal[
    "auto",
    "similarity",
    "cosine_distance",
    "l2",
    "l2_squared",
    "inner_product",
    "relevance",
    "unbounded",
]
#: A convention after ``auto`` has been resolved.
ResolvedConvention = Literal[
    "similarity",
    "cosine_distance",
    "l2",
    "l2_squared",
    "inner_product",
    "relevance",
    "unbounded",
]
UnscoredPolicy = Literal["keep", "keep_after_scored", "drop"]
DropReason = Literal[
    "unscored",
    "below_threshold",
    "below_relative",
    "below_gap",
    "duplicate",
    "max_k",
    "token_budget",
]
#: Every reason :func:`select_relevant` gives for a dropped chunk (stable, machine-readable).
DROP_REASONS: tuple[DropReason, ...] = (
    "unscored",
    "below_threshold",
    "below_relative",
    "below_gap",
    "duplicate",
    "max_k",
    "token_budget",
)


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """One retrieved chunk: its text (as the model will see it) and the store's score.

    ``score`` is ``None`` for retrievers that give none (BM25 without scores,
    fusion); a NaN or infinite score is treated as no score. ``dedupe_text``
    is what near-duplicate detection compares, when it differs from ``text``
    (the content without the metadata the model also sees, so one passage
    indexed from two files is still a duplicate). A ``dedupe_text`` without
    words (an image's node, a table kept in metadata) falls back to
    ``text``; a chunk whose ``text`` has no words either is never a
    duplicate, nor the original of one.
    """

    text: str
    score: float | None = None
    dedupe_text: str | None = None


class RelevanceConfig(BaseModel):
    """Which chunks :func:`select_relevant` keeps. Invalid values raise ``ConfigurationError``.

    The defaults drop nothing on score (only near-duplicates): good cutoffs
    depend on the embedding model, so they are opted into.

    Attributes:
        score_convention: what the store's scores are (see the module doc);
            ``auto`` detects it from the scores.
        absolute_threshold: keep chunks with similarity ``>=`` this.
        relative_to_top: keep chunks with similarity ``>=`` this times the top
            similarity (``0.8`` keeps chunks within 80% of the best).
        gap_detection: cut at the largest drop between consecutive
            similarities (sorted, among the chunks the two cutoffs above
            kept), when that drop is at least ``min_gap``.
        min_gap: smallest drop that counts as a gap.
        min_k: the first ``min_k`` chunks in rank order (duplicates aside)
            are kept whatever their scores and the token budget, so with the
            default ``1`` the top-ranked chunk is never dropped.
        max_k: keep at most this many chunks (``None``: no cap).
        token_budget: pack kept chunks in rank order into this many tokens;
            a chunk that does not fit is skipped and smaller, lower-ranked
            ones may still fit (``None``: no budget).
        dedupe_threshold: drop a chunk whose word-shingle Jaccard similarity
            to a higher-ranked kept chunk is ``>=`` this (``1.0``: only
            chunks equal after normalising case, punctuation and spacing;
            ``None``: no deduplication).
        shingle_words: words per shingle for deduplication.
        unscored_policy: chunks without a score. ``keep``: kept at their
            rank, exempt from score cutoffs (there is nothing to compare),
            still subject to dedupe, ``max_k`` and the budget.
            ``keep_after_scored``: kept the same way but placed after every
            scored chunk, so ``max_k`` and the budget go to scored chunks
            first. ``drop``: dropped with reason ``unscored``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    score_convention: ScoreConvention = "auto"
    absolute_threshold: float | None = Field(None, ge=0.0, le=1.0)
    relative_to_top: float | None = Field(None, gt=0.0, le=1.0)
    gap_detection: bool = False
    min_gap: float = Field(0.1, ge=0.0, le=1.0)
    min_k: int = Field(1, ge=0)
    max_k: int | None = Field(None, ge=1)
    token_budget: int | None = Field(None, ge=1)
    dedupe_threshold: float | None = Field(0.9, gt=0.0, le=1.0)
    shingle_words: int = Field(3, ge=1, le=16)
    unscored_policy: UnscoredPolicy = "keep"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error("RelevanceConfig", exc) from None

    @model_validator(mode="after")
    def _k_bounds(self) -> RelevanceConfig:
        if self.max_k is not None and self.min_k > self.max_k:
            raise ValueError(
                f"min_k={self.min_k} is larger than max_k={self.max_k}; lower min_k or raise max_k"
            )
        return self


@dataclass(frozen=True)
class RelevanceResult:
    """What :func:`select_relevant` decided.

    Attributes:
        kept: indices into the input chunks, in the order to use them.
        similarities: per input chunk, its similarity in [0, 1] (``None``
            when it had no score).
        dropped: input index -> why it was dropped.
        duplicate_of: for chunks dropped as ``duplicate``, the kept chunk
            they repeat.
        convention: the score convention applied (``auto`` resolved).
        tokens_before: tokens of all input chunks.
        tokens_after: tokens of the kept chunks.
    """

    kept: tuple[int, ...]
    similarities: tuple[float | None, ...]
    dropped: Mapping[int, DropReason] = field(default_factory=dict)
    duplicate_of: Mapping[int, int] = field(default_factory=dict)
    convention: ResolvedConvention = "similarity"
    tokens_before: int = 0
    tokens_after: int = 0

    @property
    def tokens_removed(self) -> int:
        """Input tokens kept out of the call."""
        return self.tokens_before - self.tokens_after


# -- score normalisation --------------------------------------------------------
def _finite(score: float | None) -> float | None:
    if score is None:
        return None
    value = float(score)
    return value if math.isfinite(value) else None


def detect_convention(scores: Sequence[float | None]) -> ResolvedConvention:
    """The convention ``auto`` picks for scores in rank order (best first); see the module doc."""
    values = [s for s in (_finite(x) for x in scores) if s is not None]
    steps = list(pairwise(values))
    # Distances only when sorted ascending: "mostly rising" also matches
    # similarities a reorder put out of rank order. Ties stay allowed, as a
    # store returns a chunk indexed twice at the same distance.
    ascending = all(b >= a for a, b in steps) and any(b > a for a, b in steps)
    if ascending:
        return "l2_squared" if max(values) > 2.0 else "cosine_distance"
    if all(-1.0 <= v <= 1.0 for v in values):
        return "similarity"
    return "unbounded"


def with_default_convention(
    config: RelevanceConfig, convention: ResolvedConvention
) -> RelevanceConfig:
    """``config`` with ``convention`` unless its ``score_convention`` was set explicitly.

    For an adapter whose framework documents what its scores are (LlamaIndex's
    ``NodeWithScore.score``: higher is more relevant): guessing from the order
    is wrong whenever a step before the filter reordered the chunks. A
    convention the user set, ``"auto"`` included, is kept.
    """
    if "score_convention" in config.model_fields_set:
        return config
    return config.model_copy(update={"score_convention": convention})


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _sigmoid(x: float) -> float:
    """Logit -> probability, without overflow for large negative logits."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def normalize_scores(
    scores: Sequence[float | None], convention: ScoreConvention = "auto"
) -> tuple[tuple[float | None, ...], ResolvedConvention]:
    """Map store scores onto similarity in [0, 1]; ``None`` stays ``None``.

    Returns:
        The similarities, and the convention applied (``auto`` resolved).
    """
    values = [_finite(s) for s in scores]
    resolved: ResolvedConvention = detect_convention(values) if convention == "auto" else convention
    if resolved == "unbounded":
        top = max((v for v in values if v is not None), default=0.0)
        if top > 0:
            return tuple(None if v is None else _clip(v / top) for v in values), resolved
        return tuple(None if v is None else _sigmoid(v) for v in values), resolved
    convert: Callable[[float], float] = {
        "similarity": lambda x: x,
        "relevance": lambda x: x,
        "inner_product": lambda x: x,
        "cosine_distance": lambda d: 1.0 - d,
        "l2": lambda d: 1.0 - d * d / 2.0,
        "l2_squared": lambda d: 1.0 - d / 2.0,
    }[resolved]
    return tuple(None if v is None else _clip(convert(v)) for v in values), resolved


# -- near-duplicates ------------------------------------------------------------------
_WORD = re.compile(r"\w+")


def _shingles(text: str, size: int) -> frozenset[tuple[str, ...]]:
    """The word shingles of ``text``; none for a text without words (nothing to compare)."""
    words = _WORD.findall(text.lower())
    if not words:
        return frozenset()
    if len(words) <= size:
        return frozenset({tuple(words)})
    return frozenset(tuple(words[i : i + size]) for i in range(len(words) - size + 1))


def _jaccard(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    # A text without words (an image's node, a table kept in metadata) says
    # nothing its neighbour could repeat: two of them are not one document.
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def near_duplicate(a: str, b: str, *, threshold: float = 0.9, shingle_words: int = 3) -> bool:
    """Whether two texts repeat each other: word-shingle Jaccard ``>= threshold``.

    Case, punctuation and spacing are ignored. Cheap (no embeddings): chunks
    of one document indexed twice, or overlapping splits, are caught;
    paraphrases are not. A text without words (empty, blank, punctuation
    only) is never a duplicate: it has nothing to compare.
    """
    return _jaccard(_shingles(a, shingle_words), _shingles(b, shingle_words)) >= threshold


# -- selection --------------------------------------------------------------------------
def _score_cutoffs(
    sims: Sequence[float | None], candidates: Sequence[int], config: RelevanceConfig
) -> dict[int, DropReason]:
    """Why each scored candidate fails the score cutoffs (absolute, relative, then gap)."""
    s = {i: v for i in candidates if (v := sims[i]) is not None}
    scored = list(s)
    if not scored:
        return {}
    top = max(s.values())
    failed: dict[int, DropReason] = {}
    for i in scored:
        if config.absolute_threshold is not None and s[i] < config.absolute_threshold:
            failed[i] = "below_threshold"
        elif config.relative_to_top is not None and s[i] < config.relative_to_top * top:
            failed[i] = "below_relative"
    if config.gap_detection:
        ranked = sorted((s[i] for i in scored if i not in failed), reverse=True)
        if len(ranked) >= 2:
            gaps = [ranked[j] - ranked[j + 1] for j in range(len(ranked) - 1)]
            widest = max(range(len(gaps)), key=lambda j: (gaps[j], -j))
            if gaps[widest] >= config.min_gap and gaps[widest] > 0:
                cut = ranked[widest]
                for i in scored:
                    if i not in failed and s[i] < cut:
                        failed[i] = "below_gap"
    return failed


def select_relevant(
    chunks: Sequence[ScoredChunk],
    config: RelevanceConfig | None = None,
    *,
    count_tokens: Callable[[str], int] | None = None,
) -> RelevanceResult:
    """Choose which retrieved chunks go into the prompt.

    Steps, in order: the unscored policy; the score cutoffs (absolute, then
    relative to the top similarity, then the largest gap among what is left);
    a walk in rank order that drops near-duplicates of already kept chunks
    and score-failed chunks, except that the first ``min_k`` chunks are kept
    anyway; ``max_k``; then packing into ``token_budget`` in rank order
    (again never below ``min_k``).

    Args:
        chunks: retrieved chunks in the retriever's rank order (best first).
        config: the cutoffs; ``RelevanceConfig()`` (dedupe only) if omitted.
        count_tokens: tokens of one text (the engine's counter:
            ``engine.tokens.count``); the default counter if omitted.

    Returns:
        Kept indices in order of use, similarities, drop reasons, tokens.

    Example:
        >>> cfg = RelevanceConfig(absolute_threshold=0.5)
        >>> r = select_relevant([ScoredChunk("a b c", 0.9), ScoredChunk("x y", 0.2)], cfg)
        >>> r.kept, dict(r.dropped)
        ((0,), {1: 'below_threshold'})
    """
    cfg = config or RelevanceConfig()
    count = count_tokens or default_counter().count
    sims, resolved = normalize_scores([c.score for c in chunks], cfg.score_convention)
    tokens = [count(c.text) for c in chunks]

    n = len(chunks)
    if cfg.unscored_policy == "keep_after_scored":
        order = [i for i in range(n) if sims[i] is not None]
        order += [i for i in range(n) if sims[i] is None]
    else:
        order = list(range(n))
    dropped: dict[int, DropReason] = {}
    if cfg.unscored_policy == "drop":
        dropped.update({i: "unscored" for i in order if sims[i] is None})
    failed = _score_cutoffs(sims, [i for i in order if i not in dropped], cfg)

    kept: list[int] = []
    duplicate_of: dict[int, int] = {}
    shingles: dict[int, frozenset[tuple[str, ...]]] = {}

    def compared(i: int) -> str:
        # Without words of its own content, a chunk is compared as the model
        # sees it (its metadata): two images with the same caption repeat
        # each other, two with different ones do not.
        c = chunks[i]
        if c.dedupe_text is None or not _WORD.search(c.dedupe_text):
            return c.text
        return c.dedupe_text

    def repeats(i: int) -> int | None:
        if cfg.dedupe_threshold is None:
            return None
        mine = shingles.setdefault(i, _shingles(compared(i), cfg.shingle_words))
        for j in kept:
            theirs = shingles.setdefault(j, _shingles(compared(j), cfg.shingle_words))
            if _jaccard(mine, theirs) >= cfg.dedupe_threshold:
                return j
        return None

    for i in order:
        if i in dropped:
            continue
        if i in failed and len(kept) >= cfg.min_k:
            dropped[i] = failed[i]
            continue
        original = repeats(i)
        if original is not None:
            dropped[i] = "duplicate"
            duplicate_of[i] = original
            continue
        kept.append(i)

    if cfg.max_k is not None:
        dropped.update({i: "max_k" for i in kept[cfg.max_k :]})
        kept = kept[: cfg.max_k]

    if cfg.token_budget is not None:
        packed: list[int] = []
        used = 0
        for pos, i in enumerate(kept):
            if pos < cfg.min_k or used + tokens[i] <= cfg.token_budget:
                packed.append(i)
                used += tokens[i]
            else:
                dropped[i] = "token_budget"
        kept = packed

    return RelevanceResult(
        kept=tuple(kept),
        similarities=sims,
        dropped=dict(sorted(dropped.items())),
        duplicate_of=duplicate_of,
        convention=resolved,
        tokens_before=sum(tokens),
        tokens_after=sum(tokens[i] for i in kept),
    )
