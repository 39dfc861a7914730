"""The routing decision: which tier serves a request, and why.

A pure function of plain data: one row of per-tier probabilities (from any
:class:`~costopt_core.routing.classifiers.RouteClassifier`), one threshold per
non-frontier tier, and a margin. The policy, the adapters, calibration and
the benchmark all decide through this module, so a routing choice seen in
production is exactly the one calibration measured.

The rule: take the cheapest tier whose probability of being good enough
reaches its threshold. A probability that clears its threshold by less than
``margin`` is "unsure": the request goes one tier up before any call is made
(pre-call escalation; over any tier an ``inf`` threshold switched off), and the
decision says so. When no cheaper tier
qualifies, the frontier tier serves.

Cost awareness: requests differ in price (a 4,000-token prompt costs forty
times a 100-token one on every tier), so the same risk is worth taking more
readily when going up costs more. With ``cost_scale`` = this request's cost
relative to a typical one, the risk a tier may carry, ``1 - threshold``, is
multiplied by ``cost_scale``: the effective threshold is
``1 - (1 - threshold) * cost_scale``. That is the rule that maximises quality
for a given spend when the expected loss of staying cheap is ``1 - p`` and
the extra cost of going up is proportional to the request's size.
``cost_scale=1`` is the plain threshold rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from costopt_core.errors import ConfigurationError

__all__ = [
    "RouteDecision",
    "choose_tier",
    "choose_tiers",
    "effective_threshold",
    "normalize_thresholds",
]


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """One explained routing choice.

    Attributes:
        tier_index: the chosen tier's position (0 = cheapest).
        tier: the chosen tier's name, when the caller passed names.
        reason: one human-readable sentence: which probability met which
            threshold, or why the request went up.
        score: the probability that decided (the qualifying tier's, or the
            frontier's when nothing cheaper qualified).
        threshold: the threshold ``score`` was compared with (``None`` for
            the frontier fallback, which has none).
        escalate_band: the request went one tier up because the qualifying
            probability was inside the margin band.
        probabilities: the whole probability row, for logs and metadata.
        qualified_index: the tier that cleared its threshold before any
            margin escalation (``tier_index - 1`` when ``escalate_band``).
    """

    tier_index: int
    reason: str
    score: float
    threshold: float | None
    escalate_band: bool
    probabilities: tuple[float, ...]
    qualified_index: int
    tier: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (e.g. for ``response_metadata["costopt"]``)."""
        return {
            "tier_index": self.tier_index,
            "tier": self.tier,
            "reason": self.reason,
            "score": self.score,
            "threshold": self.threshold,
            "escalate_band": self.escalate_band,
            "qualified_index": self.qualified_index,
            "probabilities": list(self.probabilities),
        }


def normalize_thresholds(thresholds: Sequence[float], n_tiers: int) -> tuple[float, ...]:
    """One threshold per non-frontier tier, validated.

    Accepts ``n_tiers - 1`` thresholds, or ``n_tiers`` (the frontier's is
    ignored: the frontier always qualifies). ``inf`` (or anything above 1)
    switches a tier off; ``-inf`` always takes it.

    Raises:
        ConfigurationError: wrong count or NaN.
    """
    th = tuple(float(t) for t in thresholds)
    if len(th) == n_tiers:
        th = th[:-1]
    if len(th) != n_tiers - 1:
        raise ConfigurationError(
            f"need {n_tiers - 1} thresholds (one per non-frontier tier) for {n_tiers} tiers, "
            f"got {len(thresholds)}"
        )
    if any(math.isnan(t) for t in th):
        raise ConfigurationError(f"thresholds must not be NaN: {th}")
    return th


def _name(names: Sequence[str] | None, i: int) -> str:
    return names[i] if names is not None else f"tier {i}"


def _frontier(names: Sequence[str] | None, i: int) -> str:
    """The top tier as a reason names it ("frontier", not "frontier frontier")."""
    name = _name(names, i)
    return name if name == "frontier" else f"frontier {name}"


def effective_threshold(threshold: float, cost_scale: float = 1.0) -> float:
    """The threshold after cost scaling: ``1 - (1 - threshold) * cost_scale``."""
    if cost_scale == 1.0 or math.isinf(threshold):
        return threshold
    return 1.0 - (1.0 - threshold) * cost_scale


def choose_tier(
    probs_row: Sequence[float] | npt.NDArray[np.floating[Any]],
    thresholds: Sequence[float],
    *,
    margin: float = 0.0,
    cost_scale: float = 1.0,
    tier_names: Sequence[str] | None = None,
) -> RouteDecision:
    """Pick the cheapest sufficient tier for one request.

    Args:
        probs_row: per tier, the probability that its answer is good enough
            (cheapest first). NaN counts as "not good enough", whatever the
            threshold (``-inf`` included).
        thresholds: one per non-frontier tier (see :func:`normalize_thresholds`).
        margin: width of the "unsure" band above each threshold; a tier whose
            probability is in ``[threshold, threshold + margin)`` sends the
            request one tier up instead (the next tier switched on: an ``inf``
            threshold switches a tier off). ``0`` disables pre-call escalation.
        cost_scale: this request's cost relative to a typical one (``> 0``;
            see the module docstring). ``1`` applies the thresholds as given.
        tier_names: names for the explanation and :attr:`RouteDecision.tier`.

    Returns:
        The decision with its explanation; ``threshold`` is the effective one.

    Raises:
        ConfigurationError: fewer than two tiers, a length mismatch, a
            negative margin or a non-positive ``cost_scale``.

    Example:
        >>> d = choose_tier([0.9, 0.95, 1.0], [0.7, 0.8], margin=0.05)
        >>> d.tier_index, d.escalate_band
        (0, False)
        >>> choose_tier([0.72, 0.95, 1.0], [0.7, 0.8], margin=0.05).tier_index
        1
    """
    probs = tuple(float(p) for p in probs_row)
    n = len(probs)
    if n < 2:
        raise ConfigurationError(f"a routing decision needs >= 2 tiers, got {n} probabilities")
    if tier_names is not None and len(tier_names) != n:
        raise ConfigurationError(f"{len(tier_names)} tier names for {n} probabilities")
    if not margin >= 0:  # also rejects NaN
        raise ConfigurationError(f"margin must be >= 0, got {margin}")
    if not (cost_scale > 0 and math.isfinite(cost_scale)):
        raise ConfigurationError(f"cost_scale must be a finite number > 0, got {cost_scale}")
    th = tuple(effective_threshold(t, cost_scale) for t in normalize_thresholds(thresholds, n))
    scaled = "" if cost_scale == 1.0 else f" (scaled for a request {cost_scale:.2f}x typical size)"

    for i, thr in enumerate(th):
        p = probs[i]
        if math.isnan(p) or p < thr:
            continue
        if p < thr + margin:
            up = _next_on(th, i)
            reason = (
                f"unsure: P({_name(tier_names, i)} good enough)={p:.3f} is within margin "
                f"{margin:g} of its threshold {thr:.3f}{scaled}; escalated one tier up to "
                f"{_name(tier_names, up)} before the call"
            )
            return RouteDecision(
                tier_index=up,
                tier=_name(tier_names, up) if tier_names is not None else None,
                reason=reason,
                score=p,
                threshold=thr,
                escalate_band=True,
                probabilities=probs,
                qualified_index=i,
            )
        skipped = _skipped(probs, th, i, tier_names)
        reason = f"P({_name(tier_names, i)} good enough)={p:.3f} >= threshold {thr:.3f}{scaled}"
        if skipped:
            reason += f"; passed over {skipped}"
        return RouteDecision(
            tier_index=i,
            tier=_name(tier_names, i) if tier_names is not None else None,
            reason=reason,
            score=p,
            threshold=thr,
            escalate_band=False,
            probabilities=probs,
            qualified_index=i,
        )

    last = n - 1
    skipped = _skipped(probs, th, last, tier_names)
    return RouteDecision(
        tier_index=last,
        tier=_name(tier_names, last) if tier_names is not None else None,
        reason=f"no cheaper tier reached its threshold ({skipped}){scaled}; "
        f"{_frontier(tier_names, last)} serves",
        score=probs[last],
        threshold=None,
        escalate_band=False,
        probabilities=probs,
        qualified_index=last,
    )


def _next_on(thresholds: Sequence[float], i: int) -> int:
    """The first tier above tier ``i`` that is switched on (threshold not ``+inf``),
    or the frontier (index ``len(thresholds)``): where an unsure request goes."""
    return next(
        (j for j in range(i + 1, len(thresholds)) if thresholds[j] != math.inf), len(thresholds)
    )


def _skipped(
    probs: tuple[float, ...], th: tuple[float, ...], upto: int, names: Sequence[str] | None
) -> str:
    """``"cheap 0.41 < 0.60, mid 0.55 < 0.70"`` for the tiers passed over."""
    return ", ".join(f"{_name(names, j)} {probs[j]:.3f} < {th[j]:.3f}" for j in range(upto))


def choose_tiers(
    probs: npt.NDArray[np.floating[Any]],
    thresholds: Sequence[float],
    *,
    margin: float = 0.0,
    cost_scale: npt.ArrayLike | float = 1.0,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """:func:`choose_tier` for many rows at once (calibration, benchmarks).

    Same rule, vectorised: returns the chosen tier per row and whether the
    margin band escalated it. Row ``i`` equals
    ``choose_tier(probs[i], thresholds, margin=margin, cost_scale=s[i]).tier_index``.

    Args:
        probs: shape ``(n, n_tiers)``.
        thresholds: one per non-frontier tier.
        margin: width of the unsure band.
        cost_scale: one per row, or one for all.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ConfigurationError(f"probs must have shape (n, n_tiers >= 2), got {p.shape}")
    if not margin >= 0:
        raise ConfigurationError(f"margin must be >= 0, got {margin}")
    n_tiers = p.shape[1]
    base = np.asarray(normalize_thresholds(thresholds, n_tiers), dtype=np.float64)
    s = np.broadcast_to(np.asarray(cost_scale, dtype=np.float64), (len(p),))
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ConfigurationError("cost_scale must be finite and > 0")
    with np.errstate(invalid="ignore"):
        # inf thresholds stay inf (tier off); finite ones are scaled per row.
        # A scale of 1 keeps the threshold as given, as the scalar rule does:
        # 1 - (1 - t) would round tiny thresholds to 0.
        scaled = 1.0 - (1.0 - base)[None, :] * s[:, None]
        keep = np.isinf(base)[None, :] | (s[:, None] == 1.0)
        th = np.where(keep, base[None, :], scaled)
    # NaN compares False with every threshold, -inf included: a NaN probability
    # never qualifies, as in choose_tier (mapping it to -inf would pass a -inf one).
    ok = p[:, :-1] >= th  # (n, n_tiers - 1)
    # The first qualifying tier, or the frontier when none does.
    qualified = np.where(ok.any(axis=1), ok.argmax(axis=1), n_tiers - 1)
    band = np.zeros(len(p), dtype=bool)
    if margin > 0:
        rows = np.flatnonzero(qualified < n_tiers - 1)
        q = qualified[rows]
        band[rows] = p[rows, q] < th[rows, q] + margin
    # One tier up, over any the thresholds switched off (inf stays inf when scaled).
    listed = base.tolist()
    up = np.array([_next_on(listed, i) for i in range(n_tiers)], dtype=np.int64)
    chosen = np.where(band, up[qualified], qualified)
    return chosen.astype(np.int64), band
