"""The Redis cache backend: a cache shared by every process that can reach one Redis.

The memory and SQLite backends live inside one process or one machine; this one
lets a fleet of workers share answers. Entries are Redis hashes, searched with
RediSearch, so it needs Redis Stack, Redis 8+, Redis Cloud, or any server with
the RediSearch module. redisvl (``SearchIndex`` / ``AsyncSearchIndex``) creates
and inspects the index; searches, deletes, ``clear`` and ``stats`` send raw
``FT.AGGREGATE`` / ``FT.SEARCH`` commands whose replies are read here, in RESP2
or RESP3 shape alike (redisvl's result objects fail on RESP3 maps).

Layout, one hash per entry at ``<prefix>:<entry.key>``:

- ``key``, ``scope``, ``namespace`` (TAG) and ``tags`` (TAG, separator ``,``)
  hold *tokens*: ``"x"`` + the UTF-8 hex of the value. Tag matching in
  RediSearch is otherwise case-insensitive by default, splits on the separator,
  needs escaping and cannot match an empty string; tokens make every string
  (``""``, ``"a,b"``, ``"Beta"`` vs ``"beta"``) match exactly and only itself.
- ``created_at`` and ``expires_at`` (NUMERIC; ``inf`` for "never").
- ``vector`` (VECTOR, HNSW, COSINE, FLOAT32), present only when the entry has
  one. ``dims`` comes from the constructor, an existing index, or the first
  vector seen; until it is known the index has no vector field, and one is added
  (``FT.ALTER``) when the first vector arrives.
- ``prompt`` and ``response`` (``CachedResponse.to_json()``) are plain hash
  fields, not indexed: nothing searches their words, and full-text indexing
  long prompts would cost memory and time on every put.

A semantic search is one ``FT.AGGREGATE``: a KNN query filtered by scope and
expiry inside the search, a ``FILTER`` on the distance, and ``LOAD`` of the
fields of what is left, so a miss reads no entry and a hit reads only the
entries that can be served. HNSW searches keep ``ef_runtime`` candidates (the
memory backend's 96, not RediSearch's 10, which finds the nearest of 100k random
vectors in fewer than half the searches).

Expiry is enforced twice: a native key TTL evicts the entry, and the query
filters ``expires_at > now`` (and ``get`` and every row read check it), so an
entry past its expiry is never returned even before Redis evicts it. A scope
in which no entry with an expiry was ever put (the sizes hash counts them) is
searched without that range: the default cache keeps entries until removed,
and the range costs a tenth of a lookup in a small cache. An index written
before those counts is always filtered.

Every atomic unit touches one key (put is ``MULTI DEL HSET PEXPIRE EXEC`` on the
entry's key; deletes are per-key ``UNLINK``), so no hash tag is needed to run on
Redis Cluster.

Every driver error becomes :class:`~costopt_core.errors.CacheBackendError`
naming the operation, with any secret in the URL redacted, so the engine can
fail open. Client timeouts are short (``socket_timeout_s``, 0.25 s by default):
a cache that is slower than the model call it saves is worse than no cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.typing import EncodableT, FieldT
from redisvl.exceptions import RedisVLError
from redisvl.index import AsyncSearchIndex, SearchIndex
from redisvl.query import VectorQuery
from redisvl.redis.connection import convert_index_info_to_schema
from redisvl.schema import IndexSchema

from costopt_core.cache.backend import BackendStats
from costopt_core.cache.entry import CachedResponse, CacheEntry
from costopt_core.cache.vector_index import DEFAULT_EF_SEARCH
from costopt_core.errors import CacheBackendError, ConfigurationError

__all__ = ["RedisCacheBackend"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_URL = "redis://localhost:6379"
DEFAULT_PREFIX = "costopt:cache"

_VECTOR = "vector"
_DISTANCE = VectorQuery.DISTANCE_ID
_INDEXED_FIELDS = ("key", "scope", "namespace", "tags", "created_at", "expires_at")
_STORED_FIELDS = (*_INDEXED_FIELDS, "prompt", "response", _VECTOR)
_MISSING_INDEX = ("unknown index name", "no such index", "index not found")
_ALREADY_EXISTS = ("index already exists", "duplicate field")
#: How long a freshly created index may take to index keys already under its prefix.
_BACKFILL_WAIT_S = 5.0
#: Entries whose sizes ``stats()`` reads to estimate the total byte size.
_STATS_SAMPLE = 64
#: Fixed per-entry overhead in byte estimates, the same as ``CacheEntry.size_bytes``.
_ENTRY_OVERHEAD = 200
#: Documents a delete or clear finds and unlinks per round trip (redisvl's batch).
_SWEEP_BATCH = 500
#: The longest native TTL set (about 285,000 years): PEXPIRE refuses a TTL whose
#: expiry time overflows a 64-bit millisecond clock, and a longer one frees no memory.
_MAX_TTL_MS = 2**53
#: Words in a URL query parameter's name (``ssl_password``, ...) that make its value secret.
_SECRET_WORDS = ("password", "passwd", "secret", "token")
# UnicodeError: redis-py encodes str arguments as strict UTF-8 (a lone surrogate fails).
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    redis.RedisError,
    RedisVLError,
    OSError,
    UnicodeError,
)


# -- pure helpers: encoding, decoding, queries, planning ------------------------------


def _token(value: str) -> str:
    # "x" keeps the empty string a non-empty tag; hex needs no escaping and has no case.
    return "x" + value.encode("utf-8", "surrogatepass").hex()


def _untoken(token: str) -> str:
    return bytes.fromhex(token[1:]).decode("utf-8", "surrogatepass")


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def _bytes(value: str) -> bytes:
    # redis-py would encode a str as strict UTF-8, which refuses a lone surrogate
    # (JSON "\ud83d" decodes to one); surrogatepass stores it and _text reads it back.
    return value.encode("utf-8", "surrogatepass")


def _names_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def _client_secrets(connection_kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The secrets among an injected client's connection settings (to scrub messages)."""
    return tuple(
        value
        for name, value in connection_kwargs.items()
        if _names_secret(name) and isinstance(value, str) and value
    )


def _decodes_responses(url: str) -> bool:
    """Whether redis-py decodes the replies of a client made from ``url``.

    redis-py passes the query value on as a string, so ``?decode_responses=false``
    decodes too: any non-empty value does.
    """
    try:
        options = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        return False  # a malformed URL is reported, redacted, on first use
    return bool(options.get("decode_responses"))


