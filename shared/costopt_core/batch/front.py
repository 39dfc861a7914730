"""``BatchFront``: what a framework's batch front-end does besides translating.

A LangChain runnable and a LlamaIndex runner both put a model behind
``BatchJob``: they check the same settings, pick the provider's batch API
from the model (or run it locally), name each request's parameters as the
provider's API names them, generate job names, reattach to stored jobs and
close what they built. That is one piece of code here; an adapter subclasses
:class:`BatchFront` and supplies only the framework part: which provider its
model belongs to, the model's SDK clients and answer-changing fields, and how
to call the model itself for the local provider.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costopt_core.batch.anthropic_provider import AnthropicBatchProvider
from costopt_core.batch.job import BatchJob, BatchJobConfig
from costopt_core.batch.local import LocalBatchProvider
from costopt_core.batch.openai_provider import OpenAIBatchProvider
from costopt_core.batch.provider import BatchProvider, BatchRequest, BatchResult
from costopt_core.batch.queue import BatchQueue
from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import BatchError, ConfigurationError, config_error

__all__ = [
    "MODEL_FIELDS",
    "PROVIDER_NAMES",
    "BatchFront",
    "BatchFrontSettings",
    "ProviderName",
    "call_params",
    "check_inputs",
    "check_json",
    "each_request",
    "model_params",
    "request_ids",
    "with_errors",
]

#: Which batch API requests go to; ``local`` runs the wrapped model itself.
ProviderName = Literal["openai", "anthropic", "local"]
PROVIDER_NAMES: tuple[str, ...] = ("openai", "anthropic", "local")
_MAX_TOKENS_KEY: dict[str, str] = {"openai": "max_completion_tokens", "anthropic": "max_tokens"}
_STOP_KEY: dict[str, str] = {"openai": "stop", "anthropic": "stop_sequences"}


class BatchFrontSettings(BaseModel):
    """The checked knobs of a batch front-end (``ConfigurationError`` when out of range)."""

    # Seconds are finite: an infinite wait or TTL overflows the timers that use it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    poll_interval_s: float | None = Field(None, gt=0.0)
    timeout_s: float | None = Field(None, gt=0.0)
    max_attempts: int = Field(3, ge=1, le=100)
    max_concurrency: int = Field(8, ge=1, le=1024)
    job_prefix: str = Field("costopt", min_length=1, max_length=64, pattern=r"^[\w.-]+$")


#: Model settings that change the answer, by the API's name: a batch request
#: carries each one the model sets. Scalars, and mappings such as ``logit_bias``,
#: ``reasoning`` (OpenAI Responses form) and ``thinking`` (Anthropic) go as they
#: are, or in the provider's batch form (:func:`model_params`). ``service_tier``,
#: ``n``, ``logprobs`` and the like are not among them: they change the price, the
#: number or the extras of answers, which the batch API and the job set themselves.
MODEL_FIELDS: tuple[str, ...] = (
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "reasoning_effort",
    "reasoning",
    "verbosity",
    "thinking",
    "effort",
)
#: Keys of a model's extra keywords that a batch request must not carry: the batch
#: API streams nothing and picks its own service tier; model and messages are the
#: request's.
_BATCH_OWN = frozenset({"stream", "stream_options", "service_tier", "model", "messages"})


def _stop_list(stop: Any) -> list[Any]:
    return [stop] if isinstance(stop, str) else list(stop)


def _field_value(value: Any) -> Any:
    """A model field's value as request data: a number, a string or a mapping, else ``None``."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    return None


def _provider_form(params: dict[str, Any], provider: str) -> dict[str, Any]:
    """``params`` with the settings ``provider``'s batch endpoint names otherwise renamed.

    OpenAI batches Chat Completions, which takes ``reasoning_effort`` where the
    Responses API takes ``reasoning={"effort": ...}``; Anthropic takes the
    ``effort`` of a LangChain ``ChatAnthropic`` as ``output_config.effort``.
    """
    if provider == "openai" and isinstance(params.get("reasoning"), Mapping):
        reasoning = params.pop("reasoning")
        effort = reasoning.get("effort")
        if effort is not None:
            params.setdefault("reasoning_effort", effort)
    if provider == "anthropic" and isinstance(params.get("effort"), str):
        config = params.get("output_config")
        config = dict(config) if isinstance(config, Mapping) else {}
        config["effort"] = params.pop("effort")
        params["output_config"] = config
    return params


