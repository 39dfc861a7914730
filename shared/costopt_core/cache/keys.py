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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from costopt_core.text import normalize_text
from costopt_core.types import Message

__all__ = [
    "ANSWER_PARAMS",
    "DEFAULT_NAMESPACE",
    "CacheRequest",
    "PreparedRequest",
    "exact_key",
    "namespace_of",
    "prepare",
    "scope_of",
    "semantic_text",
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
) -> str:
    """The hard partition a request's answer may be shared within."""
    kept = {k: params[k] for k in ANSWER_PARAMS if params.get(k) is not None}
    return _hash(
        "scope/v1", namespace, model or "", _canon(kept), normalize_text(system), _canon(tools)
    )


def _msg_canon(m: Message) -> list[Any]:
    return [m.role, normalize_text(m.content), m.name, list(m.tool_calls), m.tool_call_id]


def exact_key(scope: str, messages: Sequence[Message]) -> str:
    """The exact-match key: scope plus the whole conversation, whitespace-normalised."""
    return _hash("exact/v1", scope, _canon([_msg_canon(m) for m in messages]))


def semantic_text(messages: Sequence[Message], context_turns: int) -> str:
    """What is embedded: the last user turn, after up to ``context_turns`` earlier turns.

    Earlier turns are included so that "how old is he?" after two different
    conversations does not look like one question.

    Empty (the request is matched exactly or not at all) when anything follows
    the last user turn: an agent's call after a tool result asks the same user
    question as the call that requested the tool, and a semantic hit would
    serve that first call's tool request again, looping the agent.
    """
    convo = [m for m in messages if m.role != "system"]
    last_user = max((i for i, m in enumerate(convo) if m.role == "user"), default=None)
    if last_user is None:
        return normalize_text(" ".join(m.content for m in convo))
    if last_user < len(convo) - 1:
        return ""
    start = max(0, last_user - context_turns)
    return "\n".join(normalize_text(m.content) for m in convo[start : last_user + 1] if m.content)


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


@dataclass(frozen=True)
class PreparedRequest:
    scope: str
    key: str
    namespace: str
    text: str


def prepare(request: CacheRequest, context_turns: int) -> PreparedRequest:
    """Scope, exact key, namespace and semantic text of a request."""
    namespace = namespace_of(request.tenant)
    system = "\n".join(m.content for m in request.messages if m.role == "system")
    scope = scope_of(
        model=request.model,
        params=request.params,
        system=system,
        tools=request.tools,
        namespace=namespace,
    )
    return PreparedRequest(
        scope=scope,
        key=exact_key(scope, request.messages),
        namespace=namespace,
        text=semantic_text(request.messages, context_turns),
    )
