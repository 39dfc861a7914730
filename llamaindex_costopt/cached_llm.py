"""``CachedLLM``: any LlamaIndex LLM behind costopt's exact + semantic cache.

LlamaIndex has no LLM cache of its own, so this wrapper is the place where a
repeated or paraphrased question stops costing a model call. It only
translates: LlamaIndex messages and call parameters into an engine
``CacheRequest``, the wrapped LLM's response into a ``CachedResponse`` (with
the response itself as a lossless payload) and a stored answer back into a
``ChatResponse`` / ``CompletionResponse``. What counts as a hit, what may be
stored and who may share an answer are the engine's decisions.

A response served from the cache says so in ``raw["costopt"]`` and carries
the ``model`` and ``usage`` of the call it replaced, so the cost handler can
book the saving. A miss returns the wrapped LLM's own response untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import hashlib
import inspect
import json
import re
import uuid
import weakref
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from copy import copy
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from llama_index.core.base.llms.generic_utils import (
    messages_to_prompt as default_messages_to_prompt,
)
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
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection, default_completion_to_prompt
from llama_index_instrumentation.dispatcher import active_instrument_tags, instrument_tags
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SecretBytes,
    SecretStr,
    ValidationError,
    field_validator,
)

from costopt_core.cache import CachedResponse, CacheHit, CacheRequest
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache.keys import ANSWER_PARAMS, check_ttl
from costopt_core.cache.shared_stream import AsyncReading, Reading
from costopt_core.errors import ConfigurationError, check_arguments, config_error
from costopt_core.finish import finish_reason_of
from costopt_core.served import SERVED, SHARED_INFO, served_info
from costopt_core.types import Message, Role
from costopt_core.usage import first_field, usage_wire
from llamaindex_costopt._checks import check_cache, check_llm
from llamaindex_costopt._structured import MarksStructured
from llamaindex_costopt.handler import REPLAY_NOTE, TENANT_KEYS, resolve_tenant, usage_of

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = [
    "CHAT_PAYLOAD_FORMAT",
    "COMPLETION_PAYLOAD_FORMAT",
    "METADATA_KEY",
    "CachedLLM",
    "chat_response_of",
    "completion_response_of",
    "response_of",
]

CHAT_PAYLOAD_FORMAT = "llamaindex/chat/v1"
COMPLETION_PAYLOAD_FORMAT = "llamaindex/completion/v1"
#: Key of ``raw`` that marks a response served from the cache.
METADATA_KEY = "costopt"

Kind = Literal["chat", "complete"]
AnyResponse = ChatResponse | CompletionResponse
R = TypeVar("R", ChatResponse, CompletionResponse)

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
}
# Fields of LlamaIndex LLMs that hold provider parameters as a dict.
_KWARGS_FIELDS = ("additional_kwargs", "generate_kwargs", "model_kwargs")
# Answer-changing LLM fields the engine does not know by name, read at every call.
_EXTRA_FIELDS = ("max_new_tokens", "num_predict", "repetition_penalty", "repeat_penalty")
# LLM fields that say how a call is made, not what it answers: left out of the
# scope. Every other field the wrapped LLM serialises is in it (see _llm_params).
_NOT_ANSWER_FIELDS = frozenset(
    {
        "callback_manager",
        "callbacks",
        "rate_limiter",
        "timeout",
        "request_timeout",
        "max_retries",
        "num_retries",
        "retries",
        "http_client",
        "async_http_client",
        "client",
        "async_client",
        "reuse_client",
        "session",
        "verbose",
    }
)
# Credentials, by name: never written into a scope (which may be stored as text).
# Whole names or their last words only: "eos_token_id", "pad_token_id" or a
# schema property "key" change the answer and stay in.
_SECRET_NAME = re.compile(
    r"^(.*_)?(api_?key|api_?token|access_?key|secret_?key|private_?key|access_?token|"
    r"auth_?token|refresh_?token|session_?token|bearer_?token|hf_?token|secret|"
    r"client_?secret|password|passwd|credentials?|authorization)$",
    re.IGNORECASE,
)
# Bare names that are credentials as the LLM's own fields (not inside its kwargs).
_SECRET_FIELDS = frozenset({"key", "token", "auth"})
# A repr that holds an address (a lock, a client) differs in every process.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SKIP = object()
# The fields LlamaIndex's predict / stream (and their async twins) format a
# prompt with, on the LLM they are called on, with the value that means "not
# set" (LlamaIndex fills the two callables in with its defaults).
_PROMPT_FIELDS: dict[str, Any] = {
    "system_prompt": None,
    "query_wrapper_prompt": None,
    "messages_to_prompt": default_messages_to_prompt,
    "completion_to_prompt": default_completion_to_prompt,
    "output_parser": None,
}


def adopt_prompt_settings(wrapper: LLM, llm: LLM) -> None:
    """Give ``wrapper`` the prompt settings of the ``llm`` it wraps that it has not set.

    LlamaIndex's ``predict`` / ``stream`` (and async twins) format the prompt
    with the settings of the LLM they are called on, then call ``chat``, or
    ``complete`` with ``formatted=True``: without this, the wrapped LLM's own
    system prompt, templates and output parser would never be applied.
    """
    for name, unset in _PROMPT_FIELDS.items():
        mine = getattr(wrapper, name, None)
        if mine is None or mine is unset:
            theirs = getattr(llm, name, None)
            if theirs is not None:
                setattr(wrapper, name, theirs)


# -- small translation helpers ------------------------------------------------
def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def _jsonable(obj: Any) -> Any:
    """A JSON-ready copy: SDK objects (pydantic) dumped, anything else via ``str``."""
    if hasattr(obj, "model_dump") and callable(obj.model_dump):
        try:
            obj = obj.model_dump(mode="json")
        except Exception:
            obj = str(obj)
    return json.loads(json.dumps(obj, default=str))


def _scope_value(name: str, value: Any, depth: int = 0) -> Any:
    """An LLM setting as JSON for the cache scope, or ``_SKIP``.

    Credentials are dropped (by name, and any ``SecretStr``); headers, which
    may carry them and may also change the answer (a beta feature), are in
    as a digest. Pydantic objects (a nested LLM, a config) go field by field,
    with the same rules; a class (a response format) by its name, another
    object by its repr if it has one of its own. Functions and objects with
    only an address for a repr (a client) are skipped.
    """
    if depth > 8 or isinstance(value, SecretStr | SecretBytes):
        return _SKIP
    if isinstance(value, type):
        return str(value)
    if callable(value) and not isinstance(value, BaseModel):
        return _SKIP
    if "header" in name.lower() and value:
        return "sha256:" + hashlib.sha256(_canon(_jsonable(value)).encode()).hexdigest()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return _scope_value(name, value.value, depth + 1)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            # Names are settings only near the top: deeper down (a response
            # format's JSON schema) a property named "password" is the answer's.
            if depth <= 1 and (_SECRET_NAME.match(key) or key in _NOT_ANSWER_FIELDS):
                continue
            if (kept := _scope_value(key, v, depth + 1)) is not _SKIP:
                out[key] = kept
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = [_scope_value(name, v, depth + 1) for v in value]
        kept_items = [v for v in items if v is not _SKIP]
        # A set's order is the hash seed's: sorted, the scope is every process's.
        return sorted(kept_items, key=_canon) if isinstance(value, set | frozenset) else kept_items
    if isinstance(value, BaseModel):
        fields = _scope_value(
            name, {f: getattr(value, f, None) for f in type(value).model_fields}, depth + 1
        )
        return _SKIP if fields is _SKIP else {"__class__": type(value).__qualname__, **fields}
    own_repr = getattr(type(value), "__repr__", None) is not object.__repr__
    if not own_repr:
        return _SKIP
    text = repr(value)
    return _SKIP if _ADDRESS.search(text) else text


def _llm_settings(llm: LLM) -> dict[str, Any]:
    """Every serialisable field of ``llm`` that may change its answer, but those
    read at every call (see ``CachedLLM._llm_params``), how a call is made
    (``_NOT_ANSWER_FIELDS``), credentials and the prompt settings (applied to
    the messages, which are keyed)."""
    live = {*ANSWER_PARAMS, *_EXTRA_FIELDS, *_KWARGS_FIELDS, *_PROMPT_FIELDS}
    out: dict[str, Any] = {}
    for name in type(llm).model_fields:
        secret = _SECRET_NAME.match(name) or name in _SECRET_FIELDS
        if name in live or name in _NOT_ANSWER_FIELDS or secret:
            continue
        try:
            value = _scope_value(name, getattr(llm, name, None))
        except Exception:  # a field that cannot be read is no setting
            continue
        if value is not _SKIP and value is not None:
            out[name] = value
    return out


def _message(m: ChatMessage) -> Message:
    kwargs = m.additional_kwargs or {}
    role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
    calls = kwargs.get("tool_calls") or ()
    return Message(
        role=_ROLES.get(role, "user"),
        content=m.content or "",
        name=kwargs.get("name"),
        tool_calls=tuple(_jsonable(c) for c in calls),
        tool_call_id=kwargs.get("tool_call_id"),
    )


def _non_text_digest(messages: Sequence[ChatMessage]) -> str | None:
    """A digest of every non-text block (images, audio, documents, tool calls).

    A block given by ``path`` is hashed by the file's bytes too: the same path
    can hold another image tomorrow, and its answer must not be served for it.
    """
    h = hashlib.blake2b(digest_size=16)
    seen = False
    for i, m in enumerate(messages):
        for block in m.blocks:
            if not isinstance(block, TextBlock):
                seen = True
                h.update(f"{i}:".encode())
                h.update(block.model_dump_json().encode("utf-8"))
                path = getattr(block, "path", None)
                if path:
                    _hash_file(h, path)
    return h.hexdigest() if seen else None


def _hash_file(h: Any, path: Any) -> None:
    try:
        with open(path, "rb") as f:
            for chunk in iter(partial(f.read, 1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        # The wrapped LLM will report the unreadable file; the key just stays apart.
        h.update(f"unreadable:{type(exc).__name__}".encode())


def _tool_key(tool: Any) -> dict[str, Any]:
    """A bound tool as it goes into the cache scope.

    A provider-format dict as it is; a LlamaIndex tool object by what the
    model is told about it (name, description, argument schema), not by its
    ``repr``, which names a memory address and would make every new tool
    object (every new agent) miss.
    """
    if isinstance(tool, Mapping):
        return dict(_jsonable(tool))
    meta = getattr(tool, "metadata", None)
    get = getattr(meta, "get_parameters_dict", None)
    if callable(get):
        try:
            params = get()
        except Exception:  # no readable schema: the name and description still split
            params = None
        return {
            "tool": {
                "name": getattr(meta, "name", None),
                "description": getattr(meta, "description", None),
                "parameters": _jsonable(params),
            }
        }
    return {"tool": _jsonable(tool)}


def _tool_call(obj: Any) -> dict[str, Any]:
    """A tool call in the engine's neutral (LangChain-like) shape when recognisable."""
    if isinstance(obj, ToolCallBlock):
        return {
            "name": obj.tool_name,
            "args": obj.tool_kwargs,
            "id": obj.tool_call_id,
            "type": "tool_call",
        }
    d = _jsonable(obj)
    fn = d.get("function") if isinstance(d, dict) else None
    if isinstance(fn, dict) and "name" in fn:  # OpenAI wire format
        args: Any = fn.get("arguments")
        if isinstance(args, str):
            with contextlib.suppress(ValueError):
                args = json.loads(args)
        return {"name": fn["name"], "args": args, "id": d.get("id"), "type": "tool_call"}
    return d if isinstance(d, dict) else {"value": d}


