"""Model routing: send each request to the cheapest tier whose answer is good enough.

The decision core, framework-free and made of plain data:

- :mod:`~costopt_core.routing.tiers`: the ladder of tiers, cheap to frontier.
- :mod:`~costopt_core.routing.features`: cheap request features and the text a router embeds.
- :mod:`~costopt_core.routing.classifiers`: per-tier P(good enough) behind one seam
  (heuristic default, learned on samples).
- :mod:`~costopt_core.routing.decide`: the explained choice of one tier.
- :mod:`~costopt_core.routing.calibrate`: thresholds from labelled samples by
  cross-validation, and the labelling helper.
"""

from costopt_core.routing.calibrate import (
    CalibrationReport,
    CurvePoint,
    Judge,
    Sample,
    TierCall,
    alabel_samples,
    calibrate,
    calibrate_from_predictions,
    cost_scales,
    cross_validated_probs,
    exact_match,
    is_trainable,
    label_samples,
)
from costopt_core.routing.classifiers import (
    Encoded,
    HeuristicClassifier,
    HeuristicWeights,
    LearnedClassifier,
    RouteClassifier,
    TrainableClassifier,
    monotone,
    probabilities_from_relative,
    relative_quality_targets,
)
from costopt_core.routing.decide import (
    RouteDecision,
    choose_tier,
    choose_tiers,
    effective_threshold,
    normalize_thresholds,
)
from costopt_core.routing.features import (
    FEATURE_NAMES,
    QuestionType,
    RequestFeatures,
    RouteInput,
    as_messages,
    extract_features,
    feature_matrix,
    routing_text,
    wants_structured_output,
)
from costopt_core.routing.router import Router, RouterConfig
from costopt_core.routing.tiers import Tier, Tiers
from costopt_core.routing.validators import ValidatorConfig

__all__ = [
    "FEATURE_NAMES",
    "CalibrationReport",
    "CurvePoint",
    "Encoded",
    "HeuristicClassifier",
    "HeuristicWeights",
    "Judge",
    "LearnedClassifier",
    "QuestionType",
    "RequestFeatures",
    "RouteClassifier",
    "RouteDecision",
    "RouteInput",
    "Router",
    "RouterConfig",
    "Sample",
    "Tier",
    "TierCall",
    "Tiers",
    "TrainableClassifier",
    "ValidatorConfig",
    "alabel_samples",
    "as_messages",
    "calibrate",
    "calibrate_from_predictions",
    "choose_tier",
    "choose_tiers",
    "cost_scales",
    "cross_validated_probs",
    "effective_threshold",
    "exact_match",
    "extract_features",
    "feature_matrix",
    "is_trainable",
    "label_samples",
    "monotone",
    "normalize_thresholds",
    "probabilities_from_relative",
    "relative_quality_targets",
    "routing_text",
    "wants_structured_output",
]
