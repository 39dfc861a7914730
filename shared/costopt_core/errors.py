"""The exception tree every costopt component raises.

Third-party errors (Redis, provider SDKs, SQLite) are translated at the edge
into one of these, so callers can catch ``CostOptError`` and nothing else.
Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

    from costopt_core.batch.provider import BatchResult

__all__ = [
    "BatchError",
    "BatchFailedError",
    "BatchNotFoundError",
    "BatchRequestError",
    "BudgetExceededError",
    "CacheBackendError",
    "ConfigurationError",
    "CostOptError",
    "PricingNotFoundError",
    "RoutingError",
    "StoreError",
    "UsageFormatError",
    "check_arguments",
    "config_error",
]


class CostOptError(Exception):
    """Root of every error raised by costopt."""


class ConfigurationError(CostOptError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


#: Field-name endings whose values an error message never repeats.
_SECRET_ENDINGS = ("key", "secret", "password", "_token")


def config_error(what: str, exc: ValidationError) -> ConfigurationError:
    """``exc`` as a :class:`ConfigurationError` naming each bad field and the value given.

    Args:
        what: the object being configured, e.g. ``"RelevanceConfig"``.
        exc: pydantic's error from validating it.
    """
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if where.lower().split(".")[-1].endswith(_SECRET_ENDINGS):
            problems.append(f"{where}: {msg}")  # never echo a key or password
        else:
            problems.append(f"{where}={err['input']!r}: {msg}" if where else msg)
    return ConfigurationError(f"invalid {what}: " + "; ".join(problems))


#: Request settings a wrapper of other models does not take: they belong on the
#: model(s) it wraps (or on one call: ``model.invoke(prompt, temperature=0)``).
_MODEL_SETTINGS = frozenset(
    {
        "temperature",
        "max_tokens",
        "top_p",
        "top_k",
        "stop",
        "seed",
        "timeout",
        "max_retries",
        "model",
        "model_name",
        "n",
        "frequency_penalty",
        "presence_penalty",
        "response_format",
        "api_key",
        "base_url",
        "organization",
    }
)


def _names(model: type[BaseModel]) -> set[str]:
    """The arguments a pydantic model's constructor takes: field names and aliases."""
    names = set(model.model_fields)
    for field in model.model_fields.values():
        names.update(a for a in (field.alias, field.validation_alias) if isinstance(a, str))
    return names


def _settings_of(model: type[BaseModel]) -> dict[str, str]:
    """Setting name -> the field of ``model`` whose costopt config holds it."""
    from pydantic import BaseModel

    nested: dict[str, str] = {}
    for name, field in model.model_fields.items():
        kind = field.annotation
        for cls in (*getattr(kind, "__args__", ()), kind):
            # Only our own configs: a wrapped model's class is no config to build.
            if (
                isinstance(cls, type)
                and issubclass(cls, BaseModel)
                and cls.__module__.startswith("costopt_core.")
            ):
                for sub in _names(cls):
                    nested.setdefault(sub, f"{name}={cls.__name__}({sub}=...)")
    return nested


def _closest(name: str, candidates: list[str]) -> str | None:
    """The candidate ``name`` most likely misspells or half-names, if any."""

    def likeness(c: str) -> float:
        return difflib.SequenceMatcher(None, name, c).ratio()

    # A word of the one is the whole other: "model_name" for "model", "model"
    # for "token_model".
    parts = {p for p in name.split("_") if len(p) >= 4}
    whole = [c for c in candidates if c in parts or name in c.split("_")]
    if whole:
        return max(whole, key=likeness)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return close[0] if close else None


def check_arguments(
    what: str, given: Iterable[str], model: type[BaseModel], *, wraps_models: bool = False
) -> None:
    """Refuse constructor arguments ``model`` has no field for.

    Pydantic (and LangChain's and LlamaIndex's base classes) ignore them, so a
    misspelt setting, or a setting of a nested config passed at the top level,
    would silently keep its default.

    Args:
        what: the object being configured, e.g. ``"RouterChatModel"``.
        given: the argument names passed.
        model: the pydantic class being constructed.
        wraps_models: ``model`` wraps chat models or LLMs: a model setting
            (``top_p``, ``timeout``, ``api_key``) belongs on those.

    Raises:
        ConfigurationError: naming each unknown argument and where it belongs
            (a close field name, a nested config's field, or the wrapped models).
    """
    known = _names(model)
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    nested = _settings_of(model)
    fields = sorted(model.model_fields)
    fixes: dict[str, list[str]] = {}
    for name in unknown:
        close = _closest(name, [*fields, *nested])
        if name in nested:
            fix = f"a nested setting: pass {nested[name]}"
        elif wraps_models and name in _MODEL_SETTINGS:
            fix = "settings of the model(s) it wraps: set them on each of them"
        elif close is not None:
            fix = f"did you mean {nested.get(close, repr(close))}?"
        else:
            fix = f"it takes {', '.join(fields)}"
        fixes.setdefault(fix, []).append(repr(name))
    problems = [f"{', '.join(names)} ({fix})" for fix, names in fixes.items()]
    raise ConfigurationError(
        f"{what} got unknown argument{'s' if len(unknown) > 1 else ''} "
        f"{'; '.join(problems)}; it refuses them rather than ignore them silently"
    )