def _redact(url: str) -> tuple[str, tuple[str, ...]]:
    """``url`` with secrets replaced by ``***``, and those secrets (to scrub messages).

    redis-py reads a password from the user info (``redis://user:pw@host``) and
    from the query string (``?password=pw``, ``?ssl_password=pw``); every query
    parameter whose name says password, secret or token is redacted.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable redis url>", ()
    secrets: list[str] = []
    if password:
        secrets.append(unquote(password))
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    query = parse_qsl(parts.query, keep_blank_values=True)
    hidden = [value for name, value in query if _names_secret(name) and value]
    if hidden:
        secrets += hidden
        redacted = [(n, "***" if _names_secret(n) and v else v) for n, v in query]
        parts = parts._replace(query=urlencode(redacted, safe="*/"))
    if not secrets:
        return url, ()
    display = urlunsplit(parts)
    if not parts.netloc:  # unix:///path: urlunsplit drops the empty authority
        display = display.replace(f"{parts.scheme}:", f"{parts.scheme}://", 1)
    return display, tuple(secrets)


def _vector_field(dims: int) -> dict[str, Any]:
    return {
        "name": _VECTOR,
        "type": "vector",
        "attrs": {
            "dims": dims,
            "algorithm": "hnsw",
            "distance_metric": "cosine",
            "datatype": "float32",
        },
    }


def _build_schema(index_name: str, key_prefix: str, dims: int | None) -> IndexSchema:
    tag = {"case_sensitive": True, "separator": ","}
    fields: list[dict[str, Any]] = [
        {"name": "key", "type": "tag", "attrs": tag},
        {"name": "scope", "type": "tag", "attrs": tag},
        {"name": "namespace", "type": "tag", "attrs": tag},
        {"name": "tags", "type": "tag", "attrs": tag},
        {"name": "created_at", "type": "numeric"},
        {"name": "expires_at", "type": "numeric"},
    ]
    if dims is not None:
        fields.append(_vector_field(dims))
    return IndexSchema.from_dict(
        {
            # The trailing ":" keeps prefix "a:b" from also indexing keys of prefix "a:bc".
            "index": {"name": index_name, "prefix": key_prefix, "storage_type": "hash"},
            "fields": fields,
        }
    )


def _as_vector(vector: npt.ArrayLike) -> npt.NDArray[np.float32]:
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise CacheBackendError(
            f"a cache vector must be a non-empty 1-D array, got shape {arr.shape}"
        )
    return arr


def _encode(entry: CacheEntry) -> tuple[dict[FieldT, EncodableT], int | None]:
    """The hash fields of ``entry`` and its native TTL in milliseconds (``None``: none)."""
    fields: dict[FieldT, EncodableT] = {
        "key": _token(entry.key),
        "scope": _token(entry.scope),
        "namespace": _token(entry.namespace),
        "tags": ",".join(_token(t) for t in entry.tags),
        "created_at": repr(float(entry.created_at)),
        "expires_at": "inf" if entry.expires_at is None else repr(float(entry.expires_at)),
        "prompt": _bytes(entry.prompt_text),
        "response": _bytes(entry.response.to_json()),
    }
    if entry.vector is not None:
        fields[_VECTOR] = _as_vector(entry.vector).tobytes()
    return fields, _native_ttl_ms(entry.created_at, entry.expires_at)


def _native_ttl_ms(created_at: float, expires_at: float | None) -> int | None:
    """The key TTL (PEXPIRE milliseconds) of an entry; None when it never expires.

    The TTL only frees memory; the query filter decides what is expired. An
    entry born expired still replaces the old one and is evicted within 1 s. A
    lifetime too long for PEXPIRE is clamped: inside the put's MULTI a refused
    PEXPIRE would not roll back the DEL and HSET before it.
    """
    if expires_at is None or not math.isfinite(expires_at):
        return None
    seconds = expires_at - created_at
    if not seconds * 1000 < _MAX_TTL_MS:  # also catches nan and inf
        return _MAX_TTL_MS
    return max(1000, math.ceil(seconds * 1000))


def _decode(fields: Mapping[Any, Any]) -> CacheEntry:
    """Rebuild an entry from hash fields (HGETALL and FT.AGGREGATE LOAD: bytes)."""
    f = {_text(k): v for k, v in fields.items()}
    raw_tags = _text(f.get("tags", b""))
    raw_vector = f.get(_VECTOR)
    expires = _text(f["expires_at"])
    return CacheEntry(
        key=_untoken(_text(f["key"])),
        scope=_untoken(_text(f["scope"])),
        namespace=_untoken(_text(f["namespace"])),
        prompt_text=_text(f.get("prompt", b"")),
        response=CachedResponse.from_json(_text(f["response"])),
        vector=(
            np.frombuffer(raw_vector, dtype=np.float32).copy()
            if isinstance(raw_vector, bytes) and raw_vector
            else None
        ),
        tags=tuple(_untoken(t) for t in raw_tags.split(",") if t),
        created_at=float(_text(f["created_at"])),
        expires_at=None if expires in ("inf", "+inf") else float(expires),
    )


def _decode_or_none(fields: Mapping[Any, Any], where: str) -> CacheEntry | None:
    # One corrupt entry must not turn every lookup of its scope into an error. A
    # hash written by anything else can fail decoding in any way (a JSON list
    # where an object belongs raises AttributeError), so every error is a skip.
    try:
        return _decode(fields)
    except Exception as exc:
        logger.warning("skipping unreadable cache entry %s: %s: %s", where, type(exc).__name__, exc)
        return None


#: Scopes at least this large, or holding half the index, are searched with
#: the BATCHES hybrid policy.
_BATCHES_FROM = 5000
#: The fewest HNSW candidates a search keeps (RediSearch's own default).
_MIN_EF = 10
#: The sizes hash field that counts every entry stored (scope tokens start "x").
_ALL_SCOPES = "~all"
#: The sizes hash field that counts a scope's entries stored with an expiry.
_EXPIRING = "~exp:"
#: The sizes hash field saying every entry of the index was counted by expiry:
#: set when this code creates an empty index or clears one. An index written
#: before the expiry counts has entries no count knows of, and is always filtered.
_EXPIRY_COUNTED = "~exp-counted"


class _Sizes(NamedTuple):
    """What the search plan knows of a scope, from the sizes hash (upper bounds)."""

    #: Entries stored in the scope.
    entries: int
    #: Entries stored in the whole index; None when not counted (an older index).
    index_entries: int | None
    #: Whether an entry of the scope may expire: the query then filters expiry.
    expiring: bool = True


#: How long a scope's size hint is reused before it is read again. An entry
#: with an expiry that another process puts in a scope this one has seen none in
#: is filtered by expiry here only from the next read: an entry that expires
#: within this window and is not yet evicted can take one of a search's k slots
#: (never be served: rows are checked again) until then.
_SIZE_HINT_TTL_S = 5.0


def _max_distance(min_similarity: float | None) -> float | None:
    """The distance filter for ``min_similarity``, or None when it filters nothing."""
    if min_similarity is None or not math.isfinite(min_similarity) or min_similarity <= -1.0:
        return None
    # A hair of slack: the engine compares ``1 - distance`` again itself.
    return min(2.0, 1.0 - float(min_similarity) + 1e-6)


def _size_fields(scope: str) -> list[str]:
    """The sizes hash fields read into a scope's :class:`_Sizes`, in its order."""
    return [_token(scope), _ALL_SCOPES, _EXPIRING + _token(scope), _EXPIRY_COUNTED]


def _counted_fields(entry: CacheEntry, ttl_ms: int | None) -> list[str]:
    """The sizes hash fields a put of ``entry`` adds one to (its key TTL ``ttl_ms``)."""
    fields = [_token(entry.scope), _ALL_SCOPES]
    if ttl_ms is not None:  # the entry expires
        fields.append(_EXPIRING + _token(entry.scope))
    return fields