def _tool_calls(response: AnyResponse) -> tuple[dict[str, Any], ...]:
    if isinstance(response, ChatResponse):
        blocks = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        kwargs_calls = response.message.additional_kwargs.get("tool_calls") or ()
    else:
        blocks, kwargs_calls = [], response.additional_kwargs.get("tool_calls") or ()
    return tuple(_tool_call(c) for c in (*blocks, *kwargs_calls))


def _finish_reason(response: AnyResponse) -> str | None:
    """Why the answer ended, wherever the integration put it (see ``costopt_core.finish``).

    ``raw`` first (OpenAI's ``choices[0]``, Anthropic's ``stop_reason``,
    Bedrock's ``stopReason``, Gemini's ``candidates[0]``, Ollama's
    ``done_reason``), then the response's and the message's ``additional_kwargs``.
    """
    message = response.message if isinstance(response, ChatResponse) else None
    return finish_reason_of(
        response.raw,
        response.additional_kwargs,
        None if message is None else message.additional_kwargs,
    )


def _model_of(raw: Any) -> str | None:
    for key in ("model", "model_version", "modelVersion"):
        value = first_field(raw, key)
        if isinstance(value, str) and value:
            return value
    return None


def _text_of(response: AnyResponse) -> str:
    if isinstance(response, ChatResponse):
        return response.message.content or ""
    return response.text or ""


