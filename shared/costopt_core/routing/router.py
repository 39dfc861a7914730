"""``Router``: the routing policy adapters run, as a small state machine.

The adapters' call loops (sync and async, LangChain and LlamaIndex) are a
few lines each because every decision is made here: which tier starts (the
classifier's decision, moved one tier down when a ``downshift`` budget is
running out), which model of a tier comes next after an error (retries, then
the tier's other models, then the next tier up), and whether an answer is
kept or re-asked one tier up (the validators). Each step is recorded, so the
final answer carries the whole explanation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from costopt_core.errors import ConfigurationError, RoutingError, config_error
from costopt_core.routing.calibrate import CalibrationReport, calibration_classifier_mismatch
from costopt_core.routing.decide import RouteDecision, choose_tier
from costopt_core.routing.features import extract_features
from costopt_core.routing.tiers import Tiers
from costopt_core.routing.validators import Answer, ValidatorConfig, escalation_reason
from costopt_core.types import ChatRequest, Message

if TYPE_CHECKING:
    from costopt_core.engine import CostEngine

__all__ = [
    "Attempt",
    "RouteRun",
    "Router",
    "RouterConfig",
    "Step",
    "adrive",
    "classifier_problem",
    "costliest_estimate",
    "drive",
    "reachable_estimate",
]

T = TypeVar("T")


class _Classifier(Protocol):
    def predict(self, items: Sequence[Any]) -> npt.NDArray[np.floating[Any]]: ...


class RouterConfig(BaseModel):
    """The routing policy's knobs, validated at the boundary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self).__name__, exc) from None

    thresholds: tuple[float, ...] | None = Field(
        None, description="Per non-frontier tier; None uses the classifier's defaults (0.5)."
    )
    margin: float = Field(0.05, ge=0.0, le=1.0, description="Unsure band above a threshold.")
    max_escalations: int = Field(2, ge=0, le=10, description="Re-asks after weak answers.")
    retries_per_model: int = Field(1, ge=0, le=5, description="Retries of one model on errors.")
    validate_answers: bool = Field(True, description="Check cheap answers before keeping them.")
    downshift_tiers: int = Field(
        1, ge=0, le=5, description="Tiers to step down when a downshift budget runs low."
    )
    keep_weaker_answer: bool = Field(
        True,
        description="When every tier above a re-asked answer fails (errors, timeouts), "
        "return that answer instead of raising.",
    )

    @field_validator("thresholds")
    @classmethod
    def _no_nan(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        # +-inf are a calibrated "never" / "always"; NaN compares False with every
        # probability and would silently pin the routing.
        if value is not None and any(v != v for v in value):
            raise ValueError(f"thresholds must be numbers (inf allowed), got {value!r}")
        return value


@dataclass(frozen=True)
class Attempt:
    """One model call of a routed request."""

    tier: str
    model: str
    outcome: str  # "kept", "escalated: <reason>", "error: <type>"


@dataclass(frozen=True)
class Step:
    tier_index: int
    model_index: int
    tier: str
    model: str


@dataclass
class RouteRun:
    """The state of one routed request: where it is, and how it got there."""

    router: Router
    decision: RouteDecision
    offered_tools: tuple[str, ...] = ()
    structured: bool = False
    tool_required: bool = False
    #: Tool name -> JSON schema of its arguments: calls that do not match escalate.
    tool_schemas: Mapping[str, Mapping[str, Any]] | None = None
    #: JSON schema of a structured text answer: JSON that does not match escalates.
    response_schema: Mapping[str, Any] | None = None
    tier_index: int = 0
    model_index: int = 0
    tries: int = 0
    escalations: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _current: Step | None = None
    #: The step whose answer was last re-asked one tier up.
    _weaker: Step | None = None

    def next(self) -> Step | None:
        """The next model to call, or None when every option is used up."""
        tiers = self.router.tiers
        while self.tier_index < len(tiers):
            models = tiers[self.tier_index].models
            if self.model_index < len(models):
                step = Step(
                    self.tier_index,
                    self.model_index,
                    tiers[self.tier_index].name,
                    models[self.model_index],
                )
                self._current = step
                return step
            self.tier_index += 1
            self.model_index = 0
            self.tries = 0
        return None

    def failed(self, error: BaseException) -> None:
        """The current call raised: retry it, or move to the next model / tier."""
        step = self._require()
        self.errors.append(error)
        self.attempts.append(Attempt(step.tier, step.model, f"error: {type(error).__name__}"))
        self.tries += 1
        if self.tries > self.router.config.retries_per_model:
            self.model_index += 1
            self.tries = 0

    def _escalation_left(self) -> bool:
        """Validation is on, a tier above the current one exists, escalations are left."""
        cfg = self.router.config
        last = self._require().tier_index == len(self.router.tiers) - 1
        return cfg.validate_answers and not last and self.escalations < cfg.max_escalations

    def may_escalate(self) -> bool:
        """Whether :meth:`answered` could still send the current answer one tier up.

        False means the answer is kept whatever it is, so an adapter need not
        hold a stream back to validate it (that would only add latency).
        """
        v = self.router.validators
        validates = (
            v.empty
            or v.refusal
            or v.tool_calls
            or v.structured
            or v.truncated
            or v.min_mean_logprob is not None
            or v.accept is not None
        )
        return validates and self._escalation_left()

    def answered(self, answer: Answer) -> str | None:
        """Keep the answer (None) or say why the next tier must be asked."""
        step = self._require()
        reason = None
        if self._escalation_left():
            reason = escalation_reason(
                answer,
                self.router.validators,
                offered_tools=self.offered_tools,
                structured_output=self.structured,
                tool_required=self.tool_required,
                tool_schemas=self.tool_schemas,
                response_schema=self.response_schema,
            )
        if reason is None:
            self.attempts.append(Attempt(step.tier, step.model, "kept"))
            return None
        self.attempts.append(Attempt(step.tier, step.model, f"escalated: {reason}"))
        self.escalations += 1
        self._weaker = step
        self.tier_index = step.tier_index + 1
        self.model_index = 0
        self.tries = 0
        return reason

    def kept(self) -> None:
        """The current answer is kept without validation (a stream already sent)."""
        step = self._require()
        self.attempts.append(Attempt(step.tier, step.model, "kept"))

    def keep_weaker(self) -> Step | None:
        """When no tier above answered: the step whose re-asked answer to return.

        A weaker answer (a hedge, a refusal) is what the user would have got
        without routing's second opinion; an error because the second opinion
        failed (the frontier down, rate-limited) is worse. ``None`` when no
        answer was re-asked or ``config.keep_weaker_answer`` is off: then
        :meth:`error` is raised.
        """
        step = self._weaker
        if step is None or not self.router.config.keep_weaker_answer:
            return None
        self._current = step
        self.attempts.append(Attempt(step.tier, step.model, "kept: every tier above failed"))
        return step

    def error(self) -> RoutingError:
        """The error to raise when no tier could answer."""
        tried = ", ".join(f"{a.tier}/{a.model} ({a.outcome})" for a in self.attempts) or "nothing"
        last = self.errors[-1] if self.errors else None
        err = RoutingError(
            f"no tier could answer: tried {tried}; check the models' credentials and "
            "availability, or add a fallback model to a tier"
        )
        err.__cause__ = last
        return err

    def explain(self) -> dict[str, Any]:
        """What goes on the answer's metadata: the decision and every attempt."""
        return {
            "tier": self._current.tier if self._current else None,
            "model": self._current.model if self._current else None,
            "decision": self.decision.to_dict(),
            "attempts": [dataclasses.asdict(a) for a in self.attempts],
            "escalations": self.escalations,
        }

    def _require(self) -> Step:
        if self._current is None:
            raise RuntimeError("RouteRun.next() must be called first")
        return self._current


class Router:
    """Tiers, a classifier and a policy: decides where each request goes.

    Args:
        tiers: cheap to frontier.
        classifier: per-tier probabilities that the tier is good enough; the
            heuristic classifier (no training data) when omitted.
        config: thresholds, margin, escalation and retry limits.
        validators: checks on a kept answer (see ``validators``).
        calibration: a report from ``routing.calibrate`` on the user's own
            samples: its thresholds, margin and cost-aware scaling replace
            ``config.thresholds`` and ``config.margin``.

    Raises:
        ConfigurationError: the classifier is not a classifier (a name, an
            object without ``predict``) or scores another number of tiers, the
            calibration is for other tiers or another classifier, or the
            thresholds are not one per non-frontier tier (checked here, so no
            request fails on them later).
    """

    def __init__(
        self,
        tiers: Tiers,
        *,
        classifier: _Classifier | None = None,
        config: RouterConfig | None = None,
        validators: ValidatorConfig | None = None,
        calibration: CalibrationReport | None = None,
    ) -> None:
        self.tiers = tiers
        self.config = config or RouterConfig()
        self.validators = validators or ValidatorConfig()
        if classifier is None:
            from costopt_core.routing.classifiers import HeuristicClassifier

            classifier = HeuristicClassifier(n_tiers=len(tiers))
        problem = classifier_problem(classifier, len(tiers))
        if problem is not None:
            raise ConfigurationError(problem)
        try:
            scored = getattr(classifier, "n_tiers", None)
        except ConfigurationError:
            scored = None  # not fitted yet (calibrate may fit it in place): checked then
        # A classifier for another ladder would fail every request at routing time.
        if isinstance(scored, int) and scored != len(tiers):
            raise ConfigurationError(
                f"the classifier {getattr(classifier, 'name', type(classifier).__name__)!r} "
                f"scores {scored} tiers, the router has {len(tiers)} {list(tiers.names)}: "
                f"use a classifier fitted on labels for these {len(tiers)} tiers, or "
                "configure the router with the tiers the classifier was fitted for"
            )
        self.classifier = classifier
        if calibration is not None and tuple(calibration.tier_names) != tiers.names:
            raise ConfigurationError(
                f"the calibration is for tiers {list(calibration.tier_names)}, the router has "
                f"{list(tiers.names)}: calibrate on samples labelled for these tiers"
            )
        if calibration is not None:
            name = getattr(classifier, "name", None)
            mismatch = calibration_classifier_mismatch(
                calibration, name if isinstance(name, str) else None
            )
            if mismatch is not None:
                again = (
                    "`costopt calibrate --classifier heuristic`"
                    if name == "heuristic"
                    else "calibrate(samples, tiers=..., classifier=this classifier)"
                )
                raise ConfigurationError(
                    f"{mismatch} the router uses: pass classifier= the "
                    f"{calibration.classifier!r} classifier the report was calibrated with "
                    "(e.g. the LearnedClassifier calibrate() fitted, saved with .save() and "
                    f"read back with LearnedClassifier.load()), or calibrate again with {again}"
                )
        self.calibration = calibration
        th = self.config.thresholds
        if th is not None and len(th) != len(tiers) - 1:
            raise ConfigurationError(
                f"{len(th)} thresholds for {len(tiers)} tiers: give one per non-frontier tier"
            )
        self.thresholds: tuple[float, ...] = th if th is not None else (0.5,) * (len(tiers) - 1)

    def route(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        structured: bool = False,
        budget_action: str | None = None,
    ) -> RouteDecision:
        """Where a request starts (before any call).

        Args:
            messages: the conversation.
            tools: the tools offered (``{"name": ...}`` is enough).
            structured: the request asked for structured (JSON) output.
            budget_action: ``"downshift"`` when a budget asks for cheaper tiers.
        """
        request = _request(messages, tools, structured)
        return self._decide(request, self.classifier.predict([request])[0], budget_action)

    async def aroute(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        structured: bool = False,
        budget_action: str | None = None,
    ) -> RouteDecision:
        """Async twin of :meth:`route`: the classifier's ``apredict`` is awaited.

        A learned classifier embeds the prompt; with an embedder that does I/O
        (a remote service) the sync ``predict`` would block the event loop.
        A classifier without ``apredict`` is called as in :meth:`route`.
        """
        request = _request(messages, tools, structured)
        apredict = getattr(self.classifier, "apredict", None)
        if apredict is None:
            probs = self.classifier.predict([request])
        else:
            probs = await apredict([request])
        return self._decide(request, probs[0], budget_action)

    def _decide(
        self, request: ChatRequest, probs: npt.NDArray[np.float64], budget_action: str | None
    ) -> RouteDecision:
        """The decision from the classifier's per-tier probabilities (shared by both twins)."""
        if self.calibration is not None:
            decision = self.calibration.decide(probs, input_tokens=extract_features(request).tokens)
            decision = dataclasses.replace(decision, tier=self.tiers[decision.tier_index].name)
        else:
            decision = choose_tier(
                probs, self.thresholds, margin=self.config.margin, tier_names=self.tiers.names
            )
        return self.downshift(decision) if budget_action == "downshift" else decision

    def downshift(self, decision: RouteDecision) -> RouteDecision:
        """``decision`` moved down ``config.downshift_tiers`` tiers (a budget running low).

        For a caller that learns the budget's action only after routing (it
        prices the request at the decided tier); no classifier call.
        """
        # downshift_tiers=0 turns the downshift off: the decision stays as it was
        # (and its explanation does not claim a move that did not happen).
        if decision.tier_index == 0 or self.config.downshift_tiers == 0:
            return decision
        down = max(0, decision.tier_index - self.config.downshift_tiers)
        return dataclasses.replace(
            decision,
            tier_index=down,
            tier=self.tiers[down].name,
            reason=f"{decision.reason}; budget running low: downshifted to {self.tiers[down].name}",
        )

    def start(
        self,
        decision: RouteDecision,
        *,
        offered_tools: Sequence[str] = (),
        tool_schemas: Mapping[str, Mapping[str, Any]] | None = None,
        response_schema: Mapping[str, Any] | None = None,
        structured: bool = False,
        tool_required: bool = False,
    ) -> RouteRun:
        """A run of the call loop starting at ``decision``'s tier.

        Args:
            decision: where the request starts (:meth:`route`).
            offered_tools: names of the tools bound to the request.
            tool_schemas: tool name -> JSON schema of the tool's arguments (or
                the tool definition as bound, OpenAI or Anthropic shape); a
                cheap tier's call whose arguments do not match is re-asked one
                tier up (``invalid_tool_args``). None or a tool left out: only
                "arguments are a JSON object" is checked.
            response_schema: JSON schema of a structured text answer (JSON
                mode); JSON that does not match it is re-asked one tier up
                (``invalid_structured_output``). Implies ``structured``.
            structured: the request asked for structured (JSON) output.
            tool_required: the request forced a tool call (its ``tool_choice``).

        A schema that is itself invalid turns its check off (logged at debug);
        it never fails the request.
        """
        return RouteRun(
            self,
            decision,
            offered_tools=tuple(offered_tools),
            structured=structured or response_schema is not None,
            tool_required=tool_required,
            # Copied so a caller mutating its schemas mid-run cannot change the checks.
            tool_schemas=dict(tool_schemas) if tool_schemas is not None else None,
            response_schema=response_schema,
            tier_index=decision.tier_index,
        )


def classifier_problem(classifier: object, n_tiers: int) -> str | None:
    """Why ``classifier`` cannot route (naming the value and the fix), or None.

    A name or an object without ``predict`` would otherwise be accepted and
    fail the first request with a bare ``AttributeError``.

    Args:
        classifier: what was passed as ``classifier=``.
        n_tiers: the router's number of tiers (for the suggested default).
    """
    objects = (
        f"pass a classifier object: HeuristicClassifier(n_tiers={n_tiers}) (the default: "
        "leave classifier= out), or a fitted LearnedClassifier (fitted by calibrate(), "
        "LearnedClassifier(...).fit(...), or LearnedClassifier.load(path))"
    )
    if isinstance(classifier, str):
        # Not built from the name: "learned" needs training data and an
        # embedder, and an unfitted one would fail every request.
        return f"classifier={classifier!r} is a name, not a classifier: {objects}"
    if not callable(getattr(classifier, "predict", None)):
        return (
            f"classifier={classifier!r} has no predict(requests) method: {objects}, "
            "or an object whose predict(requests) returns per-tier probabilities"
        )
    return None


def _request(
    messages: Sequence[Message], tools: Sequence[Mapping[str, Any]], structured: bool
) -> ChatRequest:
    """The request the classifier scores."""
    return ChatRequest(
        messages=tuple(messages),
        tools=tuple(dict(t) for t in tools),
        params={"response_format": "json"} if structured else {},
    )


def costliest_estimate(estimates: Iterable[Decimal | None], log: logging.Logger) -> Decimal | None:
    """The dearest of a tier's per-model cost estimates; ``None`` if none is priced.

    Any of a tier's models may answer (fallbacks), so the dearest bounds the
    request. ``estimates`` is read here, lazily, so that an error while
    estimating is logged on the adapter's ``log`` and gives ``None``: an
    estimate never fails the user's call.
    """
    try:
        listed = list(estimates)
    except Exception:
        log.exception("costopt could not estimate the cost of a routed request")
        return None
    priced = [e for e in listed if e is not None]
    return max(priced) if priced else None


def reachable_estimate(
    engine: CostEngine,
    tenant: str | None,
    estimates: Iterable[tuple[str, Decimal | None]],
    log: logging.Logger,
) -> Decimal | None:
    """What ``engine``'s budgets hold for a routed request, after the rule for unpriced models.

    ``estimates`` gives each model the request can still reach (every model of
    the chosen tier and of each tier above it: fallbacks and escalations) with
    its cost estimate, ``None`` when it has no price. Any of them may answer,
    so one with no price makes the request's cost unknown: as the cost
    handler does for a call of an unpriced model, :meth:`CostEngine.check_unpriced`
    applies the budgets covering ``tenant`` to it before any tier is called.
    A ``block`` or ``downshift`` budget refuses the request (a downshift would
    only add tiers to what it can reach); a ``warn`` budget lets it through,
    with one warning per model. Without budgets nothing is checked.

    Returns:
        The dearest priced estimate (:func:`costliest_estimate`), for
        ``check_budget``; ``None`` if none is priced, or if estimating failed
        (logged on ``log``: an estimate never fails the user's call).

    Raises:
        BudgetExceededError: a ``block`` or ``downshift`` budget covers a
            request that can reach a model with no price.
    """
    try:
        listed = list(estimates)
    except Exception:
        log.exception("costopt could not estimate the cost of a routed request")
        return None
    # Each unpriced model once, in the order the request would reach it.
    for model in dict.fromkeys(m for m, e in listed if e is None):
        engine.check_unpriced(tenant, model)
    return costliest_estimate((e for _, e in listed), log)


# An adapter's call loop is written once, as a generator over a RouteRun: it
# yields what to call (its own type: a model, an operation) and is sent the
# answer, or has the call's exception thrown in (it falls back on Exception).
# These drivers do the calls, sync or async; everything else is shared.
def drive(steps: Generator[Any, Any, T], do: Callable[[Any], Any]) -> T:
    """Run a call loop, doing each call it yields with ``do``; its return value."""
    try:
        call = next(steps)
        while True:
            try:
                result = do(call)
            except BaseException as exc:  # the loop decides: fall back, release, re-raise
                call = steps.throw(exc)
            else:
                call = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def adrive(steps: Generator[Any, Any, T], ado: Callable[[Any], Awaitable[Any]]) -> T:
    """Async twin of :func:`drive`: ``ado``'s calls are awaited."""
    try:
        call = next(steps)
        while True:
            try:
                result = await ado(call)
            except BaseException as exc:
                call = steps.throw(exc)
            else:
                call = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
