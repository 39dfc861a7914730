"""``cached(runnable)``: serve repeated inputs of any LangChain Runnable from the cache.

An agent asks its retriever and tools the same things over and over, and each
time pays for it: an embedding request and a vector search, a paid API call,
a sub-chain with its own model calls. ``cached`` puts any Runnable (a
retriever, a tool, an LCEL chain) behind the engine's ``ComponentCache``,
with the same tenant-safe scopes, TTLs, tags and in-flight de-duplication as
LLM answers.

This module only translates: LangChain inputs into JSON cache keys (LangChain
objects through ``dumpd``, tuples kept tuples for the engine to key apart from
lists) and outputs to and from text with ``langchain_core.load`` (``dumps`` /
``loads(allowed_objects="core")``), so Documents and messages come back as the
same types. What is served and what is stored is decided by the engine.
"""

from __future__ import annotations

import copy
import functools
import inspect
import typing
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    AsyncCallbackManagerForToolRun,
    CallbackManagerForChainRun,
    CallbackManagerForToolRun,
)
from langchain_core.load import dumpd, dumps, loads
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
    message_chunk_to_message,
)
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from langchain_core.runnables.utils import ConfigurableFieldSpec, Input, Output
from langchain_core.tools import BaseTool, Tool
from langchain_core.tools.base import ArgsSchema
from langchain_core.utils.pydantic import TypeBaseModel
from pydantic import ConfigDict

from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache.component import ComponentCache
from langchain_costopt.callbacks import run_tenant

__all__ = [
    "CODEC",
    "METADATA_KEY",
    "CachedRunnable",
    "CachedTool",
    "as_new_message",
    "cached",
    "decode",
    "encode",
]

#: Codec name recorded in each entry's ``payload_format`` (``component/langchain/v1``).
CODEC = "langchain"

#: Where costopt notes how a call was served, in a message's ``response_metadata``.
METADATA_KEY = "costopt"

_M = typing.TypeVar("_M", bound=BaseMessage)


def as_new_message(message: _M) -> _M:
    """A stored message as a new answer: without the id and costopt's note of the
    call that made it (every cache that stores or serves messages says it so).

    The note (served by, cost) describes that one call, not a hit. The id names
    that one message: LangGraph's ``add_messages`` merges messages by id, so a
    hit with it replaced the first answer in a thread that asked the same
    question again instead of adding the second. LangChain gives a message
    without one its run's id.
    """
    meta = message.response_metadata or {}
    update: dict[str, Any] = {"id": None}
    if METADATA_KEY in meta:
        update["response_metadata"] = {k: v for k, v in meta.items() if k != METADATA_KEY}
    if message.id is None and len(update) == 1:
        return message
    return message.model_copy(update=update)


def _as_stored(value: Any) -> Any:
    """An output as it is stored and served: a message as a new one (:func:`as_new_message`)."""
    return as_new_message(value) if isinstance(value, BaseMessage) else value


def encode(value: Any) -> str:
    """A Runnable's output as text, LangChain objects included.

    Raises:
        ValueError: ``value`` holds something ``loads`` could not rebuild (an
            object that is not LangChain-serialisable, or not a core type).
    """
    text = dumps(value)
    # ``dumps`` never fails: what it cannot serialise becomes a "not
    # implemented" stub that only ``loads`` rejects. Reading it back here keeps
    # such outputs out of the cache instead of failing every later hit.
    try:
        loads(text, allowed_objects="core")
    except Exception as exc:
        raise ValueError(f"output cannot be restored from the cache: {exc}") from exc
    return text


def decode(text: str) -> Any:
    """The output :func:`encode` turned into ``text``."""
    return loads(text, allowed_objects="core")


def _decode_served(text: str) -> Any:
    """:func:`decode` for ``cached()``: a message as a new one (:func:`_as_stored`),
    entries stored before messages were stored so included."""
    return _as_stored(decode(text))


