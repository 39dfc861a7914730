"""Security of the semantic cache, attacked on every backend (memory, SQLite, Redis).

- Tenant isolation: 1,000 tenants asking adversarially near-identical questions
  (the same text, one character off, text naming another tenant or spelling its
  namespace and the key separators) never get another tenant's answer.
- Scope keys cannot be forged: different (tenant, model, params, system, tools)
  never share a scope or an exact key, whatever the prompt (hypothesis), and the
  embedded text never carries the namespace.
- Poisoning: errors, empty and truncated answers are not stored; a write made
  with one tenant's request lands only in that tenant's scope; with a signing
  key, an entry changed inside Redis or SQLite is refused (a counted miss).
- Timing: ``pad_hits_to_s`` makes hits no faster than the floor (sync and async).
- Secrets: no password, API key or prompt text in logs (INFO and up) or in
  ``repr``/``str`` of backends and errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from costopt_core.cache import CacheConfig, CachedResponse, CacheRequest, SemanticCache
from costopt_core.cache.backend import CacheBackend
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.cache.engine import skip_reason
from costopt_core.cache.keys import exact_key, namespace_of, prepare, scope_of
from costopt_core.cache.memory_backend import MemoryCacheBackend
from costopt_core.cache.redis_backend import RedisCacheBackend
from costopt_core.cache.signing import sign, verify
from costopt_core.cache.sqlite_backend import SQLiteCacheBackend
from costopt_core.testing import FakeEmbedder
from costopt_core.text import normalize_text
from costopt_core.types import Message, Usage

#: Loose on purpose: the more the cache is willing to match, the harder isolation is tested.
LOOSE = CacheConfig(similarity_threshold=0.5, guards=GUARDS_OFF)
KEY = "k" * 32
QUESTION = "What is our refund policy for annual plans?"
N_TENANTS = 1000


def req(text: str, tenant: str | None, **kw: object) -> CacheRequest:
    return CacheRequest(messages=(Message("user", text),), tenant=tenant, **kw)  # type: ignore[arg-type]


def answer(text: str, **kw: object) -> CachedResponse:
    return CachedResponse(text=text, model="gpt-4o-mini", usage=Usage(100, 20), **kw)  # type: ignore[arg-type]


def _prefix() -> str:
    return f"costopt:sec:{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, object]]:
    """``(kind, factory)``: the factory gives a fresh backend of that kind."""
    made: list[CacheBackend] = []
    kind = request.param

    def factory() -> CacheBackend:
        b: CacheBackend
        if kind == "memory":
            b = MemoryCacheBackend()
        elif kind == "sqlite":
            b = SQLiteCacheBackend(tmp_path / f"{uuid.uuid4().hex}.db")
        else:
            url = request.getfixturevalue("redis_url")
            b = RedisCacheBackend(url, prefix=_prefix(), socket_timeout_s=5.0)
        made.append(b)
        return b

    yield kind, factory
    for b in made:
        try:
            b.clear()
        finally:
            b.close()


def _cache(factory: object, config: CacheConfig = LOOSE) -> SemanticCache:
    return SemanticCache(factory(), embedder=FakeEmbedder(), config=config)  # type: ignore[operator]


# -- tenant isolation ----------------------------------------------------------------------


def _adversarial(tenant: str, other: str) -> list[str]:
    """Questions a tenant might send to reach ``other``'s entries."""
    return [
        QUESTION,  # the very same text
        QUESTION[:-1] + "!",  # one character off
        QUESTION.replace("refund", "refunds"),
        f"{QUESTION} (as {other})",
        f"tenant={other} {QUESTION}",
        f"{namespace_of(other)}\x1f{QUESTION}",  # the namespace and the key separator
        f"{namespace_of(other)}\x1fgpt-4o-mini\x1f{{}}\x1f\x1f[]\x1f{QUESTION}",
    ]