def _without_marker(response: AnyResponse) -> AnyResponse:
    # The marker describes one serving of an answer; the stored answer must not carry it.
    raw = response.raw
    if isinstance(raw, Mapping) and METADATA_KEY in raw:
        return response.model_copy(
            update={"raw": {k: v for k, v in raw.items() if k != METADATA_KEY}}
        )
    return response


def _payload(response: AnyResponse) -> str | None:
    """The response as JSON, or None if even a JSON-able copy cannot be written.

    What pydantic cannot dump (an SDK object in ``raw``, a numpy value in
    ``additional_kwargs``) is reduced to JSON-able data first; without a payload
    a hit is rebuilt from the neutral fields. Either way the answer the model
    was paid for reaches the caller.
    """
    try:
        return response.model_dump_json()
    except Exception:
        pass
    raw = response.raw
    update: dict[str, Any] = {
        "raw": _jsonable(raw) if isinstance(raw, Mapping) else {"model": _model_of(raw)},
        "additional_kwargs": _jsonable(response.additional_kwargs or {}),
    }
    if isinstance(response, ChatResponse):
        message = response.message
        extra = _jsonable(message.additional_kwargs or {})
        update["message"] = message.model_copy(update={"additional_kwargs": extra})
    try:
        return response.model_copy(update=update).model_dump_json()
    except Exception:
        return None


def response_of(response: AnyResponse, *, default_model: str | None = None) -> CachedResponse:
    """The neutral form of a LlamaIndex response, with the response itself as payload.

    Args:
        response: a ``ChatResponse`` or ``CompletionResponse`` of the wrapped LLM.
        default_model: the model to record when ``raw`` names none.
    """
    clean = _without_marker(response)
    is_chat = isinstance(clean, ChatResponse)
    payload = _payload(clean)
    return CachedResponse(
        text=_text_of(clean),
        model=_model_of(clean.raw) or default_model,
        usage=usage_of(clean),
        finish_reason=_finish_reason(clean),
        tool_calls=_tool_calls(clean),
        payload=payload,
        payload_format=None
        if payload is None
        else (CHAT_PAYLOAD_FORMAT if is_chat else COMPLETION_PAYLOAD_FORMAT),
    )


def _served_raw(raw: Any, hit: CacheHit, expose: bool) -> dict[str, Any]:
    """``raw`` of a served answer: the stored raw plus model and usage, noted as served.

    The cost handler learns that the cache served it from the note on this
    dict; the caller sees the ``costopt`` marker only with ``expose``.
    """
    r = hit.response
    out: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
    out.pop(METADATA_KEY, None)
    info = served_info(hit)
    if expose:
        out[METADATA_KEY] = info
    SERVED.note(out, info)
    if r.model and not _model_of(out):
        out["model"] = r.model
    if "usage" not in out and (
        r.usage.input_tokens is not None or r.usage.output_tokens is not None
    ):
        out["usage"] = usage_wire(r.usage)
    return out


def _blocks(r: CachedResponse) -> list[Any]:
    blocks: list[Any] = [TextBlock(text=r.text)]
    for tc in r.tool_calls:
        if "name" in tc:
            args = tc.get("args")
            blocks.append(
                ToolCallBlock(
                    tool_call_id=tc.get("id"),
                    tool_name=str(tc["name"]),
                    tool_kwargs=args if isinstance(args, dict | str) else {},
                )
            )
    return blocks


# The messages of the chat answers the cache served, by id, held weakly: a
# served answer's tool calls went through JSON, and the wrapped LLM may not
# read them back (see ``CachedLLM.get_tool_calls_from_response``).
_SERVED_MESSAGES: weakref.WeakValueDictionary[int, ChatMessage] = weakref.WeakValueDictionary()