def _search_plan(
    scope_size: int, index_size: int | None, k: int, ef_max: int | None
) -> tuple[dict[str, str], int | None]:
    """The hybrid policy and the HNSW candidates (``EF_RUNTIME``) of one search.

    Args:
        scope_size: Entries stored in the searched scope (an upper bound).
        index_size: Entries stored in the whole index (an upper bound); None
            when unknown (an index older than its total counter): then the
            scope's size alone picks the policy and searches keep ``ef_max``.
        k: Results wanted.
        ef_max: The most candidates to keep; None for a FLAT field, which
            refuses ``EF_RUNTIME``.
    """
    # RediSearch's own choice brute-forces a filtered KNN when the filter matches
    # most of the index (1.7 ms at 10k entries against 0.2-0.4 ms for BATCHES,
    # 0.15 against 0.07 ms at 1k), while BATCHES is the slow one for a scope
    # that is a small part of a large index.
    batches = scope_size >= _BATCHES_FROM
    if index_size is not None:
        index_size = max(index_size, scope_size)
        batches = batches or 2 * scope_size >= index_size
    policy = {"hybrid_policy": "BATCHES"} if batches else {}
    if ef_max is None:
        return policy, None
    if index_size is None:
        return policy, max(k, ef_max)
    # HNSW finds the nearest entry less often as its graph grows, so the
    # candidates grow with it, as the square root of the index's size: a small
    # cache does not pay for the search a large one needs. On random 384-d
    # vectors, 10 candidates found the nearest of 1k entries every time, 32 of
    # 10k, and 96 missed it in 2.5% of searches among 100k.
    ef = max(_MIN_EF, math.ceil(math.sqrt(index_size) / 3))
    return policy, max(k, min(ef_max, ef))


#: What a search reads of each entry it keeps (``__key`` names it in logs).
_LOAD = ("LOAD", len(_STORED_FIELDS) + 1, "@__key", *(f"@{f}" for f in _STORED_FIELDS))


def _search_args(
    scope: str,
    vector: npt.NDArray[np.float32],
    k: int,
    now: float,
    sizes: _Sizes,
    min_similarity: float | None,
    ef_runtime: int | None = DEFAULT_EF_SEARCH,
) -> list[Any]:
    """The ``FT.AGGREGATE`` arguments (after the index name) of one search.

    ``sizes`` is (entries in the scope, entries in the index); ``ef_runtime``
    is the most HNSW candidates to keep, None for a FLAT vector field.

    The steps run in this order, which redis-py's ``AggregateRequest`` cannot
    express (it sends ``LOAD`` first, which would read every candidate's answer
    before the distance filter drops it):

    1. the KNN, with the scope and expiry filters inside it, so another
       scope's nearer vectors and expired entries never take any of the k slots;
    2. ``FILTER`` on the distance: most lookups are misses, and most
       candidates of a hit are not served;
    3. ``SORTBY`` the distance, best first;
    4. ``LOAD`` of what is left only.
    """
    policy, ef = _search_plan(sizes.entries, sizes.index_entries, k, ef_runtime)
    knn = f"KNN {k} @{_VECTOR} $vector"
    if policy:
        knn += f" HYBRID_POLICY {policy['hybrid_policy']}"
    if ef is not None:
        # (An explicit ADHOC_BF policy would refuse it; the automatic one and
        # BATCHES take it.)
        knn += f" EF_RUNTIME {ef}"
    # Scope tokens are hex with a letter in front: nothing in them needs escaping.
    where = f"@scope:{{{_token(scope)}}}"
    if sizes.expiring:
        # An expired entry Redis has not evicted yet would take one of the k
        # slots (RediSearch still matches it). A scope no entry with an expiry
        # was ever put in skips the range, a tenth of a small cache's lookup.
        # expires_at is "inf" for entries that never expire, so they pass it.
        # Fixed-point: the query language has no "e+" exponent (repr(1e16) is "1e+16").
        where += f" @expires_at:[({float(now):.6f} +inf]"
    args: list[Any] = [f"(({where}))=>[{knn} AS {_DISTANCE}]"]
    max_distance = _max_distance(min_similarity)
    if max_distance is not None:
        args += ["FILTER", f"@{_DISTANCE} <= {max_distance:.9f}"]
    args += ["SORTBY", 2, f"@{_DISTANCE}", "ASC", "MAX", k, *_LOAD]
    return [*args, "PARAMS", 2, "vector", vector.tobytes(), "DIALECT", 2]


def _row_fields(row: Any) -> dict[str, Any]:
    """One aggregate row as ``{field: value}`` (RESP2 flat list or RESP3 map)."""
    if isinstance(row, Mapping):
        row = row.get(b"extra_attributes", row.get("extra_attributes", row))
        return {_text(k): v for k, v in row.items()}
    return {_text(row[i]): row[i + 1] for i in range(0, len(row) - 1, 2)}


def _aggregate_rows(result: Any) -> list[Any]:
    """The rows of a raw ``FT.AGGREGATE`` reply: a RESP3 map, or RESP2's
    ``[count, row, row, ...]``."""
    if isinstance(result, Mapping):
        return list(result.get(b"results", result.get("results", [])))
    return list(result[1:])


def _candidates(result: Any, now: float) -> list[tuple[CacheEntry, float]]:
    """(entry, cosine similarity) of each row, best first; gone or expired rows dropped."""
    out: list[tuple[CacheEntry, float]] = []
    for row in _aggregate_rows(result):
        fields = _row_fields(row)
        if "key" not in fields or _DISTANCE not in fields:
            continue  # deleted between the index match and the load: not an error
        where = _text(fields.get("__key", fields["key"]))
        entry = _decode_or_none(fields, where)
        if entry is None or entry.expired(now):
            continue
        sim = min(1.0, max(-1.0, 1.0 - float(_text(fields[_DISTANCE]))))
        out.append((entry, sim))
    return out


def _both(client: Any, first: Sequence[Any], second: Sequence[Any]) -> tuple[Any, Any]:
    """Two commands in one round trip, as a pipeline sends them, without building one.

    A redis-py pipeline object costs about 0.05 ms to build and run, a fifth of
    a lookup in a 1k-entry cache. Both replies are read before an error reply
    is raised, so the pooled connection never falls out of step; any other
    failure drops the connection.
    """
    # (Typed Any: redis-py's connection-level calls are untyped.)
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, redis.ConnectionPool):  # a cluster or a stand-in client
        with client.pipeline(transaction=False) as pipe:
            pipe.execute_command(*first)
            pipe.execute_command(*second)
            a, b = pipe.execute()
            return a, b
    conn: Any = pool.get_connection()
    try:
        conn.send_packed_command(conn.pack_commands([first, second]))
        replies: list[Any] = []
        for command in (first, second):
            try:
                replies.append(client.parse_response(conn, command[0]))
            except redis.ResponseError as exc:
                replies.append(exc)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    return _unless_error(replies)


async def _aboth(client: Any, first: Sequence[Any], second: Sequence[Any]) -> tuple[Any, Any]:
    """Async :func:`_both`."""
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, aredis.ConnectionPool):
        async with client.pipeline(transaction=False) as pipe:
            pipe.execute_command(*first)
            pipe.execute_command(*second)
            a, b = await pipe.execute()
            return a, b
    conn: Any = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(conn.pack_commands([first, second]))
        replies: list[Any] = []
        for command in (first, second):
            try:
                replies.append(await client.parse_response(conn, command[0]))
            except redis.ResponseError as exc:
                replies.append(exc)
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return _unless_error(replies)


def _unless_error(replies: Sequence[Any]) -> tuple[Any, Any]:
    """The two replies, or the first error reply raised."""
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return replies[0], replies[1]


def _tag_query(**values: str | None) -> str:
    """The query matching entries whose TAG fields hold exactly these values (None: any).

    With no value given it matches every entry (``*``).
    """
    # Tokens are hex with a letter in front: nothing in them needs escaping.
    clauses = [f"@{field}:{{{_token(v)}}}" for field, v in values.items() if v is not None]
    return " ".join(clauses) or "*"


