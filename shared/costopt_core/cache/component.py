"""``ComponentCache``: the response cache for the calls that are not LLM calls.

Retrieval, tool calls and other deterministic steps are often as slow or as
billable as a model call (an embedding request plus a vector search, a paid
search API), and an agent repeats them constantly. This puts them behind the
same engine as LLM answers, so they get the same tenant-safe scopes, TTLs,
tag invalidation, backends, stats and in-flight de-duplication.

A component's answer is only reusable for the *same* input, so lookups are
exact by default: the whole input (canonical JSON) decides the key, with no
whitespace folding. Semantic matching is opt-in and only for text inputs (a
retriever query, a search string), where a paraphrase should find the same
results. Outputs are stored through a codec (JSON by default) in the cached
response's ``payload``; an output the codec cannot encode is returned to the
caller and simply not stored.

A stream's output is its chunks. Chunks that add up (``+``) are stored as one
output, which calls and streams share; chunks that cannot be added have no
output a call would return, so they are stored as the sequence, apart, and
replayed only to streams.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

from costopt_core.cache.engine import CacheResult, NotShared, SemanticCache
from costopt_core.cache.entry import CachedResponse, CacheHit, CacheTier
from costopt_core.cache.keys import INPUT_NAME_PREFIX, CacheRequest, check_ttl
from costopt_core.cache.shared_stream import AsyncReading, Reading, aown_reads, own_reads
from costopt_core.checks import check_type
from costopt_core.errors import ConfigurationError
from costopt_core.tenancy import current_tenant
from costopt_core.types import Message

__all__ = ["PAYLOAD_FORMAT", "ComponentCache", "ComponentStats", "Decoder", "Encoder"]

log = logging.getLogger("costopt.cache.component")

#: ``payload_format`` of outputs stored with the default JSON codec.
PAYLOAD_FORMAT = "component/json/v1"

#: Model (scope) prefixes of outputs and of stream chunk sequences. The chunks
#: get a scope of their own so that neither an exact key nor a semantic search
#: of a call can ever reach a sequence that is not the call's output.
_OUTPUT = "component:"
_CHUNKS = "component-chunks:"

#: Turns a component's output into the text that is stored; raises if it cannot.
Encoder = Callable[[Any], str]
#: Turns stored text back into the output; raises if it cannot.
Decoder = Callable[[str], Any]

T = TypeVar("T")


#: What a ComponentCache's ``cache`` must be, and how to build one.
_ENGINE_WHAT = "a ComponentCache's cache must be a costopt_core.cache.SemanticCache"
_ENGINE_FIX = (
    "pass SemanticCache() for one in memory, or wrap a backend in it: "
    "SemanticCache(SQLiteCacheBackend(path)) / SemanticCache(RedisCacheBackend(url))"
)

#: Starts the one key of a form JSON has no type for (see ``_typed_keys``).
_TAG = "\x00"


def _typed_keys(value: Any) -> Any:
    """``value`` with every dict key and every tuple kept apart from what JSON would make of it.

    JSON writes ``{1: "a"}``, ``{"1": "a"}``, ``{None: ..}`` / ``{"null": ..}`` and
    ``{True: ..}`` / ``{"true": ..}`` the same, and a tuple as the list of its
    items, so two different inputs would share an entry (a component may
    well answer ``(1, 2)`` and ``[1, 2]`` differently). A dict with a key that
    is not a ``str`` becomes ``{"\x00pairs": [[key, value], ...]}`` (the key a
    JSON value of its own type, pairs in a fixed order), a tuple (a named
    tuple too) ``{"\x00tuple": [item, ...]}``; a ``str`` key that starts with
    ``\x00`` gets one more, so no input's own dict can look like those forms.
    Lists and dicts with plain string keys, the usual inputs, are left as they
    are: their keys stay the ones stored before.

    Raises:
        TypeError: a dict key JSON has no type for (a tuple, an object).
    """
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {
                (_TAG + k if k.startswith(_TAG) else k): _typed_keys(v) for k, v in value.items()
            }
        pairs = []
        for k, v in value.items():
            if not (k is None or isinstance(k, str | int | float)):
                raise TypeError(f"a dict key of type {type(k).__name__} cannot be a cache key")
            pairs.append([k, _typed_keys(v)])
        # Keys of one dict are unequal, so their JSON texts are too (1 and
        # True, 0 and -0.0 are one key in Python): a total, stable order.
        pairs.sort(key=lambda pair: json.dumps(pair[0]))
        return {_TAG + "pairs": pairs}
    if isinstance(value, tuple):
        return {_TAG + "tuple": [_typed_keys(v) for v in value]}
    if isinstance(value, list):
        return [_typed_keys(v) for v in value]
    return value


def _canonical(value: Any) -> str:
    # No ``default=``: an input JSON cannot represent exactly must not be
    # squeezed into a key that another input could share.
    return json.dumps(_typed_keys(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _check_tags(tags: Any) -> tuple[str, ...]:
    """``tags`` as a tuple of labels; a ``ConfigurationError`` for a string or a non-string label.

    A string is a sequence of its letters: ``tags="doc1"`` would store the
    labels ``d``, ``o``, ``c``, ``1``, and invalidating by ``"doc1"`` would find
    nothing. (``CachedLLM`` refuses a string for ``cache_tags`` the same way.)
    """
    if isinstance(tags, str):
        raise ConfigurationError(f"tags must be a tuple of labels; pass ({tags!r},)")
    try:
        labels = tuple(tags)
    except TypeError:
        raise ConfigurationError(
            f"tags must be a tuple of labels (strings), got {type(tags).__name__} {tags!r}; "
            f"pass ({str(tags)!r},) for one label"
        ) from None
    for label in labels:
        if not isinstance(label, str):
            raise ConfigurationError(
                f"tags must be strings, got {type(label).__name__} {label!r} in {tags!r}; "
                f"pass it as a string, e.g. {str(label)!r}"
            )
    return labels


def _json_encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _json_decode(text: str) -> Any:
    return json.loads(text)


def _as_lists(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def _restores(value: Any, restored: Any) -> bool:
    """Whether ``restored`` equals ``value``, tuples read as lists (JSON has no tuples)."""
    try:
        return bool(_as_lists(restored) == _as_lists(value))
    except Exception:  # an __eq__ that cannot answer (numpy arrays): not proven equal
        return False


def _add_up(chunks: Sequence[Any]) -> tuple[bool, Any]:
    """``(True, first + second + ...)``, or ``(False, None)`` if two chunks cannot be added.

    Chunks are added as LangChain and LlamaIndex add a stream's chunks. Any
    error of ``+`` means "cannot be added": it is the cache's trouble, never
    the caller's.
    """
    total = chunks[0]
    for chunk in chunks[1:]:
        try:
            total = total + chunk
        except Exception:
            return False, None
    return True, total


class _NotStored(NotShared):
    """Raised inside the engine's ``call`` so the engine neither stores nor shares."""


