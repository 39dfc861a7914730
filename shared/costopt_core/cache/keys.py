"""Scope keys, exact keys and the text that gets embedded: pure functions.

The scope is a hard partition: two requests can only share an answer when
they agree on everything that changes the answer besides the wording of the
question: model (or router tier group), answer-changing sampling parameters,
system prompt, tool schemas, and the tenant's namespace. The namespace is
hashed into the scope and never into the embedded text, so no prompt text can
forge a way into another tenant's entries.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from costopt_core.errors import ConfigurationError
from costopt_core.text import normalize_text
from costopt_core.types import Message

__all__ = [
    "ANSWER_PARAMS",
    "DEFAULT_NAMESPACE",
    "INPUT_NAME_PREFIX",
    "CacheRequest",
    "PreparedRequest",
    "earlier_user_turns",
    "exact_key",
    "namespace_of",
    "prepare",
    "scope_of",
    "scope_tag",
    "semantic_text",
    "speakers_of",
]

#: Request parameters that change the answer, so they split the scope.
ANSWER_PARAMS = (
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "n",
    "response_format",
    "tool_choice",
    "parallel_tool_calls",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "reasoning_effort",
    "thinking",
)
DEFAULT_NAMESPACE = "_default"


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def _hash(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        # surrogatepass: a lone surrogate (JSON "\ud800" decodes to one) hashes
        # instead of raising; every other text encodes exactly as plain UTF-8.
        data = p.encode("utf-8", "surrogatepass")
        # Length-prefixed: a separator inside one part (a tenant or model name with
        # "\x1f") cannot shift bytes into the next part and forge another scope.
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def namespace_of(tenant: str | None) -> str:
    """The namespace of a tenant; requests without a tenant share the default one."""
    return DEFAULT_NAMESPACE if tenant is None else f"t:{tenant}"


def scope_of(
    *,
    model: str | None,
    params: Mapping[str, Any],
    system: str,
    tools: Sequence[Mapping[str, Any]],
    namespace: str,
    earlier: Sequence[str] = (),
    speakers: Sequence[str | None] = (),
) -> str:
    """The hard partition a request's answer may be shared within.

    ``earlier`` are the user turns before the embedded window (see
    :func:`earlier_user_turns`); a single-turn request has none, and its scope
    is what it always was. ``speakers`` are the conversation's message names
    (see :func:`speakers_of`): empty when no message names one.
    """
    kept = {k: params[k] for k in ANSWER_PARAMS if params.get(k) is not None}
    parts = ["scope/v1", namespace, model or "", _canon(kept)]
    parts += [normalize_text(system), _canon(tools)]
    if earlier:
        parts.append(_canon([normalize_text(t) for t in earlier]))
    if speakers:
        parts.append(_canon(["speakers", *speakers]))
    return _hash(*parts)


#: A message name under this prefix carries a cached component's exact input
#: (its digest, keeping the exact tier exact), not a speaker.
INPUT_NAME_PREFIX = "input:"


def speakers_of(messages: Sequence[Message]) -> tuple[str | None, ...]:
    """Who says each non-system message (its ``name``); empty when none is named.

    In a chat of several users the same words from Bob and from Alice ask two
    questions ("what do I owe?"): the embedded text has no names, so they go
    into the scope. Conversations that name no one keep the scope they had.
    """
    names = tuple(
        None if m.name is not None and m.name.startswith(INPUT_NAME_PREFIX) else m.name
        for m in messages
        if m.role != "system"
    )
    return names if any(names) else ()


def _msg_canon(m: Message) -> list[Any]:
    return [m.role, normalize_text(m.content), m.name, list(m.tool_calls), m.tool_call_id]


def exact_key(scope: str, messages: Sequence[Message]) -> str:
    """The exact-match key: scope plus the whole conversation, whitespace-normalised."""
    return _hash("exact/v1", scope, _canon([_msg_canon(m) for m in messages]))


def _window(messages: Sequence[Message], context_turns: int) -> tuple[list[Message], int, int]:
    """The conversation without system messages, and the embedded window's bounds in it.

    ``(convo, start, last_user)``: the window is ``convo[start : last_user + 1]``;
    ``last_user`` is -1 without a user turn.
    """
    convo = [m for m in messages if m.role != "system"]
    last_user = max((i for i, m in enumerate(convo) if m.role == "user"), default=-1)
    return convo, max(0, last_user - context_turns), last_user


def semantic_text(messages: Sequence[Message], context_turns: int) -> str:
    """What is embedded: the last user turn, after up to ``context_turns`` earlier turns.

    Earlier turns are included so that "how old is he?" after two different
    conversations does not look like one question.

    Empty (the request is matched exactly or not at all) when anything follows
    the last user turn: an agent's call after a tool result asks the same user
    question as the call that requested the tool, and a semantic hit would
    serve that first call's tool request again, looping the agent.
    """
    convo, start, last_user = _window(messages, context_turns)
    if last_user < 0:
        return normalize_text(" ".join(m.content for m in convo))
    if last_user < len(convo) - 1:
        return ""
    return "\n".join(normalize_text(m.content) for m in convo[start : last_user + 1] if m.content)


def earlier_user_turns(messages: Sequence[Message], context_turns: int) -> tuple[str, ...]:
    """The user turns before :func:`semantic_text`'s window, which the embedding never sees.

    Two conversations that set different topics there ("learn Python" / "learn
    Rust") and then ask the same follow-up ("now give me an example") embed to
    the same text: these turns go into the scope, so such follow-ups are only
    shared between conversations that asked the same before.
    """
    convo, start, last_user = _window(messages, context_turns)
    if last_user < 0 or last_user < len(convo) - 1:
        return ()  # matched exactly or not at all (see semantic_text)
    return tuple(m.content for m in convo[:start] if m.role == "user")


def check_ttl(ttl_s: Any) -> float | None:
    """``ttl_s`` if it is None or a finite number of seconds > 0; else a ``ConfigurationError``.

    The bounds are :class:`CacheConfig`'s: a NaN TTL compares false with every
    expiry time, so its entries would never expire, and an infinite one
    overflows the timers that use it.
    """
    if ttl_s is None:
        return None
    # bool is an int to Python, but ttl_s=True is a mistake, not one second.
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, numbers.Real):
        raise ConfigurationError(
            f"ttl_s must be a number of seconds, got {type(ttl_s).__name__} {ttl_s!r}; "
            "pass e.g. ttl_s=3600, or leave it out (None) for the engine's default"
        )
    try:
        seconds = float(ttl_s)
    except OverflowError:  # an int too large for a float: no finite TTL either
        seconds = math.inf
    if not (math.isfinite(seconds) and seconds > 0):  # NaN fails both: refused too
        raise ConfigurationError(
            f"ttl_s must be a finite number of seconds > 0, got {ttl_s!r}; pass e.g. "
            "ttl_s=3600, or leave it out (None) for the engine's default"
        )
    return seconds


@dataclass(frozen=True)
class CacheRequest:
    """A request as the cache sees it.

    Args:
        messages: the conversation (system messages included).
        model: the model, or a router's tier-group name.
        params: request parameters; only ``ANSWER_PARAMS`` split the scope.
        tools: tool schemas bound to the request.
        tenant: the tenant; answers are never shared across tenants.
        cache: ``False`` skips the cache for this request (no lookup, no store).
        ttl_s: per-request time to live of what gets stored.
        tags: labels to invalidate by later (e.g. the source document ids).
    """

    messages: tuple[Message, ...]
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[Mapping[str, Any], ...] = ()
    tenant: str | None = None
    cache: bool = True
    ttl_s: float | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.ttl_s is not None:  # refused before the model call, not at the store
            object.__setattr__(self, "ttl_s", check_ttl(self.ttl_s))


@dataclass(frozen=True)
class PreparedRequest:
    scope: str
    key: str
    namespace: str
    text: str
    #: The scope without the earlier turns (``scope`` for a single-turn request).
    base_scope: str = ""


def scope_tag(base_scope: str) -> str:
    """The tag an entry whose scope holds earlier turns carries: its base scope's.

    ``invalidate_scope`` removes a scope by what the request says (model,
    parameters, system prompt, tools, tenant); a conversation's entries live in
    a scope of their own per earlier turns, so they are found by this tag.
    """
    return f"~scope:{base_scope}"


def prepare(request: CacheRequest, context_turns: int) -> PreparedRequest:
    """Scope, exact key, namespace and semantic text of a request."""
    namespace = namespace_of(request.tenant)
    system = "\n".join(m.content for m in request.messages if m.role == "system")
    parts: dict[str, Any] = {
        "model": request.model,
        "params": request.params,
        "system": system,
        "tools": request.tools,
        "namespace": namespace,
    }
    base = scope_of(**parts)
    # A conversation's earlier turns and speakers give it a scope of its own
    # under the base one (found by invalidate_scope through scope_tag).
    earlier = earlier_user_turns(request.messages, context_turns)
    speakers = speakers_of(request.messages)
    own = earlier or speakers
    scope = scope_of(**parts, earlier=earlier, speakers=speakers) if own else base
    return PreparedRequest(
        scope=scope,
        key=exact_key(scope, request.messages),
        namespace=namespace,
        text=semantic_text(request.messages, context_turns),
        base_scope=base,
    )
