"""Route classifiers: per request, the probability that each tier is good enough.

One seam, :class:`RouteClassifier`, so the policy, calibration and the
benchmark treat every classifier alike. ``predict`` returns an
``(n, n_tiers)`` array whose entry ``[i, t]`` is the probability that tier
``t``'s answer to request ``i`` is *good enough*: no worse than the frontier
tier's answer. Defined against the frontier rather than against a fixed bar,
a request that every tier gets wrong does not look like one that needs the
frontier (sending it up would cost more and gain nothing). The frontier
column is therefore 1 by construction.

Precisely, with per-tier quality labels ``q`` in [0, 1] the classifiers
estimate ``p_t = min(1, 1 - E[q_frontier - q_t])``: one minus the quality the
tier is expected to lose against the frontier. When a tier never beats the
frontier this is exactly ``P(q_t >= q_frontier)``; where it sometimes does
(a cheap model that is better on some topic), those wins offset the losses,
which is what the expected quality of the route depends on.

Rows are monotone non-decreasing towards the frontier (a stronger tier is at
least as likely to be good enough): :func:`monotone` enforces it with a
running maximum, so a threshold rule never skips a tier for a weaker one.

Two implementations:

- :class:`HeuristicClassifier` (the default; no data): request features ->
  a complexity score in [0, 1] -> per-tier probabilities.
- :class:`LearnedClassifier`: the prompt embedding from the engine's
  embedder (no provider call) plus request features; per non-frontier tier,
  a logistic regression and a nearest-neighbour vote over the training
  prompts, averaged in logit space. Fitting uses scikit-learn; inference is a
  few numpy products (well under a millisecond for ten thousand stored
  prompts), and the model saves to a plain ``.npz`` (arrays plus JSON
  metadata, no pickle), so loading one runs no code.

Batches go through :class:`Encoded` (features, and embeddings when the
classifier needs them), so calibration embeds each prompt once and then fits
and scores cross-validation folds on arrays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from costopt_core.embeddings import Embedder
from costopt_core.errors import ConfigurationError
from costopt_core.routing.features import (
    FEATURE_NAMES,
    RequestFeatures,
    RouteInput,
    extract_features,
    feature_matrix,
    routing_text,
)

__all__ = [
    "Encoded",
    "HeuristicClassifier",
    "HeuristicWeights",
    "LearnedClassifier",
    "RouteClassifier",
    "TrainableClassifier",
    "monotone",
    "probabilities_from_relative",
    "relative_quality_targets",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Encoded:
    """A batch of requests reduced to what classifiers read.

    Attributes:
        features: request features, one per request.
        embeddings: unit vectors of the routing texts, ``(n, dim)``, or
            ``None`` when the classifier needs none.
    """

    features: tuple[RequestFeatures, ...]
    embeddings: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        if self.embeddings is not None and len(self.embeddings) != len(self.features):
            raise ConfigurationError(
                f"{len(self.embeddings)} embeddings for {len(self.features)} requests"
            )

    def __len__(self) -> int:
        return len(self.features)

    @property
    def feature_array(self) -> FloatArray:
        """:func:`feature_matrix` of the features, ``(n, len(FEATURE_NAMES))``."""
        return feature_matrix(self.features)

    @property
    def tokens(self) -> npt.NDArray[np.int64]:
        """Prompt tokens per request (what its price scales with)."""
        return np.array([f.tokens for f in self.features], dtype=np.int64)

    def take(self, idx: npt.ArrayLike) -> Encoded:
        """The requests at positions ``idx``."""
        ix = np.asarray(idx, dtype=np.int64)
        return Encoded(
            features=tuple(self.features[i] for i in ix),
            embeddings=None if self.embeddings is None else self.embeddings[ix],
        )


@runtime_checkable
class RouteClassifier(Protocol):
    """Anything that scores requests per tier.

    ``predict`` returns shape ``(len(items), n_tiers)``: per tier, the
    probability that its answer is good enough (no worse than the frontier's).
    Rows are non-decreasing towards the frontier and the last column is 1.
    ``apredict`` is the async twin (the learned classifier embeds, which may
    be I/O). ``encode`` + ``predict_encoded`` split the same work so a batch
    can be encoded once and scored many times.
    """

    name: str

    @property
    def n_tiers(self) -> int: ...

    def predict(self, items: Sequence[RouteInput]) -> FloatArray: ...

    async def apredict(self, items: Sequence[RouteInput]) -> FloatArray: ...

    def encode(self, items: Sequence[RouteInput]) -> Encoded: ...

    def predict_encoded(self, enc: Encoded) -> FloatArray: ...


@runtime_checkable
class TrainableClassifier(RouteClassifier, Protocol):
    """A classifier calibration can cross-validate: unfitted copies, fit on a batch."""

    def clone(self) -> TrainableClassifier:
        """An unfitted copy with the same settings (and the same embedder)."""
        ...

    def fit_encoded(self, enc: Encoded, labels: npt.ArrayLike) -> TrainableClassifier:
        """Fit on an encoded batch and its ``(n, n_tiers)`` quality labels; returns self."""
        ...


def monotone(probs: npt.ArrayLike) -> FloatArray:
    """Clip to [0, 1], make each row non-decreasing (running max), frontier column = 1."""
    p = np.clip(np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0), 0.0, 1.0)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ConfigurationError(f"probabilities must have shape (n, n_tiers >= 2), got {p.shape}")
    p = np.maximum.accumulate(p, axis=1)
    p[:, -1] = 1.0
    return p


def _check_labels(labels: npt.ArrayLike) -> FloatArray:
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ConfigurationError(f"labels must have shape (n, n_tiers >= 2), got {y.shape}")
    if np.isnan(y).any() or (y < 0).any() or (y > 1).any():
        raise ConfigurationError("labels must be 0/1 or quality scores in [0, 1] (no NaN)")
    return y


def relative_quality_targets(labels: npt.ArrayLike) -> FloatArray:
    """The training target per non-frontier tier: ``(1 + q_t - q_frontier) / 2``.

    In [0, 1]: 0 when the tier fails where the frontier succeeds, 1/2 on a
    tie, 1 when the tier beats the frontier. A model of its mean ``m`` gives
    ``E[q_frontier - q_t] = 1 - 2m`` (see :func:`probabilities_from_relative`).

    Args:
        labels: shape ``(n, n_tiers)``, quality per tier (cheapest first).

    Returns:
        Shape ``(n, n_tiers - 1)``.

    Raises:
        ConfigurationError: wrong shape, NaN, or values outside [0, 1].
    """
    y = _check_labels(labels)
    return (1.0 + y[:, :-1] - y[:, -1:]) / 2.0


def probabilities_from_relative(mean_target: npt.ArrayLike) -> FloatArray:
    """Per-tier P(good enough) from the predicted mean relative-quality target.

    ``p_t = min(1, 2 m_t)`` (``= 1 - E[q_frontier - q_t]``), with a frontier
    column of ones appended and the row made monotone.
    """
    m = np.asarray(mean_target, dtype=np.float64)
    out = np.ones((m.shape[0], m.shape[1] + 1), dtype=np.float64)
    out[:, :-1] = 2.0 * m
    return monotone(out)


# -- heuristic ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeuristicWeights:
    """How much each request trait adds to the complexity score (0 trivial, 1 hard).

    The defaults encode common experience rather than a fit: long prompts,
    code, math, explicit reasoning, multi-step instructions, tools and
    structured output make weaker models fail more often; short factual or
    transformation asks rarely need a frontier model. Calibration on your own
    samples then picks the thresholds that turn the score into a tier.
    """

    base: float = 0.2
    #: Added in full for a prompt of ``long_prompt_tokens`` or more (log scale).
    length: float = 0.2
    long_prompt_tokens: int = 4000
    code: float = 0.2
    math: float = 0.2
    reasoning: float = 0.08
    reasoning_cap: float = 0.24
    steps: float = 0.04
    steps_cap: float = 0.16
    constraints: float = 0.02
    constraints_cap: float = 0.08
    tools: float = 0.15
    structured_output: float = 0.1
    #: Per user turn beyond the first (more context to track), capped.
    depth: float = 0.03
    depth_cap: float = 0.12
    #: Simple asks (factual, transformation, yes/no) pull the score down.
    simple_bonus: float = 0.1
    #: How sharply a tier's probability falls once complexity passes its capability.
    steepness: float = 8.0


_SIMPLE_TYPES = frozenset({"factual", "transform", "yes_no"})


class HeuristicClassifier:
    """Request features -> complexity -> per-tier probability (no training data).

    Tier ``t`` of ``n`` gets a capability ``(t + 1) / n`` and
    ``P(t good enough) = sigmoid(steepness * (capability - complexity))``; the
    frontier column is 1. Rows therefore increase towards the frontier.

    Args:
        n_tiers: number of tiers (>= 2).
        weights: the scoring weights.

    Example:
        >>> clf = HeuristicClassifier(3)
        >>> p = clf.predict(["What is the capital of France?"])
        >>> bool(p[0, 0] > 0.5), float(p[0, 2])
        (True, 1.0)
    """

    name = "heuristic"

    def __init__(self, n_tiers: int = 2, weights: HeuristicWeights | None = None) -> None:
        if n_tiers < 2:
            raise ConfigurationError(f"n_tiers must be >= 2, got {n_tiers}")
        self._n = n_tiers
        self.weights = weights or HeuristicWeights()
        self._capability = np.array([(t + 1) / n_tiers for t in range(n_tiers)])

    @property
    def n_tiers(self) -> int:
        return self._n

    def complexity(self, f: RequestFeatures) -> float:
        """The complexity score of one request, in [0, 1]."""
        w = self.weights
        s = w.base
        s += w.length * min(1.0, math.log1p(f.tokens) / math.log1p(w.long_prompt_tokens))
        s += w.code * min(1.0, f.code / 3)
        s += w.math * min(1.0, f.math / 3)
        s += min(w.reasoning_cap, w.reasoning * f.reasoning)
        s += min(w.steps_cap, w.steps * f.steps)
        s += min(w.constraints_cap, w.constraints * f.constraints)
        s += w.tools * f.tools + w.structured_output * f.structured_output
        s += min(w.depth_cap, w.depth * max(0, f.turns - 1))
        if f.question_type in _SIMPLE_TYPES:
            s -= w.simple_bonus
        return min(1.0, max(0.0, s))

    def predict_features(self, feats: Sequence[RequestFeatures]) -> FloatArray:
        """Probabilities from already-extracted features."""
        c = np.array([self.complexity(f) for f in feats], dtype=np.float64).reshape(-1, 1)
        z = self.weights.steepness * (self._capability[None, :] - c)
        return monotone(1.0 / (1.0 + np.exp(-z)))

    def encode(self, items: Sequence[RouteInput]) -> Encoded:
        return Encoded(features=tuple(extract_features(x) for x in items))

    def predict_encoded(self, enc: Encoded) -> FloatArray:
        return self.predict_features(enc.features)

    def predict(self, items: Sequence[RouteInput]) -> FloatArray:
        return self.predict_features([extract_features(x) for x in items])

    async def apredict(self, items: Sequence[RouteInput]) -> FloatArray:
        # Microseconds of pure CPU work: no thread hop needed.
        return self.predict(items)


# -- learned ------------------------------------------------------------------

Method = Literal["logistic", "knn", "ensemble"]
_FORMAT = "costopt-route-classifier"
_VERSION = 1
_STATE = (
    "coef",
    "intercept",
    "feat_mean",
    "feat_scale",
    "bank",
    "bank_targets",
    "prior",
    "proj_mean",
    "proj",
)
# Similarities against the stored prompts are computed in blocks of this many
# rows: for one request each block is a small matrix-vector product that BLAS
# runs on the calling thread. One big product would wake BLAS's thread pool,
# which costs ~10 ms whenever another process holds a core.
_BLOCK = 4096
# Request features are scaled to unit variance and then shrunk by this factor
# so that two dozen features do not outweigh a unit-length embedding in the
# (L2-regularised) logistic regression.
_FEATURE_WEIGHT = 0.1


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))
    return out


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    out: FloatArray = np.log(q / (1 - q))
    return out


class LearnedClassifier:
    """Prompt embedding (+ request features) -> per-tier P(good enough), fitted on samples.

    Per non-frontier tier, two views of the training prompts are combined: a
    logistic regression on the embedding and request features (which kinds
    of prompt the tier loses on), and a nearest-neighbour vote over the
    embeddings (how the most similar known prompts fared, which picks up
    topics a tier is weak or strong in). ``method`` selects one of them or
    their average in logit space (default). Both learn the relative-quality
    target of :func:`relative_quality_targets`.

    Nothing here calls a provider: the embedder is the engine's (local), and
    a caller that already has the vectors (the semantic cache's) can pass
    them to :meth:`predict_embeddings`.

    The defaults (``C=0.3``, ``k=50``) were chosen by 5-fold cross-validation
    on the training half of the RouteLLM MMLU set (other values within a
    point or two); :func:`calibrate` measures any setting on your own data
    the same way.

    Args:
        embedder: the shared embedder (``engine.embedder``); only needed to
            embed prompts (not for :meth:`predict_embeddings`).
        method: ``"logistic"``, ``"knn"`` or ``"ensemble"``.
        C: inverse L2 strength of the logistic regressions.
        k: neighbours in the vote.
        prior_strength: pseudo-count pulling the vote towards the tier's mean,
            so that a few neighbours cannot make it certain.
        knn_dims: the vote compares prompts in the top ``knn_dims`` principal
            components of the stored embeddings (0: the full embedding). 64
            keeps the vote as accurate as the full 384 dimensions on MMLU and
            makes it ~10x cheaper (a few hundredths of a millisecond).
        use_features: append the scaled request features to the embedding.
        max_neighbors: at most this many training prompts are kept for the
            vote (a fixed random subset beyond it), which bounds latency and
            file size.
        text_fn: the text embedded for a request (:func:`routing_text`).
        seed: seed of that subset.
    """

    name = "learned"

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        method: Method = "ensemble",
        C: float = 0.3,
        k: int = 50,
        prior_strength: float = 4.0,
        knn_dims: int = 64,
        use_features: bool = True,
        max_neighbors: int = 20_000,
        text_fn: Callable[[RouteInput], str] = routing_text,
        seed: int = 0,
    ) -> None:
        if method not in ("logistic", "knn", "ensemble"):
            raise ConfigurationError(f"method must be logistic, knn or ensemble, got {method!r}")
        if not (C > 0 and k >= 1 and prior_strength >= 0 and max_neighbors >= 1 and knn_dims >= 0):
            raise ConfigurationError(
                "need C > 0, k >= 1, prior_strength >= 0, max_neighbors >= 1, knn_dims >= 0"
            )
        self.embedder = embedder
        self.method: Method = method
        self.C = float(C)
        self.k = int(k)
        self.prior_strength = float(prior_strength)
        self.knn_dims = int(knn_dims)
        self.use_features = use_features
        self.max_neighbors = int(max_neighbors)
        self.text_fn = text_fn
        self.seed = seed
        self._n: int | None = None
        # Fitted state: plain arrays, so a saved model is a file of arrays.
        self._coef: FloatArray | None = None  # (n_tiers - 1, d)
        self._intercept: FloatArray | None = None  # (n_tiers - 1,)
        self._feat_mean: FloatArray | None = None
        self._feat_scale: FloatArray | None = None
        self._bank: npt.NDArray[np.float32] | None = None  # (m, d), unit rows
        self._proj_mean: npt.NDArray[np.float32] | None = None  # (dim,)
        self._proj: npt.NDArray[np.float32] | None = None  # (dim, d)
        self._bank_targets: FloatArray | None = None  # (m, n_tiers - 1)
        self._prior: FloatArray | None = None  # (n_tiers - 1,)

    def __repr__(self) -> str:
        state = f"n_tiers={self._n}" if self._n is not None else "unfitted"
        return (
            f"LearnedClassifier(method={self.method!r}, C={self.C}, k={self.k}, "
            f"knn_dims={self.knn_dims}, "
            f"use_features={self.use_features}, {state})"
        )

    @property
    def n_tiers(self) -> int:
        if self._n is None:
            raise ConfigurationError("the learned classifier is not fitted: call fit() or load()")
        return self._n

    @property
    def is_fitted(self) -> bool:
        return self._n is not None

    def clone(self) -> LearnedClassifier:
        """An unfitted copy with the same settings, sharing the embedder."""
        return LearnedClassifier(
            self.embedder,
            method=self.method,
            C=self.C,
            k=self.k,
            prior_strength=self.prior_strength,
            knn_dims=self.knn_dims,
            use_features=self.use_features,
            max_neighbors=self.max_neighbors,
            text_fn=self.text_fn,
            seed=self.seed,
        )

    def _get_embedder(self) -> Embedder:
        if self.embedder is None:
            raise ConfigurationError(
                "LearnedClassifier needs an embedder to embed prompts: pass engine.embedder, "
                "or call predict_embeddings() with vectors you already have"
            )
        return self.embedder

    def texts(self, items: Sequence[RouteInput]) -> list[str]:
        """The texts embedded for ``items`` (share them with the cache to embed once)."""
        return [self.text_fn(x) for x in items]

    # -- encode -----------------------------------------------------------------
    def encode(
        self, items: Sequence[RouteInput], *, embeddings: npt.ArrayLike | None = None
    ) -> Encoded:
        """Features and embeddings of ``items`` (``embeddings`` skips the embedder)."""
        feats = tuple(extract_features(x) for x in items)
        if embeddings is None:
            vecs = self._get_embedder().embed(self.texts(items))
        else:
            vecs = np.asarray(embeddings, dtype=np.float32)
        return Encoded(features=feats, embeddings=np.asarray(vecs, dtype=np.float32))

    async def aencode(self, items: Sequence[RouteInput]) -> Encoded:
        feats = tuple(extract_features(x) for x in items)
        vecs = await self._get_embedder().aembed(self.texts(items))
        return Encoded(features=feats, embeddings=np.asarray(vecs, dtype=np.float32))

    # -- fit ----------------------------------------------------------------------
    def fit(
        self,
        items: Sequence[RouteInput],
        labels: npt.ArrayLike,
        *,
        embeddings: npt.ArrayLike | None = None,
    ) -> LearnedClassifier:
        """Train on labelled requests.

        Args:
            items: the training requests.
            labels: shape ``(n, n_tiers)``: per tier 0/1 (answer acceptable)
                or a quality score in [0, 1], cheapest tier first.
            embeddings: precomputed unit vectors of :meth:`texts` of ``items``.

        Returns:
            ``self``.

        Raises:
            ConfigurationError: shapes disagree, fewer than 2 samples, bad labels.
        """
        return self.fit_encoded(self.encode(items, embeddings=embeddings), labels)

    def fit_encoded(self, enc: Encoded, labels: npt.ArrayLike) -> LearnedClassifier:
        """Train on an :class:`Encoded` batch (with embeddings) and its labels."""
        y = _check_labels(labels)
        if enc.embeddings is None:
            raise ConfigurationError("the learned classifier needs embeddings to fit")
        if y.shape[0] != len(enc):
            raise ConfigurationError(f"{y.shape[0]} label rows for {len(enc)} requests")
        if len(enc) < 2:
            raise ConfigurationError("need at least 2 labelled samples to fit")
        targets = relative_quality_targets(y)
        self._fit_arrays(enc.embeddings, enc.feature_array if self.use_features else None, targets)
        self._n = y.shape[1]
        return self

    def _fit_arrays(self, E: npt.NDArray[np.float32], F: FloatArray | None, T: FloatArray) -> None:
        from sklearn.linear_model import LogisticRegression

        n, n_rel = T.shape
        if F is not None:
            self._feat_mean = F.mean(axis=0)
            scale = F.std(axis=0)
            self._feat_scale = np.where(scale > 1e-9, scale, 1.0)
        else:
            self._feat_mean = self._feat_scale = None
        X = self._design(E, F)
        self._prior = T.mean(axis=0)

        coefs = np.zeros((n_rel, X.shape[1]), dtype=np.float64)
        intercepts = _logit(self._prior.copy())
        if self.method != "knn":
            # Soft targets as two weighted copies of the data: scikit-learn wants classes.
            X2 = np.vstack([X, X])
            y2 = np.concatenate([np.ones(n), np.zeros(n)])
            for t in range(n_rel):
                w2 = np.concatenate([T[:, t], 1.0 - T[:, t]])
                keep = w2 > 0
                if len(np.unique(y2[keep])) < 2:
                    continue  # every sample agrees: the constant (prior) model
                lr = LogisticRegression(C=self.C, max_iter=3000)
                lr.fit(X2[keep], y2[keep], sample_weight=w2[keep])
                coefs[t] = lr.coef_[0]
                intercepts[t] = lr.intercept_[0]
        self._coef = coefs
        self._intercept = intercepts

        if self.method != "logistic":
            idx = np.arange(n)
            if n > self.max_neighbors:
                rng = np.random.default_rng(self.seed)
                idx = np.sort(rng.choice(n, self.max_neighbors, replace=False))
            stored = E[idx].astype(np.float64)
            d = self.knn_dims
            if 0 < d < stored.shape[1] and len(stored) > d:
                mean = stored.mean(axis=0)
                _, _, vt = np.linalg.svd(stored - mean, full_matrices=False)
                self._proj_mean = mean.astype(np.float32)
                self._proj = np.ascontiguousarray(vt[:d].T, dtype=np.float32)
            else:
                self._proj_mean = self._proj = None
            self._bank = self._project(stored.astype(np.float32))
            self._bank_targets = T[idx].copy()
        else:
            self._bank = self._bank_targets = None
            self._proj_mean = self._proj = None

    def _project(self, E: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Vectors in the vote's space: centred, projected, unit length (or as given)."""
        if self._proj is None or self._proj_mean is None:
            return np.ascontiguousarray(E, dtype=np.float32)
        Z = (E.astype(np.float32) - self._proj_mean) @ self._proj
        norms = np.linalg.norm(Z, axis=1, keepdims=True)
        out: npt.NDArray[np.float32] = np.ascontiguousarray(Z / np.maximum(norms, 1e-12))
        return out

    # -- predict ------------------------------------------------------------------
    def predict(self, items: Sequence[RouteInput]) -> FloatArray:
        """Per-tier P(good enough), shape ``(len(items), n_tiers)``."""
        return self.predict_encoded(self.encode(items))

    async def apredict(self, items: Sequence[RouteInput]) -> FloatArray:
        return self.predict_encoded(await self.aencode(items))

    def predict_embeddings(
        self, embeddings: npt.ArrayLike, items: Sequence[RouteInput]
    ) -> FloatArray:
        """Probabilities from vectors the caller already has (no embedding call).

        Args:
            embeddings: unit vectors of :meth:`texts` of ``items``, ``(n, dim)``.
            items: the requests (their features are extracted here).
        """
        return self.predict_encoded(self.encode(items, embeddings=embeddings))

    def predict_encoded(self, enc: Encoded) -> FloatArray:
        n_tiers = self.n_tiers
        if enc.embeddings is None:
            raise ConfigurationError("the learned classifier needs embeddings to predict")
        E = enc.embeddings
        logits: list[FloatArray] = []
        if self.method != "knn":
            F = enc.feature_array if self._feat_mean is not None else None
            assert self._coef is not None and self._intercept is not None
            logits.append(self._design(E, F) @ self._coef.T + self._intercept)
        if self.method != "logistic":
            logits.append(_logit(self._vote(E)))
        z = logits[0] if len(logits) == 1 else (logits[0] + logits[1]) / 2.0
        out = probabilities_from_relative(_sigmoid(z))
        assert out.shape[1] == n_tiers
        return out

    def _vote(self, E: npt.NDArray[np.float32]) -> FloatArray:
        """Similarity-weighted mean target of the nearest stored prompts, shrunk to the prior."""
        assert self._bank is not None and self._bank_targets is not None
        assert self._prior is not None
        Q = self._project(E)
        m = len(self._bank)
        sims = np.empty((len(Q), m), dtype=np.float32)  # cosine: rows are unit length
        for start in range(0, m, _BLOCK):
            sims[:, start : start + _BLOCK] = Q @ self._bank[start : start + _BLOCK].T
        k = min(self.k, m)
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sims, idx, axis=1).astype(np.float64)
        w = np.maximum(s, 0.0) ** 2  # the closest neighbours count most
        t = self._bank_targets[idx]  # (n, k, n_tiers - 1)
        num = (w[:, :, None] * t).sum(axis=1) + self.prior_strength * self._prior
        den = w.sum(axis=1, keepdims=True) + self.prior_strength
        out: FloatArray = num / np.maximum(den, 1e-12)
        return out

    def _design(self, E: npt.NDArray[np.float32], F: FloatArray | None) -> FloatArray:
        X = E.astype(np.float64)
        if F is None or self._feat_mean is None or self._feat_scale is None:
            return X
        Fs = (F - self._feat_mean) / self._feat_scale * _FEATURE_WEIGHT
        return np.hstack([X, Fs])

    # -- persistence --------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to ``path`` (``.npz``: arrays + JSON metadata, no pickle).

        Returns:
            The path written (``.npz`` appended when missing).
        """
        n_tiers = self.n_tiers
        p = Path(path)
        if p.suffix != ".npz":
            p = p.with_name(p.name + ".npz")
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "n_tiers": n_tiers,
            "method": self.method,
            "C": self.C,
            "k": self.k,
            "prior_strength": self.prior_strength,
            "knn_dims": self.knn_dims,
            "use_features": self.use_features,
            "max_neighbors": self.max_neighbors,
            "seed": self.seed,
            "feature_names": list(FEATURE_NAMES),
        }
        arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta))}
        for name in _STATE:
            value = getattr(self, f"_{name}")
            if value is not None:
                arrays[name] = value
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("wb") as fh:
            np.savez_compressed(fh, **arrays)
        return p

    @classmethod
    def load(
        cls,
        path: str | Path,
        embedder: Embedder | None = None,
        *,
        text_fn: Callable[[RouteInput], str] = routing_text,
    ) -> LearnedClassifier:
        """Read a model written by :meth:`save` (``allow_pickle=False``: data only).

        Raises:
            ConfigurationError: missing file, or not a costopt route classifier.
        """
        p = Path(path)
        try:
            data = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            raise ConfigurationError(f"classifier file {str(p)!r} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{str(p)!r} is not a saved route classifier: {exc}") from None
        with data:
            try:
                meta = json.loads(str(data["meta"]))
            except (KeyError, ValueError):
                raise ConfigurationError(f"{str(p)!r} is not a saved route classifier") from None
            if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
                raise ConfigurationError(
                    f"{str(p)!r} is format {meta.get('format')!r} v{meta.get('version')}; "
                    f"this costopt reads {_FORMAT!r} v{_VERSION}"
                )
            if meta.get("use_features") and meta.get("feature_names") != list(FEATURE_NAMES):
                raise ConfigurationError(
                    f"{str(p)!r} was trained on a different set of request features; refit it"
                )
            clf = cls(
                embedder,
                method=meta["method"],
                C=float(meta["C"]),
                k=int(meta["k"]),
                prior_strength=float(meta["prior_strength"]),
                knn_dims=int(meta["knn_dims"]),
                use_features=bool(meta["use_features"]),
                max_neighbors=int(meta["max_neighbors"]),
                text_fn=text_fn,
                seed=int(meta["seed"]),
            )
            for name in _STATE:
                if name in data.files:
                    setattr(clf, f"_{name}", np.array(data[name]))
            clf._n = int(meta["n_tiers"])
        return clf