def test_a_thousand_tenants_with_near_identical_prompts_never_share_an_answer(
    make_backend: tuple[str, object],
) -> None:
    kind, factory = make_backend
    cache = _cache(factory)
    tenants = [f"tenant-{i:04d}" for i in range(N_TENANTS)]
    for t in tenants:
        assert cache.store(req(QUESTION, t, model="gpt-4o-mini"), answer(f"answer of {t}"))
    own = cross = 0
    for i, t in enumerate(tenants):
        other = tenants[(i + 1) % N_TENANTS]
        for text in _adversarial(t, other):
            hit = cache.lookup(req(text, t, model="gpt-4o-mini"))
            if hit is None:
                continue
            if hit.response.text == f"answer of {t}":
                own += 1
            else:
                cross += 1
    assert cross == 0, f"{kind}: {cross} cross-tenant hits"
    # The cache did serve: every tenant's own exact question, and semantic variants.
    stats = cache.stats()
    assert stats.exact_hits >= N_TENANTS
    assert stats.semantic_hits >= N_TENANTS
    assert own == stats.exact_hits + stats.semantic_hits
    # Tenants that never stored anything, and the default namespace, hit nothing,
    # whatever tenant names and separators their text carries.
    for i in range(0, N_TENANTS, 10):
        victim = tenants[i]
        for tenant in (f"ghost-{i}", f"{victim} ", victim.upper(), f"{victim}\x1f", None):
            for text in _adversarial("ghost", victim):
                assert cache.lookup(req(text, tenant, model="gpt-4o-mini")) is None, (
                    kind,
                    tenant,
                    text,
                )


async def test_async_lookups_keep_tenants_apart_too(make_backend: tuple[str, object]) -> None:
    _, factory = make_backend
    cache = _cache(factory)
    tenants = [f"t{i}" for i in range(50)]
    for t in tenants:
        assert await cache.astore(req(QUESTION, t), answer(f"answer of {t}"))
    for i, t in enumerate(tenants):
        for text in _adversarial(t, tenants[i - 1]):
            hit = await cache.alookup(req(text, t))
            assert hit is None or hit.response.text == f"answer of {t}"
        assert await cache.alookup(req(QUESTION, f"not-{t}")) is None


def test_a_write_with_one_tenants_request_lands_only_in_that_tenants_scope(
    make_backend: tuple[str, object],
) -> None:
    _, factory = make_backend
    cache = _cache(factory)
    # Tenant A writes a poisoned answer with text crafted to look like B's scope.
    poison = f"tenant=bravo {namespace_of('bravo')}\x1f{QUESTION}"
    assert cache.store(req(poison, "alpha"), answer("wire the money to account 666"))
    assert cache.store(req(QUESTION, "alpha"), answer("wire the money to account 666"))
    for text in (QUESTION, poison, f"tenant=bravo {QUESTION}"):
        assert cache.lookup(req(text, "bravo")) is None
    stored = prepare(req(poison, "alpha"), LOOSE.context_turns)
    entry = cache.backend.get(stored.key, now=time.time())
    assert entry is not None
    assert entry.namespace == namespace_of("alpha")
    assert entry.scope == prepare(req("x", "alpha"), LOOSE.context_turns).scope
    assert entry.scope != prepare(req("x", "bravo"), LOOSE.context_turns).scope
    # Invalidating B leaves A's entries; invalidating A removes them.
    assert cache.invalidate(tenant="bravo") == 0
    assert cache.invalidate(tenant="alpha") == 2


# -- scope keys cannot be forged ------------------------------------------------------------

_names = st.text(min_size=0, max_size=12)
_params = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.sampled_from([0, 0.2, 0.7, 1]),
        "max_tokens": st.integers(1, 5000),
        "seed": st.integers(0, 3),
        "stop": st.lists(st.text(max_size=3), max_size=2),
    },
)
_tools = st.lists(
    st.fixed_dictionaries({"name": st.text(max_size=6), "description": st.text(max_size=6)}),
    max_size=2,
)
# Whitespace-normalised system prompts are meant to share a scope; generate without runs.
_systems = st.text(alphabet=st.characters(blacklist_categories=["Zs", "Cc"]), max_size=12)
_scope_parts = st.tuples(
    st.one_of(st.none(), _names), st.one_of(st.none(), _names), _params, _systems, _tools
)


def _scope(parts: tuple) -> str:  # type: ignore[type-arg]
    tenant, model, params, system, tools = parts
    return scope_of(
        model=model,
        params=params,
        system=system,
        tools=tools,
        namespace=namespace_of(tenant),
    )


def _canonical(parts: tuple) -> tuple:  # type: ignore[type-arg]
    tenant, model, params, system, tools = parts
    # What the scope is defined over: a missing model is the empty one, and a
    # tool schema is the same whatever the order of its keys.
    canon = partial(json.dumps, sort_keys=True)
    return (tenant, model or "", canon(params), system, canon(tools))