class PricingNotFoundError(CostOptError, LookupError):
    """The price catalog has no entry for a model (raised only on strict lookups)."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"no price for model {model!r}: add it with "
            f"PriceCatalog.with_overrides({{{model!r}: {{'usd_per_mtok_input': ..., "
            f"'usd_per_mtok_output': ...}}}}) or check the model name"
        )


class UsageFormatError(CostOptError, ValueError):
    """A token-usage payload could not be read (negative or non-integer counts)."""


class BudgetExceededError(CostOptError):
    """A budget with policy ``block`` would be exceeded by the next call."""

    def __init__(
        self,
        *,
        scope: str,
        limit_usd: Decimal,
        spent_usd: Decimal,
        estimate_usd: Decimal | None,
        period: str,
        reason: str | None = None,
        fix: str = "make Redis reachable, or set on_store_error='open' on the budget",
    ) -> None:
        """A refusal for being over the limit, or for ``reason`` (then ``fix`` says
        what to do: by default the shared store's, which refuses when unreachable).

        ``estimate_usd`` is None when the call could not be priced.
        """
        self.scope = scope
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.estimate_usd = estimate_usd
        self.period = period
        self.reason = reason
        if reason is not None:
            super().__init__(
                f"budget for {scope} (${limit_usd} a {period}) refused the call: {reason}; {fix}"
            )
            return
        super().__init__(
            f"budget for {scope} exceeded: spent ${spent_usd} of ${limit_usd} this {period}"
            f" (next call estimated at ${estimate_usd}); raise the limit, wait for the next"
            f" period, or use policy 'warn'"
        )


class StoreError(CostOptError):
    """A shared store (the Redis ledger) could not be read or written."""


class CacheBackendError(CostOptError):
    """A cache backend failed; the cache engine turns this into a miss.

    Args:
        *args: the message.
        unreachable: the backend could not be reached at all (a refused
            connection, a timeout): the engine then skips the rest of the
            request's backend calls instead of waiting out a timeout for each.
    """

    def __init__(self, *args: object, unreachable: bool = False) -> None:
        super().__init__(*args)
        self.unreachable = unreachable


class RoutingError(CostOptError):
    """No tier could answer the request (every tier and fallback failed)."""


class BatchError(CostOptError):
    """A batch job could not be submitted, polled or collected."""


class BatchNotFoundError(BatchError, LookupError):
    """The provider does not know a batch id (expired from its records, or a
    local batch lost with its process). The job queues the batch's requests again."""


class BatchRequestError(BatchError):
    """One request of a batch did not succeed (errored, expired or canceled).

    Batch front-ends return it in place of the answer when asked for
    exceptions (``return_exceptions=True``).

    Attributes:
        request_id: the request's id within its job.
        job: the job's name.
        status: ``errored``, ``expired`` or ``canceled``.
        retryable: whether the provider said a retry could help.
        result: the engine's result, with the provider's error payload in ``raw``.
    """

    def __init__(self, result: BatchResult, job: str) -> None:
        self.request_id = result.id
        self.job = job
        self.status = result.status
        self.retryable = result.retryable
        self.result = result
        super().__init__(
            f"batch request {result.id!r} of job {job!r} {result.status}: "
            f"{result.error or 'no reason given'}"
        )


class BatchFailedError(BatchError):
    """Some requests of a batch did not succeed; raised unless ``return_exceptions``.

    Attributes:
        job: the job's name (its answers stay in the queue file).
        failed_ids: ids of the failed requests, in input order.
        outputs: one entry per input: the framework's answer or the
            :class:`BatchRequestError`, so the answers that did come back are not lost.
    """

    def __init__(self, job: str, outputs: list[Any]) -> None:
        self.job = job
        self.outputs = outputs
        errors = [o for o in outputs if isinstance(o, BatchRequestError)]
        self.failed_ids = [e.request_id for e in errors]
        shown = ", ".join(repr(i) for i in self.failed_ids[:10])
        more = f" and {len(errors) - 10} more" if len(errors) > 10 else ""
        first = f"; first: {errors[0]}" if errors else ""
        super().__init__(
            f"{len(errors)} of {len(outputs)} requests of batch job {job!r} failed "
            f"({shown}{more}){first}. Pass return_exceptions=True to get the other answers, "
            "or read them from this error's outputs"
        )
