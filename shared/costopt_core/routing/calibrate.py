"""Calibrate a router on the user's own samples before routing is switched on.

A sample is a prompt plus, per tier, how good that tier's answer was (0/1 or
a score in [0, 1]) and optionally what it cost. :func:`calibrate` scores
every sample with a classifier it has *not* been trained on (k-fold
cross-validation for a learned classifier), tries many threshold settings,
and keeps the cheapest one whose expected quality is at least
``target_quality`` times the frontier's. The report says, before a single
request is routed, what routing will save, what quality it keeps, and how
traffic will split across tiers, together with the whole cost-quality curve
so the trade-off can be picked by eye.

The search itself (:func:`calibrate_from_predictions`) is a pure function of
arrays; it decides through :func:`~costopt_core.routing.decide.choose_tiers`,
the same rule the router applies at run time. :func:`label_samples` produces
the labels by running each tier and a judge, all injected as callables.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from costopt_core.errors import ConfigurationError
from costopt_core.pricing import PriceCatalog
from costopt_core.routing.classifiers import (
    Encoded,
    FloatArray,
    RouteClassifier,
    TrainableClassifier,
)
from costopt_core.routing.decide import RouteDecision, choose_tier, choose_tiers
from costopt_core.routing.features import RouteInput, as_messages
from costopt_core.routing.tiers import Tiers

__all__ = [
    "CalibrationReport",
    "CurvePoint",
    "Judge",
    "Sample",
    "TierCall",
    "alabel_samples",
    "as_calibration",
    "calibrate",
    "calibrate_from_predictions",
    "calibration_classifier_mismatch",
    "cost_scales",
    "cross_validated_probs",
    "exact_match",
    "is_trainable",
    "label_samples",
]


@dataclass(frozen=True)
class Sample:
    """One labelled prompt.

    Attributes:
        prompt: the request (string, messages or ``ChatRequest``).
        labels: per tier, cheapest first: 1/0 (answer acceptable or not) or a
            quality score in [0, 1].
        costs: per tier, what answering cost (USD, or any unit as long as all
            samples use it); ``None`` prices the prompt from the catalog.
    """

    prompt: RouteInput
    labels: tuple[float, ...]
    costs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class CurvePoint:
    """One operating point: thresholds and what they give on the samples.

    Attributes:
        thresholds: one per non-frontier tier (``inf`` = tier off).
        quality: mean quality of the answers routing would serve.
        cost: mean cost per request.
        quality_fraction: ``quality`` / always-frontier quality.
        cost_fraction: ``cost`` / always-frontier cost.
        tier_shares: share of requests per tier (sums to 1).
    """

    thresholds: tuple[float, ...]
    quality: float
    cost: float
    quality_fraction: float
    cost_fraction: float
    tier_shares: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": [_json_float(t) for t in self.thresholds],
            "quality": self.quality,
            "cost": self.cost,
            "quality_fraction": self.quality_fraction,
            "cost_fraction": self.cost_fraction,
            "tier_shares": list(self.tier_shares),
        }


def as_calibration(value: Any) -> Any:
    """A router's ``calibration=``: a report as it is; its dict or its file's path, read.

    For the routers' field validators: anything else is left to the field's
    own type check.
    """
    if isinstance(value, str | os.PathLike):
        return CalibrationReport.load(value)
    if isinstance(value, Mapping):
        return CalibrationReport.from_dict(value)
    return value


def calibration_classifier_mismatch(
    report: CalibrationReport, classifier_name: str | None
) -> str | None:
    """Why ``report`` does not fit a classifier called ``classifier_name``, or None.

    A report's thresholds are cut on one classifier's scores; another
    classifier's scores (the heuristic's for a learned classifier's report)
    sit elsewhere, so the thresholds would route silently wrong. The caller
    adds the fix it can offer (a CLI option, a constructor argument).

    Args:
        report: the calibration.
        classifier_name: the routing classifier's ``name``; None when it has
            none (a user's own classifier), which, like a report that records
            no classifier, cannot be checked and passes.

    Returns:
        e.g. ``"the calibration is for the 'learned' classifier, not the
        'heuristic' one"``.
    """
    if not report.classifier or classifier_name is None or report.classifier == classifier_name:
        return None
    return (
        f"the calibration is for the {report.classifier!r} classifier, "
        f"not the {classifier_name!r} one"
    )


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


@dataclass(frozen=True)
class CalibrationReport:
    """What routing with the chosen thresholds is expected to do.

    The expectations are cross-validated: each sample was scored by a
    classifier that did not see it.

    Attributes:
        tier_names: the tiers, cheapest first.
        thresholds: chosen, one per non-frontier tier; pass them (with
            ``margin`` and :meth:`cost_scale`) to ``choose_tier``.
        margin: the unsure band the thresholds were chosen with.
        target_quality: the requested fraction of frontier quality.
        reached_target: some setting other than all-frontier met the target
            (all-frontier always does).
        expected_quality: mean quality at the chosen thresholds.
        frontier_quality: mean quality of always-frontier.
        expected_cost: mean cost per request at the chosen thresholds.
        frontier_cost: mean cost per request of always-frontier.
        expected_cost_reduction: ``1 - expected_cost / frontier_cost``.
        tier_mix: share of requests per tier name.
        curve: the cost-quality Pareto front, cheapest first.
        cost_aware: thresholds are scaled by each request's size.
        reference_tokens: the typical (median) prompt size of the samples;
            ``cost_scale = tokens / reference_tokens``.
        max_cost_scale: cost scales are clipped to ``[1/max, max]``.
        n_samples: samples used.
        folds: cross-validation folds (0: the classifier was not trained).
        classifier: the classifier's name.
    """

    tier_names: tuple[str, ...]
    thresholds: tuple[float, ...]
    margin: float
    target_quality: float
    reached_target: bool
    expected_quality: float
    frontier_quality: float
    expected_cost: float
    frontier_cost: float
    expected_cost_reduction: float
    tier_mix: dict[str, float]
    curve: tuple[CurvePoint, ...]
    cost_aware: bool
    reference_tokens: float
    max_cost_scale: float
    n_samples: int
    folds: int
    classifier: str
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        # A report is read from files people edit; one the router cannot apply
        # would otherwise fail on every request instead of once, here.
        n = len(self.tier_names)
        if n < 2:
            raise ConfigurationError(
                f"a calibration report needs >= 2 tier names, got {list(self.tier_names)}: "
                "recalibrate on samples labelled for every tier"
            )
        if len(self.thresholds) not in (n - 1, n):
            raise ConfigurationError(
                f"the calibration report has {len(self.thresholds)} thresholds for the "
                f"{n} tiers {list(self.tier_names)}: give one per non-frontier tier "
                f"({n - 1}), or recalibrate"
            )
        if any(math.isnan(t) for t in self.thresholds):
            raise ConfigurationError(
                f"the calibration report's thresholds include NaN: {list(self.thresholds)}; "
                "use numbers ('inf' switches a tier off, '-inf' always takes it) or recalibrate"
            )
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ConfigurationError(
                f"the calibration report's margin must be a finite number >= 0, got "
                f"{self.margin}; use the margin it was calibrated with (0 disables the band)"
            )
        if self.cost_aware and not (
            math.isfinite(self.reference_tokens) and self.max_cost_scale >= 1
        ):
            raise ConfigurationError(
                "a cost-aware calibration report needs a finite reference_tokens and "
                f"max_cost_scale >= 1, got {self.reference_tokens} and {self.max_cost_scale}; "
                "recalibrate or set cost_aware to false"
            )

    def cost_scale(self, input_tokens: int | float) -> float:
        """The ``cost_scale`` of a request with this many prompt tokens (1 when not cost-aware)."""
        if not self.cost_aware:
            return 1.0
        return _scale(float(input_tokens), self.reference_tokens, self.max_cost_scale)

    def decide(
        self, probs_row: Sequence[float] | FloatArray, *, input_tokens: int | None = None
    ) -> RouteDecision:
        """Route one scored request with the chosen thresholds."""
        return choose_tier(
            probs_row,
            self.thresholds,
            margin=self.margin,
            cost_scale=1.0 if input_tokens is None else self.cost_scale(input_tokens),
            tier_names=self.tier_names,
        )

    def summary(self) -> str:
        """A few lines for a terminal or a log."""
        mix = ", ".join(f"{k} {v:.0%}" for k, v in self.tier_mix.items())
        th = ", ".join(f"{t:.3f}" for t in self.thresholds)
        state = "met" if self.reached_target else "only met by always-frontier"
        return (
            f"target {self.target_quality:.0%} of frontier quality: {state}\n"
            f"thresholds [{th}] (margin {self.margin:g}, cost-aware {self.cost_aware})\n"
            f"expected quality {self.expected_quality:.4f} vs frontier "
            f"{self.frontier_quality:.4f}; cost reduction {self.expected_cost_reduction:.1%}\n"
            f"tier mix: {mix}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier_names": list(self.tier_names),
            "thresholds": [_json_float(t) for t in self.thresholds],
            "margin": self.margin,
            "target_quality": self.target_quality,
            "reached_target": self.reached_target,
            "expected_quality": self.expected_quality,
            "frontier_quality": self.frontier_quality,
            "expected_cost": self.expected_cost,
            "frontier_cost": self.frontier_cost,
            "expected_cost_reduction": self.expected_cost_reduction,
            "tier_mix": dict(self.tier_mix),
            "cost_aware": self.cost_aware,
            "reference_tokens": self.reference_tokens,
            "max_cost_scale": self.max_cost_scale,
            "n_samples": self.n_samples,
            "folds": self.folds,
            "classifier": self.classifier,
            "notes": list(self.notes),
            "curve": [p.to_dict() for p in self.curve],
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CalibrationReport:
        """Read a report file written by ``costopt calibrate --out`` (:meth:`to_dict` as JSON).

        Raises:
            ConfigurationError: the file cannot be read, is not JSON, or is not
                a report (the message names the file and the fix).
        """
        p = Path(path)
        how = "write one with `costopt calibrate --out FILE`"
        try:
            data = json.loads(p.read_text("utf-8"))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the calibration file {str(p)!r} ({exc.strerror or exc}); "
                f"give the path of a report file: {how}"
            ) from None
        except ValueError as exc:  # not UTF-8, not JSON
            raise ConfigurationError(
                f"{str(p)!r} is not a calibration report ({type(exc).__name__}: {exc}); {how}"
            ) from None
        if not isinstance(data, Mapping):
            raise ConfigurationError(
                f"{str(p)!r} is not a calibration report (a JSON object); {how}"
            )
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationReport:
        """Rebuild a report written by :meth:`to_dict` (e.g. by ``costopt calibrate``).

        Raises:
            ConfigurationError: a field is missing or has the wrong type, or the
                report could not be applied (thresholds not one per non-frontier
                tier, a NaN threshold, a negative margin).
        """
        try:
            curve = tuple(
                CurvePoint(
                    thresholds=tuple(float(t) for t in p["thresholds"]),
                    quality=float(p["quality"]),
                    cost=float(p["cost"]),
                    quality_fraction=float(p["quality_fraction"]),
                    cost_fraction=float(p["cost_fraction"]),
                    tier_shares=tuple(float(x) for x in p["tier_shares"]),
                )
                for p in data.get("curve", [])
            )
            return cls(
                tier_names=tuple(str(n) for n in data["tier_names"]),
                thresholds=tuple(float(t) for t in data["thresholds"]),
                margin=float(data["margin"]),
                target_quality=float(data["target_quality"]),
                reached_target=bool(data["reached_target"]),
                expected_quality=float(data["expected_quality"]),
                frontier_quality=float(data["frontier_quality"]),
                expected_cost=float(data["expected_cost"]),
                frontier_cost=float(data["frontier_cost"]),
                expected_cost_reduction=float(data["expected_cost_reduction"]),
                tier_mix={str(k): float(v) for k, v in data["tier_mix"].items()},
                curve=curve,
                cost_aware=bool(data["cost_aware"]),
                reference_tokens=float(data["reference_tokens"]),
                max_cost_scale=float(data["max_cost_scale"]),
                n_samples=int(data["n_samples"]),
                folds=int(data["folds"]),
                classifier=str(data["classifier"]),
                notes=tuple(str(n) for n in data.get("notes", ())),
            )
        except ConfigurationError:
            raise  # the report's own check, already saying what to fix
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigurationError(
                f"not a routing calibration report ({type(exc).__name__}: {exc}); "
                "write one with CalibrationReport.to_dict or `costopt calibrate --out`"
            ) from None


# -- the pure search ------------------------------------------------------------


def _scale(tokens: float, reference: float, cap: float) -> float:
    if reference <= 0:
        return 1.0
    return float(min(cap, max(1.0 / cap, tokens / reference)))


def cost_scales(
    tokens: npt.ArrayLike, *, reference_tokens: float | None = None, max_cost_scale: float = 8.0
) -> tuple[FloatArray, float]:
    """Per-request cost scale ``tokens / reference`` (clipped), and the reference used.

    The reference defaults to the median of ``tokens``. Prompt tokens are
    known before the call, so the same scale is available at routing time.
    """
    t = np.asarray(tokens, dtype=np.float64)
    if max_cost_scale < 1:
        raise ConfigurationError(f"max_cost_scale must be >= 1, got {max_cost_scale}")
    ref = float(np.median(t)) if reference_tokens is None else float(reference_tokens)
    if ref <= 0:
        return np.ones_like(t), ref
    return np.clip(t / ref, 1.0 / max_cost_scale, max_cost_scale), ref


def _grid_size(n_free: int, budget: int) -> int:
    return max(3, int(budget ** (1.0 / n_free)))


def _candidates(z: FloatArray, size: int) -> FloatArray:
    """Risk budgets to try for one tier: up to ``size`` cuts between its observed risks.

    Each cut lies halfway between two consecutive distinct risks, never on a
    sample's own value, so which requests a budget admits does not depend on
    how the threshold arithmetic rounds. -1 admits none; the last cut, all.
    """
    u = np.unique(z[np.isfinite(z)])
    if u.size == 0:
        return np.array([-1.0])
    idx = np.unique(np.round(np.linspace(0, u.size - 1, min(size, u.size))).astype(np.int64))
    nxt = np.append(u[1:], u[-1] + 1e-6 * (1.0 + abs(u[-1])))
    return np.concatenate([[-1.0], (u[idx] + nxt[idx]) / 2.0])


def _pareto(points: list[CurvePoint]) -> list[CurvePoint]:
    """Cheapest first; each point strictly better in quality than every cheaper one."""
    out: list[CurvePoint] = []
    for p in sorted(points, key=lambda q: (q.cost, -q.quality)):
        if not out or p.quality > out[-1].quality + 1e-12:
            out.append(p)
    return out


def _thin(points: list[CurvePoint], keep: int) -> list[CurvePoint]:
    if len(points) <= keep:
        return points
    idx = np.unique(np.round(np.linspace(0, len(points) - 1, keep)).astype(int))
    return [points[i] for i in idx]


def calibrate_from_predictions(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    costs: npt.ArrayLike,
    *,
    tokens: npt.ArrayLike | None = None,
    tier_names: Sequence[str] | None = None,
    target_quality: float = 0.95,
    margin: float = 0.0,
    cost_aware: bool = True,
    max_cost_scale: float = 8.0,
    reference_tokens: float | None = None,
    safety_z: float = 0.0,
    search: Literal["path", "grid"] = "path",
    search_budget: int = 4000,
    curve_points: int = 120,
    folds: int = 0,
    classifier: str = "",
) -> CalibrationReport:
    """Choose thresholds from already-scored samples (pure).

    Args:
        probs: ``(n, n_tiers)`` per-tier P(good enough), scored out-of-sample.
        labels: ``(n, n_tiers)`` quality per tier in [0, 1].
        costs: ``(n, n_tiers)`` cost per tier.
        tokens: prompt tokens per sample (needed when ``cost_aware``).
        tier_names: names for the report (``tier 0``... by default).
        target_quality: required fraction of always-frontier quality, in (0, 1].
        margin: the unsure band the router will use (decisions are simulated with it).
        cost_aware: scale thresholds by each request's size (see ``decide``).
        max_cost_scale: clip of the cost scale.
        reference_tokens: the typical prompt size (median of ``tokens`` by default).
        safety_z: require ``mean(q - target * q_frontier)`` to clear zero by
            this many standard errors (0: the point estimate; 1.64: one-sided
            95% confidence that the target holds on traffic like the samples).
        search: ``"path"`` (default) tries settings that split traffic
            between two adjacent tiers at a time (tier ``t`` takes what it is
            sure of, ``t + 1`` the rest), walking from all-cheapest to
            all-frontier; ``"grid"`` tries every combination of per-tier
            thresholds. The grid can find three-way splits, but with a
            thousand samples and a weak classifier it mostly finds settings
            that were lucky on the samples (on RouterBench it chose curves
            that fell below single models on held-out data); the path, one
            threshold per segment, does not have that freedom. Two tiers: same.
        search_budget: about how many threshold settings to try.
        curve_points: at most this many points are kept in the reported curve.
        folds: recorded in the report.
        classifier: recorded in the report.

    Returns:
        The report; ``thresholds`` are all ``inf`` (always frontier) when no
        cheaper setting meets the target.

    Raises:
        ConfigurationError: shapes disagree, target out of range, NaN labels or
            costs, NaN or infinite probabilities.
    """
    P = np.asarray(probs, dtype=np.float64)
    Y = np.asarray(labels, dtype=np.float64)
    C = np.asarray(costs, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 2 or P.shape != Y.shape or P.shape != C.shape:
        raise ConfigurationError(
            f"probs, labels and costs must share a shape (n, n_tiers >= 2); got "
            f"{P.shape}, {Y.shape}, {C.shape}"
        )
    n, n_tiers = P.shape
    if n == 0:
        raise ConfigurationError("no samples to calibrate on")
    if np.isnan(Y).any() or np.isnan(C).any():
        raise ConfigurationError("labels and costs must not contain NaN")
    bad = ~np.isfinite(P)
    if bad.any():
        # The router never takes a tier on a NaN score; a search that did would
        # report a tier mix and cost the router can never realise.
        i, t = (int(x) for x in np.argwhere(bad)[0])
        raise ConfigurationError(
            f"probs must be finite: {int(bad.sum())} value(s) are not, the first at sample "
            f"{i}, tier {t} ({P[i, t]}); check the classifier's inputs for those samples "
            "(an empty prompt, a zero embedding) or leave them out"
        )
    if not 0 < target_quality <= 1:
        raise ConfigurationError(f"target_quality must be in (0, 1], got {target_quality}")
    names = (
        tuple(tier_names) if tier_names is not None else tuple(f"tier {i}" for i in range(n_tiers))
    )
    if len(names) != n_tiers:
        raise ConfigurationError(f"{len(names)} tier names for {n_tiers} tiers")
    if cost_aware:
        if tokens is None:
            raise ConfigurationError("cost-aware calibration needs the prompt tokens per sample")
        scale, ref = cost_scales(
            tokens, reference_tokens=reference_tokens, max_cost_scale=max_cost_scale
        )
    else:
        scale, ref = np.ones(n), float(reference_tokens or 0.0)

    q_front = float(Y[:, -1].mean())
    c_front = float(C[:, -1].mean())

    if search not in ("path", "grid"):
        raise ConfigurationError(f"search must be 'path' or 'grid', got {search!r}")
    # Risk per unit of cost for each non-frontier tier, shifted by the unsure
    # band: request i stays on tier t exactly when Z[i, t] <= r_t, the tier's
    # risk budget, with threshold = 1 - r_t (see decide.choose_tier).
    Z = (1.0 - P[:, :-1]) / scale[:, None] + margin / scale[:, None]
    d = Y - target_quality * Y[:, -1:]  # per tier: contribution to quality above target
    if search == "path":
        ev = _path_evaluations(Z, Y, C, d, search_budget)
    else:
        ev = _grid_evaluations(P, Y, C, d, Z, margin, scale, search_budget)

    # The cheapest setting whose quality clears the target (by safety_z standard errors).
    se = np.sqrt(np.maximum(ev.d_sq / n - (ev.d_sum / n) ** 2, 0.0) * n / max(n - 1, 1) / n)
    ok = ev.d_sum / n - safety_z * se >= -1e-12
    points = [
        CurvePoint(
            thresholds=ev.thresholds[i],
            quality=float(ev.quality[i]),
            cost=float(ev.cost[i]),
            quality_fraction=float(ev.quality[i]) / q_front if q_front > 0 else 1.0,
            cost_fraction=float(ev.cost[i]) / c_front if c_front > 0 else 1.0,
            tier_shares=tuple(float(x) for x in ev.shares[i]),
        )
        for i in range(len(ev.thresholds))
    ]
    best: CurvePoint | None = None
    if ok.any():
        cand = np.flatnonzero(ok)
        i_best = cand[np.lexsort((-ev.quality[cand], ev.cost[cand]))[0]]
        best = points[int(i_best)]

    frontier_point = CurvePoint(
        thresholds=tuple(math.inf for _ in range(n_tiers - 1)),
        quality=q_front,
        cost=c_front,
        quality_fraction=1.0,
        cost_fraction=1.0,
        tier_shares=tuple(0.0 if t < n_tiers - 1 else 1.0 for t in range(n_tiers)),
    )
    chosen_point = best if best is not None else frontier_point
    reached = best is not None and chosen_point.tier_shares[-1] < 1.0
    notes: list[str] = []
    if not reached:
        notes.append(
            f"no setting that uses a cheaper tier keeps {target_quality:.0%} of frontier "
            "quality on these samples; routing everything to the frontier"
        )
    if n < 200:
        notes.append(f"only {n} samples: expect the realised quality to vary by a few points")
    return CalibrationReport(
        tier_names=names,
        thresholds=chosen_point.thresholds,
        margin=margin,
        target_quality=target_quality,
        reached_target=reached,
        expected_quality=chosen_point.quality,
        frontier_quality=q_front,
        expected_cost=chosen_point.cost,
        frontier_cost=c_front,
        expected_cost_reduction=1.0 - chosen_point.cost_fraction,
        tier_mix={nm: s for nm, s in zip(names, chosen_point.tier_shares, strict=True)},
        curve=tuple(_thin(_pareto(points), curve_points)),
        cost_aware=cost_aware,
        reference_tokens=ref,
        max_cost_scale=max_cost_scale,
        n_samples=n,
        folds=folds,
        classifier=classifier,
        notes=tuple(notes),
    )


def _threshold(risk: float) -> float:
    # Risk budget -> threshold; a negative budget means "never this tier".
    return math.inf if risk < 0 else 1.0 - risk


@dataclass(frozen=True)
class _Evaluations:
    """Per threshold setting: mean quality and cost, tier shares, and sums of the
    per-request quality margin over target (for the confidence check)."""

    thresholds: list[tuple[float, ...]]
    quality: FloatArray
    cost: FloatArray
    shares: FloatArray
    d_sum: FloatArray
    d_sq: FloatArray


def _split_sums(
    v: FloatArray, order: npt.NDArray[np.intp], k: npt.NDArray[np.intp], t: int
) -> FloatArray:
    """For each ``k``: sum of ``v[., t]`` over the first ``k`` requests in ``order``
    plus ``v[., t + 1]`` over the rest."""
    gain = np.concatenate([[0.0], np.cumsum(v[order, t] - v[order, t + 1])])
    out: FloatArray = v[:, t + 1].sum() + gain[k]
    return out


def _path_evaluations(
    Z: FloatArray, Y: FloatArray, C: FloatArray, D: FloatArray, budget: int
) -> _Evaluations:
    """Adjacent-tier splits, all thresholds of a segment at once (sort + cumulative sums).

    Segment ``t``: tiers below ``t`` off, ``t`` takes the requests whose risk is
    within its budget, ``t + 1`` takes the rest.
    """
    n, n_free = Z.shape
    n_tiers = n_free + 1
    size = max(3, budget // n_free)
    ths: list[tuple[float, ...]] = []
    q_parts, c_parts, s_parts, ds_parts, dq_parts = [], [], [], [], []
    for t in range(n_free):
        order = np.argsort(Z[:, t], kind="stable")
        z_sorted = Z[order, t]
        risks = _candidates(Z[:, t], size)
        k = np.searchsorted(z_sorted, risks, side="right")  # requests kept on tier t
        k[risks < 0] = 0

        q_parts.append(_split_sums(Y, order, k, t) / n)
        c_parts.append(_split_sums(C, order, k, t) / n)
        ds_parts.append(_split_sums(D, order, k, t))
        dq_parts.append(_split_sums(D**2, order, k, t))
        sh = np.zeros((len(k), n_tiers))
        sh[:, t] = k / n
        sh[:, t + 1] = 1.0 - k / n
        s_parts.append(sh)
        for r in risks.tolist():
            ths.append(tuple([math.inf] * t + [_threshold(r)] + [-math.inf] * (n_free - t - 1)))
    return _Evaluations(
        thresholds=ths,
        quality=np.concatenate(q_parts),
        cost=np.concatenate(c_parts),
        shares=np.vstack(s_parts),
        d_sum=np.concatenate(ds_parts),
        d_sq=np.concatenate(dq_parts),
    )


def _grid_evaluations(
    P: FloatArray,
    Y: FloatArray,
    C: FloatArray,
    D: FloatArray,
    Z: FloatArray,
    margin: float,
    scale: FloatArray,
    budget: int,
) -> _Evaluations:
    """Every combination of per-tier candidate thresholds, each routed with ``choose_tiers``."""
    n, n_free = Z.shape
    size = _grid_size(n_free, budget)
    grids = [_candidates(Z[:, t], size).tolist() for t in range(n_free)]
    rows = np.arange(n)
    ths, q, c, sh, ds, dq = [], [], [], [], [], []
    for combo in itertools.product(*grids):
        th = tuple(_threshold(r) for r in combo)
        chosen, _ = choose_tiers(P, th, margin=margin, cost_scale=scale)
        d = D[rows, chosen]
        ths.append(th)
        q.append(Y[rows, chosen].mean())
        c.append(C[rows, chosen].mean())
        sh.append(np.bincount(chosen, minlength=n_free + 1) / n)
        ds.append(d.sum())
        dq.append((d**2).sum())
    return _Evaluations(ths, np.array(q), np.array(c), np.array(sh), np.array(ds), np.array(dq))


# -- cross-validation and the entry point ---------------------------------------


def is_trainable(classifier: object) -> bool:
    """True for a classifier calibration can cross-validate (``clone`` + ``fit_encoded``).

    Checked on the type, not with ``isinstance`` against the protocol: that
    would read ``n_tiers``, which an unfitted learned classifier refuses.
    """
    cls = type(classifier)
    return callable(getattr(cls, "clone", None)) and callable(getattr(cls, "fit_encoded", None))


def cross_validated_probs(
    classifier: RouteClassifier,
    enc: Encoded,
    labels: npt.ArrayLike,
    *,
    folds: int = 5,
    seed: int = 0,
) -> FloatArray:
    """Out-of-fold probabilities: each sample scored by a model not trained on it.

    A classifier that cannot be trained (the heuristic) simply scores every
    sample. A trainable one is cloned and fitted ``folds`` times.

    Raises:
        ConfigurationError: fewer samples than folds, or fewer than 2 folds.
    """
    Y = np.asarray(labels, dtype=np.float64)
    if not is_trainable(classifier):
        return classifier.predict_encoded(enc)
    trainable = cast(TrainableClassifier, classifier)
    n = len(enc)
    if folds < 2:
        raise ConfigurationError(f"folds must be >= 2, got {folds}")
    if n < folds:
        raise ConfigurationError(f"{n} samples cannot be split into {folds} folds")
    order = np.random.default_rng(seed).permutation(n)
    out = np.zeros(Y.shape, dtype=np.float64)
    for part in np.array_split(order, folds):
        train = np.setdiff1d(order, part, assume_unique=True)
        model = trainable.clone().fit_encoded(enc.take(train), Y[train])
        out[part] = model.predict_encoded(enc.take(part))
    return out


def _catalog_costs(
    tiers: Tiers, tokens: npt.NDArray[np.int64], catalog: PriceCatalog, output_tokens: int
) -> FloatArray:
    out = np.zeros((len(tokens), len(tiers)), dtype=np.float64)
    for t, tier in enumerate(tiers):
        for i, tok in enumerate(tokens.tolist()):
            c = tier.expected_cost(catalog, input_tokens=int(tok), output_tokens=output_tokens)
            if c is None:
                raise ConfigurationError(
                    f"tier {tier.name!r}: no price for {tier.primary!r}; give the samples "
                    "costs, set Tier(usd_per_mtok=...), or add the model to the catalog"
                )
            out[i, t] = float(c)
    return out


def _min_trainable_samples(folds: int) -> int:
    """The fewest samples for which ``calibrate``'s folds each train on >= 2 samples."""
    if folds < 2:
        return 2  # cross_validated_probs then names the bad ``folds`` itself
    n = 2
    # calibrate uses min(folds, n) folds; the largest fold holds ceil(n / k) samples.
    while n - -(-n // min(folds, n)) < 2:
        n += 1
    return n


def calibrate(
    samples: Sequence[Sample],
    *,
    tiers: Tiers,
    classifier: RouteClassifier,
    target_quality: float = 0.95,
    folds: int = 5,
    margin: float = 0.0,
    cost_aware: bool = True,
    catalog: PriceCatalog | None = None,
    expected_output_tokens: int = 200,
    safety_z: float = 0.0,
    fit_final: bool = True,
    search: Literal["path", "grid"] = "path",
    seed: int = 0,
) -> CalibrationReport:
    """Choose per-tier thresholds on labelled samples by cross-validation.

    Picks the setting with the lowest expected cost whose expected quality is
    at least ``target_quality`` x the always-frontier quality, measured with
    out-of-fold scores. Then, when ``fit_final``, fits ``classifier`` in place
    on all samples, so it is ready to route with ``report.thresholds``.

    Args:
        samples: labelled prompts; each has one label (and cost) per tier.
        tiers: the tiers the labels refer to, cheapest first.
        classifier: a :class:`LearnedClassifier` (cross-validated, then fitted)
            or any :class:`RouteClassifier` (used as is).
        target_quality: fraction of frontier quality to keep, in (0, 1].
        folds: cross-validation folds.
        margin: the unsure band the router will use.
        cost_aware: scale thresholds by each request's prompt size.
        catalog: prices for samples without costs (the shipped catalog by default).
        expected_output_tokens: output size assumed when pricing from the catalog.
        safety_z: see :func:`calibrate_from_predictions`.
        fit_final: fit a trainable classifier on all samples at the end.
        search: ``"path"`` or ``"grid"`` (see :func:`calibrate_from_predictions`).
        seed: fold assignment.

    Returns:
        The calibration report.

    Raises:
        ConfigurationError: no samples, label/cost rows of the wrong length,
            a classifier built for another number of tiers, unpriced tiers.
    """
    if not samples:
        raise ConfigurationError("calibrate needs at least one labelled sample")
    n_tiers = len(tiers)
    for i, s in enumerate(samples):
        if len(s.labels) != n_tiers:
            raise ConfigurationError(
                f"sample {i} has {len(s.labels)} labels for {n_tiers} tiers {list(tiers.names)}"
            )
        if s.costs is not None and len(s.costs) != n_tiers:
            raise ConfigurationError(f"sample {i} has {len(s.costs)} costs for {n_tiers} tiers")
    trainable = is_trainable(classifier)
    if trainable:
        needed = _min_trainable_samples(folds)
        if len(samples) < needed:
            raise ConfigurationError(
                f"too few samples to calibrate a trainable classifier: got {len(samples)}, "
                f"need at least {needed} (with folds={folds}, every fold's model must be "
                "fitted on >= 2 samples); label more samples, or calibrate the "
                "HeuristicClassifier, which needs no training"
            )
    if not trainable and classifier.n_tiers != n_tiers:
        raise ConfigurationError(
            f"the classifier scores {classifier.n_tiers} tiers, the ladder has {n_tiers}"
        )
    prompts = [s.prompt for s in samples]
    Y = np.array([s.labels for s in samples], dtype=np.float64)
    enc = classifier.encode(prompts)
    tokens = enc.tokens
    if all(s.costs is not None for s in samples):
        C = np.array([s.costs for s in samples], dtype=np.float64)
    elif any(s.costs is not None for s in samples):
        raise ConfigurationError("either every sample has costs or none has")
    else:
        C = _catalog_costs(tiers, tokens, catalog or PriceCatalog.default(), expected_output_tokens)
    k = min(folds, len(samples)) if trainable else 0
    if trainable:
        P = cross_validated_probs(classifier, enc, Y, folds=k, seed=seed)
    else:
        P = classifier.predict_encoded(enc)
    report = calibrate_from_predictions(
        P,
        Y,
        C,
        tokens=tokens,
        tier_names=tiers.names,
        target_quality=target_quality,
        margin=margin,
        cost_aware=cost_aware,
        safety_z=safety_z,
        search=search,
        folds=k,
        classifier=classifier.name,
    )
    if trainable and fit_final:
        cast(TrainableClassifier, classifier).fit_encoded(enc, Y)
    return report


# -- labelling --------------------------------------------------------------------

#: A tier as a callable: the answer, or the answer and what it cost.
TierCall = Callable[[RouteInput], "str | tuple[str, float | Decimal]"]
#: ``judge(prompt, answer, reference)`` -> acceptable (bool) or a score in [0, 1].
Judge = Callable[[RouteInput, str, str], "bool | float"]

_PUNCT = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


def _norm_answer(text: str) -> str:
    return _SPACES.sub(" ", _PUNCT.sub(" ", text.casefold())).strip()


def exact_match(prompt: RouteInput, answer: str, reference: str) -> bool:
    """Judge: the answer equals the reference, ignoring case, punctuation and spacing."""
    del prompt  # same signature as any judge
    return _norm_answer(answer) == _norm_answer(reference)


def _score(value: bool | float) -> float:
    v = float(value)
    if math.isnan(v) or not 0.0 <= v <= 1.0:
        raise ConfigurationError(f"a judge must return a bool or a score in [0, 1], got {value!r}")
    return v


def _split(result: str | tuple[str, float | Decimal]) -> tuple[str, float | None]:
    if isinstance(result, tuple):
        answer, cost = result
        return str(answer), float(cost)
    return str(result), None


def _build(
    prompt: RouteInput,
    results: list[tuple[str, float | None]],
    reference: str | None,
    judge: Judge,
) -> Sample:
    # Without a reference, the frontier's answer is the reference (an LLM judge
    # comparing a tier's answer with the frontier's is the usual setup).
    ref = reference if reference is not None else results[-1][0]
    labels = tuple(_score(judge(prompt, answer, ref)) for answer, _ in results)
    costs = [c for _, c in results]
    return Sample(
        prompt=prompt,
        labels=labels,
        costs=tuple(float(c) for c in costs if c is not None) if None not in costs else None,
    )


def _check_label_args(
    prompts: Sequence[RouteInput], tiers: Sequence[object], references: Sequence[str] | None
) -> None:
    if len(tiers) < 2:
        raise ConfigurationError(f"label_samples needs >= 2 tier callables, got {len(tiers)}")
    if references is not None and len(references) != len(prompts):
        raise ConfigurationError(f"{len(references)} references for {len(prompts)} prompts")
    for p in prompts:
        as_messages(p)  # validates the input kind early


def label_samples(
    prompts: Sequence[RouteInput],
    tiers: Sequence[TierCall],
    judge: Judge = exact_match,
    *,
    references: Sequence[str] | None = None,
) -> list[Sample]:
    """Label prompts by running every tier and judging each answer.

    Pure orchestration: the tier calls and the judge are injected, so this
    does no I/O of its own. Errors of a tier call propagate (a provider error
    says nothing about quality).

    Args:
        prompts: the prompts to label.
        tiers: one callable per tier, cheapest first; each returns the answer,
            or ``(answer, cost)``.
        judge: ``judge(prompt, answer, reference)`` -> bool or score in [0, 1];
            exact match by default.
        references: a reference answer per prompt; without them the frontier
            tier's answer is the reference (so the frontier labels itself 1
            under exact match).

    Returns:
        One :class:`Sample` per prompt (with costs when every tier reported one).
    """
    _check_label_args(prompts, tiers, references)
    out = []
    for i, prompt in enumerate(prompts):
        results = [_split(call(prompt)) for call in tiers]
        out.append(_build(prompt, results, None if references is None else references[i], judge))
    return out


async def alabel_samples(
    prompts: Sequence[RouteInput],
    tiers: Sequence[Callable[[RouteInput], Awaitable[str | tuple[str, float | Decimal]]]],
    judge: Judge = exact_match,
    *,
    references: Sequence[str] | None = None,
    concurrency: int = 8,
) -> list[Sample]:
    """:func:`label_samples` with async tier calls, ``concurrency`` prompts at a time."""
    _check_label_args(prompts, tiers, references)
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, prompt: RouteInput) -> Sample:
        async with sem:
            raw = await asyncio.gather(*(call(prompt) for call in tiers))
        results = [_split(r) for r in raw]
        return _build(prompt, results, None if references is None else references[i], judge)

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