@dataclass
class ComponentStats:
    """Counters of one :class:`ComponentCache` since it was created.

    Attributes:
        exact_hits: outputs served for an identical input.
        semantic_hits: outputs served for a similar text input.
        misses: calls made to the component.
        encode_failures: outputs the codec could not encode (returned, not stored).
        decode_failures: stored outputs the codec could not read (the component was
            called instead).
        bypassed: inputs that are not JSON-serialisable (called, never cached).
    """

    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    encode_failures: int = 0
    decode_failures: int = 0
    bypassed: int = 0

    @property
    def hit_rate(self) -> float | None:
        """Hits over hits plus misses, or None before the first lookup."""
        hits = self.exact_hits + self.semantic_hits
        total = hits + self.misses
        return hits / total if total else None


class ComponentCache:
    """Caches the outputs of a non-LLM component (retriever, tool, function).

    Args:
        cache: the engine cache that stores the entries (backend, embedder,
            thresholds and guards for semantic lookups).
        name: the component's name; it is part of the cache scope, so only
            caches with the same name share entries. Give two different
            components two different names.
        semantic: also serve outputs stored for *similar* text inputs (the
            engine's threshold and guards decide). Only ``str`` inputs are
            matched semantically; other inputs are always exact.
        ttl_s: time to live of stored outputs, a finite number of seconds > 0;
            the engine's default if None.
        tags: labels (strings) stored with every output, to invalidate by
            later; a sequence of them, e.g. ``("doc1",)``, never one string.
        encode: output -> text; JSON by default. Pass with ``decode``.
        decode: text -> output; JSON by default. Pass with ``encode``.
        codec: name of the codec, recorded in each entry's ``payload_format``
            (``component/<codec>/v1``) so an entry written by another codec is
            never decoded with this one; ``"json"`` for the default codec.
        check_round_trip: store an output only if decoding what was encoded
            gives it back (tuples may come back as lists); JSON would turn
            ``{101: ...}`` into ``{"101": ...}``, and a hit must return what the
            call did. On by default with the JSON codec; a custom codec whose
            outputs compare by value can turn it on.

    Raises:
        ConfigurationError: ``cache`` not a ``SemanticCache`` (a backend must be
            wrapped in one), an empty name, ``ttl_s`` not a finite number > 0,
            ``tags`` a string or holding a non-string, or only one of
            ``encode``/``decode``.

    Example:
        >>> from costopt_core.cache import SemanticCache
        >>> from costopt_core.testing import FakeEmbedder
        >>> lookups = ComponentCache(SemanticCache(embedder=FakeEmbedder()), "geo")
        >>> lookups.get_or_call({"city": "Paris"}, lambda: {"lat": 48.86})
        {'lat': 48.86}
        >>> lookups.get_or_call({"city": "Paris"}, lambda: 1 / 0)  # served, not called
        {'lat': 48.86}
    """

    def __init__(
        self,
        cache: SemanticCache,
        name: str,
        *,
        semantic: bool = False,
        ttl_s: float | None = None,
        tags: Sequence[str] = (),
        encode: Encoder | None = None,
        decode: Decoder | None = None,
        codec: str | None = None,
        check_round_trip: bool | None = None,
    ) -> None:
        # Checked here, not at the first call: any other object fails every
        # call with an AttributeError (a backend has no ``get_or_call``).
        if cache is None:
            raise ConfigurationError(f"a ComponentCache needs an engine cache; {_ENGINE_FIX}")
        check_type(cache, SemanticCache, _ENGINE_WHAT, _ENGINE_FIX)
        if not name:
            raise ConfigurationError("a ComponentCache needs a non-empty name")
        if (encode is None) != (decode is None):
            raise ConfigurationError("pass both encode and decode, or neither (JSON)")
        self.cache = cache
        self.name = name
        self.semantic = semantic
        self.ttl_s = check_ttl(ttl_s)
        self.tags = _check_tags(tags)
        self._encode: Encoder = encode or _json_encode
        self._decode: Decoder = decode or _json_decode
        self._check_round_trip = encode is None if check_round_trip is None else check_round_trip
        codec_name = codec or ("json" if encode is None else "custom")
        self.payload_format = f"component/{codec_name}/v1"
        #: ``payload_format`` of a stream's chunks stored as a sequence.
        self.chunks_format = f"component-chunks/{codec_name}/v1"
        self._stats = ComponentStats()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ComponentCache(name={self.name!r}, semantic={self.semantic}, cache={self.cache!r})"

    # -- requests -------------------------------------------------------------
    def request(
        self, input: Any, *, tenant: str | None = None, variant: Any = None
    ) -> CacheRequest | None:
        """The engine request for ``input``, or None if it cannot be a cache key.

        Args:
            input: the component's input (JSON-serialisable, or a ``str``).
            tenant: whose entry it is; the current :func:`tenant_scope` if None.
            variant: anything else that changes the output (call options, a
                configuration); JSON-serialisable, it splits the scope like
                the name does.
        """
        try:
            canonical = _canonical(input)
            scope_name = self.name if variant is None else f"{self.name}:{_canonical(variant)}"
        except (TypeError, ValueError, RecursionError):  # RecursionError: a cycle
            return None
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        # The engine folds whitespace in message text; the digest in ``name``
        # keeps the exact tier exact. An empty text leaves nothing to embed,
        # which is what keeps exact-only components out of the semantic tier.
        text = input if self.semantic and isinstance(input, str) else ""
        return CacheRequest(
            messages=(Message("user", text, name=f"{INPUT_NAME_PREFIX}{digest}"),),
            model=f"{_OUTPUT}{scope_name}",
            tenant=tenant if tenant is not None else current_tenant(),
            ttl_s=self.ttl_s,
            tags=self.tags,
        )

    @staticmethod
    def _chunks_request(request: CacheRequest) -> CacheRequest:
        """Where a stream's chunks are kept for the input ``request`` is the output key of."""
        assert request.model is not None and request.model.startswith(_OUTPUT)
        return dataclasses.replace(request, model=_CHUNKS + request.model[len(_OUTPUT) :])

    def _response(self, value: Any, *, chunks: bool = False) -> CachedResponse:
        try:
            payload = self._encode(value)
            if not isinstance(payload, str):
                raise TypeError(f"encode returned {type(payload).__name__}, not str")
            if self._check_round_trip and not _restores(value, self._decode(payload)):
                raise ValueError("decoding it does not give it back (e.g. non-string dict keys)")
        except Exception as exc:
            self._count("encode_failures")
            log.warning(
                "component %r: output not cached, the codec cannot encode it (%s: %s)",
                self.name,
                type(exc).__name__,
                exc,
            )
            raise _NotStored from exc
        # The engine will not keep an answer with empty text; this label is
        # what a component answer shows where an LLM answer shows its text.
        return CachedResponse(
            text=f"component:{self.name}",
            model=f"component:{self.name}",
            payload=payload,
            payload_format=self.chunks_format if chunks else self.payload_format,
        )

    def _served(
        self,
        result: CacheResult,
        *,
        chunks: bool = False,
        as_chunk: Callable[[Any], Any] | None = None,
    ) -> tuple[bool, Any]:
        """``(True, output)`` for a usable hit; ``(False, None)`` if it cannot be read.

        ``chunks``: the hit is a stream's chunk sequence (a non-empty list).
        ``as_chunk``: turns the decoded output into what is served; if it
        fails, the hit cannot be read either (the cache's trouble, never the
        caller's).
        """
        assert result.hit is not None
        response = result.response
        fmt = self.chunks_format if chunks else self.payload_format
        if response.payload is None or response.payload_format != fmt:
            ok, value = False, None
        else:
            try:
                value = self._decode(response.payload)
                if chunks and not (isinstance(value, list) and value):
                    raise TypeError(f"a {type(value).__name__}, not a list of chunks")
                if as_chunk is not None:
                    value = as_chunk(value)
                ok = True
            except Exception as exc:
                ok, value = False, None
                log.warning(
                    "component %r: stored output unreadable (%s: %s); calling the component",
                    self.name,
                    type(exc).__name__,
                    exc,
                )
        if ok:
            self._count_hit(result.hit.tier)
        else:
            self._count("decode_failures")
        return ok, value

    # -- get or call ------------------------------------------------------------
    def get_or_call(
        self,
        input: Any,
        call: Callable[[], T],
        *,
        tenant: str | None = None,
        variant: Any = None,
    ) -> T:
        """The stored output for ``input``, or ``call()``'s (then stored).

        Concurrent identical misses call the component once. Cache trouble
        (backend down, an output that cannot be encoded, an entry that cannot
        be decoded) never reaches the caller: the component is called instead.

        Args:
            input: the component's input; JSON-serialisable (inputs equal as
                JSON share an entry) or a ``str``. Other inputs are passed
                through uncached.
            call: computes the output on a miss.
            tenant: whose entry it is; the current :func:`tenant_scope` if None.
            variant: other JSON values that change the output (see :meth:`request`).

        Returns:
            ``call()``'s own object on a miss; a decoded copy on a hit.
        """
        request = self.request(input, tenant=tenant, variant=variant)
        if request is None:
            self._count("bypassed")
            return call()
        fresh: list[T] = []

        def produce() -> CachedResponse:
            value = call()
            fresh.append(value)
            return self._response(value)

        try:
            result = self.cache.get_or_call(request, produce)
        except _NotStored:
            self._count("misses")
            return fresh[0]
        if result.hit is None:
            self._count("misses")
            return fresh[0]
        ok, value = self._served(result)
        if ok:
            return cast(T, value)
        value = call()
        self._count("misses")
        with contextlib.suppress(_NotStored):  # replaces the unreadable entry
            self.cache.store(request, self._response(value))
        return value

    async def aget_or_call(
        self,
        input: Any,
        call: Callable[[], Awaitable[T]],
        *,
        tenant: str | None = None,
        variant: Any = None,
    ) -> T:
        """Async twin of :meth:`get_or_call`; ``call`` returns an awaitable."""
        request = self.request(input, tenant=tenant, variant=variant)
        if request is None:
            self._count("bypassed")
            return await call()
        fresh: list[T] = []

        async def produce() -> CachedResponse:
            value = await call()
            fresh.append(value)
            return self._response(value)

        try:
            result = await self.cache.aget_or_call(request, produce)
        except _NotStored:
            self._count("misses")
            return fresh[0]
        if result.hit is None:
            self._count("misses")
            return fresh[0]
        ok, value = self._served(result)
        if ok:
            return cast(T, value)
        value = await call()
        self._count("misses")
        with contextlib.suppress(_NotStored):
            await self.cache.astore(request, self._response(value))
        return value

    # -- look up and store apart (streams) -----------------------------------------
    # A stream cannot go through ``get_or_call``: its caller wants the chunks as
    # they come, and only a stream that ended whole has an output to keep. Nor
    # can it join the engine's in-flight de-duplication, whose leader hands
    # over an answer only once its call has returned: concurrent identical
    # stream misses each call the component.
    def lookup(
        self, input: Any, *, tenant: str | None = None, variant: Any = None
    ) -> tuple[bool, Any]:
        """``(True, output)`` stored for ``input``, else ``(False, None)``.

        A miss (or an input that cannot be a key) is counted as a call of the
        component: the caller makes it, then :meth:`store` keeps its output.
        Cache trouble is a miss.
        """
        request = self.request(input, tenant=tenant, variant=variant)
        if request is None:
            self._count("bypassed")
            return False, None
        hit = self.cache.lookup(request)
        return self._looked_up(hit)

    async def alookup(
        self, input: Any, *, tenant: str | None = None, variant: Any = None
    ) -> tuple[bool, Any]:
        """Async twin of :meth:`lookup`."""
        request = self.request(input, tenant=tenant, variant=variant)
        if request is None:
            self._count("bypassed")
            return False, None
        return self._looked_up(await self.cache.alookup(request))

    def _looked_up(self, hit: CacheHit | None) -> tuple[bool, Any]:
        if hit is not None:
            ok, value = self._served(CacheResult(hit.response, hit))
            if ok:
                return True, value
        self._count("misses")
        return False, None

    def store(
        self, input: Any, output: Any, *, tenant: str | None = None, variant: Any = None
    ) -> bool:
        """Keep ``output`` as the component's output for ``input``; True if stored.

        An input that cannot be a key or an output the codec cannot encode is
        not stored (and is not an error).
        """
        entry = self._entry(input, output, tenant, variant)
        return entry is not None and self.cache.store(*entry)

    async def astore(
        self, input: Any, output: Any, *, tenant: str | None = None, variant: Any = None
    ) -> bool:
        """Async twin of :meth:`store`."""
        entry = self._entry(input, output, tenant, variant)
        return entry is not None and await self.cache.astore(*entry)

    def _entry(
        self, input: Any, output: Any, tenant: str | None, variant: Any
    ) -> tuple[CacheRequest, CachedResponse] | None:
        """What :meth:`store` hands the engine, or None if it cannot be stored."""
        request = self.request(input, tenant=tenant, variant=variant)
        if request is None:
            return None
        try:
            return request, self._response(output)
        except _NotStored:
            return None

    def lookup_stream(
        self,
        input: Any,
        *,
        tenant: str | None = None,
        variant: Any = None,
        as_chunk: Callable[[Any], Any] | None = None,
    ) -> tuple[bool, list[Any]]:
        """``(True, chunks)`` to replay for a stream of ``input``, else ``(False, [])``.

        An output stored for ``input`` (by a call, or by a stream whose chunks
        added up) is replayed as one chunk; else the chunks a stream stored
        because they could not be added, one by one. The output is read first:
        it is the one entry most streams have, so their hits cost one read.
        A miss, and a hit on chunks, read twice (the engine's own stats count
        two lookups and one miss more); the component's stats count one miss
        (a call of the component, as in :meth:`lookup`) or one hit. Cache
        trouble is a miss.

        Args:
            input: the component's input, as for :meth:`lookup`.
            tenant: whose entry it is; the current :func:`tenant_scope` if None.
            variant: other JSON values that change the output (see :meth:`request`).
            as_chunk: a stored output -> the one chunk a stream replays (the
                reverse of :meth:`store_stream`'s ``as_output``: a framework's
                message into its message chunk, which is what its streams
                yield); as is if None. Stored chunk sequences are chunks
                already and are replayed as they are.
        """
        request = self.request(input, tenant=tenant, variant=variant)
        if request is None:
            self._count("bypassed")
            return False, []
        chunks = self._replayed(self.cache.lookup(request), whole=True, as_chunk=as_chunk)
        if chunks is None:
            hit = self.cache.lookup(self._chunks_request(request))
            chunks = self._replayed(hit, whole=False)
        return self._streamed(chunks)

    async def alookup_stream(
        self,
        input: Any,
        *,
        tenant: str | None = None,
        variant: Any = None,
        as_chunk: Callable[[Any], Any] | None = None,
    ) -> tuple[bool, list[Any]]:
        """Async twin of :meth:`lookup_stream`."""
        request = self.request(input, tenant=tenant, variant=variant)
        if request is None:
            self._count("bypassed")
            return False, []
        hit = await self.cache.alookup(request)
        chunks = self._replayed(hit, whole=True, as_chunk=as_chunk)
        if chunks is None:
            hit = await self.cache.alookup(self._chunks_request(request))
            chunks = self._replayed(hit, whole=False)
        return self._streamed(chunks)

    def _replayed(
        self,
        hit: CacheHit | None,
        *,
        whole: bool,
        as_chunk: Callable[[Any], Any] | None = None,
    ) -> list[Any] | None:
        """The chunks a hit replays, or None (no hit, or one that cannot be read).

        ``whole``: the hit is an output, replayed as the one chunk ``as_chunk``
        makes of it; else a stored chunk sequence, replayed as it is.
        """
        if hit is None:
            return None
        result = CacheResult(hit.response, hit)
        if not whole:
            ok, value = self._served(result, chunks=True)
            return cast(list[Any], value) if ok else None
        ok, value = self._served(result, as_chunk=as_chunk)
        return [value] if ok else None

    def _streamed(self, chunks: list[Any] | None) -> tuple[bool, list[Any]]:
        if chunks is None:
            self._count("misses")
            return False, []
        return True, chunks

    def store_stream(
        self,
        input: Any,
        chunks: Sequence[Any],
        *,
        tenant: str | None = None,
        variant: Any = None,
        as_output: Callable[[Any], Any] | None = None,
    ) -> bool:
        """Keep what a stream of ``input`` that ended whole gave; True if stored.

        Chunks that add up (``+``) are stored as one output, shared with
        calls: ``as_output`` turns their sum into what a call returns (a
        framework's message chunk into its message). Chunks that cannot be
        added have no output a call would return (the last one? the list?
        each framework, each component says otherwise), so they are stored as
        the sequence for streams alone, which replay them one by one. Nothing
        is stored for no chunks, an input that cannot be a key or chunks the
        codec cannot encode (not an error).

        Args:
            input: the component's input, as for :meth:`store`.
            chunks: every chunk of the stream, in order.
            tenant: whose entry it is; the current :func:`tenant_scope` if None.
            variant: other JSON values that change the output (see :meth:`request`).
            as_output: the sum of the chunks -> a call's output; as is if None.
        """
        entry = self._stream_entry(input, chunks, tenant, variant, as_output)
        return entry is not None and self.cache.store(*entry)

    async def astore_stream(
        self,
        input: Any,
        chunks: Sequence[Any],
        *,
        tenant: str | None = None,
        variant: Any = None,
        as_output: Callable[[Any], Any] | None = None,
    ) -> bool:
        """Async twin of :meth:`store_stream`."""
        entry = self._stream_entry(input, chunks, tenant, variant, as_output)
        return entry is not None and await self.cache.astore(*entry)

    def _stream_entry(
        self,
        input: Any,
        chunks: Sequence[Any],
        tenant: str | None,
        variant: Any,
        as_output: Callable[[Any], Any] | None,
    ) -> tuple[CacheRequest, CachedResponse] | None:
        """What :meth:`store_stream` hands the engine, or None if it cannot be stored."""
        if not chunks:
            return None
        request = self.request(input, tenant=tenant, variant=variant)
        return None if request is None else self._kept(request, chunks, as_output)

    def _kept(
        self, request: CacheRequest, chunks: Sequence[Any], as_output: Callable[[Any], Any] | None
    ) -> tuple[CacheRequest, CachedResponse] | None:
        added, total = _add_up(chunks)
        try:
            if added:
                return request, self._response(total if as_output is None else as_output(total))
            return self._chunks_request(request), self._response(list(chunks), chunks=True)
        except _NotStored:
            return None

    def share_stream(
        self,
        input: Any,
        open_stream: Callable[[], Iterator[T]],
        *,
        tenant: str | None = None,
        variant: Any = None,
        as_output: Callable[[Any], Any] | None = None,
    ) -> Reading[T]:
        """A missed stream of ``input``, shared by identical streams in flight.

        As :meth:`SemanticCache.share_stream`: ``(chunk, shared)`` pairs, the
        stream opened now (``open_stream()``) unless an identical one is in
        flight, and kept as :meth:`store_stream` keeps it once read to its
        end. An input that cannot be a key is streamed on its own.
        """
        request = self.request(input, tenant=tenant, variant=variant)
        if request is None:
            return Reading(own_reads(open_stream(), _keep_nothing))
        return self.cache.share_stream(
            request, open_stream, partial(self._kept, request, as_output=as_output)
        )

    async def ashare_stream(
        self,
        input: Any,
        open_stream: Callable[[], AsyncIterator[T]],
        *,
        tenant: str | None = None,
        variant: Any = None,
        as_output: Callable[[Any], Any] | None = None,
    ) -> AsyncReading[T]:
        """Async twin of :meth:`share_stream`."""
        request = self.request(input, tenant=tenant, variant=variant)
        if request is None:
            return AsyncReading(aown_reads(open_stream(), _akeep_nothing))
        return await self.cache.ashare_stream(
            request, open_stream, partial(self._kept, request, as_output=as_output)
        )

    # -- invalidation and stats ---------------------------------------------------
    def invalidate(self, input: Any, *, tenant: str | None = None, variant: Any = None) -> int:
        """Forget what is stored for one input (output, stream chunks); how many entries went."""
        request = self.request(input, tenant=tenant, variant=variant)
        if request is None:
            return 0
        chunks = self._chunks_request(request)
        return self.cache.invalidate(request=request) + self.cache.invalidate(request=chunks)

    def clear(self, *, tenant: str | None = None, variant: Any = None) -> int:
        """Forget every stored output of this component for one tenant (and variant)."""
        request = self.request("", tenant=tenant, variant=variant)
        if request is None:
            return 0
        chunks = self._chunks_request(request)
        return self.cache.invalidate_scope(request) + self.cache.invalidate_scope(chunks)

    def stats(self) -> ComponentStats:
        """A snapshot of this component's counters."""
        with self._lock:
            s = self._stats
            return ComponentStats(
                exact_hits=s.exact_hits,
                semantic_hits=s.semantic_hits,
                misses=s.misses,
                encode_failures=s.encode_failures,
                decode_failures=s.decode_failures,
                bypassed=s.bypassed,
            )

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self._stats, field, getattr(self._stats, field) + 1)

    def _count_hit(self, tier: CacheTier) -> None:
        self._count("exact_hits" if tier == "exact" else "semantic_hits")


def _keep_nothing(chunks: list[Any]) -> None:
    """The store of a stream whose input cannot be a key: nothing to keep."""


async def _akeep_nothing(chunks: list[Any]) -> None:
    """Async :func:`_keep_nothing`."""