def _ids_command(index_name: str, query: str, limit: int, offset: int = 0) -> list[Any]:
    """A raw ``FT.SEARCH`` for the keys of the documents ``query`` matches (no fields)."""
    return ["FT.SEARCH", index_name, query, "NOCONTENT", "LIMIT", offset, limit, "DIALECT", 2]


def _search_page(reply: Any) -> tuple[int, list[bytes | str]]:
    """(documents matched, keys of this page) of a raw ``FT.SEARCH ... NOCONTENT`` reply.

    Read here rather than by redisvl or redis-py, whose result objects assume
    RESP2 replies unless RESP3 was negotiated by default: with ``protocol=3``
    asked for explicitly they get a RESP3 map and fail.

    Args:
        reply: A RESP3 map (``total_results`` and ``results`` of ``{id: ...}``)
            or RESP2's ``[total, key, key, ...]``.
    """
    if isinstance(reply, Mapping):
        total = reply.get(b"total_results", reply.get("total_results", 0))
        rows = reply.get(b"results", reply.get("results", []))
        return int(total), [row.get(b"id", row.get("id")) for row in rows]
    return int(reply[0]), list(reply[1:])


@dataclass
class _Sweep:
    """Unlinking every document a query matches, page by page; the caller does the I/O.

    Redis has no delete-by-query. Each round searches the first page of what
    still matches and unlinks it per key (no cross-slot command, so Redis
    Cluster works); unlinked documents leave the index, so the next round
    starts at offset 0 again. The sync and async twins share this state.
    """

    index_name: str
    query: str
    deleted: int = 0
    offset: int = 0
    #: A runaway backstop against concurrent writers, set from the first page's total.
    limit: int | None = None

    def command(self) -> list[Any]:
        """The next page's ``FT.SEARCH``."""
        return _ids_command(self.index_name, self.query, _SWEEP_BATCH, self.offset)

    def keys(self, reply: Any) -> list[bytes | str]:
        """The keys to unlink from one page's reply; empty when the sweep is done."""
        total, keys = _search_page(reply)
        if self.limit is None:
            self.limit = math.ceil(total * 1.5) + _SWEEP_BATCH
        if keys and (self.deleted > self.limit or self.offset > self.limit):
            logger.warning(
                "deleting %r from Redis index %s stopped after %d entries with more "
                "still matching (entries written meanwhile?); run it again to finish",
                self.query,
                self.index_name,
                self.deleted,
            )
            return []
        return keys

    def unlinked(self, page: int, removed: int) -> None:
        """Record that ``removed`` of a page of ``page`` keys existed and were unlinked."""
        self.deleted += removed
        # A page none of which could be unlinked (keys already gone, not yet out
        # of the index) would come back forever at offset 0: page past it.
        self.offset = 0 if removed else self.offset + page


def _estimate_bytes(entries: int, sizes: Sequence[int]) -> int:
    if entries == 0 or not sizes:
        return 0
    return round(entries * (sum(sizes) / len(sizes)))


@dataclass(frozen=True)
class _Plan:
    action: Literal["ok", "create", "add_vector"]
    dims: int | None
    # False for an existing FLAT vector field: RediSearch refuses EF_RUNTIME there.
    hnsw: bool = True


def _plan_index(
    info: Mapping[str, Any] | None, *, name: str, key_prefix: str, dims: int | None
) -> _Plan:
    """What to do so the index exists with our layout and (when known) a vector field."""
    if info is None:
        return _Plan("create", dims)
    existing = convert_index_info_to_schema(dict(info))
    prefix = existing["index"].get("prefix")
    prefixes = prefix if isinstance(prefix, list) else [prefix]
    fields = {f["name"]: f for f in existing["fields"]}
    missing = [f for f in _INDEXED_FIELDS if f not in fields]
    if prefixes != [key_prefix] or missing:
        raise CacheBackendError(
            f"Redis index {name!r} exists but is not a costopt cache index for prefix "
            f"{key_prefix!r} (prefixes {prefixes}, missing fields {missing}); pass another "
            f"index_name/prefix, or drop that index"
        )
    vector = fields.get(_VECTOR)
    if vector is None:
        return _Plan("ok", None) if dims is None else _Plan("add_vector", dims)
    existing_dims = int(vector["attrs"]["dims"])
    if dims is not None and dims != existing_dims:
        raise CacheBackendError(
            f"Redis index {name!r} holds {existing_dims}-dim vectors but got {dims} dims: "
            f"use one embedding model per cache, or another prefix and index_name"
        )
    return _Plan("ok", existing_dims, hnsw=str(vector["attrs"].get("algorithm", "")) == "hnsw")


def _is_missing_index(exc: BaseException) -> bool:
    return _chain_says(exc, _MISSING_INDEX)


