"""``RouterLLM``: one LlamaIndex LLM in front of tiers of LLMs, same policy as LangChain's.

The engine's ``Router`` decides the starting tier, the fallbacks and the
escalations; this adapter only translates LlamaIndex messages and responses
and runs the router's call loop. The answer's ``raw["costopt"]["route"]``
explains the decision; ``raw`` model and usage are those of the LLM that
answered. Discarded cheap attempts are recorded in the ledger as
``escalated`` (the cost handler records the answer itself).

When every tier is a function-calling LLM the router is one too (agents such
as ``FunctionAgent`` take it): each tier formats the tools for its own
provider, and the tool calls of an answer are read by the LLM that gave it.
``structured_predict`` and ``as_structured_llm`` mark their requests as
structured, with the output class's JSON schema, so a cheap answer in prose
or in JSON that does not fit the class goes one tier up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, cast

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.output_parsers.utils import extract_json_str
from llama_index_instrumentation.dispatcher import active_instrument_tags, instrument_tags
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from costopt_core.engine import CostEngine, current_engine
from costopt_core.errors import (
    BudgetExceededError,
    ConfigurationError,
    check_arguments,
    config_error,
)
from costopt_core.finish import finish_reason_of
from costopt_core.routing import router as routing
from costopt_core.routing.calibrate import CalibrationReport, as_calibration
from costopt_core.routing.decide import RouteDecision
from costopt_core.routing.features import requested_response_schema, wants_structured_output
from costopt_core.routing.router import Router, RouterConfig, RouteRun, Step
from costopt_core.routing.tiers import tier_members
from costopt_core.routing.validators import Answer, ValidatorConfig, forces_tool_call
from costopt_core.served import SERVED, served_outcome
from costopt_core.types import Message, Role
from costopt_core.usage import first_field
from llamaindex_costopt._structured import STRUCTURED as _STRUCTURED
from llamaindex_costopt._structured import MarksStructured
from llamaindex_costopt.handler import (
    TENANT_KEYS,
    record_tenant,
    recording_handlers,
    records_span,
    usage_of,
)

if TYPE_CHECKING:
    from llama_index.core.llms.llm import ToolSelection
    from llama_index.core.tools.types import BaseTool

# The handler's own view of which blocks record a call (read, never changed here):
# the router books its escalations where the handler books its answer.

__all__ = ["RouterLLM"]

log = logging.getLogger("costopt.llamaindex")

# A stream that ended before its first item (None could be an item).
_EMPTY: Any = object()

_ROLES: dict[str, Role] = {"system": "system", "assistant": "assistant", "tool": "tool"}


def _neutral(messages: Sequence[ChatMessage]) -> list[Message]:
    def role(r: Any) -> Role:
        return _ROLES.get(str(getattr(r, "value", r)), "user")

    return [Message(role=role(m.role), content=m.content or "") for m in messages]


def _model_of(llm: LLM) -> str:
    try:
        name = llm.metadata.model_name
    except Exception:
        name = None
    return str(name or type(llm).__name__)


#: Key of ``raw`` where the route (and a cache's marker) goes.
METADATA_KEY = "costopt"

#: Call keyword that carries ``chat_with_tools``' own arguments from
#: ``_prepare_chat_with_tools`` to the routed call, where each tier gets them
#: through its own ``*_with_tools`` method: a tier formats the tools for its
#: provider, and one tier's format is not another's.
WITH_TOOLS_KEY = "costopt_with_tools"

# Output-cap keywords a call or an LLM's fields may name (OpenAI, Anthropic,
# Gemini, local runtimes).
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")

# Answers kept to find the tier LLM that gave them (get_tool_calls_from_response).
_MAX_ANSWERERS = 256
#: Prompt settings ``predict`` applies on the LLM it is called on (the router).
_TIER_PROMPT_FIELDS = ("system_prompt", "query_wrapper_prompt")


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list | tuple) and items else None


def _tool_call(call: Any) -> dict[str, Any]:
    """One tool call as the validators read it: ``{"name", "args"}``.

    Accepts OpenAI's shape (``{"function": {"name", "arguments"}}``, as a dict
    or an SDK object), Anthropic's (``{"name", "input"}``), LlamaIndex's
    ``ToolCallBlock`` / ``ToolSelection`` (``tool_name``, ``tool_kwargs``) and
    ``{"name", "args"}`` itself. Arguments stay as given (a JSON string is
    parsed by the validator, so malformed JSON still escalates).
    """
    fn = first_field(call, "function")
    if fn is not None:
        return {"name": first_field(fn, "name"), "args": first_field(fn, "arguments")}
    name = first_field(call, "name") or first_field(call, "tool_name")
    args = None
    for key in ("args", "arguments", "input", "tool_kwargs"):
        args = first_field(call, key)
        if args is not None:
            break
    return {"name": name, "args": args}


def _tool_calls(resp: ChatResponse) -> tuple[dict[str, Any], ...]:
    msg = resp.message
    calls = list(msg.additional_kwargs.get("tool_calls") or ())
    if not calls:  # newer integrations put them in the message's blocks instead
        calls = [b for b in msg.blocks if getattr(b, "block_type", None) == "tool_call"]
    return tuple(_tool_call(c) for c in calls)


def _finish_reason(resp: ChatResponse | CompletionResponse) -> str | None:
    """Why the answer ended, wherever the integration put it (``"length"``: cut off)."""
    message = getattr(resp, "message", None)
    return finish_reason_of(
        resp.raw,
        getattr(resp, "additional_kwargs", None),
        getattr(message, "additional_kwargs", None),
    )


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(nums) / len(nums) if nums else None


def _mean_logprob(resp: ChatResponse | CompletionResponse) -> float | None:
    """Mean log-probability of the answer's tokens, when the provider returned them.

    OpenAI's raw ``choices[0].logprobs.content`` holds each sampled token's
    own log-probability; LlamaIndex's ``resp.logprobs`` keeps only each
    token's top alternatives, so there the best alternative stands in for the
    token (the same at temperature 0, never lower: it cannot escalate a
    sound answer that the exact figure would keep).
    """
    return _mean(_token_logprobs(resp))


def _token_logprobs(resp: ChatResponse | CompletionResponse) -> list[Any]:
    """The log-probabilities :func:`_mean_logprob` averages, one per token of ``resp``."""
    choice = _first(first_field(resp.raw, "choices"))
    content = first_field(first_field(choice, "logprobs"), "content")
    if isinstance(content, list | tuple) and content:
        values = [first_field(t, "logprob") for t in content]
        if _mean(values) is not None:
            return values
    per_token = resp.logprobs or []
    return [max((lp.logprob for lp in alts), default=None) for alts in per_token if alts]


def _structured_text(text: str) -> str:
    """The JSON LlamaIndex's ``PydanticOutputParser`` reads out of an answer.

    It takes the first ``{...}`` of the text (an answer in a code fence, or
    after a preamble, still parses), so that is what the validators check:
    the answer is escalated exactly when the program could not use it.
    """
    try:
        json.loads(text)
        return text
    except ValueError:
        pass
    try:
        return extract_json_str(text)
    except ValueError:
        return text  # prose: no JSON at all, the validators say so


def _answer(resp: ChatResponse | CompletionResponse, structured_text: bool = False) -> Answer:
    text = resp.message.content if isinstance(resp, ChatResponse) else resp.text
    if structured_text and text:
        text = _structured_text(text)
    return Answer(
        text=text or "",
        tool_calls=_tool_calls(resp) if isinstance(resp, ChatResponse) else (),
        mean_logprob=_mean_logprob(resp),
        finish_reason=_finish_reason(resp),
    )


def _held_answer(chunks: Sequence[Any], structured_text: bool) -> Answer:
    """A held-back stream as one answer, for the validators.

    A LlamaIndex stream's items are cumulative: the last one holds the whole
    text (and, in the integrations that stream them, the tool calls so far).
    The finish reason and the token log-probabilities are per item, though,
    and a provider's last item may be a usage-only one without either, so
    they are read across the items.
    """
    if not chunks:
        return Answer(text="")
    reasons = [r for r in map(_finish_reason, chunks) if r is not None]
    return dataclasses.replace(
        _answer(chunks[-1], structured_text),
        finish_reason=reasons[-1] if reasons else None,
        mean_logprob=_mean([lp for c in chunks for lp in _token_logprobs(c)]),
    )


def _reported(chunks: Sequence[Any]) -> Any:
    """The item of a held-back stream that reports its usage (the last, if none does).

    Providers send the usage once, at the end; the item is what a discarded
    stream is recorded from, as a discarded answer is. ``None``: no items.
    """
    for chunk in reversed(chunks):
        usage = usage_of(chunk)
        if usage.input_tokens is not None or usage.output_tokens is not None:
            return chunk
    return chunks[-1] if chunks else None


def _tool_name(tool: Any) -> str | None:
    """A bound tool's name: OpenAI / Anthropic dicts, or a LlamaIndex tool object."""
    name = first_field(first_field(tool, "function"), "name") or first_field(tool, "name")
    if name is None:
        name = first_field(first_field(tool, "metadata"), "name")
    return name if isinstance(name, str) and name else None