@settings(max_examples=400, deadline=None)
@given(a=_scope_parts, b=_scope_parts, prompt_a=st.text(max_size=40), prompt_b=st.text(max_size=40))
def test_different_scopes_never_collide_whatever_the_prompt(
    a: tuple,  # type: ignore[type-arg]
    b: tuple,  # type: ignore[type-arg]
    prompt_a: str,
    prompt_b: str,
) -> None:
    if _canonical(a) == _canonical(b):
        return
    sa, sb = _scope(a), _scope(b)
    assert sa != sb
    ka = exact_key(sa, [Message("user", prompt_a)])
    kb = exact_key(sb, [Message("user", prompt_b)])
    assert ka != kb


@settings(max_examples=300, deadline=None)
@given(tenant_a=_names, model_a=_names, tenant_b=_names, model_b=_names)
def test_separator_characters_in_tenant_and_model_names_cannot_forge_a_scope(
    tenant_a: str, model_a: str, tenant_b: str, model_b: str
) -> None:
    if (tenant_a, model_a) == (tenant_b, model_b):
        return
    assert _scope((tenant_a, model_a, {}, "", [])) != _scope((tenant_b, model_b, {}, "", []))


def test_a_tenant_name_with_the_key_separator_cannot_reach_another_scope() -> None:
    # Parts are hashed with a \x1f separator; a tenant name carrying it must not
    # shift bytes into the model part.
    forged = _scope(("acme\x1fgpt-4o", "", {}, "", []))
    assert forged != _scope(("acme", "gpt-4o\x1f", {}, "", []))
    assert forged != _scope(("acme", "gpt-4o", {}, "", []))


@settings(max_examples=200, deadline=None)
@given(tenant=st.text(min_size=3, max_size=20), prompt=st.text(max_size=60))
def test_the_embedded_text_never_carries_the_namespace(tenant: str, prompt: str) -> None:
    prep = prepare(req(prompt, tenant, model="gpt-4o-mini"), context_turns=2)
    # The text embedded is the prompt (whitespace-normalised), nothing added.
    assert prep.text == normalize_text(prompt)
    if namespace_of(tenant) not in prompt:
        assert namespace_of(tenant) not in prep.text
    assert prep.namespace == namespace_of(tenant)


# -- poisoning: what gets stored ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (answer("Partial answer that was cut", finish_reason="length"), "truncated"),
        (answer("Partial answer", finish_reason="max_tokens"), "truncated"),
        (answer("", finish_reason="stop"), "empty"),
        (answer("   \n", finish_reason="stop"), "empty"),
        (answer("I can't.", finish_reason="content_filter"), "not_complete"),
        (answer("oops", finish_reason="error"), "not_complete"),
        (answer("No.", finish_reason="refusal"), "not_complete"),
    ],
)
def test_incomplete_answers_are_never_stored(
    make_backend: tuple[str, object], response: CachedResponse, reason: str
) -> None:
    _, factory = make_backend
    cache = _cache(factory)
    assert skip_reason(response, cache.config) == reason
    assert cache.store(req(QUESTION, "acme"), response) is False
    result = cache.get_or_call(req(QUESTION, "acme"), lambda: response)
    assert result.hit is None
    assert cache.lookup(req(QUESTION, "acme")) is None
    stats = cache.stats()
    assert stats.stores == 0 and stats.entries == 0
    assert stats.skipped_stores == {reason: 2}


async def test_a_failing_model_call_stores_nothing(make_backend: tuple[str, object]) -> None:
    _, factory = make_backend
    cache = _cache(factory)

    def boom() -> CachedResponse:
        raise TimeoutError("provider timed out")

    async def aboom() -> CachedResponse:
        raise TimeoutError("provider timed out")

    with pytest.raises(TimeoutError):
        cache.get_or_call(req(QUESTION, "acme"), boom)
    with pytest.raises(TimeoutError):
        await cache.aget_or_call(req(QUESTION, "acme"), aboom)
    assert cache.lookup(req(QUESTION, "acme")) is None
    assert cache.stats().stores == 0
    # The next call is made, and its complete answer is the one stored.
    out = cache.get_or_call(req(QUESTION, "acme"), lambda: answer("30 days."))
    assert out.hit is None
    hit = cache.lookup(req(QUESTION, "acme"))
    assert hit is not None and hit.response.text == "30 days."