def _has_stub(obj: Any) -> bool:
    """True if ``dumpd`` output holds a stub for an object it could not serialise."""
    if isinstance(obj, Mapping):
        if obj.get("lc") == 1 and obj.get("type") == "not_implemented":
            return True
        return any(_has_stub(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_stub(v) for v in obj)
    return False


def _keep_tuples(value: Any, dumped: Any) -> Any:
    """``dumped`` (``dumpd(value)``) with ``value``'s tuples tuples again.

    ``dumpd`` writes a tuple as a list; the engine keys the two apart (a
    Runnable may answer them differently), so it must see which was which.
    Everything else stays exactly as ``dumpd`` wrote it, LangChain objects
    and escaped dicts (which hold the caller's own values) included, so
    inputs without tuples keep the keys they always had.
    """
    if isinstance(value, list | tuple) and isinstance(dumped, list) and len(dumped) == len(value):
        items = [_keep_tuples(v, d) for v, d in zip(value, dumped, strict=True)]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict) and isinstance(dumped, dict) and dumped.keys() == value.keys():
        return {k: _keep_tuples(value[k], d) for k, d in dumped.items()}
    return dumped


_MESSAGE_ID_PATH = ["langchain", "schema", "messages"]


def _without_message_ids(dumped: Any) -> Any:
    """``dumped`` with no message's id in it.

    A message's id names one object, not what it says: LangGraph gives every
    message in its state a fresh one, so the same question never hit (as
    langchain-core drops them from its own LLM cache's prompt). The caller's
    own dicts (escaped by ``dumpd``) are kept as they are.
    """
    if isinstance(dumped, list | tuple):
        items = [_without_message_ids(v) for v in dumped]
        return tuple(items) if isinstance(dumped, tuple) else items
    if not isinstance(dumped, dict) or "__lc_escaped__" in dumped:
        return dumped
    out = {k: _without_message_ids(v) for k, v in dumped.items()}
    path, kwargs = out.get("id"), out.get("kwargs")
    if (
        out.get("lc") == 1
        and out.get("type") == "constructor"
        and isinstance(path, list)
        and path[:-1] == _MESSAGE_ID_PATH
        and isinstance(kwargs, dict)
    ):
        out["kwargs"] = {k: v for k, v in kwargs.items() if k != "id"}
    return out


def _key(value: Any) -> tuple[bool, Any]:
    """``(True, json_value)`` for a usable cache key, ``(False, None)`` otherwise."""
    if isinstance(value, str):
        return True, value  # as is, so that str inputs can match semantically
    try:
        dumped = dumpd(value)
    except Exception:
        return False, None
    # A stub holds only a repr; two different objects could share it.
    if _has_stub(dumped):
        return False, None
    return True, _without_message_ids(_keep_tuples(value, dumped))


def _lookup_args(
    bound: Runnable[Any, Any], input: Any, config: RunnableConfig, kwargs: Mapping[str, Any]
) -> tuple[bool, Any, str | None, Any]:
    """``(cacheable, key, tenant, variant)`` of one call of ``bound``."""
    ok, key = _key(input)
    # Call options and the wrapped Runnable's configurable fields change
    # its output without being its input: they split the cache instead.
    configurable = config.get("configurable") or {}
    specs = {s.id for s in bound.config_specs}
    variant_src: dict[str, Any] = {}
    if kwargs:
        variant_src["kwargs"] = dict(kwargs)
    chosen = {k: v for k, v in configurable.items() if k in specs}
    if chosen:
        variant_src["configurable"] = chosen
    variant_ok, variant = _key(variant_src) if variant_src else (True, None)
    tenant = run_tenant(config.get("metadata"))
    return ok and variant_ok, key, tenant, variant


def _input_of(parts: list[Any]) -> tuple[bool, Any]:
    """The input a stream of input chunks adds up to, as ``Runnable.transform`` has it.

    ``(False, None)`` for no chunk (nothing to run). Chunks that cannot be
    added leave the last one, as langchain-core does: what the wrapped
    Runnable would be given is what the key is made of.
    """
    if not parts:
        return False, None
    value = parts[0]
    for part in parts[1:]:
        try:
            value = value + part
        except TypeError:
            value = part
    return True, value


def _copied(chunk: Any) -> Any:
    """A stream's chunk as this reader's own: every reader of a shared stream,
    and the store at its end, get the same object. As is if it cannot be copied."""
    try:
        return copy.deepcopy(chunk)
    except Exception:
        return chunk


def _as_output(value: Any) -> Any:
    """What ``invoke`` returns for the sum of a stream's chunks, as it is stored.

    A chat model streams message chunks but invoke returns the message: a
    later invoke served from a stored stream must get what invoke gives.
    """
    if isinstance(value, BaseMessageChunk):
        value = message_chunk_to_message(value)
    return _as_stored(value)