def _served_message(message: ChatMessage) -> bool:
    return _SERVED_MESSAGES.get(id(message)) is message


_ARG_KEYS = ("args", "input", "parameters", "arguments")
_ID_KEYS = ("id", "tool_call_id", "toolUseId", "call_id")


def _tool_selections(response: ChatResponse) -> list[ToolSelection]:
    """The tool calls of an answer, read from their neutral form (see :func:`_tool_call`).

    The argument and id keys of the provider shapes the neutral form keeps as
    they are (Anthropic's ``input``, Cohere's ``parameters``, Bedrock's
    ``toolUseId``) are read too. A call named in both a block and
    ``additional_kwargs`` (same id) is read once.
    """
    out: list[ToolSelection] = []
    ids: set[str] = set()
    for tc in _tool_calls(response):
        name = tc.get("name")
        if not isinstance(name, str) or not name:
            continue
        call_id = next((tc[k] for k in _ID_KEYS if tc.get(k)), None)
        if call_id is not None:
            if str(call_id) in ids:
                continue
            ids.add(str(call_id))
        args = next((tc[k] for k in _ARG_KEYS if k in tc), None)
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                args = None
        out.append(
            ToolSelection(
                tool_id=str(call_id) if call_id is not None else uuid.uuid4().hex,
                tool_name=name,
                tool_kwargs=args if isinstance(args, dict) else {},
            )
        )
    return out


def chat_response_of(hit: CacheHit, *, expose: bool = False) -> ChatResponse:
    """Rebuild a stored answer as a ``ChatResponse`` marked as served by the cache."""
    r = hit.response
    response: ChatResponse | None = None
    if r.payload and r.payload_format == CHAT_PAYLOAD_FORMAT:
        try:
            response = ChatResponse.model_validate_json(r.payload)
        except Exception:
            response = None
    elif r.payload and r.payload_format == COMPLETION_PAYLOAD_FORMAT:
        try:
            c = CompletionResponse.model_validate_json(r.payload)
            response = ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=c.text),
                raw=c.raw,
                additional_kwargs=c.additional_kwargs,
            )
        except Exception:
            response = None
    if response is None:
        response = ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, blocks=_blocks(r)),
            additional_kwargs={"finish_reason": r.finish_reason} if r.finish_reason else {},
        )
    served = response.model_copy(
        update={"raw": _served_raw(response.raw, hit, expose), "delta": None}
    )
    _SERVED_MESSAGES[id(served.message)] = served.message
    return served


def completion_response_of(hit: CacheHit, *, expose: bool = False) -> CompletionResponse:
    """Rebuild a stored answer as a ``CompletionResponse`` marked as served by the cache."""
    r = hit.response
    response: CompletionResponse | None = None
    if r.payload and r.payload_format == COMPLETION_PAYLOAD_FORMAT:
        try:
            response = CompletionResponse.model_validate_json(r.payload)
        except Exception:
            response = None
    if response is None:
        response = CompletionResponse(text=r.text)
    return response.model_copy(
        update={"raw": _served_raw(response.raw, hit, expose), "delta": None}
    )


def _words(text: str) -> list[str]:
    words = text.split(" ") if text else []
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _chunk_raw(raw: Any, hit: CacheHit) -> dict[str, Any]:
    # Every replayed chunk says where it comes from; only the last carries usage.
    # The word chunks share this dict, noted as served too: a replay the caller
    # stops reading before the last chunk is still known to have cost nothing,
    # and is recorded as the hit it was (the note says it is a replay; see the
    # handler's _stopped_replay). The last chunk's raw (``raw``) says so too.
    note = {**served_info(hit), REPLAY_NOTE: True}
    if isinstance(raw, dict):
        SERVED.note(raw, note)
    raw = raw if isinstance(raw, Mapping) else {}
    marker = {k: raw[k] for k in (METADATA_KEY, "model") if k in raw}
    SERVED.note(marker, note)
    return marker


def _replay_chat(hit: CacheHit, expose: bool) -> Generator[ChatResponse, None, None]:
    """A stored answer as a stream: word deltas, then the whole answer with usage."""
    final = chat_response_of(hit, expose=expose)
    marker = _chunk_raw(final.raw, hit)
    text = ""
    for delta in _words(final.message.content or ""):
        text += delta
        yield ChatResponse(
            message=ChatMessage(role=final.message.role, content=text), delta=delta, raw=marker
        )
    yield final.model_copy(update={"delta": ""})


def _replay_completion(hit: CacheHit, expose: bool) -> Generator[CompletionResponse, None, None]:
    final = completion_response_of(hit, expose=expose)
    marker = _chunk_raw(final.raw, hit)
    text = ""
    for delta in _words(final.text):
        text += delta
        yield CompletionResponse(text=text, delta=delta, raw=marker)
    yield final.model_copy(update={"delta": ""})


def _reader_copy(chunk: R, shared: bool, noted: list[Any], own: list[Any], expose: bool) -> R:
    """The copy of ``chunk`` a reader of a relayed stream gets.

    ``own`` keeps the last own (not shared) chunk and its copy, for
    :func:`_sync_raw`; a shared chunk empties it.
    """
    if shared:
        own.clear()
        return _shared_copy(chunk, noted, expose)
    copied = _own_copy(chunk)
    own[:] = [chunk, copied]
    return copied