# -- signed entries ---------------------------------------------------------------------------


def _tamper(
    kind: str, backend: CacheBackend, key: str, change: dict[str, object], url: str | None
) -> None:
    """Change the stored response of ``key`` directly in the backend's storage."""
    if kind == "redis":
        assert isinstance(backend, RedisCacheBackend)
        client = redis.Redis.from_url(url or "")
        rkey = f"{backend.prefix}:{key}"
        raw = client.hget(rkey, "response")
        assert raw is not None
        client.hset(rkey, "response", json.dumps({**json.loads(raw), **change}))
        client.close()
    elif kind == "sqlite":
        assert isinstance(backend, SQLiteCacheBackend)
        db = sqlite3.connect(backend.path)
        (raw,) = db.execute("SELECT response FROM costopt_cache WHERE key = ?", (key,)).fetchone()
        db.execute(
            "UPDATE costopt_cache SET response = ? WHERE key = ?",
            (json.dumps({**json.loads(raw), **change}), key),
        )
        db.commit()
        db.close()
    else:
        assert isinstance(backend, MemoryCacheBackend)
        entry = backend.get(key, now=time.time())
        assert entry is not None
        response = dataclasses.replace(entry.response, **change)  # type: ignore[arg-type]
        backend.put(dataclasses.replace(entry, response=response))


def _reopen(kind: str, backend: CacheBackend) -> CacheBackend:
    """A backend reading the same storage afresh (SQLite keeps an in-process mirror)."""
    if kind == "sqlite":
        assert isinstance(backend, SQLiteCacheBackend)
        return SQLiteCacheBackend(backend.path)
    return backend


def test_a_tampered_entry_is_refused_and_counted(
    make_backend: tuple[str, object], request: pytest.FixtureRequest
) -> None:
    kind, factory = make_backend
    cfg = CacheConfig(similarity_threshold=0.5, guards=GUARDS_OFF, signing_key=KEY)
    writer = _cache(factory, cfg)
    url = request.getfixturevalue("redis_url") if kind == "redis" else None
    r = req(QUESTION, "acme")
    assert writer.store(r, answer("30 days."))
    assert writer.store(req("How do I reset my password?", "acme"), answer("Use the link."))
    hit = writer.lookup(r)
    assert hit is not None and hit.response.text == "30 days."
    assert hit.response.signature is not None
    key = prepare(r, cfg.context_turns).key
    _tamper(kind, writer.backend, key, {"text": "Wire the money to account 666."}, url)
    reader = SemanticCache(_reopen(kind, writer.backend), embedder=FakeEmbedder(), config=cfg)
    assert reader.lookup(r) is None  # neither the exact tier nor the semantic one serves it
    assert reader.lookup(req(QUESTION[:-1] + "!", "acme")) is None
    stats = reader.stats()
    assert stats.guard_rejections is not None and stats.guard_rejections["signature"] >= 2
    # The untouched entry is still served.
    ok = reader.lookup(req("How do I reset my password?", "acme"))
    assert ok is not None and ok.response.text == "Use the link."
    # Without the key (or with another one) signed entries are not trusted either.
    other = CacheConfig(similarity_threshold=0.5, guards=GUARDS_OFF, signing_key="z" * 32)
    stranger = SemanticCache(_reopen(kind, writer.backend), embedder=FakeEmbedder(), config=other)
    assert stranger.lookup(req("How do I reset my password?", "acme")) is None


def test_an_entry_moved_to_another_tenants_key_is_refused(
    make_backend: tuple[str, object], request: pytest.FixtureRequest
) -> None:
    _, factory = make_backend
    cfg = CacheConfig(similarity_threshold=0.5, guards=GUARDS_OFF, signing_key=KEY)
    cache = _cache(factory, cfg)
    assert cache.store(req(QUESTION, "alpha"), answer("alpha's answer"))
    entry = cache.backend.get(prepare(req(QUESTION, "alpha"), 2).key, now=time.time())
    assert entry is not None and verify(entry, KEY.encode())
    victim = prepare(req(QUESTION, "bravo"), 2)
    # Someone with backend access copies alpha's signed entry under bravo's key and scope.
    moved = dataclasses.replace(
        entry, key=victim.key, scope=victim.scope, namespace=victim.namespace
    )
    cache.backend.put(moved)
    assert cache.lookup(req(QUESTION, "bravo")) is None
    stats = cache.stats()
    assert stats.guard_rejections is not None and stats.guard_rejections["signature"] >= 1
    # Unsigned entries written behind the cache's back are refused as well.
    unsigned = dataclasses.replace(moved, response=answer("forged"))
    cache.backend.put(unsigned)
    assert cache.lookup(req(QUESTION, "bravo")) is None
    # Re-signed with the right key (what the cache itself would do) it is served.
    cache.backend.put(sign(unsigned, KEY.encode()))
    hit = cache.lookup(req(QUESTION, "bravo"))
    assert hit is not None and hit.response.text == "forged"