def _chain_says(exc: BaseException | None, fragments: Sequence[str]) -> bool:
    while exc is not None:
        message = str(exc).lower()
        if any(f in message for f in fragments):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _hint(exc: BaseException) -> str:
    if _chain_has(exc, (redis.AuthenticationError,)):
        return "check the credentials in the Redis URL"
    if _chain_has(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return "is Redis running and reachable? The cache treats this as a miss"
    if _chain_says(exc, ("unknown command",)):
        return "the server lacks RediSearch: use Redis Stack, Redis 8+ or Redis Cloud"
    return "the cache treats this as a miss"


def _chain_has(exc: BaseException | None, kinds: tuple[type[BaseException], ...]) -> bool:
    while exc is not None:
        if isinstance(exc, kinds):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_SYNC_TO_ASYNC_CONNECTION: dict[type[Any], type[Any]] = {
    redis.Connection: aredis.Connection,
    redis.SSLConnection: aredis.SSLConnection,
    redis.UnixDomainSocketConnection: aredis.UnixDomainSocketConnection,
}
_PORTABLE_KWARGS = (
    "host",
    "port",
    "path",
    "db",
    "username",
    "password",
    "client_name",
    "credential_provider",
    "protocol",
)


@dataclass
class _AsyncConn:
    """The async client of one event loop (an asyncio client cannot cross loops)."""

    client: aredis.Redis
    index: AsyncSearchIndex | None = None


# -- the backend -------------------------------------------------------------------------


class RedisCacheBackend:
    """Cache entries in Redis, searched by RediSearch (through redisvl).

    The constructor does no I/O: the connection and the index are made on first
    use, so building a cache never fails because Redis is down.

    Args:
        url: Redis URL (``redis://``, ``rediss://``, ``unix://``); may carry a
            password, which never appears in ``repr()`` or error messages.
        prefix: Key prefix; entries live at ``<prefix>:<key>``. Prefixes of two
            caches on one Redis must not nest (``a`` and ``a:b``).
        index_name: RediSearch index name (default ``<prefix>:idx``).
        dims: Vector dimensions; by default taken from an existing index or the
            first vector stored or searched.
        socket_timeout_s: Connect and read timeout of each Redis call; a call is
            retried once on a broken connection, so a failure surfaces in about
            twice this.
        client: A ``redis.Redis`` to use instead of ``url`` (not closed by
            :meth:`close`). The async twins derive an asyncio client from its
            host, port, db and credentials unless ``async_client`` is given.
            It must return bytes (``decode_responses=False``, the default):
            entries hold binary vectors.
        async_client: A ``redis.asyncio.Redis`` for the async twins (bytes
            replies too); it is used from every event loop, so it should not
            be bound to one.
        ef_runtime: The most HNSW candidates a vector search keeps
            (RediSearch's ``EF_RUNTIME``): higher finds the nearest entry more
            often and costs more. A search keeps fewer while the index is
            small (the square root of its entries over 3, at least 10), so
            this ceiling is reached from about 80k entries. The default is
            the memory backend's.

    Raises:
        ConfigurationError: An argument is out of range, or a client or the
            URL decodes replies (``decode_responses=True``).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        index_name: str | None = None,
        dims: int | None = None,
        socket_timeout_s: float = 0.25,
        client: redis.Redis | None = None,
        async_client: aredis.Redis | None = None,
        ef_runtime: int = DEFAULT_EF_SEARCH,
    ) -> None:
        prefix = prefix.rstrip(":")
        if not prefix:
            raise ConfigurationError("prefix must be a non-empty string such as 'costopt:cache'")
        if dims is not None and (not isinstance(dims, int) or dims <= 0):
            raise ConfigurationError(f"dims must be a positive int or None, got {dims!r}")
        if not socket_timeout_s > 0:
            raise ConfigurationError(f"socket_timeout_s must be > 0, got {socket_timeout_s!r}")
        if isinstance(ef_runtime, bool) or not isinstance(ef_runtime, int) or ef_runtime < 1:
            raise ConfigurationError(
                f"ef_runtime must be an int >= 1 (default {DEFAULT_EF_SEARCH}), got {ef_runtime!r}"
            )
        for name, given in (("client", client), ("async_client", async_client)):
            if given is not None and given.connection_pool.connection_kwargs.get(
                "decode_responses"
            ):
                raise ConfigurationError(
                    f"the {name} passed to RedisCacheBackend decodes replies "
                    f"(decode_responses=True), but cache entries hold binary vectors: "
                    f"pass a client made with decode_responses=False (the default)"
                )
        # A URL's query options override keyword arguments in redis-py's from_url,
        # so the backend cannot turn this off for the clients it makes.
        if client is None and _decodes_responses(url):
            raise ConfigurationError(
                "the Redis URL sets decode_responses, but cache entries hold binary "
                "vectors: remove decode_responses from the URL (redis-py decodes for "
                "any value of it, 'false' included)"
            )
        self._ef_runtime = ef_runtime
        self._hnsw = True  # what the index we use has (an adopted one may be FLAT)
        self._url = url
        self._display_url, self._secrets = _redact(url)
        if client is not None:
            kw = client.connection_pool.connection_kwargs
            where = kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}"
            self._display_url = f"redis client {where} db {kw.get('db', 0)}"
            self._secrets = _client_secrets(kw)
        self._prefix = prefix
        self._key_prefix = prefix + ":"
        # Outside the indexed prefix, so the index never sees it.
        self._sizes_key = prefix + "~scope-sizes"
        # The counters of every replica's SemanticCache on this prefix (see add_stats).
        self._stats_key = prefix + "~stats"
        self._size_hints: dict[str, tuple[_Sizes, float]] = {}
        self._index_name = index_name or f"{prefix}:idx"
        self._timeout = float(socket_timeout_s)
        self._dims: int | None = dims
        self._schema = _build_schema(self._index_name, self._key_prefix, dims)
        self._index_ready = False
        self._lock = threading.Lock()
        self._client = client
        self._owns_client = client is None
        self._sync_index: SearchIndex | None = None
        self._given_async = async_client
        # One connection per event loop: an asyncio client cannot cross loops, and
        # replacing one loop's client with another's on every switch would dial a
        # new connection per call when two loops take turns.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncConn] = (
            weakref.WeakKeyDictionary()
        )

    # -- introspection ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the backend points, password redacted."""
        return self._display_url

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def index_name(self) -> str:
        return self._index_name

    @property
    def dims(self) -> int | None:
        """Vector dimensions, once known."""
        return self._dims

    def __repr__(self) -> str:
        return (
            f"RedisCacheBackend(url={self._display_url!r}, prefix={self._prefix!r}, "
            f"index_name={self._index_name!r}, dims={self._dims})"
        )

    # -- errors ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def _translate(self, op: str) -> Iterator[None]:
        try:
            yield
        except CacheBackendError:
            raise  # ours (dims mismatch, foreign index) already say what to do
        except _DRIVER_ERRORS as exc:
            # After any failure the index may be gone (a restarted server): check again.
            self._index_ready = False
            message = self._scrub(
                f"Redis cache backend: {op} failed on {self._display_url} (index "
                f"{self._index_name!r}): {type(exc).__name__}: {exc} ({_hint(exc)})"
            )
            # Keep the driver error as the cause unless its text carries a secret.
            leaks = _chain_says(exc, tuple(secret.lower() for secret in self._secrets))
            unreachable = _chain_has(exc, (redis.ConnectionError, redis.TimeoutError, OSError))
            raise CacheBackendError(message, unreachable=unreachable) from (None if leaks else exc)

    # -- connections ----------------------------------------------------------------------

    def _sync_client(self) -> redis.Redis:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = redis.Redis.from_url(
                        self._url,
                        socket_timeout=self._timeout,
                        socket_connect_timeout=self._timeout,
                        # One retry re-dials a pooled connection a restarted server
                        # closed; no backoff, so a dead server fails fast.
                        retry=Retry(NoBackoff(), 1),
                    )
                client = self._client
        return client

    def _index(self) -> SearchIndex:
        index = self._sync_index
        if index is None or index.schema is not self._schema:
            index = SearchIndex(self._schema, redis_client=self._sync_client())
            self._sync_index = index
        return index

    def _new_async_client(self) -> aredis.Redis:
        retry = AsyncRetry(NoBackoff(), 1)
        if self._owns_client or self._client is None:
            return aredis.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=retry,
            )
        pool = self._client.connection_pool
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _PORTABLE_KWARGS}
        for key in ("socket_timeout", "socket_connect_timeout"):
            kwargs[key] = pool.connection_kwargs.get(key) or self._timeout
        for key in pool.connection_kwargs:
            if key.startswith("ssl_"):
                kwargs[key] = pool.connection_kwargs[key]
        connection_class = _SYNC_TO_ASYNC_CONNECTION.get(pool.connection_class)
        if connection_class is None:
            raise CacheBackendError(
                f"cannot derive an asyncio client from {pool.connection_class.__name__}: "
                f"pass async_client= to RedisCacheBackend"
            )
        # from_pool: the client owns the pool, so aclose() closes its connections.
        return aredis.Redis.from_pool(
            aredis.ConnectionPool(connection_class=connection_class, retry=retry, **kwargs)
        )

    def _aconn(self) -> _AsyncConn:
        loop = asyncio.get_running_loop()
        conn = self._async.get(loop)
        if conn is None:
            with self._lock:
                conn = self._async.get(loop)
                if conn is None:
                    # A client's connections keep their loop alive, so the weak
                    # key alone would never drop a finished loop's client: drop
                    # those here (they can no longer be closed; the garbage
                    # collector frees them).
                    for gone in [other for other in self._async if other.is_closed()]:
                        del self._async[gone]
                    conn = _AsyncConn(self._given_async or self._new_async_client())
                    self._async[loop] = conn
        return conn

    def _aindex(self) -> AsyncSearchIndex:
        conn = self._aconn()
        if conn.index is None or conn.index.schema is not self._schema:
            conn.index = AsyncSearchIndex(self._schema, redis_client=conn.client)
        return conn.index

    # -- the index ----------------------------------------------------------------------

    def _wanted_dims(self, dims: int | None) -> int | None:
        if dims is not None and self._dims is not None and dims != self._dims:
            raise CacheBackendError(
                f"vector has {dims} dims but this cache holds {self._dims}-dim vectors "
                f"(index {self._index_name!r}): use one embedding model per cache"
            )
        return self._dims if dims is None else dims

    def _needs_ensure(self, dims: int | None) -> bool:
        return not self._index_ready or (dims is not None and self._dims is None)

    def _adopt(self, plan: _Plan) -> None:
        self._hnsw = plan.hnsw
        dims = plan.dims
        if dims is not None and dims != self._dims:
            self._dims = dims
            self._schema = _build_schema(self._index_name, self._key_prefix, dims)
        self._index_ready = True

    def _ensure_index(self, dims: int | None = None) -> None:
        dims = self._wanted_dims(dims)
        if not self._needs_ensure(dims):
            return
        ft = self._sync_client().ft(self._index_name)
        for _ in range(3):
            try:
                info = self._index().info()
            except RedisVLError as exc:
                if not _is_missing_index(exc):
                    raise
                info = None
            plan = _plan_index(info, name=self._index_name, key_prefix=self._key_prefix, dims=dims)
            try:
                if plan.action == "create":
                    SearchIndex(
                        _build_schema(self._index_name, self._key_prefix, plan.dims),
                        redis_client=self._sync_client(),
                    ).create()
                    if self._wait_backfill() == 0:
                        self._sync_client().hset(self._sizes_key, _EXPIRY_COUNTED, 1)
                elif plan.action == "add_vector" and plan.dims is not None:
                    field = self._vector_redis_field(plan.dims)
                    ft.alter_schema_add([field])
            except (RedisVLError, redis.ResponseError) as exc:
                if _chain_says(exc, _ALREADY_EXISTS):
                    continue  # another process got there first: look again
                raise
            self._adopt(plan)
            return
        raise CacheBackendError(f"could not create Redis index {self._index_name!r}")

    def _wait_backfill(self) -> int | None:
        """Entries a new index found under its prefix; None if still indexing."""
        # FT.CREATE indexes keys already under the prefix in the background; wait,
        # so a delete right after creation does not miss them.
        deadline = time.monotonic() + _BACKFILL_WAIT_S
        while time.monotonic() < deadline:
            info = self._index().info()
            if not int(float(info.get("indexing", 0))):
                return int(float(info.get("num_docs", 0)))
            time.sleep(0.01)
        return None

    async def _await_backfill(self) -> int | None:
        deadline = time.monotonic() + _BACKFILL_WAIT_S
        while time.monotonic() < deadline:
            info = await self._aindex().info()
            if not int(float(info.get("indexing", 0))):
                return int(float(info.get("num_docs", 0)))
            await asyncio.sleep(0.01)
        return None

    def _vector_redis_field(self, dims: int) -> Any:
        schema = _build_schema(self._index_name, self._key_prefix, dims)
        return schema.fields[_VECTOR].as_redis_field()

    async def _aensure_index(self, dims: int | None = None) -> None:
        dims = self._wanted_dims(dims)
        if not self._needs_ensure(dims):
            return
        for _ in range(3):
            try:
                info = await self._aindex().info()
            except RedisVLError as exc:
                if not _is_missing_index(exc):
                    raise
                info = None
            plan = _plan_index(info, name=self._index_name, key_prefix=self._key_prefix, dims=dims)
            try:
                if plan.action == "create":
                    await AsyncSearchIndex(
                        _build_schema(self._index_name, self._key_prefix, plan.dims),
                        redis_client=self._aconn().client,
                    ).create()
                    if await self._await_backfill() == 0:
                        await self._aconn().client.hset(self._sizes_key, _EXPIRY_COUNTED, 1)
                elif plan.action == "add_vector" and plan.dims is not None:
                    field = self._vector_redis_field(plan.dims)
                    await self._aconn().client.ft(self._index_name).alter_schema_add([field])
            except (RedisVLError, redis.ResponseError) as exc:
                if _chain_says(exc, _ALREADY_EXISTS):
                    continue
                raise
            self._adopt(plan)
            return
        raise CacheBackendError(f"could not create Redis index {self._index_name!r}")

    def _indexed(self, dims: int | None, run: Callable[[], _T]) -> _T:
        """Run ``run()`` on a ready index; recreate the index once if Redis lost it."""
        self._ensure_index(dims)
        try:
            return run()
        except (RedisVLError, redis.ResponseError) as exc:
            if not _is_missing_index(exc):
                raise
        self._index_ready = False
        self._ensure_index(dims)
        return run()

    async def _aindexed(self, dims: int | None, run: Callable[[], Awaitable[_T]]) -> _T:
        await self._aensure_index(dims)
        try:
            return await run()
        except (RedisVLError, redis.ResponseError) as exc:
            if not _is_missing_index(exc):
                raise
        self._index_ready = False
        await self._aensure_index(dims)
        return await run()

    def _rkey(self, key: str) -> bytes:
        return _bytes(self._key_prefix + key)

    def _sweep(self, query: str) -> int:
        """Unlink every entry ``query`` matches; returns how many existed."""
        client = self._sync_client()
        sweep = _Sweep(self._index_name, query)
        while keys := sweep.keys(client.execute_command(*sweep.command())):  # type: ignore[no-untyped-call]
            with client.pipeline(transaction=False) as pipe:
                for rkey in keys:
                    pipe.unlink(rkey)
                sweep.unlinked(len(keys), sum(int(n) for n in pipe.execute()))
        return sweep.deleted

    async def _asweep(self, query: str) -> int:
        client = self._aconn().client
        sweep = _Sweep(self._index_name, query)
        while keys := sweep.keys(await client.execute_command(*sweep.command())):  # type: ignore[no-untyped-call]
            async with client.pipeline(transaction=False) as pipe:
                for rkey in keys:
                    pipe.unlink(rkey)
                sweep.unlinked(len(keys), sum(int(n) for n in await pipe.execute()))
        return sweep.deleted

    # -- CacheBackend: sync ---------------------------------------------------------------

    def get(self, key: str, *, now: float) -> CacheEntry | None:
        """The unexpired entry stored under ``key``, if any.

        Raises:
            CacheBackendError: Redis failed or is unreachable.
        """
        with self._translate("get"):
            raw = self._sync_client().hgetall(self._rkey(key))
        return self._found(raw, key, now)

    def _found(self, raw: Mapping[Any, Any], key: str, now: float) -> CacheEntry | None:
        if not raw:
            return None
        entry = _decode_or_none(raw, self._key_prefix + key)
        return None if entry is None or entry.expired(now) else entry

    def search(
        self,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> list[tuple[CacheEntry, float]]:
        """Up to ``k`` unexpired entries of ``scope`` nearest to ``vector``, best first.

        The similarity is cosine similarity (``1 - cosine distance``). One
        ``FT.AGGREGATE`` finds the ``k`` nearest and reads the fields of those at
        or above ``min_similarity`` only.

        Raises:
            CacheBackendError: Redis failed, or ``vector`` has the wrong dimensions.
        """
        if k <= 0:
            return []
        with self._translate("search"):
            vec = _as_vector(vector)
            sizes = self._sizes(scope)
            command = partial(self._search_command, scope, vec, k, now, sizes, min_similarity)
            result = self._indexed(
                vec.size,
                lambda: self._sync_client().execute_command(*command()),  # type: ignore[no-untyped-call]
            )
        return _candidates(result, now)

    def get_and_search(
        self,
        key: str,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> tuple[CacheEntry | None, list[tuple[CacheEntry, float]]]:
        """:meth:`get` and :meth:`search` in one round trip (a pipeline of both).

        Raises:
            CacheBackendError: Redis failed, or ``vector`` has the wrong dimensions.
        """
        if k <= 0:
            return self.get(key, now=now), []
        with self._translate("get_and_search"):
            vec = _as_vector(vector)
            sizes = self._sizes(scope)
            command = partial(self._search_command, scope, vec, k, now, sizes, min_similarity)

            def both() -> tuple[Any, Any]:
                return _both(self._sync_client(), ("HGETALL", self._rkey(key)), command())

            stored, result = self._indexed(vec.size, both)
        return self._found(stored, key, now), _candidates(result, now)

    def _search_command(
        self,
        scope: str,
        vec: npt.NDArray[np.float32],
        k: int,
        now: float,
        sizes: _Sizes,
        min_similarity: float | None,
    ) -> list[Any]:
        """The raw ``FT.AGGREGATE`` of a search; its reply is read by _candidates,
        with no redisvl or redis-py result objects built per lookup."""
        # Built once the index is ready: whether it is HNSW is known by then.
        ef = self._ef_runtime if self._hnsw else None
        args = _search_args(scope, vec, k, now, sizes, min_similarity, ef)
        return ["FT.AGGREGATE", self._index_name, *args]

    def _sizes(self, scope: str) -> _Sizes:
        """(entries of ``scope``, entries of the index), read at most every few seconds."""
        sizes = self._size_hint(scope)
        if sizes is None:
            raw = self._sync_client().hmget(self._sizes_key, _size_fields(scope))
            sizes = self._remember_sizes(scope, raw)
        return sizes

    async def _asizes(self, scope: str) -> _Sizes:
        sizes = self._size_hint(scope)
        if sizes is None:
            raw = await self._aconn().client.hmget(self._sizes_key, _size_fields(scope))
            sizes = self._remember_sizes(scope, raw)
        return sizes

    def _size_hint(self, scope: str) -> _Sizes | None:
        hint = self._size_hints.get(scope)
        if hint is None or time.monotonic() - hint[1] > _SIZE_HINT_TTL_S:
            return None
        return hint[0]

    def _remember_sizes(self, scope: str, raw: Sequence[Any]) -> _Sizes:
        # An index older than the total counter has none: the plan then does not
        # guess the scope's share of it. One older than the expiry counts may hold
        # entries that expire: it is filtered by expiry.
        total = None if raw[1] is None else int(raw[1])
        expiring = raw[3] is None or int(raw[2] or 0) > 0
        # A read sent before this process's own put with an expiry may answer
        # after _note_put: once on, the filter stays on until clear().
        known = self._size_hints.get(scope)
        expiring = expiring or (known is not None and known[0].expiring)
        sizes = _Sizes(int(raw[0] or 0), total, expiring)
        self._size_hints[scope] = (sizes, time.monotonic())
        return sizes

    def _note_put(self, scope: str, ttl_ms: int | None) -> None:
        # This process's own put with an expiry turns the filter on at once;
        # another process's is seen when the hint is next read (see _SIZE_HINT_TTL_S).
        hint = self._size_hints.get(scope)
        if ttl_ms is not None and hint is not None and not hint[0].expiring:
            self._size_hints[scope] = (hint[0]._replace(expiring=True), hint[1])

    def put(self, entry: CacheEntry) -> None:
        """Store ``entry``, replacing any entry under its key, atomically.

        Raises:
            CacheBackendError: Redis failed, or the vector has the wrong dimensions.
        """
        with self._translate("put"):
            fields, ttl_ms = _encode(entry)
            dims = None if entry.vector is None else int(np.size(entry.vector))
            self._ensure_index(dims)
            rkey = self._rkey(entry.key)
            with self._sync_client().pipeline(transaction=True) as pipe:
                # DEL first: a replacement without a vector must not keep the old one.
                pipe.delete(rkey)
                pipe.hset(rkey, mapping=fields)
                if ttl_ms is not None:
                    pipe.pexpire(rkey, ttl_ms)
                pipe.execute()
            # Size hints for the search plan only: upper bounds (replacements,
            # deletions and expiry are not subtracted), kept outside the transaction
            # so the entry's own key is the only one it touches.
            with self._sync_client().pipeline(transaction=False) as sizes:
                for field in _counted_fields(entry, ttl_ms):
                    sizes.hincrby(self._sizes_key, field, 1)
                sizes.execute()
            self._note_put(entry.scope, ttl_ms)

    def delete(self, keys: Sequence[str]) -> int:
        """Remove entries by key; returns how many existed.

        Raises:
            CacheBackendError: Redis failed.
        """
        if not keys:
            return 0
        # Per-key UNLINK: no cross-slot multi-key command, so Redis Cluster works.
        with self._translate("delete"), self._sync_client().pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.unlink(self._rkey(key))
            return sum(int(n) for n in pipe.execute())

    def _drop_where(self, op: str, query: str) -> int:
        with self._translate(op):
            return self._indexed(None, lambda: self._sweep(query))

    def delete_tag(self, tag: str, namespace: str | None = None) -> int:
        """Remove entries carrying ``tag`` (in ``namespace``, or in all); returns the count.

        Raises:
            CacheBackendError: Redis failed.
        """
        return self._drop_where("delete_tag", _tag_query(tags=tag, namespace=namespace))

    def delete_scope(self, scope: str) -> int:
        """Remove every entry of ``scope``; returns the count.

        Raises:
            CacheBackendError: Redis failed.
        """
        return self._drop_where("delete_scope", _tag_query(scope=scope))

    def delete_namespace(self, namespace: str) -> int:
        """Remove every entry of ``namespace``; returns the count.

        Raises:
            CacheBackendError: Redis failed.
        """
        return self._drop_where("delete_namespace", _tag_query(namespace=namespace))

    def clear(self) -> None:
        """Remove every entry under this cache's prefix; other keys are untouched.

        The index stays, ready for new entries.

        Raises:
            CacheBackendError: Redis failed.
        """
        with self._translate("clear"):
            self._indexed(None, lambda: self._sweep(_tag_query()))
            with self._sync_client().pipeline(transaction=True) as pipe:
                # Nothing is left: counting starts afresh, and knows every entry.
                pipe.delete(self._sizes_key)
                pipe.hset(self._sizes_key, _EXPIRY_COUNTED, 1)
                pipe.execute()
            self._size_hints.clear()

    def add_stats(self, deltas: Mapping[str, int]) -> None:
        """Add one replica's counter increments to the shared counters (one round trip).

        Raises:
            CacheBackendError: Redis failed.
        """
        if not deltas:
            return
        with self._translate("add_stats"):
            pipe = self._sync_client().pipeline(transaction=False)
            for name, n in deltas.items():
                pipe.hincrby(self._stats_key, name, n)
            pipe.execute()

    def read_stats(self) -> dict[str, int]:
        """The counters every replica added (lookups, hits, guard rejections, ...).

        Raises:
            CacheBackendError: Redis failed.
        """
        with self._translate("read_stats"):
            raw: Any = self._sync_client().hgetall(self._stats_key)
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    def stats(self) -> BackendStats:
        """Entry count and approximate bytes (prompt + response + vector + overhead).

        One ``FT.SEARCH`` counts the entries and names a sample of up to 64,
        whose field sizes estimate the bytes, like ``CacheEntry.size_bytes``;
        the count includes entries past expiry that Redis has not evicted yet.

        Raises:
            CacheBackendError: Redis failed.
        """
        with self._translate("stats"):
            client = self._sync_client()
            sample = _ids_command(self._index_name, _tag_query(), _STATS_SAMPLE)
            reply = self._indexed(None, lambda: client.execute_command(*sample))  # type: ignore[no-untyped-call]
            entries, ids = _search_page(reply)
            if entries == 0:
                return BackendStats(entries=0, bytes=0)
            with client.pipeline(transaction=False) as pipe:
                for rkey in ids:
                    for name in ("prompt", "response", _VECTOR):
                        pipe.hstrlen(rkey, name)
                lengths = [int(n) for n in pipe.execute()]
        sizes = [sum(lengths[i : i + 3]) + _ENTRY_OVERHEAD for i in range(0, len(lengths), 3)]
        return BackendStats(entries=entries, bytes=_estimate_bytes(entries, sizes))

    def close(self) -> None:
        """Release connections (prefer :meth:`aclose` from async code).

        A later call reconnects. A client passed in is left open.
        """
        client, self._client = self._client, None
        self._sync_index = None
        self._index_ready = False
        if client is not None and self._owns_client:
            client.close()
        elif client is not None:
            self._client = client
        with self._lock:
            conns = list(self._async.items())
            self._async.clear()
        if self._given_async is not None:
            return
        for loop, conn in conns:
            _close_on_its_loop(loop, conn.client)

    # -- CacheBackend: async --------------------------------------------------------------

    async def aget(self, key: str, *, now: float) -> CacheEntry | None:
        """Async :meth:`get`."""
        with self._translate("aget"):
            raw = await self._aconn().client.hgetall(self._rkey(key))
        return self._found(raw, key, now)

    async def asearch(
        self,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> list[tuple[CacheEntry, float]]:
        """Async :meth:`search`."""
        if k <= 0:
            return []
        with self._translate("asearch"):
            vec = _as_vector(vector)
            client = self._aconn().client
            sizes = await self._asizes(scope)
            command = partial(self._search_command, scope, vec, k, now, sizes, min_similarity)
            result = await self._aindexed(
                vec.size,
                lambda: client.execute_command(*command()),  # type: ignore[no-untyped-call]
            )
        return _candidates(result, now)

    async def aget_and_search(
        self,
        key: str,
        scope: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        now: float,
        min_similarity: float | None = None,
    ) -> tuple[CacheEntry | None, list[tuple[CacheEntry, float]]]:
        """Async :meth:`get_and_search`."""
        if k <= 0:
            return await self.aget(key, now=now), []
        with self._translate("aget_and_search"):
            vec = _as_vector(vector)
            client = self._aconn().client
            sizes = await self._asizes(scope)
            command = partial(self._search_command, scope, vec, k, now, sizes, min_similarity)

            async def both() -> tuple[Any, Any]:
                return await _aboth(client, ("HGETALL", self._rkey(key)), command())

            stored, result = await self._aindexed(vec.size, both)
        return self._found(stored, key, now), _candidates(result, now)

    async def aput(self, entry: CacheEntry) -> None:
        """Async :meth:`put`."""
        with self._translate("aput"):
            fields, ttl_ms = _encode(entry)
            dims = None if entry.vector is None else int(np.size(entry.vector))
            await self._aensure_index(dims)
            rkey = self._rkey(entry.key)
            async with self._aconn().client.pipeline(transaction=True) as pipe:
                pipe.delete(rkey)
                pipe.hset(rkey, mapping=fields)
                if ttl_ms is not None:
                    pipe.pexpire(rkey, ttl_ms)
                await pipe.execute()
            async with self._aconn().client.pipeline(transaction=False) as sizes:
                for field in _counted_fields(entry, ttl_ms):
                    sizes.hincrby(self._sizes_key, field, 1)
                await sizes.execute()
            self._note_put(entry.scope, ttl_ms)

    async def adelete(self, keys: Sequence[str]) -> int:
        """Async :meth:`delete`."""
        if not keys:
            return 0
        with self._translate("adelete"):
            async with self._aconn().client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.unlink(self._rkey(key))
                return sum(int(n) for n in await pipe.execute())

    async def _adrop_where(self, op: str, query: str) -> int:
        with self._translate(op):
            return await self._aindexed(None, lambda: self._asweep(query))

    async def adelete_tag(self, tag: str, namespace: str | None = None) -> int:
        """Async :meth:`delete_tag`."""
        return await self._adrop_where("adelete_tag", _tag_query(tags=tag, namespace=namespace))

    async def adelete_scope(self, scope: str) -> int:
        """Async :meth:`delete_scope`."""
        return await self._adrop_where("adelete_scope", _tag_query(scope=scope))

    async def adelete_namespace(self, namespace: str) -> int:
        """Async :meth:`delete_namespace`."""
        return await self._adrop_where("adelete_namespace", _tag_query(namespace=namespace))

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        with self._translate("aclear"):
            await self._aindexed(None, lambda: self._asweep(_tag_query()))
            async with self._aconn().client.pipeline(transaction=True) as pipe:
                pipe.delete(self._sizes_key)
                pipe.hset(self._sizes_key, _EXPIRY_COUNTED, 1)
                await pipe.execute()
            self._size_hints.clear()

    async def astats(self) -> BackendStats:
        """Async :meth:`stats`."""
        with self._translate("astats"):
            client = self._aconn().client
            sample = _ids_command(self._index_name, _tag_query(), _STATS_SAMPLE)
            reply = await self._aindexed(None, lambda: client.execute_command(*sample))  # type: ignore[no-untyped-call]
            entries, ids = _search_page(reply)
            if entries == 0:
                return BackendStats(entries=0, bytes=0)
            async with client.pipeline(transaction=False) as pipe:
                for rkey in ids:
                    for name in ("prompt", "response", _VECTOR):
                        pipe.hstrlen(rkey, name)
                lengths = [int(n) for n in await pipe.execute()]
        sizes = [sum(lengths[i : i + 3]) + _ENTRY_OVERHEAD for i in range(0, len(lengths), 3)]
        return BackendStats(entries=entries, bytes=_estimate_bytes(entries, sizes))

    async def aclose(self) -> None:
        """Release connections: this loop's async client is closed before returning,
        other loops' clients on their own loops (see :meth:`close`)."""
        with self._lock:
            conn = self._async.pop(asyncio.get_running_loop(), None)
        if conn is not None and self._given_async is None:
            with contextlib.suppress(*_DRIVER_ERRORS, RuntimeError):
                await conn.client.aclose()
        self.close()


def _close_on_its_loop(loop: asyncio.AbstractEventLoop, client: aredis.Redis) -> None:
    """Close an asyncio client from any thread (it can only be closed on its own loop)."""
    with contextlib.suppress(RuntimeError):
        if loop.is_closed():
            return  # its connections died with the loop; the garbage collector frees them
        if loop.is_running():
            if _running_loop() is loop:
                loop.create_task(client.aclose())
            else:
                asyncio.run_coroutine_threadsafe(client.aclose(), loop)
        else:
            loop.run_until_complete(client.aclose())


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