def model_params(
    model: object,
    provider: str,
    fields: Sequence[str] | Mapping[str, str] = MODEL_FIELDS,
    *,
    extra: str | Sequence[str],
    stop: bool = False,
) -> dict[str, Any]:
    """A model object's answer-changing fields, named as ``provider``'s API names them.

    Args:
        model: the framework's model; read with ``getattr`` only.
        provider: ``openai``, ``anthropic`` or another provider's name.
        fields: fields sent under their own name (``temperature``...), or a
            mapping of a field to the API's name for it (``{"thinking_dict":
            "thinking"}``); numbers, strings and mappings are sent, other
            values left out.
        extra: the field(s) holding extra API keywords (``model_kwargs``,
            ``extra_body``...), merged last, in order, every key kept but those
            the batch API sets itself (``stream``, ``service_tier``...).
        stop: also read ``stop`` / ``stop_sequences``.
    """
    params: dict[str, Any] = {}
    names = fields.items() if isinstance(fields, Mapping) else ((f, f) for f in fields)
    for attr, name in names:
        value = _field_value(getattr(model, attr, None))
        if value is not None:
            params[name] = value
    max_tokens = getattr(model, "max_tokens", None)
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        params[_MAX_TOKENS_KEY.get(provider, "max_tokens")] = max_tokens
    if stop:
        words = getattr(model, "stop", None) or getattr(model, "stop_sequences", None)
        if words:
            params[_STOP_KEY.get(provider, "stop")] = _stop_list(words)
    for attr in [extra] if isinstance(extra, str) else extra:
        more = getattr(model, attr, None)
        if isinstance(more, Mapping):
            params.update((k, v) for k, v in more.items() if k not in _BATCH_OWN)
    return _provider_form(params, provider)


def call_params(kwargs: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """Call-time keywords (``stop``, ``max_tokens``...) for ``provider``'s API."""
    params = {k: v for k, v in kwargs.items() if v is not None}
    if provider in _STOP_KEY and "stop" in params:
        params[_STOP_KEY[provider]] = _stop_list(params.pop("stop"))
    if provider == "openai" and "max_tokens" in params:
        params["max_completion_tokens"] = params.pop("max_tokens")
    return params


def check_json(params: Mapping[str, Any], hint: str = "") -> None:
    """Raise ``ConfigurationError`` naming the first parameter that is not JSON data.

    The queue stores requests as JSON, so such a parameter cannot be queued.
    """
    for key, value in params.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"batch request parameter {key}={value!r} is not JSON data, so it cannot be "
                f"queued; pass it in the provider's JSON form{hint}"
            ) from None


def check_inputs(inputs: Any, method: str, example: str) -> None:
    """Refuse a single input where a batch method takes a list of them.

    A string is a sequence: taken as the list, it would send one billed
    request per character.

    Raises:
        ConfigurationError: ``inputs`` is a string, or not a list-like of inputs.
    """
    if isinstance(inputs, str | bytes) or not isinstance(inputs, Sequence):
        raise ConfigurationError(
            f"{method} takes a list of inputs, one per request, got "
            f"{type(inputs).__name__} {inputs!r:.60}; wrap a single one: {example}"
        )


def each_request(
    inputs: Sequence[Any],
    make: Callable[[str, Any], BatchRequest],
    errors: dict[int, Exception] | None = None,
) -> list[BatchRequest]:
    """``make(request_id, input)`` for every input, ids in input order.

    With ``errors``, an input ``make`` refuses (``ConfigurationError``) is left
    out and its error noted there by index, so one bad input does not fail
    the others (``return_exceptions``); without, the first refusal is raised.
    """
    out: list[BatchRequest] = []
    for k, (rid, value) in enumerate(zip(request_ids(len(inputs)), inputs, strict=True)):
        try:
            out.append(make(rid, value))
        except ConfigurationError as exc:
            if errors is None:
                raise
            errors[k] = exc
    return out