def _tool_schema(tool: Any) -> Mapping[str, Any] | None:
    """The JSON schema of a bound tool's arguments, when it has one.

    A LlamaIndex tool gives it from its metadata; a tool already in a
    provider's shape (an OpenAI or Anthropic dict) is passed whole, and the
    engine reads the arguments' schema out of it.
    """
    get = getattr(first_field(tool, "metadata"), "get_parameters_dict", None)
    if callable(get):
        try:
            schema = get()
        except Exception:  # a tool without a readable schema: its calls are not checked
            return None
        return schema if isinstance(schema, Mapping) else None
    return tool if isinstance(tool, Mapping) else None


def _tool_schemas(tools: Sequence[Any], names: Sequence[str | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool, name in zip(tools, names, strict=True):
        schema = _tool_schema(tool) if name else None
        if name and schema is not None:
            out[name] = schema
    return out


def _cap(source: Any) -> int | None:
    for key in _OUTPUT_CAPS:
        value = first_field(source, key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _max_output_tokens(llm: LLM, kwargs: Mapping[str, Any]) -> int:
    """The answer's token cap: the call's, else the LLM's own setting; 0 when none is named."""
    for source in (kwargs, llm, getattr(llm, "additional_kwargs", None)):
        try:
            cap = _cap(source)
        except Exception:  # a property that cannot be read names no cap
            cap = None
        if cap is not None:
            return cap
    return 0


def _ancestor(ledger: Any, of: Any) -> bool:
    """True when ``ledger`` is a parent (or further up) of the ledger ``of``."""
    parent = getattr(of, "parent", None)
    while parent is not None:
        if parent is ledger:
            return True
        parent = getattr(parent, "parent", None)
    return False


def _as_raw_dict(raw: Any) -> dict[str, Any]:
    """A copy of ``raw`` as a dict the route can be added to (model and usage kept)."""
    if isinstance(raw, Mapping):
        return dict(raw)
    dump = getattr(raw, "model_dump", None)
    if callable(dump):  # an SDK response object (OpenAI's ChatCompletion)
        try:
            dumped = dump()
        except Exception:
            dumped = None
        if isinstance(dumped, dict):
            return dumped
    out: dict[str, Any] = {}
    for key in ("model", "usage", "usage_metadata"):
        value = first_field(raw, key)
        if value is not None:
            out[key] = value
    return out


@dataclass(frozen=True)
class _Book:
    """One ledger a request's answer goes to: its budgets are read, escalations recorded."""

    engine: CostEngine
    tenant: str | None
    #: The handler of this engine books the router's answer under the router's
    #: span id, so a budget hold made under that id is released by the record.
    records_answer: bool = False


@dataclass
class _Books:
    """Every ledger of one routed request, and the budget holds made for it."""

    entries: tuple[_Book, ...]
    #: The router's span id: the call id the cost handler records the answer under.
    call_id: str | None
    held: list[_Book] = field(default_factory=list)

    def release(self) -> None:
        """Drop the holds of a request that got no answer (it spent nothing more)."""
        held, self.held = self.held, []
        for book in held:
            try:
                book.engine.release_budget(book.tenant, cast(str, self.call_id))
            except Exception:  # the hold expires by itself; the caller's error matters more
                log.exception("costopt could not release a budget hold")


@dataclass(frozen=True)
class _Plan:
    """What :meth:`Router.route` (``route``) and :meth:`Router.start` (``start``) get."""

    route: dict[str, Any]
    start: dict[str, Any]


@dataclass(frozen=True)
class _Call:
    """A tier call the call loop asks its driver for: ``call`` for an answer,
    ``collect`` a whole stream (held back), or ``open`` one and read its first item."""

    llm: LLM
    how: Literal["call", "collect", "open"]
    #: The items of a ``collect`` stream read so far: if it breaks part way,
    #: the tier has billed them, and the router records them (see ``_route``).
    read: list[Any] = field(default_factory=list)


class RouterLLM(MarksStructured, FunctionCallingLLM):
    """Routes each LlamaIndex request to the cheapest sufficient tier.

    Validators see the answer as ``RouterChatModel``'s do: tool calls in any
    integration's shape, ``finish_reason`` (a cut-off answer escalates) and
    token log-probabilities where the provider returns them. Tools passed as
    ``tools=`` (with ``tool_choice``) and ``response_format`` are read as in
    LangChain.

    Function calling: when every tier is a ``FunctionCallingLLM`` that says it
    calls functions, so does the router (``FunctionAgent``, ``predict_and_call``
    and function-calling structured programs accept it). ``chat_with_tools``
    and its stream / async twins are routed like ``chat``, and each tier
    receives the tools through its own ``chat_with_tools``, in its provider's
    format; a cheap tool call whose arguments do not fit the tool's schema is
    re-asked one tier up. ``get_tool_calls_from_response`` reads an answer
    with the LLM that gave it.

    Structured output: ``structured_predict`` (and its async and stream
    twins, and so ``as_structured_llm``) marks its requests as structured with
    the output class's JSON schema: a cheap answer in prose, or JSON that does
    not fit the class, is re-asked one tier up instead of failing the parse.
    A call's own ``response_format`` (OpenAI's ``json_schema``, a JSON schema,
    a pydantic class) is read as ``RouterChatModel`` reads it, so both routers
    escalate the same answers; a structured answer is read as LlamaIndex's
    output parser reads it (the first ``{...}``: a fenced one is kept).

    Templates: ``predict`` and the query engines built on it apply the
    router's own ``system_prompt`` and ``query_wrapper_prompt``. Left unset,
    the router takes them from its tiers when every tier has the same one; a
    tier's own is not applied through the router otherwise (as ``chat`` never
    applies them), and tiers that disagree get a warning at construction.
    Each tier applies its own ``completion_to_prompt`` / ``messages_to_prompt``
    (a local model's chat template) to what it is asked.

    Streaming: a weak streamed answer escalates as a returned one does. To
    check it, the router holds back the stream of a tier that may still
    escalate (every tier but the last, while escalations are left), reads it
    to the end, validates it, and then either passes its items on as they
    came (the same ``ChatResponse`` / ``CompletionResponse`` items, cumulative
    text and delta) or asks the next tier; the discarded attempt is recorded
    as ``escalated``, as a returned one is. The trade-off is latency: the
    first token of a cheap answer arrives when its last one does (cheap tiers
    are usually fast, and a kept answer still arrives as items), and an
    escalated request also waits for the discarded attempt. The last tier,
    and any tier once the escalations are used up, streams as it comes.
    Errors raised while a stream is held back fall back to the next model,
    as before its first item. ``validate_streams=False`` streams every tier
    as it comes (lowest time to first token) and keeps whatever the first
    tier streams.

    Budgets: before the first call, the budgets of every engine that will
    record the request (the recording ``CostEventHandler``'s, a ``track_costs``
    block's and, through it, the engine it is a block of) are checked with an
    estimate of the call (the prompt plus the answer's cap, ``max_tokens``,
    priced at the dearest model the request can reach: the chosen tier's and
    every tier's above it, since a fallback or an escalation may end there).
    A ``block`` budget raises ``BudgetExceededError`` when that estimate would
    go over it; ``downshift`` starts one tier lower. With a shared budget store the estimate is held
    until the handler records the answer (or released if no tier answers).

    Args:
        tiers: tier name -> LLM (or list of LLMs: fallbacks of the same tier),
            cheap to frontier in dict order.
        router_config: thresholds, margin, escalation and retry limits.
        validators: checks that send a weak cheap answer one tier up.
        classifier: the engine's route classifier (heuristic by default).
        calibration: a report of ``costopt_core.routing.calibrate`` on your
            own samples, or the path of the file ``costopt calibrate --out``
            wrote: its thresholds, margin and cost-aware scaling replace
            ``router_config``'s.
        engine: where budgets are read and escalations recorded when no
            ``CostEventHandler`` records this router's calls (the engines of
            the handlers that do are used when some do); the current engine
            if omitted.
        tenant: tenant of this LLM's calls, unless the call's instrument tags
            name one; else the one :func:`~llamaindex_costopt.handler.resolve_tenant`
            finds (``track_costs``, ``tenant_scope``, the recording handler's).
        validate_streams: hold back a cheap tier's stream until it is whole,
            so the validators see it (see "Streaming" above).

    Raises:
        ConfigurationError: fewer than two tiers, an empty tier, a tier that is not
            a LlamaIndex LLM (a model name, ``None``), or a classifier or
            calibration that does not fit the tiers.
    """

    tiers: dict[str, Any]
    router_config: RouterConfig = Field(default_factory=RouterConfig)
    validators: ValidatorConfig = Field(default_factory=ValidatorConfig)
    classifier: Any = None
    calibration: CalibrationReport | None = None
    engine: Any = None
    tenant: str | None = None
    validate_streams: bool = True

    # A report, its dict, or the path of the file `costopt calibrate --out` wrote.
    _read_calibration = field_validator("calibration", mode="before")(as_calibration)
    _router: Router = PrivateAttr()
    _llms: list[list[LLM]] = PrivateAttr()
    # id(answer) -> (answer, the tier LLM that gave it); the answer is held so
    # that its id cannot be reused while it is here. Bounded, oldest out first.
    _answerers: OrderedDict[int, tuple[Any, LLM]] = PrivateAttr(default_factory=OrderedDict)
    _answerers_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **data: Any) -> None:
        check_arguments("RouterLLM", data, type(self), wraps_models=True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            # pydantic wraps model_post_init's ConfigurationError; unwrap its message.
            raise config_error("RouterLLM", exc) from None

    def model_post_init(self, context: Any) -> None:
        for name, value in self.tiers.items():
            for llm in value if isinstance(value, list) else [value]:
                # Anything else fails on every call and each request silently
                # falls back to the next tier: a misconfigured cheap tier would
                # route everything to the frontier without a word.
                if not isinstance(llm, LLM):
                    raise ConfigurationError(
                        f"tier {name!r} holds {llm!r} ({type(llm).__name__}), not a "
                        "LlamaIndex LLM; pass an LLM instance (or a list of them), e.g. "
                        f"tiers={{{name!r}: OpenAI(model='gpt-4o-mini'), ...}}"
                    )
        self._adopt_tier_prompts()
        self._llms, tiers = tier_members(self.tiers, _model_of, owner="RouterLLM")
        self._router = Router(
            tiers,
            classifier=self.classifier,
            config=self.router_config,
            validators=self.validators,
            calibration=self.calibration,
        )

    def _adopt_tier_prompts(self) -> None:
        """The tiers' ``system_prompt`` / ``query_wrapper_prompt`` where the router
        sets none and every tier has the same one (see the class docstring)."""
        llms = [m for v in self.tiers.values() for m in (v if isinstance(v, list) else [v])]
        for name in _TIER_PROMPT_FIELDS:
            values = [getattr(llm, name, None) for llm in llms]
            if getattr(self, name, None) is not None or all(v is None for v in values):
                continue
            if all(v is not None and v == values[0] for v in values):
                setattr(self, name, values[0])
                continue
            warnings.warn(
                f"RouterLLM: some tiers set {name} and others do not, or differently; a tier's "
                f"{name} is not applied through the router (chat never applies it). Set "
                f"RouterLLM({name}=...) for every tier, or the same {name} on every tier",
                UserWarning,
                stacklevel=4,
            )

    @classmethod
    def class_name(cls) -> str:
        return "costopt_RouterLLM"

    @property
    def router(self) -> Router:
        return self._router

    @property
    def metadata(self) -> LLMMetadata:
        # What callers may rely on: the frontier's limits (any tier may answer),
        # and function calling only if every tier can do it.
        frontier = self._llms[-1][0].metadata
        return frontier.model_copy(
            update={
                "model_name": "router:" + "|".join(self.tiers),
                "is_function_calling_model": self._calls_functions(),
            }
        )

    def _calls_functions(self) -> bool:
        return all(
            isinstance(m, FunctionCallingLLM) and m.metadata.is_function_calling_model
            for ms in self._llms
            for m in ms
        )

    # -- accounting: the same engines and tenant as the handlers' records --------
    def _tagged(self) -> contextlib.AbstractContextManager[None]:
        """The call's instrument tags, with this router's tenant unless they name one.

        The cost handler reads the tenant of the router's own answer from the
        tags of its start event, so ``tenant`` must be in them before that
        event (sent by LlamaIndex's callback wrapper, before the call body).
        """
        if self.tenant is None:
            return contextlib.nullcontext()
        tags = active_instrument_tags.get()
        if any(tags.get(k) is not None for k in TENANT_KEYS):
            return contextlib.nullcontext()
        return instrument_tags({**tags, TENANT_KEYS[0]: self.tenant})

    def _books(self) -> _Books:
        """The ledgers the router's answer will be recorded in, each with its tenant."""
        call_id = active_span_id.get()  # the router's span: the handlers record it under it
        handlers = recording_handlers()
        if not handlers:
            engine = self.engine if isinstance(self.engine, CostEngine) else current_engine()
            return _Books((_Book(engine, record_tenant(None)),), call_id)
        books: list[_Book] = []
        for h in handlers:
            if not any(b.engine is h.engine for b in books):
                # The tenant each handler books the answer under.
                books.append(_Book(h.engine, record_tenant(h), records_span(h, call_id)))
        # A track_costs block's engine checks the budgets of the engine it is a
        # block of and records into it too: asking that one again would hold
        # (and record) twice.
        kept = tuple(
            b for b in books if not any(_ancestor(b.engine.ledger, o.engine.ledger) for o in books)
        )
        return _Books(kept, call_id)

    def _estimate(
        self,
        engine: CostEngine,
        tenant: str | None,
        tier_index: int,
        messages: list[Message],
        kwargs: Mapping[str, Any],
    ) -> Decimal | None:
        """The most the call could cost from the chosen tier on: ``None`` if unpriced.

        The engine's estimate (as the LangChain router's): the prompt's tokens
        plus the answer's cap, priced at the dearest model the request can still
        reach. That is every model of the chosen tier and of each tier above it:
        an error falls back to the tier's other models and then one tier up, and
        a weak answer escalates, so the frontier may answer a request that
        started at the cheapest tier. Pricing only the chosen tier let a
        fallback to the frontier spend several times what the budget held. A
        model among them with no price is put to ``tenant``'s budgets as the
        cost handler puts an unpriced call (``reachable_estimate``, shared with
        ``RouterChatModel``).

        Raises:
            BudgetExceededError: a ``block`` or ``downshift`` budget, and a
                model the request can reach has no price.
        """
        if not engine.ledger.has_budgets:
            return None  # nothing to check it against: skip counting tokens

        def per_model() -> Iterator[tuple[str, Decimal | None]]:
            for llm in itertools.chain.from_iterable(self._llms[tier_index:]):
                name = _model_of(llm)
                cap = _max_output_tokens(llm, kwargs)
                yield name, engine.estimate(name, messages, max_output_tokens=cap)

        return routing.reachable_estimate(engine, tenant, per_model(), log)

    def _check_budgets(
        self, books: _Books, tier_index: int, messages: list[Message], kwargs: Mapping[str, Any]
    ) -> set[str]:
        """Check and hold every book's budgets; their actions.

        Raises:
            BudgetExceededError: a ``block`` budget would be exceeded; holds
                already made for the request are released first.
        """
        actions: set[str] = set()
        try:
            for book in books.entries:
                estimate = self._estimate(book.engine, book.tenant, tier_index, messages, kwargs)
                # Held only where the answer's record will release it; in-process
                # budgets hold too, or concurrent calls would all see the same spend.
                hold = book.records_answer and estimate is not None
                decisions = book.engine.check_budget(
                    book.tenant, estimate, call_id=books.call_id if hold else None
                )
                if hold:
                    books.held.append(book)
                actions.update(d.action for d in decisions)
        except BudgetExceededError:
            books.release()
            raise
        return actions

    # -- the call loop, shared by chat and complete -------------------------------
    def _plan(self, messages: list[Message], kwargs: Mapping[str, Any]) -> _Plan:
        """What routing and the run need from the request (before the classifier)."""
        tools = list(kwargs.get("tools") or ())
        names = [_tool_name(t) for t in tools]
        # Unknown-tool checks need every name; a tool we cannot name turns them off.
        offered = tuple(n for n in names if n) if all(names) else ()
        # structured_predict's output class, else a schema the call's own
        # arguments ask for (response_format, as the LangChain router reads it).
        schema = _STRUCTURED.get() or requested_response_schema(kwargs)
        structured = wants_structured_output(kwargs) or schema is not None
        with_tools = kwargs.get(WITH_TOOLS_KEY)
        forced = forces_tool_call(kwargs.get("tool_choice")) or bool(
            isinstance(with_tools, Mapping) and with_tools.get("tool_required")
        )
        return _Plan(
            route={"tools": [{"name": n} for n in offered], "structured": structured},
            start={
                "offered_tools": offered,
                "tool_schemas": _tool_schemas(tools, names) or None,
                "response_schema": schema or None,
                "structured": structured,
                "tool_required": bool(tools) and forced,
            },
        )

    def _start(
        self,
        messages: list[Message],
        kwargs: Mapping[str, Any],
        plan: _Plan,
        decision: RouteDecision,
    ) -> tuple[RouteRun, _Books]:
        """The run from the classifier's ``decision``, after the budgets had their say."""
        books = self._books()
        # A "block" budget raises here, before any call; "downshift" moves the start down.
        actions = self._check_budgets(books, decision.tier_index, messages, kwargs)
        if "downshift" in actions:
            decision = self._router.downshift(decision)
        return self._router.start(decision, **plan.start), books

    @staticmethod
    def _record_unseen(
        resp: ChatResponse | CompletionResponse | None,
        tier: str,
        model: str | None,
        books: _Books,
        outcome: Literal["escalated", "model"] = "escalated",
    ) -> None:
        """Record an answer no cost handler will see, unless a cache served it.

        That is a discarded cheap answer (``escalated``), or a stream of the
        router's that did not end (``model``, see :meth:`_unread`).

        Args:
            resp: the answer; for a held-back stream, its item that reports the
                usage; for a live one, the last item read (``None``: none).
            tier: the tier that gave it.
            model: the tier model's name, when the answer does not say.
            books: the request's ledgers.
            outcome: ``escalated`` for a discarded answer, ``model`` for a kept one.
        """
        raw = getattr(resp, "raw", None)
        note = None if raw is None else SERVED.take(raw)
        if note is None and isinstance(raw, Mapping) and isinstance(raw.get(METADATA_KEY), Mapping):
            note = raw[METADATA_KEY]  # a cache with expose_cache_info marks raw itself
        if note is not None and served_outcome(note) is not None:
            return  # no model was called for it: it cost nothing
        usage = usage_of(resp)
        # One call id in every ledger: a block's ledger passes its records on to
        # its parent, which then counts the call once.
        call_id = uuid.uuid4().hex
        for book in books.entries:
            # Recorded even without usage (cost unknown): the call was made and paid for.
            book.engine.record_call(
                model=str(first_field(raw, "model") or model or "unknown"),
                usage=usage,
                tier=tier,
                tenant=book.tenant,
                outcome=outcome,
                framework="llamaindex",
                call_id=call_id,
            )

    @classmethod
    def _record_broken(
        cls, call: _Call, tier: str, model: str | None, books: _Books, error: BaseException
    ) -> None:
        """Record a held-back stream that broke after some items (none: nothing to record).

        The tier billed its prompt and what it sent, and no cost handler
        records a router's tier calls. Recorded with the usage of the last item
        that reported one, else an unknown usage (unpriced, never $0): as a
        discarded attempt (``escalated``) when the router falls back, as the
        request's call (``model``) when the caller gave up (``error`` is no
        ``Exception``: cancellation, an interrupt), as :meth:`_unread` does.
        """
        if call.read:
            outcome: Literal["escalated", "model"] = (
                "escalated" if isinstance(error, Exception) else "model"
            )
            cls._record_unseen(_reported(call.read), tier, model, books, outcome)

    def _unread(
        self, head: Sequence[Any], live: object, last: Any, run: RouteRun, books: _Books
    ) -> None:
        """A stream that did not end (the caller stopped reading, or it failed).

        The cost handler leaves a router's unfinished stream to the router (it
        records neither the router's span nor the tier call in it), so it is
        recorded here, once, and its budget holds released (a record under a
        new id does not release them). A held-back one (no ``live`` rest) was
        read whole from the tier, so paid for whole: recorded with the usage
        the whole stream reported. A live one was billed for its prompt and
        what it streamed: recorded with the usage of the last item read
        (``last``), if it reports any, else with an unknown usage (unpriced,
        never $0).
        """
        books.release()
        if live is None and not head:
            return  # a held-back stream that sent nothing
        route = run.explain()
        item = _reported(head) if live is None else (None if last is _EMPTY else last)
        self._record_unseen(item, route["tier"], route["model"], books, "model")

    def _finish(self, resp: Any, run: RouteRun, llm: LLM) -> Any:
        old = resp.raw
        raw = _as_raw_dict(old)
        got = raw.get(METADATA_KEY)
        prior: dict[str, Any] = got if isinstance(got, dict) else {}
        route = run.explain()
        raw[METADATA_KEY] = {**prior, "tier": route["tier"], "route": route}
        # Many integrations name the model on the LLM, not in raw: the answer
        # keeps the tier model's name, or it would be priced as the router's.
        raw.setdefault("model", route["model"])
        resp.raw = raw
        # A cache's note is on the raw object it served; carry it to the copy, or
        # the handler would price a cache hit as a model call. The handler reads a
        # noted answer's tier from the note, so it says which tier answered.
        note = None if old is None else SERVED.take(old)
        if note is not None:
            SERVED.note(raw, {**note, "tier": route["tier"]})
        self._answered_by(resp, llm)
        return resp

    def _route(
        self, run: RouteRun, books: _Books, *, streaming: bool
    ) -> Generator[_Call, Any, Any]:
        """The call loop every driver runs (see ``costopt_core.routing.router.drive``).

        Yields the ``_Call`` to make and is sent its result, or has the call's
        error thrown in (provider errors, timeouts, rate limits fall back to
        the next model). Returns the kept answer; streaming, ``(items already
        read, the live rest or None, run, llm)``.

        Streaming (see the class docstring): a tier whose answer may still
        escalate is read to its end and validated before any of it is passed
        on; otherwise the stream is passed on as it comes and falls back only
        on errors raised before its first item. That first item is read by the
        driver because provider LLMs send the request when their stream is
        first iterated, not when it is opened.
        """
        # A structured answer is read as LlamaIndex's output parser reads it
        # (the first {...} of the text), so a fenced one is not escalated.
        structured_text = run.structured
        # The last answer re-asked one tier up: recorded as a discarded attempt,
        # unless no tier above answers and it is returned after all.
        weaker: tuple[Any, LLM, Step] | None = None
        try:
            while (step := run.next()) is not None:
                llm = self._llms[step.tier_index][step.model_index]
                # A stream is held back for the validators only while its answer
                # may still escalate: holding it otherwise would only add latency.
                how: Literal["call", "collect", "open"] = "call"
                if streaming:
                    held = self.validate_streams and run.may_escalate()
                    how = "collect" if held else "open"
                call = _Call(llm, how)
                try:
                    got = yield call
                except BaseException as exc:
                    self._record_broken(call, step.tier, step.model, books, exc)
                    if not isinstance(exc, Exception):
                        raise  # the caller gave up (cancelled, interrupted)
                    run.failed(exc)  # nothing was passed on yet: fall back
                    continue
                if how == "open":
                    run.kept()  # passed on as it comes, not held back for validation
                    first, live = got
                    return ([] if first is _EMPTY else [first]), live, run, llm, books
                read = _held_answer if streaming else _answer
                if run.answered(read(got, structured_text)) is None:
                    if streaming:
                        return got, None, run, llm, books
                    return self._finish(got, run, llm)
                if weaker is not None:
                    self._record_weaker(weaker, books, streaming)
                weaker = (got, llm, step)
            if weaker is not None and run.keep_weaker() is not None:
                got, llm, _ = weaker
                weaker = None  # returned: the cost handler records it
                if streaming:
                    return got, None, run, llm, books
                return self._finish(got, run, llm)
        except BaseException:
            books.release()  # no answer (nor a stream opened): no record will release them
            raise
        finally:
            if weaker is not None:
                self._record_weaker(weaker, books, streaming)
        books.release()  # every tier failed: no record will release the holds
        raise run.error()

    @classmethod
    def _record_weaker(cls, weaker: tuple[Any, LLM, Step], books: _Books, streaming: bool) -> None:
        """Record a re-asked answer that is not returned (see :meth:`_record_unseen`)."""
        got, _, step = weaker
        cls._record_unseen(_reported(got) if streaming else got, step.tier, step.model, books)

    @staticmethod
    def _do(call_of: Any, call: _Call) -> Any:
        """Make ``call`` with ``call_of`` (``llm -> its answer or stream``)."""
        got = call_of(call.llm)
        if call.how == "call":
            return got
        stream = iter(got)
        if call.how == "collect":
            for item in stream:
                call.read.append(item)
            return call.read
        return next(stream, _EMPTY), stream

    @staticmethod
    async def _ado(call_of: Any, call: _Call) -> Any:
        """Async twin of :meth:`_do`: ``call_of`` returns an awaitable."""
        got = await call_of(call.llm)
        if call.how == "call":
            return got
        if call.how == "collect":
            async for item in got:
                call.read.append(item)
            return call.read
        return await anext(got, _EMPTY), got

    def _run_sync(
        self, messages: list[Message], kwargs: dict[str, Any], call: Any, *, streaming: bool = False
    ) -> Any:
        plan = self._plan(messages, kwargs)
        decision = self._router.route(messages, **plan.route)
        run, books = self._start(messages, kwargs, plan, decision)
        return routing.drive(
            self._route(run, books, streaming=streaming), functools.partial(self._do, call)
        )

    async def _run_async(
        self, messages: list[Message], kwargs: dict[str, Any], call: Any, *, streaming: bool = False
    ) -> Any:
        plan = self._plan(messages, kwargs)
        decision = await self._router.aroute(messages, **plan.route)
        run, books = self._start(messages, kwargs, plan, decision)
        return await routing.adrive(
            self._route(run, books, streaming=streaming), functools.partial(self._ado, call)
        )

    def _relay(
        self,
        head: Sequence[Any],
        live: Iterator[Any] | None,
        run: RouteRun,
        llm: LLM,
        books: _Books,
    ) -> Any:
        """The items already read, then the live rest; the last one gets the route.

        A stream the caller stops reading (``break``, ``close()``, cancellation)
        or that fails part way is recorded by :meth:`_unread`, not by the
        handler. A whole one is recorded by the handler, which releases its holds.
        """
        last = _EMPTY
        try:
            for last in itertools.chain(head, live or ()):
                # An agent reads the tool calls of each item as it comes.
                yield self._answered_by(last, llm)
        except BaseException:
            self._unread(head, live, last, run, books)
            raise
        if last is not _EMPTY:
            self._finish(last, run, llm)

    async def _arelay(
        self,
        head: Sequence[Any],
        live: AsyncIterator[Any] | None,
        run: RouteRun,
        llm: LLM,
        books: _Books,
    ) -> Any:
        """Async twin of :meth:`_relay`."""
        last = _EMPTY
        try:
            for last in head:
                yield self._answered_by(last, llm)
            if live is not None:
                async for last in live:
                    yield self._answered_by(last, llm)
        except BaseException:
            self._unread(head, live, last, run, books)
            raise
        if last is not _EMPTY:
            self._finish(last, run, llm)

    # -- function calling: each tier formats the tools, the answerer reads the calls --
    def _answered_by(self, resp: Any, llm: LLM) -> Any:
        """Note that ``llm`` gave ``resp`` (for :meth:`get_tool_calls_from_response`)."""
        if isinstance(llm, FunctionCallingLLM):
            key = id(resp)
            with self._answerers_lock:
                self._answerers[key] = (resp, llm)
                self._answerers.move_to_end(key)
                while len(self._answerers) > _MAX_ANSWERERS:
                    self._answerers.popitem(last=False)
        return resp

    def _answerer(self, resp: Any) -> FunctionCallingLLM | None:
        """The tier LLM that gave ``resp``, from the note or the route on ``raw``."""
        with self._answerers_lock:
            entry = self._answerers.get(id(resp))
        if entry is not None and entry[0] is resp and isinstance(entry[1], FunctionCallingLLM):
            return entry[1]
        # A copy, or an answer a cache in front of the router rebuilt: its route,
        # when it kept one, names the tier and the model.
        route = first_field(first_field(first_field(resp, "raw"), METADATA_KEY), "route")
        tier, model = first_field(route, "tier"), first_field(route, "model")
        for name, llms in zip(self.tiers, self._llms, strict=True):
            if name == tier:
                found = next((m for m in llms if _model_of(m) == model), llms[0])
                return found if isinstance(found, FunctionCallingLLM) else None
        return None

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The routed ``chat`` call of a ``chat_with_tools`` request.

        The tools are not formatted here: the tier that gets the request does
        it, through its own ``chat_with_tools``, for its provider. The tools
        themselves go along as ``tools`` (their names and schemas are what
        the validators check a cheap tool call against).

        Raises:
            ConfigurationError: a tier is not a ``FunctionCallingLLM``.
        """
        plain = [
            name
            for name, llms in zip(self.tiers, self._llms, strict=True)
            if any(not isinstance(m, FunctionCallingLLM) for m in llms)
        ]
        if plain:
            raise ConfigurationError(
                f"chat_with_tools needs every tier to be a FunctionCallingLLM; tier(s) {plain} "
                "are not: use function-calling LLMs in every tier, or call chat() with "
                "tools=[...] in each provider's own format"
            )
        messages = list(chat_history or [])
        if user_msg:
            messages.append(
                ChatMessage(role=MessageRole.USER, content=user_msg)
                if isinstance(user_msg, str)
                else user_msg
            )
        return {
            **kwargs,
            "messages": messages,
            "tools": list(tools),
            WITH_TOOLS_KEY: {
                "verbose": verbose,
                "allow_parallel_tool_calls": allow_parallel_tool_calls,
                "tool_required": tool_required,
            },
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The answer's tool calls, read by the tier LLM that gave it.

        An answer the router did not relay itself (a copy, one a cache in front
        of the router rebuilt without its route) is read by the first tier,
        frontier first, that finds tool calls in it.
        """
        llm = self._answerer(response)
        if llm is not None:
            return llm.get_tool_calls_from_response(
                response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
            )
        readers = [
            m for ms in reversed(self._llms) for m in ms if isinstance(m, FunctionCallingLLM)
        ]
        for reader in readers:
            try:
                calls = reader.get_tool_calls_from_response(
                    response, error_on_no_tool_call=False, **kwargs
                )
            except Exception:  # another provider's format: the next tier may read it
                continue
            if calls:
                return calls
        if not readers:
            raise ConfigurationError("no tier of this router is a FunctionCallingLLM")
        return readers[0].get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )

    @staticmethod
    def _tier_call(method: str, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> Any:
        """``llm -> llm.<method>(messages, **kwargs)``; a tools request goes to the tier's
        ``<method>_with_tools``, which formats the tools for its own provider."""
        opts = kwargs.get(WITH_TOOLS_KEY)
        if not isinstance(opts, Mapping):
            return lambda llm: getattr(llm, method)(messages, **kwargs)
        tools = kwargs.get("tools") or []
        rest = {k: v for k, v in kwargs.items() if k not in (WITH_TOOLS_KEY, "tools")}
        return lambda llm: getattr(llm, f"{method}_with_tools")(
            tools, chat_history=list(messages), **opts, **rest
        )

    # -- LlamaIndex API -------------------------------------------------------------
    # Each public method sets the router's tenant tag, then enters the instrumented
    # method below it (whose start event the cost handler reads the tenant from).
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        with self._tagged():
            return cast(ChatResponse, self._chat(messages, **kwargs))

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        with self._tagged():
            return cast(ChatResponse, await self._achat(messages, **kwargs))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        with self._tagged():
            return cast(CompletionResponse, self._complete(prompt, formatted=formatted, **kwargs))

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        with self._tagged():
            return cast(
                CompletionResponse, await self._acomplete(prompt, formatted=formatted, **kwargs)
            )

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        with self._tagged():
            return cast(ChatResponseGen, self._stream_chat(messages, **kwargs))

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        with self._tagged():
            return cast(
                CompletionResponseGen, self._stream_complete(prompt, formatted=formatted, **kwargs)
            )

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        with self._tagged():
            return cast(ChatResponseAsyncGen, await self._astream_chat(messages, **kwargs))

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        with self._tagged():
            return cast(
                CompletionResponseAsyncGen,
                await self._astream_complete(prompt, formatted=formatted, **kwargs),
            )

    @llm_chat_callback()
    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return cast(
            ChatResponse,
            self._run_sync(_neutral(messages), kwargs, self._tier_call("chat", messages, kwargs)),
        )

    @llm_chat_callback()
    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return cast(
            ChatResponse,
            await self._run_async(
                _neutral(messages), kwargs, self._tier_call("achat", messages, kwargs)
            ),
        )

    # A tier is asked with formatted=False whatever the caller said: "formatted"
    # means the router's completion_to_prompt was applied (predict() says so),
    # never the tier's own chat template, which only the tier that answers can
    # apply (a local model's, say). ``formatted`` is unused below on purpose.
    @llm_completion_callback()
    def _complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return cast(
            CompletionResponse,
            self._run_sync(
                [Message("user", prompt)],
                kwargs,
                lambda llm: llm.complete(prompt, **kwargs),
            ),
        )

    @llm_completion_callback()
    async def _acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return cast(
            CompletionResponse,
            await self._run_async(
                [Message("user", prompt)],
                kwargs,
                lambda llm: llm.acomplete(prompt, **kwargs),
            ),
        )

    @llm_chat_callback()
    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return cast(
            ChatResponseGen,
            self._relay(
                *self._run_sync(
                    _neutral(messages),
                    kwargs,
                    self._tier_call("stream_chat", messages, kwargs),
                    streaming=True,
                )
            ),
        )

    @llm_completion_callback()
    def _stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return cast(
            CompletionResponseGen,
            self._relay(
                *self._run_sync(
                    [Message("user", prompt)],
                    kwargs,
                    lambda llm: llm.stream_complete(prompt, **kwargs),
                    streaming=True,
                )
            ),
        )

    @llm_chat_callback()
    async def _astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return cast(
            ChatResponseAsyncGen,
            self._arelay(
                *await self._run_async(
                    _neutral(messages),
                    kwargs,
                    self._tier_call("astream_chat", messages, kwargs),
                    streaming=True,
                )
            ),
        )

    @llm_completion_callback()
    async def _astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return cast(
            CompletionResponseAsyncGen,
            self._arelay(
                *await self._run_async(
                    [Message("user", prompt)],
                    kwargs,
                    lambda llm: llm.astream_complete(prompt, **kwargs),
                    streaming=True,
                )
            ),
        )