def _sync_raw(own: list[Any]) -> None:
    """Give the last own copy the ``raw`` its chunk holds now the stream has ended.

    An LLM may set its last item's ``raw`` only after yielding it: RouterLLM
    adds the route when its stream ends, on a new dict. The cost handler knows
    the answer of the call nested in the cache's by that ``raw`` object (the
    one the nested call's end event carried); a copy still holding the old
    one would record the answer a second time.
    """
    if own:
        chunk, copied = own
        if copied.raw is not chunk.raw:
            copied.raw = chunk.raw


def _shared_copy(chunk: R, noted: list[Any], expose: bool) -> R:
    """A chunk of another request's call, as this request's: a copy (see
    :func:`_own_copy`) whose ``raw`` is noted as served by the cache.

    Only the newest chunk's note is kept (``noted``): the cost handler reads
    the last one a stream gave.
    """
    copied = _own_copy(chunk, raw_too=True)
    marked: Any = copied.raw if copied.raw is not None else {}
    if expose and isinstance(marked, dict):
        marked[METADATA_KEY] = dict(SHARED_INFO)
    _unnote(noted)
    SERVED.note(marked, SHARED_INFO)
    noted.append(marked)
    return copied.model_copy(update={"raw": marked})


def _own_copy(chunk: R, *, raw_too: bool = False) -> R:
    """A reader's own copy of a shared stream's chunk: every reader, and the
    store at the end, get the same object. The message is copied whole;
    ``raw`` (a provider's object) is kept, as the cost handler knows the
    answer of the call nested in this one by it, unless ``raw_too`` (one level
    deep, as is if it cannot be copied)."""
    update: dict[str, Any] = {}
    if raw_too:
        raw = chunk.raw
        with contextlib.suppress(Exception):
            raw = dict(raw) if isinstance(raw, Mapping) else copy(raw)
        update["raw"] = raw
    if isinstance(chunk, ChatResponse):
        update["message"] = chunk.message.model_copy(deep=True)
    if isinstance(getattr(chunk, "additional_kwargs", None), dict):
        update["additional_kwargs"] = dict(chunk.additional_kwargs)
    return chunk.model_copy(update=update)


def _unnote(noted: list[Any]) -> None:
    while noted:
        SERVED.take(noted.pop())


def _no_usage(response: AnyResponse) -> bool:
    u = usage_of(response)
    return u.input_tokens is None and u.output_tokens is None


def _completed(chunks: Sequence[R]) -> R:
    """One response for a stream read to its end: the last chunk, with the whole text."""
    last = chunks[-1]
    update: dict[str, Any] = {"delta": None}
    deltas = "".join(c.delta or "" for c in chunks)
    if len(deltas) > len(_text_of(last)):  # integrations that do not accumulate the text
        if isinstance(last, ChatResponse):
            kept: list[Any] = [b for b in last.message.blocks if not isinstance(b, TextBlock)]
            blocks = [TextBlock(text=deltas), *kept]
            update["message"] = last.message.model_copy(update={"blocks": blocks})
        else:
            update["text"] = deltas
    raw: dict[str, Any] = dict(last.raw) if isinstance(last.raw, Mapping) else {}
    patched = False
    if _no_usage(last):
        # Some providers report usage on a chunk other than the last.
        donor = next((c for c in reversed(chunks) if not _no_usage(c)), None)
        if donor is not None and isinstance(donor.raw, Mapping):
            raw.update({k: donor.raw[k] for k in ("usage", "usage_metadata") if k in donor.raw})
            patched = True
    if _model_of(last.raw) is None:
        model = next((m for c in reversed(chunks) if (m := _model_of(c.raw))), None)
        if model is not None:
            raw["model"] = model
            patched = True
    if patched:
        update["raw"] = raw
    return last.model_copy(update=update)


F = TypeVar("F", bound=Callable[..., Any])


def _tenant_tagged(method: F) -> F:
    """Run ``method`` (an LLM entry point) under the wrapper's tenant as an instrument tag.

    The cache partitions answers by ``CachedLLM.tenant``; the cost handler reads
    a call's tenant from the tags of its start event (dispatched inside the
    ``llm_*_callback`` wrapper, so the tag must be set outside it), and the
    wrapped LLM's own call on a miss is tagged too. Without it the ledger would
    book the calls under another tenant than the one whose cache served them.
    """
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def tagged_async(self: CachedLLM, *args: Any, **kwargs: Any) -> Any:
            with self._tenant_tags():
                return await method(self, *args, **kwargs)

        return tagged_async  # type: ignore[return-value]

    @functools.wraps(method)
    def tagged(self: CachedLLM, *args: Any, **kwargs: Any) -> Any:
        with self._tenant_tags():
            return method(self, *args, **kwargs)

    return tagged  # type: ignore[return-value]