class _Fresh:
    """A miss's output: stored as a hit serves it (:func:`_as_stored`), returned
    to its own caller as the call made it (a message keeps its id and note there).

    The engine stores what the call it is given returns, and only if that
    decodes back equal, so the call it gets returns the stored form.
    """

    def __init__(self) -> None:
        self._made: list[tuple[Any, Any]] = []  # (stored form, the call's own output)

    def _keep(self, value: Any) -> Any:
        stored = _as_stored(value)
        if stored is not value:
            self._made.append((stored, value))
        return stored

    def call(self, call: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: self._keep(call())

    def acall(self, call: Callable[[], Any]) -> Callable[[], Any]:
        async def kept() -> Any:
            return self._keep(await call())

        return kept

    def own(self, got: Any) -> Any:
        """What the caller gets for ``got``: its own output if this call made it."""
        for stored, value in self._made:
            if got is stored:
                return value
        return got


#: Each message class and the chunk class a stream yields for it. None of these
#: message classes is another's subclass, so their order does not matter.
_CHUNK_OF: tuple[tuple[type[BaseMessage], type[BaseMessageChunk]], ...] = (
    (AIMessage, AIMessageChunk),
    (HumanMessage, HumanMessageChunk),
    (SystemMessage, SystemMessageChunk),
    (ToolMessage, ToolMessageChunk),
    (FunctionMessage, FunctionMessageChunk),
    (ChatMessage, ChatMessageChunk),
)


def _as_chunk(value: Any) -> Any:
    """What a stream hit replays for a stored output: :func:`_as_output` undone.

    A chat model's output is stored as the message ``invoke`` returns, but its
    stream yields message chunks (``tool_call_chunks``, ``+``): a stream
    served from the cache must yield a chunk too. The chunk is the whole
    message, so it is also the stream's last (``chunk_position="last"``, as
    on the sum of a stream's chunks). A chunk class is a subclass of its
    message class, so a consumer that took the message takes it as well.
    Anything else (text, dicts, documents) is replayed as it was stored.
    """
    if not isinstance(value, BaseMessage) or isinstance(value, BaseMessageChunk):
        return value
    for message_class, chunk_class in _CHUNK_OF:
        if isinstance(value, message_class):
            # As ``message_chunk_to_message`` does the other way: the fields
            # as they are; AIMessageChunk rebuilds its tool_call_chunks from
            # tool_calls and invalid_tool_calls.
            fields = {k: v for k, v in value.__dict__.items() if k != "type"}
            if chunk_class is AIMessageChunk:
                fields["chunk_position"] = "last"
            return chunk_class(**fields)
    return value  # a message class of its own: no chunk class to replay it as


class _SchemasOfBound:
    """The wrapped Runnable's schemas and configurable fields, as the wrapper's own."""

    if TYPE_CHECKING:
        bound: Runnable[Any, Any]

    def get_input_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.bound.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.bound.get_output_schema(config)

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return self.bound.config_specs


class CachedRunnable(_SchemasOfBound, RunnableSerializable[Input, Output]):
    """A Runnable whose outputs are served from the cache for repeated inputs.

    Built by :func:`cached`. On a miss the wrapped Runnable runs as a child of
    this run, with the caller's config (callbacks, tags, metadata). Input and
    output types and schemas are the wrapped Runnable's.

    Attributes:
        bound: the wrapped Runnable.
        component: the engine-level cache of its outputs.
    """

    bound: Runnable[Input, Output]
    component: ComponentCache

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def InputType(self) -> type[Input]:
        return self.bound.InputType

    @property
    def OutputType(self) -> type[Output]:
        return self.bound.OutputType

    # -- keys ---------------------------------------------------------------
    def _lookup_args(
        self, input: Any, config: RunnableConfig, kwargs: Mapping[str, Any]
    ) -> tuple[bool, Any, str | None, Any]:
        """``(cacheable, key, tenant, variant)`` of one call."""
        return _lookup_args(self.bound, input, config, kwargs)

    # -- invoke ---------------------------------------------------------------
    def _invoke(
        self,
        input: Input,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Output:
        child = patch_config(config, callbacks=run_manager.get_child())

        def call() -> Output:
            return self.bound.invoke(input, child, **kwargs)

        ok, key, tenant, variant = self._lookup_args(input, config, kwargs)
        if not ok:
            return call()
        fresh = _Fresh()
        got = self.component.get_or_call(key, fresh.call(call), tenant=tenant, variant=variant)
        return cast("Output", fresh.own(got))

    async def _ainvoke(
        self,
        input: Input,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Output:
        child = patch_config(config, callbacks=run_manager.get_child())

        async def call() -> Output:
            return await self.bound.ainvoke(input, child, **kwargs)

        ok, key, tenant, variant = self._lookup_args(input, config, kwargs)
        if not ok:
            return await call()
        fresh = _Fresh()
        got = await self.component.aget_or_call(
            key, fresh.acall(call), tenant=tenant, variant=variant
        )
        return cast("Output", fresh.own(got))

    def invoke(self, input: Input, config: RunnableConfig | None = None, **kwargs: Any) -> Output:
        """The cached output for ``input``, or the wrapped Runnable's (then cached)."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Output:
        """Async twin of :meth:`invoke`."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    # -- stream -------------------------------------------------------------------
    # On a miss the wrapped Runnable's chunks reach the caller as they come; they
    # are stored only once the stream ended whole (not one the caller stopped
    # reading, cancelled or that failed: its chunks are a partial output). The
    # engine decides how (store_stream): as the output invoke shares if they
    # add up, else as the chunk sequence that only streams replay.
    def _transform(
        self,
        inputs: Iterator[Input],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[Output]:
        got, input = _input_of(list(inputs))
        if not got:
            return
        ok, key, tenant, variant = self._lookup_args(input, config, kwargs)
        if ok:
            found, stored = self.component.lookup_stream(
                key, tenant=tenant, variant=variant, as_chunk=_as_chunk
            )
            if found:
                yield from stored
                return
        if not ok:
            yield from self.bound.stream(input, config, **kwargs)
            return
        pairs = self.component.share_stream(
            key,
            lambda: self.bound.stream(input, config, **kwargs),
            tenant=tenant,
            variant=variant,
            as_output=_as_output,
        )
        try:
            for chunk, _ in pairs:
                yield _copied(chunk)
        finally:
            pairs.close()  # now: a stream nobody else reads ends with this one

    async def _atransform(
        self,
        inputs: AsyncIterator[Input],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[Output]:
        got, input = _input_of([part async for part in inputs])
        if not got:
            return
        ok, key, tenant, variant = self._lookup_args(input, config, kwargs)
        if ok:
            found, stored = await self.component.alookup_stream(
                key, tenant=tenant, variant=variant, as_chunk=_as_chunk
            )
            if found:
                for chunk in stored:
                    yield chunk
                return
        if not ok:
            async for chunk in self.bound.astream(input, config, **kwargs):
                yield chunk
            return
        pairs = await self.component.ashare_stream(
            key,
            lambda: self.bound.astream(input, config, **kwargs),
            tenant=tenant,
            variant=variant,
            as_output=_as_output,
        )
        try:
            async for chunk, _ in pairs:
                yield _copied(chunk)
        finally:
            await pairs.aclose()

    def transform(
        self, input: Iterator[Input], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Output]:
        """The wrapped Runnable's chunks on a miss, the stored ones on a hit.

        A hit replays a stored output (from ``invoke``, or from a stream whose
        chunks added up) as one chunk (a message as its message chunk, as a
        stream of the wrapped Runnable yields it); else the stored chunks of a
        stream that could not be added, one by one as they came. Concurrent identical
        misses run the wrapped Runnable once: a stream asked while an
        identical one runs replays its chunks (copies) from the first.
        """
        yield from self._transform_stream_with_config(input, self._transform, config, **kwargs)

    def stream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Output]:
        """See :meth:`transform`."""
        yield from self.transform(iter([input]), config, **kwargs)

    async def atransform(
        self, input: AsyncIterator[Input], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Output]:
        """Async twin of :meth:`transform`."""
        async for chunk in self._atransform_stream_with_config(
            input, self._atransform, config, **kwargs
        ):
            yield chunk

    async def astream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Output]:
        """Async twin of :meth:`stream`."""

        async def one() -> AsyncIterator[Input]:
            yield input

        async for chunk in self.atransform(one(), config, **kwargs):
            yield chunk


def _hooks(method: Callable[..., Any], run_manager: Any, config: RunnableConfig) -> dict[str, Any]:
    """The ``run_manager`` and config keyword arguments a tool's ``_run``/``_arun`` takes.

    What ``BaseTool.run`` passes to its own ``_run``, for the wrapped tool's.
    """
    extra: dict[str, Any] = {}
    if "run_manager" in inspect.signature(method).parameters:
        extra["run_manager"] = run_manager
    try:
        hints = typing.get_type_hints(method)
    except Exception:  # unresolvable annotations: langchain-core passes no config either
        hints = {}
    for param, hint in hints.items():
        if hint is RunnableConfig:
            extra[param] = config
            break
    return extra


class CachedTool(_SchemasOfBound, BaseTool):
    """A tool whose outputs are served from the cache for repeated arguments.

    Built by :func:`cached` for a ``BaseTool``: a tool itself (same name,
    description, argument schema, ``return_direct``, ``response_format``, error
    handling), so ``bind_tools``, ``create_agent`` and ``ToolNode`` take it. The
    cache sits where the tool's own code runs (``_run``): the key is the
    validated arguments, never an agent's tool call id, and a tool call still
    gets a ``ToolMessage`` for *its* id, hit or miss. A tool error is raised
    (or handled by the tool's ``handle_tool_error``), never stored.

    Attributes:
        bound: the wrapped tool.
        component: the engine-level cache of its outputs.
    """

    bound: BaseTool
    component: ComponentCache

    @property
    def args(self) -> dict[str, Any]:
        return self.bound.args

    @property
    def tool_call_schema(self) -> ArgsSchema:
        if isinstance(self.bound, Tool) and not self.bound.args_schema:
            # A one-string ``Tool`` has no schema of its own: LangChain shows
            # models a single ``__arg1`` string for it, but only when it *is* a
            # ``Tool``; say the same here.
            arg = {"title": "__arg1", "type": "string"}
            return {
                "type": "object",
                "properties": {"__arg1": arg},
                "required": ["__arg1"],
                "description": self.description,
            }
        return self.bound.tool_call_schema

    @property
    def is_single_input(self) -> bool:
        return self.bound.is_single_input

    @property
    def func(self) -> Callable[..., Any] | None:
        # Read, not called, by LangGraph's ToolNode to find the arguments it
        # injects (state, store, runtime) from the function's signature.
        return getattr(self.bound, "func", None)

    @property
    def coroutine(self) -> Callable[..., Any] | None:
        return getattr(self.bound, "coroutine", None)

    @functools.cached_property
    def _injected_args_keys(self) -> frozenset[str]:
        return self.bound._injected_args_keys

    def _to_args_and_kwargs(
        self, tool_input: str | dict[str, Any], tool_call_id: str | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # The wrapped tool parses its own input (a single-input ``Tool`` takes a
        # string, a structured one validates against its schema).
        return self.bound._to_args_and_kwargs(tool_input, tool_call_id)

    def _key_of(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], config: RunnableConfig
    ) -> tuple[bool, Any, str | None, Any]:
        return _lookup_args(self.bound, {"args": list(args), "kwargs": dict(kwargs)}, config, {})

    def _output(self, value: Any) -> Any:
        # JSON has no tuples: a stored (content, artifact) pair comes back a list,
        # which BaseTool.run would refuse.
        if self.response_format == "content_and_artifact" and isinstance(value, list):
            return tuple(value)
        return value

    def _run(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: CallbackManagerForToolRun | None = None,
        **kwargs: Any,
    ) -> Any:
        method = self.bound._run

        def call() -> Any:
            return method(*args, **kwargs, **_hooks(method, run_manager, config))

        ok, key, tenant, variant = self._key_of(args, kwargs, config)
        if not ok:
            return call()
        fresh = _Fresh()
        value = self.component.get_or_call(key, fresh.call(call), tenant=tenant, variant=variant)
        return self._output(fresh.own(value))

    async def _arun(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        **kwargs: Any,
    ) -> Any:
        method = self.bound._arun

        async def call() -> Any:
            return await method(*args, **kwargs, **_hooks(method, run_manager, config))

        ok, key, tenant, variant = self._key_of(args, kwargs, config)
        if not ok:
            return await call()
        fresh = _Fresh()
        value = await self.component.aget_or_call(
            key, fresh.acall(call), tenant=tenant, variant=variant
        )
        return self._output(fresh.own(value))


def cached(
    runnable: Runnable[Input, Output],
    *,
    cache: CacheEngine | None = None,
    name: str | None = None,
    semantic: bool = False,
    ttl_s: float | None = None,
    tags: Sequence[str] = (),
) -> Runnable[Input, Output]:
    """Serve repeated inputs of ``runnable`` from the cache.

    Works for any Runnable: a retriever (``str`` -> ``list[Document]``), a
    tool, an LCEL chain. Outputs come back as the same LangChain types
    (through ``langchain_core.load``); an output that cannot be serialised is
    returned and simply not cached. Inputs that are not serialisable skip the
    cache. Call options (``invoke(x, **kwargs)``) and the Runnable's
    configurable fields are part of the key; so is the tenant (run metadata
    ``costopt_tenant`` / ``tenant_id`` / ``tenant``, else
    ``costopt_core.tenant_scope``).

    Inputs equal as JSON share an entry, except that dict key types and
    tuples are kept: ``(1, 2)`` and ``[1, 2]``, ``{1: "a"}`` and ``{"1": "a"}``
    are four inputs.

    A tool comes back as a tool (:class:`CachedTool`, same name and schema) that
    agents can bind and call: its arguments are the key, not the tool call's
    id. ``stream`` passes the wrapped Runnable's chunks through on a miss and,
    once the stream ended whole, stores what they add up to (``+``, as
    langchain-core adds them), which ``invoke`` then shares and a stream hit
    replays as one chunk. Chunks that cannot be added (a graph's per-node
    updates, plain dicts) have no sum ``invoke`` would return, so they are
    stored apart, as the sequence, for streams only: a stream hit replays them
    one by one, and ``invoke`` calls the Runnable. Concurrent identical
    ``invoke`` misses make one call, and so do concurrent identical streams
    (each replays the first one's chunks from the start).

    Args:
        runnable: the Runnable whose outputs to cache.
        cache: the engine cache to store in (a ``costopt_core.cache.SemanticCache``,
            a backend wrapped in one); a private in-memory one if omitted.
        name: the component name; wrappers with the same name share entries
            (across processes too, with a persistent backend). By default each
            wrapper gets a unique name, so two components can never serve
            each other's outputs.
        semantic: also serve outputs of similar ``str`` inputs (a retriever's
            paraphrased query); the engine's threshold and guards decide.
        ttl_s: time to live of cached outputs, a finite number of seconds > 0.
        tags: labels (strings) stored with the outputs, to invalidate by
            later, e.g. ``("doc1",)``; never one string.

    Returns:
        A Runnable with the same input and output types; a ``BaseTool`` for a tool.

    Raises:
        ConfigurationError: ``cache`` not an engine cache (a backend, the
            LangChain adapter ``langchain_costopt.SemanticCache``), ``ttl_s``
            not a finite number > 0, ``tags`` a string or holding a non-string.

    Example:
        >>> from langchain_core.runnables import RunnableLambda
        >>> calls = []
        >>> square = cached(RunnableLambda(lambda x: calls.append(x) or x * x))
        >>> square.invoke(4), square.invoke(4), len(calls)
        (16, 16, 1)

        With a retriever: ``cached(retriever, name="kb", ttl_s=3600, semantic=True)``.
    """
    # Imported here: the cache module imports this one (for ``encode``).
    from langchain_costopt.cache import engine_cache

    # Checked now, as CachedChatModel checks its semantic_cache: a backend or
    # the LangChain adapter would otherwise fail every call of the wrapper.
    engine = engine_cache(cache, "cached()'s cache") if cache is not None else CacheEngine()
    component = ComponentCache(
        engine,
        name or f"{runnable.get_name()}:{uuid.uuid4().hex[:12]}",
        semantic=semantic,
        ttl_s=ttl_s,
        tags=tags,
        encode=encode,
        decode=_decode_served,
        codec=CODEC,
        # LangChain objects compare by value; a hit must return what the call did.
        check_round_trip=True,
    )
    if isinstance(runnable, BaseTool):
        # An agent finds a tool by its name and schema: the wrapper must be
        # that tool, not a Runnable named "cached(...)".
        fields = {f: getattr(runnable, f) for f in BaseTool.model_fields}
        return cast(
            "Runnable[Input, Output]", CachedTool(bound=runnable, component=component, **fields)
        )
    return CachedRunnable(
        bound=runnable, component=component, name=f"cached({runnable.get_name()})"
    )