def test_signing_round_trips_and_checks_every_field() -> None:
    cache = SemanticCache(embedder=FakeEmbedder(), config=CacheConfig(signing_key=KEY))
    cache.store(req(QUESTION, "acme"), answer("30 days.", tool_calls=({"name": "f", "args": {}},)))
    entry = cache.backend.get(prepare(req(QUESTION, "acme"), 2).key, now=time.time())
    assert entry is not None and verify(entry, KEY.encode())
    again = CachedResponse.from_json(entry.response.to_json())
    assert verify(dataclasses.replace(entry, response=again), KEY.encode())
    for change in (
        {"prompt_text": "other"},
        {"namespace": "t:other"},
        {"scope": "0" * 32},
        {"key": "1" * 32},
    ):
        assert not verify(dataclasses.replace(entry, **change), KEY.encode())  # type: ignore[arg-type]
    for rchange in ({"text": "x"}, {"model": "gpt-4o"}, {"tool_calls": ()}, {"usage": Usage(1, 1)}):
        bad = dataclasses.replace(entry.response, **rchange)  # type: ignore[arg-type]
        assert not verify(dataclasses.replace(entry, response=bad), KEY.encode())
    assert not verify(entry, b"another key of enough length")


def test_a_short_signing_key_is_refused_without_echoing_it() -> None:
    from costopt_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        SemanticCache(config=CacheConfig(signing_key="hunter2"))
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(CacheConfig(signing_key="hunter2-but-longer-now"))


# -- timing ---------------------------------------------------------------------------------


def test_padded_hits_take_at_least_the_floor_and_misses_are_not_padded() -> None:
    cfg = CacheConfig(similarity_threshold=0.5, guards=GUARDS_OFF, pad_hits_to_s=0.15)
    cache = SemanticCache(embedder=FakeEmbedder(), config=cfg)
    t0 = time.perf_counter()
    assert cache.lookup(req(QUESTION, "acme")) is None
    miss_s = time.perf_counter() - t0
    cache.store(req(QUESTION, "acme"), answer("30 days."))
    for text in (QUESTION, QUESTION[:-1] + "!"):  # exact, then semantic
        t0 = time.perf_counter()
        assert cache.lookup(req(text, "acme")) is not None
        assert time.perf_counter() - t0 >= 0.15
    t0 = time.perf_counter()
    out = cache.get_or_call(req(QUESTION, "acme"), lambda: answer("never called"))
    assert out.hit is not None and time.perf_counter() - t0 >= 0.15
    assert miss_s < 0.1
    unpadded = SemanticCache(embedder=FakeEmbedder(), config=LOOSE)
    unpadded.store(req(QUESTION, "acme"), answer("30 days."))
    t0 = time.perf_counter()
    assert unpadded.lookup(req(QUESTION, "acme")) is not None
    assert time.perf_counter() - t0 < 0.1


async def test_async_padding_sleeps_without_blocking_the_loop() -> None:
    cfg = CacheConfig(similarity_threshold=0.5, guards=GUARDS_OFF, pad_hits_to_s=0.2)
    cache = SemanticCache(embedder=FakeEmbedder(), config=cfg)
    await cache.astore(req(QUESTION, "acme"), answer("30 days."))
    t0 = time.perf_counter()
    hits = await asyncio.gather(*(cache.alookup(req(QUESTION, "acme")) for _ in range(20)))
    elapsed = time.perf_counter() - t0
    assert all(h is not None for h in hits)
    # Twenty padded hits at once take about one floor, not twenty.
    assert 0.2 <= elapsed < 1.5
    t0 = time.perf_counter()
    out = await cache.aget_or_call(req(QUESTION, "acme"), _never)
    assert out.hit is not None and time.perf_counter() - t0 >= 0.2


