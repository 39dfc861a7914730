"""Route classifiers: per request, the probability that each tier is good enough.

One seam, :class:`RouteClassifier`, so the policy, calibration and the
benchmark treat every classifier alike. ``predict`` returns an ``(n, n_tiers)``
array whose entry ``[i, t]`` is the probability that tier ``t``'s answer to
request ``i`` is *good enough*, meaning no worse than the frontier tier's
answer. Defined that way, the frontier column is 1 by construction, and a
request every tier gets wrong does not look like one that needs the frontier
(sending it up would cost more and gain nothing).

Rows are monotone non-decreasing towards the frontier (a stronger tier is at
least as likely to be good enough): both classifiers enforce it with a
running maximum, so a threshold rule never skips a tier for a weaker one.

Two implementations:

- :class:`HeuristicClassifier` (the default; no data): request features ->
  a complexity score in [0, 1] -> per-tier probabilities.
- :class:`LearnedClassifier`: the prompt embedding from the engine's
  embedder (no provider call) plus request features, and per non-frontier
  tier a logistic regression and an embedding nearest-neighbour vote, trained
  on labelled samples. Fitting uses scikit-learn; inference is a few numpy
  products (well under a millisecond), and the model saves to a plain
  ``.npz`` (arrays + JSON metadata, no pickle) so loading runs no code.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
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
    "HeuristicClassifier",
    "HeuristicWeights",
    "LearnedClassifier",
    "RouteClassifier",
    "good_enough_targets",
    "monotone",
]

FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class RouteClassifier(Protocol):
    """Anything that scores requests per tier.

    ``predict`` returns shape ``(len(items), n_tiers)``: per tier, the
    probability that its answer is good enough (no worse than the frontier's).
    Rows should be non-decreasing towards the frontier; the last column is 1.
    ``apredict`` is the async twin, for classifiers that do I/O (embedding).
    """

    name: str

    @property
    def n_tiers(self) -> int: ...

    def predict(self, items: Sequence[RouteInput]) -> FloatArray: ...

    async def apredict(self, items: Sequence[RouteInput]) -> FloatArray: ...


def monotone(probs: FloatArray) -> FloatArray:
    """Clip to [0, 1], make each row non-decreasing (running max), frontier = 1."""
    p = np.clip(np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0), 0.0, 1.0)
    p = np.maximum.accumulate(p, axis=1)
    p[:, -1] = 1.0
    return p


def good_enough_targets(labels: npt.ArrayLike) -> FloatArray:
    """Per tier, how far its answer is from the frontier's: the training target.

    With 0/1 labels the target is 1 when the tier is at least as good as the
    frontier (``label_t >= label_frontier``); with scores in [0, 1] it is
    ``1 - max(0, score_frontier - score_t)``, a soft version of the same.

    Args:
        labels: shape ``(n, n_tiers)``, quality per tier (cheapest first).

    Returns:
        Shape ``(n, n_tiers)`` in [0, 1]; the last column is all ones.

    Raises:
        ConfigurationError: wrong shape, NaN, or values outside [0, 1].
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ConfigurationError(f"labels must have shape (n, n_tiers >= 2), got {y.shape}")
    if np.isnan(y).any() or (y < 0).any() or (y > 1).any():
        raise ConfigurationError("labels must be 0/1 or scores in [0, 1] (no NaN)")
    return 1.0 - np.maximum(0.0, y[:, -1:] - y)


# -- heuristic ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeuristicWeights:
    """How much each request trait adds to the complexity score (0 = trivial, 1 = hard).

    The defaults encode common experience rather than a fit: long prompts,
    code, math, explicit reasoning, multi-step instructions, tools and
    structured output make weaker models fail more often; short factual or
    transformation asks rarely need a frontier model. Calibration on your own
    samples then picks the thresholds that turn the score into a tier.
    """

    base: float = 0.2
    #: Added at full strength for a prompt of ``long_prompt_tokens`` or more (log scale).
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
    #: Per user turn beyond the first (context to track), capped.
    depth: float = 0.03
    depth_cap: float = 0.12
    #: Simple asks pull the score down.
    simple_bonus: float = 0.1
    #: How sharply the per-tier probability falls as complexity passes a tier's capability.
    steepness: float = 8.0


_SIMPLE_TYPES = frozenset({"factual", "transform", "yes_no"})


class HeuristicClassifier:
    """Request features -> complexity -> per-tier probability (no training data).

    Tier ``t`` of ``n`` is given a capability ``(t + 1) / n`` (the frontier 1.0)
    and ``P(t good enough) = sigmoid(steepness * (capability - complexity))``;
    the frontier column is 1. Rows are therefore increasing towards the frontier.

    Args:
        n_tiers: number of tiers (>= 2).
        weights: the scoring weights.
        max_chars: passed to feature extraction of strings (unused otherwise).

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

    def predict(self, items: Sequence[RouteInput]) -> FloatArray:
        return self.predict_features([extract_features(x) for x in items])

    async def apredict(self, items: Sequence[RouteInput]) -> FloatArray:
        # Pure CPU work of microseconds: no thread hop needed.
        return self.predict(items)


# -- learned ------------------------------------------------------------------

Method = Literal["logistic", "knn", "ensemble"]
_FORMAT = "costopt-route-classifier"
_VERSION = 1


def _sigmoid(z: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


class LearnedClassifier:
    """Prompt embedding (+ request features) -> per-tier P(good enough), fitted on samples.

    For each non-frontier tier the model combines two views of the training
    prompts: a logistic regression on the embedding and the request features
    (what kind of prompt fails), and a nearest-neighbour vote over the
    embeddings (how the most similar known prompts fared: it picks up topics
    such as a subject the cheap model is weak in). ``method`` selects one or
    the average of both in logit space.

    Nothing here calls a provider: the embedder is the engine's (local), and
    the caller may pass embeddings it already has (the semantic cache's) to
    :meth:`predict_embeddings`.

    Args:
        embedder: the shared embedder (``engine.embedder``).
        method: ``"logistic"``, ``"knn"`` or ``"ensemble"`` (default).
        C: inverse L2 strength of the logistic regressions.
        k: neighbours in the vote.
        prior_strength: pseudo-count pulling the vote towards the tier's base
            rate, so a few neighbours cannot make it certain.
        use_features: append the scaled request features to the embedding.
        max_neighbors: at most this many training prompts are kept for the
            vote (a fixed random subset beyond it), which bounds latency.
        text_fn: the text embedded for a request (:func:`routing_text`).
        seed: seed of the subsampling.
    """

    name = "learned"

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        method: Method = "ensemble",
        C: float = 0.5,
        k: int = 40,
        prior_strength: float = 4.0,
        use_features: bool = True,
        max_neighbors: int = 20_000,
        text_fn: Callable[[RouteInput], str] = routing_text,
        seed: int = 0,
    ) -> None:
        if method not in ("logistic", "knn", "ensemble"):
            raise ConfigurationError(f"method must be logistic, knn or ensemble, got {method!r}")
        if C <= 0 or k < 1 or prior_strength < 0 or max_neighbors < 1:
            raise ConfigurationError("need C > 0, k >= 1, prior_strength >= 0, max_neighbors >= 1")
        self.embedder = embedder
        self.method: Method = method
        self.C = C
        self.k = k
        self.prior_strength = prior_strength
        self.use_features = use_features
        self.max_neighbors = max_neighbors
        self.text_fn = text_fn
        self.seed = seed
        self._n: int | None = None
        # Fitted state (plain arrays, so save/load is a file of arrays).
        self._coef: FloatArray | None = None  # (n_tiers - 1, d)
        self._intercept: FloatArray | None = None  # (n_tiers - 1,)
        self._feat_mean: FloatArray | None = None
        self._feat_scale: FloatArray | None = None
        self._bank: npt.NDArray[np.float32] | None = None  # (m, dim) unit vectors
        self._bank_targets: FloatArray | None = None  # (m, n_tiers - 1)
        self._prior: FloatArray | None = None  # (n_tiers - 1,)

    # -- shape ----------------------------------------------------------------
    @property
    def n_tiers(self) -> int:
        if self._n is None:
            raise ConfigurationError("the learned classifier is not fitted: call fit() or load()")
        return self._n

    @property
    def is_fitted(self) -> bool:
        return self._n is not None

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            raise ConfigurationError(
                "LearnedClassifier needs an embedder to embed prompts: pass engine.embedder, "
                "or call predict_embeddings() with vectors you already have"
            )
        return self.embedder

    def texts(self, items: Sequence[RouteInput]) -> list[str]:
        """The texts that would be embedded for ``items``."""
        return [self.text_fn(x) for x in items]

    # -- fit ------------------------------------------------------------------
    def fit(
        self,
        items: Sequence[RouteInput],
        labels: npt.ArrayLike,
        *,
        embeddings: npt.ArrayLike | None = None,
        features: Sequence[RequestFeatures] | FloatArray | None = None,
    ) -> LearnedClassifier:
        """Train on labelled requests.

        Args:
            items: the training requests.
            labels: shape ``(n, n_tiers)``: per tier 0/1 (answer acceptable) or
                a quality score in [0, 1], cheapest tier first.
            embeddings: precomputed unit vectors for ``items`` (skips embedding).
            features: precomputed request features (skips extraction).

        Returns:
            ``self``.

        Raises:
            ConfigurationError: shapes disagree, fewer than 2 samples, bad labels.
        """
        targets = good_enough_targets(labels)
        n = len(items)
        if targets.shape[0] != n:
            raise ConfigurationError(f"{targets.shape[0]} label rows for {n} items")
        if n < 2:
            raise ConfigurationError("need at least 2 labelled samples to fit")
        E = self._vectors(items, embeddings)
        F = self._features(items, features)
        return self.fit_arrays(E, F, targets)

    def fit_arrays(
        self, E: npt.ArrayLike, F: npt.ArrayLike | None, targets: npt.ArrayLike
    ) -> LearnedClassifier:
        """Train from arrays: embeddings ``(n, dim)``, features ``(n, n_feat)`` or
        ``None``, and good-enough targets ``(n, n_tiers)`` (see :func:`good_enough_targets`)."""
        from sklearn.linear_model import LogisticRegression

        E = np.asarray(E, dtype=np.float32)
        T = np.asarray(targets, dtype=np.float64)
        n, n_tiers = T.shape
        if E.shape[0] != n:
            raise ConfigurationError(f"{E.shape[0]} embeddings for {n} target rows")
        self._n = n_tiers
        X = self._design_fit(E, None if F is None else np.asarray(F, dtype=np.float64))
        self._prior = T[:, :-1].mean(axis=0)

        coefs, intercepts = [], []
        for t in range(n_tiers - 1):
            y = T[:, t]
            if self.method == "knn":
                coefs.append(np.zeros(X.shape[1]))
                intercepts.append(float(_logit(np.array([self._prior[t]]))[0]))
                continue
            # Soft targets as two weighted copies (scikit-learn wants classes).
            X2 = np.vstack([X, X])
            y2 = np.concatenate([np.ones(n), np.zeros(n)])
            w2 = np.concatenate([y, 1.0 - y])
            keep = w2 > 0
            if len(np.unique(y2[keep])) < 2:
                # Every sample agrees: a constant model at the (clipped) base rate.
                coefs.append(np.zeros(X.shape[1]))
                intercepts.append(float(_logit(np.array([self._prior[t]]))[0]))
                continue
            lr = LogisticRegression(C=self.C, max_iter=2000)
            lr.fit(X2[keep], y2[keep], sample_weight=w2[keep])
            coefs.append(lr.coef_[0].astype(np.float64))
            intercepts.append(float(lr.intercept_[0]))
        self._coef = np.array(coefs, dtype=np.float64)
        self._intercept = np.array(intercepts, dtype=np.float64)

        if self.method != "logistic":
            idx = np.arange(n)
            if n > self.max_neighbors:
                idx = np.sort(np.random.default_rng(self.seed).choice(n, self.max_neighbors, False))
            self._bank = E[idx].astype(np.float32)
            self._bank_targets = T[idx, :-1].copy()
        else:
            self._bank = None
            self._bank_targets = None
        return self

    # -- predict ----------------------------------------------------------------
    def predict(self, items: Sequence[RouteInput]) -> FloatArray:
        """Per-tier P(good enough), shape ``(len(items), n_tiers)``."""
        E = self._embedder().embed(self.texts(items))
        return self.predict_embeddings(E, items)

    async def apredict(self, items: Sequence[RouteInput]) -> FloatArray:
        E = await self._embedder().aembed(self.texts(items))
        return self.predict_embeddings(E, items)

    def predict_embeddings(
        self,
        embeddings: npt.ArrayLike,
        items: Sequence[RouteInput] | None = None,
        *,
        features: Sequence[RequestFeatures] | FloatArray | None = None,
    ) -> FloatArray:
        """Probabilities from vectors the caller already has (no embedding call).

        Args:
            embeddings: unit vectors of :meth:`texts` of the requests, ``(n, dim)``.
            items: the requests (for their features); not needed when
                ``features`` is given or the model uses no features.
            features: precomputed request features.
        """
        n_tiers = self.n_tiers
        E = np.asarray(embeddings, dtype=np.float32)
        if E.ndim == 1:
            E = E[None, :]
        if self.use_features and features is None and items is None:
            raise ConfigurationError("this model uses request features: pass items or features")
        F = self._features(items, features) if self.use_features else None
        logits: list[FloatArray] = []
        if self.method != "knn":
            X = self._design(E, F)
            assert self._coef is not None and self._intercept is not None
            logits.append(X @ self._coef.T + self._intercept)
        if self.method != "logistic":
            logits.append(_logit(self._vote(E)))
        z = logits[0] if len(logits) == 1 else (logits[0] + logits[1]) / 2.0
        out = np.ones((E.shape[0], n_tiers), dtype=np.float64)
        out[:, :-1] = _sigmoid(z)
        return monotone(out)

    def _vote(self, E: npt.NDArray[np.float32]) -> FloatArray:
        """Similarity-weighted neighbour mean of the targets, shrunk to the prior."""
        assert self._bank is not None and self._bank_targets is not None
        assert self._prior is not None
        sims = E @ self._bank.T  # (n, m): cosine, vectors are unit length
        k = min(self.k, sims.shape[1])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sims, idx, axis=1).astype(np.float64)
        w = np.maximum(s, 0.0) ** 2  # closer neighbours count more
        t = self._bank_targets[idx]  # (n, k, n_tiers - 1)
        num = (w[:, :, None] * t).sum(axis=1) + self.prior_strength * self._prior
        den = w.sum(axis=1, keepdims=True) + self.prior_strength
        return np.asarray(num / np.maximum(den, 1e-12), dtype=np.float64)

    # -- design matrix ----------------------------------------------------------
    def _vectors(
        self, items: Sequence[RouteInput], embeddings: npt.ArrayLike | None
    ) -> npt.NDArray[np.float32]:
        if embeddings is not None:
            E = np.asarray(embeddings, dtype=np.float32)
            if E.shape[0] != len(items):
                raise ConfigurationError(f"{E.shape[0]} embeddings for {len(items)} items")
            return E
        return self._embedder().embed(self.texts(items))

    def _features(
        self,
        items: Sequence[RouteInput] | None,
        features: Sequence[RequestFeatures] | FloatArray | None,
    ) -> FloatArray | None:
        if not self.use_features:
            return None
        if features is not None:
            if isinstance(features, np.ndarray):
                return np.asarray(features, dtype=np.float64)
            return feature_matrix(list(features))
        assert items is not None
        return feature_matrix(list(items))

    def _design_fit(self, E: npt.NDArray[np.float32], F: FloatArray | None) -> FloatArray:
        if F is None or not self.use_features:
            self.use_features = self.use_features and F is not None
            self._feat_mean = self._feat_scale = None
            return E.astype(np.float64)
        self._feat_mean = F.mean(axis=0)
        scale = F.std(axis=0)
        self._feat_scale = np.where(scale > 1e-9, scale, 1.0)
        return self._design(E, F)

    def _design(self, E: npt.NDArray[np.float32], F: FloatArray | None) -> FloatArray:
        if F is None or self._feat_mean is None or self._feat_scale is None:
            return E.astype(np.float64)
        # Features are scaled to unit variance, then down-weighted so that 24
        # features do not outvote a 384-dim unit-length embedding.
        Fs = (F - self._feat_mean) / self._feat_scale * 0.1
        return np.hstack([E.astype(np.float64), Fs])

    # -- persistence ------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to ``path`` (``.npz``: arrays + JSON metadata, no pickle)."""
        n_tiers = self.n_tiers
        p = Path(path)
        if p.suffix != ".npz":
            p = p.with_suffix(p.suffix + ".npz") if p.suffix else p.with_suffix(".npz")
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "n_tiers": n_tiers,
            "method": self.method,
            "C": self.C,
            "k": self.k,
            "prior_strength": self.prior_strength,
            "use_features": self.use_features,
            "max_neighbors": self.max_neighbors,
            "seed": self.seed,
            "feature_names": list(FEATURE_NAMES),
        }
        arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta))}
        for name in (
            "coef",
            "intercept",
            "feat_mean",
            "feat_scale",
            "bank",
            "bank_targets",
            "prior",
        ):
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
            raise ConfigurationError(f"{str(p)!r} is not a saved classifier: {exc}") from None
        with data:
            try:
                meta = json.loads(str(data["meta"]))
            except (KeyError, ValueError):
                raise ConfigurationError(f"{str(p)!r} is not a saved route classifier") from None
            if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
                raise ConfigurationError(
                    f"{str(p)!r} is format {meta.get('format')!r} v{meta.get('version')}; this "
                    f"costopt reads {_FORMAT!r} v{_VERSION}"
                )
            if meta.get("feature_names") != list(FEATURE_NAMES) and meta.get("use_features"):
                raise ConfigurationError(
                    f"{str(p)!r} was trained on other request features; refit it"
                )
            clf = cls(
                embedder,
                method=meta["method"],
                C=float(meta["C"]),
                k=int(meta["k"]),
                prior_strength=float(meta["prior_strength"]),
                use_features=bool(meta["use_features"]),
                max_neighbors=int(meta["max_neighbors"]),
                text_fn=text_fn,
                seed=int(meta["seed"]),
            )
            clf._n = int(meta["n_tiers"])
            for name in (
                "coef", "intercept", "feat_mean", "feat_scale", "bank", "bank_targets", "prior",
            ):  # fmt: skip
                if name in data.files:
                    setattr(clf, f"_{name}", np.array(data[name]))
        return clf


# The fitted attributes are listed twice (save/load); keep them honest.
assert {f.name for f in fields(HeuristicWeights)} >= {"base", "steepness"}