class CachedLLM(MarksStructured, FunctionCallingLLM):
    """Wraps any LlamaIndex LLM with costopt's exact + semantic cache.

    ``chat``, ``complete``, their streaming and async twins all go through
    the cache. A hit never calls the wrapped LLM; its response carries the
    ``model`` and ``usage`` of the call it replaced, and (only with
    ``expose_cache_info``, since it tells a caller that someone asked the same
    question before) ``raw["costopt"] = {"cache": "exact" | "semantic",
    "similarity": float}``; the cost handler learns it either way. Concurrent
    identical misses (``chat``/``complete`` and their async twins) make one
    call. A stream that hits is replayed word by word, usage on its last
    response; a stream that misses is stored only when read to its end.

    Function calling: when the wrapped LLM is a ``FunctionCallingLLM``, so is
    the wrapper (``FunctionAgent`` and ``predict_and_call`` take it). The
    wrapped LLM formats the tools for its provider and reads the tool calls of
    an answer; its chat goes through the cache, so a served answer replays the
    stored response, tool calls included, and the tools as the provider sees
    them are part of the scope.

    Prompt settings (``system_prompt``, ``query_wrapper_prompt``,
    ``messages_to_prompt``, ``completion_to_prompt``, ``output_parser``) not
    set on the wrapper are the wrapped LLM's, so ``predict`` and ``stream``
    send the wrapped LLM what its own ``predict`` and ``stream`` would.

    The cache scope (who may share an answer) is the wrapped LLM's class,
    model name and answer-changing parameters (its fields such as
    ``temperature`` / ``max_tokens`` and its ``additional_kwargs``, plus the
    call's keyword arguments), its system prompt, the tools, the tenant and
    the kind of call (chat vs. completion).

    Args:
        llm: the LLM to call on a miss.
        semantic_cache: the engine cache; a default in-memory one if omitted.
        tenant: tenant of this LLM's calls (over a caller's tenant tag); otherwise
            the one :func:`~llamaindex_costopt.handler.resolve_tenant` finds (instrument tags,
            ``track_costs``, ``tenant_scope``, the recording handler's).
        ttl_s: time to live of the answers this LLM stores.
        expose_cache_info: show callers which answers the cache served.
        cache_tags: labels stored with every answer, to invalidate by later.

    Raises:
        ConfigurationError: ``llm`` is not a LlamaIndex LLM (a model name, say),
            ``semantic_cache`` not a ``SemanticCache``, ``ttl_s`` not positive,
            or ``cache_tags`` a single string.

    Example:
        >>> from costopt_core.cache import SemanticCache
        >>> from costopt_core.testing import FakeEmbedder
        >>> from llamaindex_costopt.testing import ScriptedLLM
        >>> llm = CachedLLM(
        ...     llm=ScriptedLLM.from_texts(["Paris."]),
        ...     semantic_cache=SemanticCache(embedder=FakeEmbedder()),
        ...     expose_cache_info=True,
        ... )
        >>> llm.complete("Capital of France?").text
        'Paris.'
        >>> llm.complete("Capital of France?").raw["costopt"]
        {'cache': 'exact', 'similarity': 1.0}
    """

    llm: LLM = Field(description="The wrapped LLM, called on a miss.")
    semantic_cache: CacheEngine = Field(default_factory=CacheEngine, exclude=True)
    tenant: str | None = Field(default=None, description="Tenant of this LLM's calls.")
    expose_cache_info: bool = Field(
        default=False,
        description="Mark served answers' raw['costopt'] (callers then see hit/miss).",
    )
    ttl_s: float | None = Field(default=None, description="Time to live of stored answers.")
    cache_tags: tuple[str, ...] = Field(default=(), description="Labels stored with answers.")
    # The wrapped LLM's settings read once (see _llm_params), with the LLM they are of.
    _settings: tuple[LLM, dict[str, Any]] | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        check_arguments("CachedLLM", data, type(self), wraps_models=True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error("CachedLLM", exc) from None

    def model_post_init(self, context: Any) -> None:
        """Take the wrapped LLM's prompt settings that are not set on the wrapper.

        LlamaIndex's ``predict`` / ``stream`` (and async twins) format the
        prompt with the settings of the LLM they are called on (this wrapper)
        and then call ``chat``, or ``complete`` with ``formatted=True``: the
        wrapped LLM's own system prompt, prompt templates and output parser
        would never be applied. With them taken over, ``CachedLLM(llm=x)``
        sends what ``x.predict`` would send to ``x``.
        """
        super().model_post_init(context)
        adopt_prompt_settings(self, self.llm)

    _check_llm = field_validator("llm", mode="before")(check_llm)
    _check_cache = field_validator("semantic_cache", mode="before")(check_cache)

    @field_validator("ttl_s", mode="after")
    @classmethod
    def _check_ttl(cls, value: float | None) -> float | None:
        # The engine's rule (CacheRequest applies it to every request): refused
        # here, an infinite TTL would fail each call instead.
        try:
            return check_ttl(value)
        except ConfigurationError:
            raise ConfigurationError(
                "ttl_s must be a positive number of seconds, and finite; leave it out "
                "(None) for answers that never expire"
            ) from None

    @field_validator("cache_tags", mode="before")
    @classmethod
    def _check_tags(cls, value: Any) -> Any:
        if isinstance(value, str):  # a tuple of its letters is never what was meant
            raise ConfigurationError(f"cache_tags must be a tuple of labels; pass ({value!r},)")
        return value

    @classmethod
    def class_name(cls) -> str:
        return "costopt_cached_llm"

    @property
    def metadata(self) -> LLMMetadata:
        """The wrapped LLM's metadata.

        Function calling only when the wrapped LLM is a ``FunctionCallingLLM``
        that says it calls functions: the wrapper's ``chat_with_tools`` is the
        wrapped LLM's, through the cache.
        """
        meta = self.llm.metadata
        if meta.is_function_calling_model and not isinstance(self.llm, FunctionCallingLLM):
            return meta.model_copy(update={"is_function_calling_model": False})
        return meta

    # -- function calling: the wrapped LLM's, with its chat through the cache -------
    def _function_llm(self) -> FunctionCallingLLM:
        if not isinstance(self.llm, FunctionCallingLLM):
            raise ConfigurationError(
                f"chat_with_tools needs a FunctionCallingLLM to wrap, got "
                f"{type(self.llm).__name__}; wrap a function-calling LLM, or call chat() "
                "with the provider's own tools=[...]"
            )
        return self.llm

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
        """The wrapped LLM's ``chat`` arguments for the tools (its provider's format).

        ``chat_with_tools`` then calls this wrapper's ``chat`` with them: the
        tools, as the provider will see them, are part of the cache scope.

        Raises:
            ConfigurationError: the wrapped LLM is not a ``FunctionCallingLLM``.
        """
        return self._function_llm()._prepare_chat_with_tools_compat(
            tools,
            user_msg=user_msg,
            chat_history=chat_history,
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            **kwargs,
        )

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        return self._function_llm()._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The tool calls of an answer (served or fresh), read by the wrapped LLM.

        A served answer is the stored response itself (its tool-call blocks and
        ``additional_kwargs``), so the wrapped LLM reads it as it read the original,
        except for what did not survive storage as JSON: integrations that keep
        the provider SDK's tool-call objects in ``additional_kwargs["tool_calls"]``
        (and check their class) get them back as dicts. When the wrapped LLM
        cannot read a served answer's tool calls (it raises, or finds none), they
        are read from their neutral form (name, arguments, id). A fresh answer,
        and a served one the wrapped LLM reads, are the wrapped LLM's alone.
        """
        llm = self._function_llm()
        if not _served_message(response.message):
            return llm.get_tool_calls_from_response(
                response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
            )
        try:
            calls = llm.get_tool_calls_from_response(
                response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
            )
        except Exception:
            calls = _tool_selections(response)
            if not calls:
                raise
            return calls
        return calls or _tool_selections(response)

    # -- requests --------------------------------------------------------------
    def _tenant(self) -> str | None:
        return resolve_tenant(self.tenant)

    @contextlib.contextmanager
    def _tenant_tags(self) -> Iterator[None]:
        """The current instrument tags, plus the tenant field if it is set."""
        if self.tenant is None:
            yield  # the handler resolves the tenant as the cache does
            return
        with instrument_tags({**active_instrument_tags.get(), TENANT_KEYS[0]: self.tenant}):
            yield

    def _llm_params(self) -> dict[str, Any]:
        """The wrapped LLM's settings that may change its answer, as JSON.

        The sampling knobs the engine knows (``ANSWER_PARAMS``, a few more by
        name, the provider kwargs dicts) are read at every call, as a caller may
        set them between calls. Every other serialisable field is in too, not a
        list of known ones: an Ollama's ``json_mode``, an Anthropic's
        ``thinking_dict``, an OpenAIResponses' ``instructions`` or an
        OpenAILike's ``api_base`` each change the answer, and two LLMs differing
        only there served each other's answers from one engine (LangChain's cache
        keys on a model's fields too). Those are read once per wrapped LLM
        (:func:`_llm_settings`): a field an LLM changes as it runs (a call
        counter, a record of what it was sent) would otherwise split the scope
        at every call. Entries stored before these fields were keyed have
        other scopes: they are missed, never served for another setting.
        """
        llm = self.llm
        held = self._settings
        if held is None or held[0] is not llm:
            held = self._settings = (llm, _llm_settings(llm))
        params: dict[str, Any] = dict(held[1])
        for name in (*ANSWER_PARAMS, *_EXTRA_FIELDS):
            try:
                value = getattr(llm, name, None)
            except Exception:  # a property that cannot be read is no parameter
                continue
            if value is not None and not callable(value):
                params[name] = value
        for name in _KWARGS_FIELDS:
            extra = _scope_value(name, getattr(llm, name, None))
            if isinstance(extra, Mapping):
                params.update(extra)
        return params

    def _request(
        self, kind: str, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> CacheRequest:
        call_kwargs = dict(kwargs)
        tools = call_kwargs.pop("tools", None) or ()
        params = {**self._llm_params(), **call_kwargs}
        # The engine splits the scope on the parameters it knows; the rest
        # (provider-specific knobs, images and other non-text blocks) is folded
        # into the model name so that it splits the scope too.
        extras = {k: v for k, v in params.items() if k not in ANSWER_PARAMS}
        digest = _non_text_digest(messages)
        if digest is not None:
            extras["_blocks"] = digest
        meta = self.llm.metadata
        model = f"llamaindex/{type(self.llm).__qualname__}/{meta.model_name}/{kind}"
        if extras:
            model += f"/{_canon(extras)}"
        translated = tuple(_message(m) for m in messages)
        if self.llm.system_prompt:
            # Some integrations prepend their own system prompt; it changes the answer.
            translated = (Message("system", self.llm.system_prompt), *translated)
        return CacheRequest(
            messages=translated,
            model=model,
            params={k: v for k, v in params.items() if k in ANSWER_PARAMS},
            tools=tuple(_tool_key(t) for t in tools),
            tenant=self._tenant(),
            ttl_s=self.ttl_s,
            tags=self.cache_tags,
        )

    def _chat_request(
        self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> CacheRequest:
        return self._request("chat", messages, kwargs)

    def _completion_request(
        self, prompt: str, formatted: bool, kwargs: Mapping[str, Any]
    ) -> CacheRequest:
        # ``formatted=False`` lets the wrapped LLM apply its prompt template.
        kind = "complete/formatted" if formatted else "complete"
        return self._request(kind, [ChatMessage(role=MessageRole.USER, content=prompt)], kwargs)

    def _neutral(self, response: AnyResponse) -> CachedResponse:
        return response_of(response, default_model=self.llm.metadata.model_name)

    # -- get or call ---------------------------------------------------------------
    def _get_or_call(
        self, request: CacheRequest, call: Callable[[], R], rebuild: Callable[[CacheHit], R]
    ) -> R:
        fresh: list[R] = []

        def produce() -> CachedResponse:
            response = call()
            fresh.append(response)
            return self._neutral(response)

        out = self.semantic_cache.get_or_call(request, produce)
        if out.hit is None:
            return fresh[0]  # the wrapped LLM's own response, raw untouched
        return rebuild(out.hit)

    async def _aget_or_call(
        self,
        request: CacheRequest,
        call: Callable[[], Awaitable[R]],
        rebuild: Callable[[CacheHit], R],
    ) -> R:
        fresh: list[R] = []

        async def produce() -> CachedResponse:
            response = await call()
            fresh.append(response)
            return self._neutral(response)

        out = await self.semantic_cache.aget_or_call(request, produce)
        if out.hit is None:
            return fresh[0]
        return rebuild(out.hit)

    def _stored(self, chunks: list[R]) -> CachedResponse:
        stored = self._neutral(_completed(chunks))
        if stored.finish_reason is None:
            # The finish reason is per chunk, and not always on the last one:
            # OpenAI's usage chunk comes after the one saying "length". A cut
            # answer read as whole would be stored.
            reasons = (_finish_reason(c) for c in reversed(chunks))
            reason = next((r for r in reasons if r is not None), None)
            if reason is not None:
                stored = dataclasses.replace(stored, finish_reason=reason)
        return stored

    def _relay(
        self, request: CacheRequest, open_stream: Callable[[], Generator[R, None, None]]
    ) -> Generator[R, None, None]:
        # Opened now, as a provider request would be made now, unless an
        # identical stream is in flight: then it is replayed (served as a hit).
        # Only a stream read to its end is stored: a half-read answer is not one.
        pairs = self.semantic_cache.share_stream(request, open_stream, self._stored)
        return self._served(pairs)

    def _served(self, pairs: Reading[R]) -> Generator[R, None, None]:
        # The last chunk's note stays: the end event the cost handler records
        # comes after this stream ends.
        noted: list[Any] = []
        own: list[Any] = []
        try:
            for chunk, shared in pairs:
                yield _reader_copy(chunk, shared, noted, own, self.expose_cache_info)
            _sync_raw(own)  # before this stream's end event
        finally:
            # Now, not at garbage collection: a stream nobody else reads is
            # closed, which ends its instrumentation span when the caller stops.
            pairs.close()

    async def _arelay(
        self,
        request: CacheRequest,
        open_stream: Callable[[], Awaitable[AsyncGenerator[R, None]]],
    ) -> AsyncGenerator[R, None]:
        pairs = await self.semantic_cache.ashare_stream(request, open_stream, self._stored)
        return self._aserved(pairs)

    async def _aserved(self, pairs: AsyncReading[R]) -> AsyncGenerator[R, None]:
        noted: list[Any] = []
        own: list[Any] = []
        try:
            async for chunk, shared in pairs:
                yield _reader_copy(chunk, shared, noted, own, self.expose_cache_info)
            _sync_raw(own)
        finally:
            await pairs.aclose()

    # -- chat ------------------------------------------------------------------------
    @_tenant_tagged
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._get_or_call(
            self._chat_request(messages, kwargs),
            lambda: self.llm.chat(messages, **kwargs),
            partial(chat_response_of, expose=self.expose_cache_info),
        )

    @_tenant_tagged
    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._aget_or_call(
            self._chat_request(messages, kwargs),
            lambda: self.llm.achat(messages, **kwargs),
            partial(chat_response_of, expose=self.expose_cache_info),
        )

    @_tenant_tagged
    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        request = self._chat_request(messages, kwargs)
        hit = self.semantic_cache.lookup(request)
        if hit is not None:
            return _replay_chat(hit, self.expose_cache_info)
        # Called now, as a provider request would be made now.
        return self._relay(request, lambda: self.llm.stream_chat(messages, **kwargs))

    @_tenant_tagged
    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        request = self._chat_request(messages, kwargs)
        hit = await self.semantic_cache.alookup(request)
        if hit is not None:
            return _areplay(_replay_chat(hit, self.expose_cache_info))
        return await self._arelay(request, lambda: self.llm.astream_chat(messages, **kwargs))

    # -- completion ----------------------------------------------------------------
    @_tenant_tagged
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._get_or_call(
            self._completion_request(prompt, formatted, kwargs),
            lambda: self.llm.complete(prompt, formatted=formatted, **kwargs),
            partial(completion_response_of, expose=self.expose_cache_info),
        )

    @_tenant_tagged
    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return await self._aget_or_call(
            self._completion_request(prompt, formatted, kwargs),
            lambda: self.llm.acomplete(prompt, formatted=formatted, **kwargs),
            partial(completion_response_of, expose=self.expose_cache_info),
        )

    @_tenant_tagged
    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        request = self._completion_request(prompt, formatted, kwargs)
        hit = self.semantic_cache.lookup(request)
        if hit is not None:
            return _replay_completion(hit, self.expose_cache_info)
        return self._relay(
            request, lambda: self.llm.stream_complete(prompt, formatted=formatted, **kwargs)
        )

    @_tenant_tagged
    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        request = self._completion_request(prompt, formatted, kwargs)
        hit = await self.semantic_cache.alookup(request)
        if hit is not None:
            return _areplay(_replay_completion(hit, self.expose_cache_info))
        return await self._arelay(
            request, lambda: self.llm.astream_complete(prompt, formatted=formatted, **kwargs)
        )


async def _areplay(chunks: Generator[R, None, None]) -> AsyncGenerator[R, None]:
    for chunk in chunks:
        yield chunk