def with_errors(answers: Sequence[Any], errors: Mapping[int, Exception]) -> list[Any]:
    """The answers of the inputs that made requests, each refused input's error in its place."""
    it = iter(answers)
    return [errors[k] if k in errors else next(it) for k in range(len(answers) + len(errors))]


def request_ids(n: int) -> list[str]:
    """Ids for ``n`` requests that sort in input order (``"00"`` ... ``"41"``)."""
    width = len(str(max(n - 1, 0)))
    return [f"{i:0{width}d}" for i in range(n)]


class BatchFront(ABC):
    """Settings, provider choice, request parameters and jobs of a batch front-end.

    Args:
        provider: a ``BatchProvider``, or ``"openai"`` / ``"anthropic"`` /
            ``"local"``; ``None`` picks from the model (:meth:`_default_provider_name`).
        queue_path: SQLite file of the durable queue; in memory if omitted.
        engine: the engine that prices and records the answers.
        poll_interval_s: wait between polls; the provider's own if omitted.
        timeout_s: how long a wait lasts before ``BatchError``; ``None``: for good.
        max_attempts: submissions of one request in all.
        max_concurrency: requests running at once with the local provider.
        progress: show a tqdm bar while waiting.
        tenant: tenant of every request.
        record: record answers in the engine's ledger.
        job_prefix: prefix of generated job names.

    Raises:
        ConfigurationError: a setting is out of range, or the provider name unknown.
    """

    #: The ledger's ``framework`` label of the jobs.
    framework: ClassVar[str]

    def __init__(
        self,
        *,
        provider: BatchProvider | str | None,
        queue_path: str | Path | None,
        engine: CostEngine | None,
        poll_interval_s: float | None,
        timeout_s: float | None,
        max_attempts: int,
        max_concurrency: int,
        progress: bool,
        tenant: str | None,
        record: bool,
        job_prefix: str,
    ) -> None:
        try:
            self.settings = BatchFrontSettings(
                poll_interval_s=poll_interval_s,
                timeout_s=timeout_s,
                max_attempts=max_attempts,
                max_concurrency=max_concurrency,
                job_prefix=job_prefix,
            )
        except ValidationError as exc:
            raise config_error(type(self).__name__, exc) from None
        if isinstance(provider, str) and provider not in PROVIDER_NAMES:
            raise ConfigurationError(
                f"provider={provider!r} is unknown; use one of {list(PROVIDER_NAMES)} or pass a "
                "BatchProvider"
            )
        self._provider_arg = provider
        self._provider: BatchProvider | None = provider if not isinstance(provider, str) else None
        self.queue = BatchQueue(":memory:" if queue_path is None else queue_path)
        self.engine = engine
        self._job_config = BatchJobConfig(
            max_attempts=max_attempts, poll_interval_s=poll_interval_s
        )
        self.progress = progress
        self.tenant = tenant
        self.record = record

    # -- what the adapter supplies ------------------------------------------
    @abstractmethod
    def _default_provider_name(self) -> str:
        """Where the model's requests go when no provider was given."""

    @abstractmethod
    def _sdk_clients(self, kind: str) -> dict[str, Any]:
        """Keywords for the ``kind`` (``openai``/``anthropic``) provider: the model's clients."""

    @abstractmethod
    def _model_params(self, kind: str) -> dict[str, Any]:
        """The model's answer-changing fields for provider ``kind`` (see :func:`model_params`)."""

    @abstractmethod
    def _local_chat(self, request: BatchRequest) -> BatchResult:
        """Run ``request`` through the model itself (local provider)."""

    @abstractmethod
    async def _local_achat(self, request: BatchRequest) -> BatchResult:
        """Async twin of :meth:`_local_chat`."""

    # -- provider -----------------------------------------------------------
    @property
    def timeout_s(self) -> float | None:
        """How long a wait lasts by default (``None``: for good)."""
        return self.settings.timeout_s

    @property
    def provider_name(self) -> str:
        """``openai``, ``anthropic``, ``local`` or a custom provider's ``name``."""
        if self._provider is not None:
            return self._provider.name
        if isinstance(self._provider_arg, str):
            return self._provider_arg
        return self._default_provider_name()

    @property
    def _runs_model_itself(self) -> bool:
        """True when requests go to the local provider built around the wrapped model."""
        return self._provider_arg in (None, "local") and self.provider_name == "local"

    @property
    def provider(self) -> BatchProvider:
        """The batch provider (built on first use: building an SDK client is I/O-free
        but needs the SDK installed)."""
        if self._provider is None:
            self._provider = self._build_provider(self.provider_name)
        return self._provider

    def _build_provider(self, kind: str) -> BatchProvider:
        if kind == "openai":
            return OpenAIBatchProvider(**self._sdk_clients(kind))
        if kind == "anthropic":
            return AnthropicBatchProvider(**self._sdk_clients(kind))
        # No retries of its own: the job's max_attempts is the one retry budget (each
        # attempt one model call; only transient errors are submitted again).
        return LocalBatchProvider(
            self._local_chat,
            achat=self._local_achat,
            max_concurrency=self.settings.max_concurrency,
            max_retries=0,
        )

    # -- requests -----------------------------------------------------------
    def _request_params(
        self, call: Mapping[str, Any], local: Mapping[str, Any] | None = None, hint: str = ""
    ) -> dict[str, Any]:
        """The parameters of one request: call-time ``call`` keywords over the model's own.

        The local provider calls the model itself, which applies its own
        fields, so only ``call`` (and the ``local`` extras it reads) go then.
        """
        kind = self.provider_name
        if self._runs_model_itself:
            params = {k: v for k, v in call.items() if v is not None}
            params.update(local or {})
        else:
            params = {**self._model_params(kind), **call_params(call, kind)}
        check_json(params, hint)
        return params

    # -- jobs ---------------------------------------------------------------
    def _engine(self) -> CostEngine:
        return self.engine if self.engine is not None else current_engine()

    def _job(self, name: str, engine: CostEngine | None = None) -> BatchJob:
        return BatchJob(
            self.provider,
            self.queue,
            name=name,
            engine=engine if engine is not None else self._engine(),
            config=self._job_config,
            framework=self.framework,
            record=self.record,
        )

    def _new_job(
        self, name: str | None, engine: CostEngine | None = None, *, kind: str = ""
    ) -> BatchJob:
        """A job under ``name`` (generated, with ``kind`` in it, if ``None``).

        Raises:
            BatchError: the queue file already holds a job of that name.
        """
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigurationError(
                f"job_name must be a non-empty string, got {name!r}; leave it out to have "
                "one generated"
            )
        if name is None:
            infix = f"-{kind}" if kind else ""
            name = f"{self.settings.job_prefix}{infix}-{uuid.uuid4().hex[:16]}"
        job = self._job(name, engine)
        # Made now, not at the first request queued: handle(name) then gives back a
        # job with nothing submitted yet, and its kind whatever it is named.
        if not self.queue.add_job(name, now=job.clock(), kind=kind or None):
            raise BatchError(
                f"batch job {name!r} already exists in {self.queue!r}; pick another name, or "
                f"reattach to it with {type(self).__name__}.handle(name)"
            )
        return job

    def _stored_job(self, name: str) -> tuple[BatchJob, list[str], list[str]]:
        """A job submitted earlier in the queue file, its request ids and their models.

        Raises:
            BatchError: the queue file holds no job of that name.
        """
        if name not in self.queue.jobs():
            raise BatchError(
                f"no batch job {name!r} in {self.queue!r}; known jobs: {self.queue.jobs()}"
            )
        stored = self.queue.stored(name)
        return self._job(name), [s.id for s in stored], [s.request.model for s in stored]

    def jobs(self) -> list[str]:
        """Names of the jobs in the queue file."""
        return self.queue.jobs()

    def close(self) -> None:
        """Stop the local provider's worker threads (if built here) and close the queue file."""
        if isinstance(self._provider, LocalBatchProvider) and self._runs_model_itself:
            self._provider.close()
        self.queue.close()