async def _never() -> CachedResponse:
    raise AssertionError("a hit must not call the model")


def test_pad_config_is_checked() -> None:
    from costopt_core.errors import ConfigurationError

    for bad in (0, -1, 61):
        with pytest.raises(ConfigurationError, match="pad_hits_to_s"):
            CacheConfig(pad_hits_to_s=bad)


# -- secrets --------------------------------------------------------------------------------

PASSWORD = "s3cr3t-Pa55word"
API_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
PROMPT = "My social security number is 078-05-1120, what is my refund?"


def test_logs_and_errors_carry_no_password_api_key_or_prompt(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    host_port = redis_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    bad = RedisCacheBackend(f"redis://no-such-user:{PASSWORD}@{host_port}/0", socket_timeout_s=2.0)
    assert PASSWORD not in repr(bad) and PASSWORD not in str(bad)
    cache = SemanticCache(bad, embedder=FakeEmbedder(), config=CacheConfig(breaker_failures=50))
    assert PASSWORD not in repr(cache)
    good = SemanticCache(
        RedisCacheBackend(redis_url, prefix=_prefix()),
        embedder=FakeEmbedder(),
        config=CacheConfig(signing_key=KEY),
    )

    def provider_fails() -> CachedResponse:
        raise RuntimeError("401 from provider: invalid api key")

    caplog.set_level(logging.DEBUG, logger="costopt")
    caplog.set_level(logging.INFO)
    r = req(PROMPT, "acme", model="gpt-4o-mini", params={"api_key": API_KEY})
    assert cache.lookup(r) is None
    cache.store(r, answer("Here is " + PROMPT))
    out = cache.get_or_call(r, lambda: answer("ok"))
    assert out.hit is None
    with pytest.raises(RuntimeError):
        cache.get_or_call(req(PROMPT + " again", "acme"), provider_fails)
    cache.invalidate(tenant="acme")
    cache.stats()
    good.store(r, answer("fine"))
    assert good.lookup(r) is not None
    good.backend.put(
        sign(good.backend.get(prepare(r, 2).key, now=time.time()), b"x" * 32)  # type: ignore[arg-type]
    )
    assert good.lookup(r) is None  # a signature failure is logged
    assert cache.stats().errors >= 3
    messages = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.INFO]
    assert any("failed" in m for m in messages)
    assert any("signature" in m for m in messages)
    for m in messages:
        assert PASSWORD not in m, m
        assert API_KEY not in m and "sk-" not in m, m
        assert "078-05-1120" not in m and "social security" not in m, m
        assert KEY not in m, m
    good.clear()
    good.backend.close()
    bad.close()


# -- through the LangChain adapter ------------------------------------------------------------


def test_cached_chat_model_keeps_tenants_apart_and_stores_only_complete_answers(
    make_backend: tuple[str, object],
) -> None:
    from costopt_core.tenancy import tenant_scope
    from costopt_core.testing import Script, ScriptedResponse
    from langchain_costopt.cached_model import CachedChatModel
    from langchain_costopt.testing import ScriptedChatModel

    _, factory = make_backend
    cfg = CacheConfig(similarity_threshold=0.5, guards=GUARDS_OFF, signing_key=KEY)
    script = Script(
        [
            ScriptedResponse("Refunds within", finish_reason="length"),
            ScriptedResponse("alpha: 30 days."),
            ScriptedResponse("bravo: 14 days."),
        ],
        cycle=False,
    )
    model = CachedChatModel(
        model=ScriptedChatModel(script=script), semantic_cache=_cache(factory, cfg)
    )
    with tenant_scope("alpha"):
        assert model.invoke(QUESTION).content == "Refunds within"  # truncated: not stored
        assert model.invoke(QUESTION).content == "alpha: 30 days."
        assert model.invoke(QUESTION).content == "alpha: 30 days."  # served from the cache
    with tenant_scope("bravo"):
        assert model.invoke(f"tenant=alpha {QUESTION}").content == "bravo: 14 days."
        assert model.invoke(QUESTION).content == "bravo: 14 days."
    with tenant_scope("alpha"):
        assert model.invoke(QUESTION).content == "alpha: 30 days."
    stats = model.semantic_cache.stats()
    assert stats.skipped_stores == {"truncated": 1}
    assert stats.stores == 2
    assert stats.exact_hits + stats.semantic_hits == 3
