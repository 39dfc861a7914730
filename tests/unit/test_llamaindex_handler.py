"""CostEventHandler: every LlamaIndex LLM call priced exactly once, however it is made."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from llama_index.core.base.llms.types import LLMMetadata
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.dispatcher import instrument_tags
from llama_index.core.llms import ChatMessage, CompletionResponse, CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import Field

from costopt_core import CostEngine, Usage
from costopt_core.testing import Script, ScriptedResponse
from llamaindex_costopt import CostEventHandler, track_costs
from llamaindex_costopt.testing import ScriptedLLM

# gpt-4o-mini: $0.15 in, $0.075 cached read, $0.60 out per Mtok.
USAGE = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=400)
# 600 uncached * 0.15 + 400 cached * 0.075 + 200 out * 0.60 = 90 + 30 + 120 = 240 micro-dollars
COST = Decimal("0.000240")
# gpt-4o baseline, nothing cached: 1000 * 2.50 + 200 * 10.00 = 4500 micro-dollars
BASELINE = Decimal("0.004500")
# gpt-4o-mini with nothing cached: 1000 * 0.15 + 200 * 0.60 = 270 micro-dollars
SAVINGS = {"routing": Decimal("0.004230"), "provider_cache": Decimal("0.000030")}
TEXT = "Paris is the capital."
MESSAGES = [ChatMessage(role="user", content="Capital of France?")]
# What the normalizers make of USAGE in OpenAI's wire format (no cache writes: zero).
OPENAI_USAGE = Usage(
    input_tokens=1000,
    output_tokens=200,
    cache_read_tokens=400,
    cache_write_5m_tokens=0,
    cache_write_1h_tokens=0,
)


def scripted(latency: float = 0.0, usage_format: str = "openai", **kw: Any) -> ScriptedLLM:
    r = ScriptedResponse(TEXT, USAGE, model="gpt-4o-mini")
    return ScriptedLLM(script=Script([r], latency_s=latency), usage_format=usage_format, **kw)


@pytest.fixture
def handler(engine: CostEngine) -> Iterator[CostEventHandler]:
    h = CostEventHandler(engine).attach()
    try:
        yield h
    finally:
        h.detach()


@pytest.fixture(autouse=True)
def root_handlers_restored() -> Iterator[None]:
    """Every test leaves the process-wide root dispatcher as it found it."""
    root = get_dispatcher()
    before = list(root.event_handlers)
    yield
    assert root.event_handlers == before


# -- one call, every way of making it -------------------------------------------


def _text_of_stream(chunks: list[Any]) -> str:
    return "".join(c.delta or "" for c in chunks)


async def _call(llm: ScriptedLLM, how: str) -> str:
    """Make one call ``how``; return the answer text the user sees."""
    if how == "chat":
        return str(llm.chat(MESSAGES).message.content)
    if how == "complete":
        return llm.complete("Capital of France?").text
    if how == "stream_chat":
        chunks = list(llm.stream_chat(MESSAGES))
        assert len(chunks) >= 2  # several chunks, still one call
        return _text_of_stream(chunks)
    if how == "stream_complete":
        chunks = list(llm.stream_complete("Capital of France?"))
        assert len(chunks) >= 2
        return _text_of_stream(chunks)
    if how == "achat":
        return str((await llm.achat(MESSAGES)).message.content)
    if how == "acomplete":
        return (await llm.acomplete("Capital of France?")).text
    if how == "astream_chat":
        chunks = [c async for c in await llm.astream_chat(MESSAGES)]
        assert len(chunks) >= 2
        return _text_of_stream(chunks)
    if how == "astream_complete":
        chunks = [c async for c in await llm.astream_complete("Capital of France?")]
        assert len(chunks) >= 2
        return _text_of_stream(chunks)
    raise AssertionError(how)


HOWS = [
    "chat",
    "complete",
    "stream_chat",
    "stream_complete",
    "achat",
    "acomplete",
    "astream_chat",
    "astream_complete",
]


@pytest.mark.parametrize("how", HOWS)
async def test_each_call_style_is_recorded_once(
    engine: CostEngine, handler: CostEventHandler, how: str
) -> None:
    llm = scripted()
    assert await _call(llm, how) == TEXT
    [rec] = engine.ledger.records()
    assert llm.script.calls == 1
    assert rec.model == "gpt-4o-mini"
    assert rec.usage == OPENAI_USAGE
    assert rec.cost_usd == COST
    assert rec.baseline_cost_usd == BASELINE
    assert rec.savings_usd == SAVINGS
    assert rec.framework == "llamaindex"
    assert rec.outcome == "model" and rec.mode == "sync"
    assert rec.tenant is None and rec.tier is None
    assert rec.call_id.startswith(f"ScriptedLLM.{how}-")  # the LlamaIndex span id
    assert rec.latency_ms is not None and rec.latency_ms >= 0
    assert handler.pending == 0 and handler.errors == 0


def test_model_name_comes_from_the_response_before_the_llm_metadata(
    engine: CostEngine, handler: CostEventHandler
) -> None:
    # A deployment alias in metadata; the provider names the model it ran.
    llm = scripted(model="my-azure-deployment")
    assert llm.metadata.model_name == "my-azure-deployment"
    llm.chat(MESSAGES)
    assert engine.ledger.records()[0].model == "gpt-4o-mini"


def test_scripted_llm_names_the_scripts_model() -> None:
    llm = ScriptedLLM(script=Script(["a"], model="claude-sonnet-4-5"))
    assert llm.metadata.model_name == "claude-sonnet-4-5"
    assert llm.to_payload()["model_name"] == "claude-sonnet-4-5"
    assert ScriptedLLM.from_texts(["a"], model="o4-mini").model == "o4-mini"


# -- usage formats ------------------------------------------------------------


def _record_view(rec: Any) -> dict[str, Any]:
    d = rec.to_dict()
    for key in ("call_id", "timestamp", "latency_ms"):
        d.pop(key)
    return d


@pytest.mark.parametrize("how", ["chat", "stream_chat", "acomplete", "astream_complete"])
async def test_three_usage_formats_give_the_same_ledger(how: str) -> None:
    responses = [
        ScriptedResponse("a", USAGE, model="gpt-4o-mini"),
        ScriptedResponse("b c", Usage(input_tokens=3000, output_tokens=800), "gemini-2.5-flash"),
        ScriptedResponse(
            "d e f",
            Usage(input_tokens=5200, output_tokens=300, cache_read_tokens=4000),
            model="claude-sonnet-4-5",
        ),
    ]
    ledgers = {}
    for fmt in ("openai", "anthropic", "gemini"):
        engine = CostEngine()
        llm = ScriptedLLM(script=Script(responses), usage_format=fmt)
        h = CostEventHandler(engine).attach()
        try:
            for _ in responses:
                await _call(llm, how)
        finally:
            h.detach()
        ledgers[fmt] = engine.ledger

    views = {fmt: [_record_view(r) for r in lg.records()] for fmt, lg in ledgers.items()}
    # No format reported reasoning tokens here: unknown in all three, not zero.
    for view in (*views["openai"], *views["anthropic"], *views["gemini"]):
        assert view["usage"].pop("reasoning_tokens") is None
    assert views["openai"] == views["anthropic"] == views["gemini"]
    assert [Decimal(v["cost_usd"]) for v in views["openai"]] == [
        COST,
        # 3000 * 0.30 + 800 * 2.50 = 900 + 2000 micro-dollars
        Decimal("0.0029"),
        # 1200 * 3.00 + 4000 * 0.30 + 300 * 15.00 = 3600 + 1200 + 4500 micro-dollars
        Decimal("0.0093"),
    ]
    totals = {fmt: lg.totals().to_dict() for fmt, lg in ledgers.items()}
    assert totals["openai"] == totals["anthropic"] == totals["gemini"]
    assert ledgers["openai"].totals().cost_usd == Decimal("0.01244")


def test_reasoning_tokens_are_read_from_openai_and_gemini_payloads(engine: CostEngine) -> None:
    # o4-mini: 1.10 in, 0.275 cached, 4.40 out per Mtok; reasoning is billed as output.
    usage = Usage(
        input_tokens=2000, output_tokens=1500, cache_read_tokens=1024, reasoning_tokens=1200
    )
    for fmt in ("openai", "gemini"):
        llm = ScriptedLLM(
            script=Script([ScriptedResponse("ok", usage, model="o4-mini")]), usage_format=fmt
        )
        h = CostEventHandler(engine).attach()
        try:
            llm.chat(MESSAGES)
        finally:
            h.detach()
    first, second = engine.ledger.records()
    assert first.usage == second.usage
    assert first.usage.reasoning_tokens == 1200 and first.usage.output_tokens == 1500
    # 976 * 1.10 + 1024 * 0.275 + 1500 * 4.40 = 1073.6 + 281.6 + 6600 micro-dollars
    assert first.cost_usd == second.cost_usd == Decimal("0.0079552")


# -- other response shapes: SDK objects, additional_kwargs, delegating LLMs -------


class RawLLM(CustomLLM):
    """A CustomLLM that only implements completion (chat delegates to it), with a fixed reply."""

    raw: Any = None
    extra: dict[str, Any] = Field(default_factory=dict)
    fail: bool = False

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini")

    def _reply(self, text: str, delta: str | None = None, last: bool = True) -> CompletionResponse:
        return CompletionResponse(
            text=text,
            delta=delta,
            raw=self.raw if last else None,
            additional_kwargs=dict(self.extra) if last else {},
        )

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.fail:
            raise RuntimeError("provider down")
        return self._reply("Paris.")

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> Iterator[CompletionResponse]:
        def gen() -> Iterator[CompletionResponse]:
            yield self._reply("Par", "Par", last=False)
            yield self._reply("Paris.", "is.")

        return gen()


OPENAI_SDK_LIKE = SimpleNamespace(
    model="gpt-4o-mini-2024-07-18",
    usage=SimpleNamespace(
        prompt_tokens=1000,
        completion_tokens=200,
        prompt_tokens_details=SimpleNamespace(cached_tokens=400),
        completion_tokens_details=None,
    ),
)


@pytest.mark.parametrize(
    ("raw", "extra", "model", "usage"),
    [
        pytest.param(
            OPENAI_SDK_LIKE,
            {},
            "gpt-4o-mini-2024-07-18",
            Usage(1000, 200, 400, 0, 0, None),
            id="openai-sdk-object",
        ),
        pytest.param(
            {
                "model": "claude-sonnet-4-5",
                "usage": SimpleNamespace(
                    input_tokens=600,
                    output_tokens=200,
                    cache_read_input_tokens=400,
                    cache_creation_input_tokens=0,
                    cache_creation=None,
                ),
            },
            {},
            "claude-sonnet-4-5",
            Usage(1000, 200, 400, 0, 0, None),
            id="anthropic-dict-with-sdk-usage",
        ),
        pytest.param(
            {
                "modelVersion": "gemini-2.5-flash",
                "usage_metadata": {
                    "promptTokenCount": 1000,
                    "cachedContentTokenCount": 400,
                    "candidatesTokenCount": 150,
                    "thoughtsTokenCount": 50,
                },
            },
            {},
            "gemini-2.5-flash",
            Usage(1000, 200, 400, 0, 0, 50),
            id="gemini-rest-camel-case",
        ),
        pytest.param(
            None,
            {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
            "gpt-4o-mini",  # no raw: the model name of the LLM's metadata
            Usage(1000, 200, 0, 0, 0, None),
            id="additional-kwargs-only",
        ),
        pytest.param(
            {"id": "x"},
            {},
            "gpt-4o-mini",
            Usage(),
            id="no-usage-at-all",
        ),
    ],
)
@pytest.mark.parametrize("how", HOWS)
async def test_response_shapes_and_delegating_custom_llm(
    engine: CostEngine,
    handler: CostEventHandler,
    how: str,
    raw: Any,
    extra: dict[str, Any],
    model: str,
    usage: Usage,
) -> None:
    # CustomLLM.chat calls complete, astream_chat calls stream_chat calls
    # stream_complete: nested events of one answer, to be recorded once.
    llm = RawLLM(raw=raw, extra=extra)
    await _call_raw(llm, how)
    [rec] = engine.ledger.records()
    assert rec.model == model
    assert rec.usage == usage
    assert rec.call_id.startswith(("RawLLM.complete-", "RawLLM.stream_complete-"))
    assert handler.pending == 0 and handler.errors == 0


async def _call_raw(llm: RawLLM, how: str) -> None:
    calls: dict[str, Callable[[], Any]] = {
        "chat": lambda: llm.chat(MESSAGES),
        "complete": lambda: llm.complete("q"),
        "stream_chat": lambda: list(llm.stream_chat(MESSAGES)),
        "stream_complete": lambda: list(llm.stream_complete("q")),
    }
    if how in calls:
        calls[how]()
        return
    acalls: dict[str, Callable[[], Awaitable[Any]]] = {
        "achat": lambda: llm.achat(MESSAGES),
        "acomplete": lambda: llm.acomplete("q"),
    }
    if how in acalls:
        await acalls[how]()
        return
    gen: AsyncIterator[Any] = await (
        llm.astream_chat(MESSAGES) if how == "astream_chat" else llm.astream_complete("q")
    )
    async for _ in gen:
        pass


def test_unknown_usage_is_recorded_unpriced_not_as_zero(
    engine: CostEngine, handler: CostEventHandler
) -> None:
    RawLLM(raw={"id": "x"}).complete("q")
    [rec] = engine.ledger.records()
    assert rec.cost_usd is None
    assert engine.ledger.totals().unpriced_calls == 1


# -- failures -------------------------------------------------------------------


def test_failed_call_is_not_recorded_and_leaves_nothing_pending(
    engine: CostEngine, handler: CostEventHandler
) -> None:
    boom = ScriptedResponse("x", USAGE, error=TimeoutError("provider timeout"))
    llm = ScriptedLLM(script=Script([boom]))
    with pytest.raises(TimeoutError):
        llm.chat(MESSAGES)
    with pytest.raises(RuntimeError, match="provider down"):
        RawLLM(fail=True).chat(MESSAGES)  # fails inside the delegated complete
    assert len(engine.ledger) == 0
    assert handler.pending == 0
    scripted().chat(MESSAGES)  # and the next call is priced normally
    assert engine.ledger.totals().cost_usd == COST


def test_abandoned_stream_is_recorded_once_with_unknown_usage(
    engine: CostEngine, handler: CostEventHandler
) -> None:
    # The provider billed it; its usage comes on the last item, never read.
    # See test_llamaindex_handler_unfinished.py for the other cases.
    gen = scripted().stream_chat(MESSAGES)
    first = next(gen)
    assert first.delta == "Paris"
    assert handler.pending == 1
    gen.close()  # what a `break` out of the loop does once the generator is dropped
    assert handler.pending == 0
    [rec] = engine.ledger.records()
    assert (rec.outcome, rec.model, rec.usage, rec.cost_usd) == (
        "model",
        "gpt-4o-mini",
        Usage(),
        None,
    )


def test_recording_error_never_fails_the_users_call(
    engine: CostEngine, handler: CostEventHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("ledger on fire")

    monkeypatch.setattr(engine, "record_call_deferred", broken)
    assert scripted().chat(MESSAGES).message.content == TEXT
    assert "".join(c.delta or "" for c in scripted().stream_chat(MESSAGES)) == TEXT
    assert handler.errors == 2
    assert handler.pending == 0


def test_malformed_usage_never_fails_the_users_call(
    engine: CostEngine, handler: CostEventHandler
) -> None:
    llm = RawLLM(raw={"usage": {"prompt_tokens": -5, "completion_tokens": 1}})
    assert llm.complete("q").text == "Paris."
    # The call happened: it is recorded, with an unknown cost (never dropped, never $0).
    assert handler.errors == 0
    (record,) = engine.ledger.records()
    assert record.cost_usd is None
    assert engine.ledger.totals().unpriced_calls == 1


# -- tenant and tier ----------------------------------------------------------------


def test_tenant_and_tier_from_instrument_tags(engine: CostEngine) -> None:
    h = CostEventHandler(engine, tenant="default-tenant").attach()
    try:
        with instrument_tags({"costopt_tenant": "acme", "costopt_tier": "cheap"}):
            scripted().chat(MESSAGES)
        with instrument_tags({"tenant_id": "globex"}):
            scripted().complete("q")
        scripted().complete("q")
    finally:
        h.detach()
    [a, b, c] = engine.ledger.records()
    assert (a.tenant, a.tier) == ("acme", "cheap")
    assert (b.tenant, b.tier) == ("globex", None)
    assert (c.tenant, c.tier) == ("default-tenant", None)
    assert engine.ledger.totals_by("tenant")["acme"].cost_usd == COST


async def test_tenant_scope_names_the_tenant_of_calls_made_inside_it(engine: CostEngine) -> None:
    from costopt_core import tenant_scope

    h = CostEventHandler(engine, tenant="default-tenant").attach()
    try:
        with tenant_scope("acme"):
            scripted().chat(MESSAGES)
            await scripted().achat(MESSAGES)
            with instrument_tags({"costopt_tenant": "tagged"}):  # the call's own tag wins
                scripted().complete("q")
        scripted().complete("q")
    finally:
        h.detach()
    assert [r.tenant for r in engine.ledger.records()] == [
        "acme",
        "acme",
        "tagged",
        "default-tenant",
    ]


# -- attach / detach ------------------------------------------------------------------


def test_detach_stops_recording(engine: CostEngine) -> None:
    root = get_dispatcher()
    h = CostEventHandler(engine).attach()
    assert h.attached and sum(x is h for x in root.event_handlers) == 1
    scripted().chat(MESSAGES)
    h.detach()
    assert not h.attached and all(x is not h for x in root.event_handlers)
    scripted().chat(MESSAGES)
    assert len(engine.ledger) == 1


def test_attaching_twice_or_to_a_child_dispatcher_still_records_once(engine: CostEngine) -> None:
    # ScriptedLLM's events go through its module's dispatcher, then up to the root.
    child = get_dispatcher("llamaindex_costopt.testing")
    h = CostEventHandler(engine).attach().attach().attach(child)
    try:
        assert sum(x is h for x in get_dispatcher().event_handlers) == 1
        scripted().chat(MESSAGES)
        list(scripted().stream_complete("q"))
    finally:
        h.detach()
    assert all(x is not h for x in child.event_handlers)
    assert engine.ledger.totals().calls == 2
    assert engine.ledger.totals().cost_usd == 2 * COST


# -- concurrency --------------------------------------------------------------


def test_sixteen_threads_exact_totals(engine: CostEngine, handler: CostEventHandler) -> None:
    llm = scripted(latency=0.001)

    def one(i: int) -> str:
        if i % 2:
            return str(llm.chat(MESSAGES).message.content)
        return _text_of_stream(list(llm.stream_chat(MESSAGES)))

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(320)))
    assert answers == [TEXT] * 320
    t = engine.ledger.totals()
    assert t.calls == 320
    assert t.cost_usd == COST * 320 == Decimal("0.0768")
    assert t.tokens["cache_read_tokens"] == 400 * 320
    assert len({r.call_id for r in engine.ledger.records()}) == 320
    assert handler.pending == 0 and handler.errors == 0


async def test_two_hundred_tasks_exact_totals(
    engine: CostEngine, handler: CostEventHandler
) -> None:
    llm = scripted(latency=0.001)

    async def one(i: int) -> str:
        if i % 2:
            return str((await llm.achat(MESSAGES)).message.content)
        return _text_of_stream([c async for c in await llm.astream_chat(MESSAGES)])

    answers = await asyncio.gather(*(one(i) for i in range(200)))
    assert answers == [TEXT] * 200
    t = engine.ledger.totals()
    assert t.calls == 200
    assert t.cost_usd == COST * 200 == Decimal("0.048")
    assert len({r.call_id for r in engine.ledger.records()}) == 200
    assert handler.pending == 0 and handler.errors == 0


# -- track_costs ----------------------------------------------------------------


def test_track_costs_records_the_block_only() -> None:
    root = get_dispatcher()
    llm = scripted()
    with track_costs() as costs:
        assert any(h is costs for h in root.event_handlers)
        llm.chat(MESSAGES)
        list(llm.stream_complete("q"))
    llm.chat(MESSAGES)  # not tracked
    assert all(h is not costs for h in root.event_handlers)
    assert costs.ledger.totals().calls == 2
    assert costs.ledger.totals().cost_usd == COST * 2
    assert costs.engine.ledger is not CostEngine().ledger


def test_track_costs_detaches_on_error() -> None:
    root = get_dispatcher()
    with pytest.raises(ValueError, match="user bug"), track_costs() as costs:
        scripted().chat(MESSAGES)
        raise ValueError("user bug")
    assert all(h is not costs for h in root.event_handlers)
    assert costs.ledger.totals().calls == 1


def test_track_costs_tenant_inherited_and_overridden(engine: CostEngine) -> None:
    with track_costs(engine, tenant="acme"):
        scripted().chat(MESSAGES)
        with track_costs(engine):  # inner block without a tenant: the outer one's
            scripted().chat(MESSAGES)
        with track_costs(engine, tenant="globex"):
            scripted().chat(MESSAGES)
        with instrument_tags({"costopt_tenant": "initech"}):  # per-call tags win
            scripted().chat(MESSAGES)
    assert [r.tenant for r in engine.ledger.records()] == ["acme", "acme", "globex", "initech"]


def test_nested_track_costs_counts_each_call_once(engine: CostEngine) -> None:
    with track_costs() as outer:
        scripted().chat(MESSAGES)
        with track_costs() as inner:
            scripted().chat(MESSAGES)
            scripted().complete("q")
        with track_costs(outer.engine) as same_engine:
            scripted().chat(MESSAGES)
    assert inner.ledger.totals().calls == 2
    # The outer block's own call, the inner block's two (the inner block is a
    # child of the outer one) and the one of the block on its engine.
    assert same_engine.ledger is outer.ledger
    assert outer.ledger.totals().calls == 4
    assert outer.ledger.totals().cost_usd == COST * 4
    assert {r.call_id for r in inner.ledger.records()} <= {
        r.call_id for r in outer.ledger.records()
    }


def test_permanent_handler_and_track_costs(engine: CostEngine, handler: CostEventHandler) -> None:
    with track_costs(engine):  # same engine as the attached handler: one record
        scripted().chat(MESSAGES)
    with track_costs() as separate:  # its own ledger: one record in each
        scripted().chat(MESSAGES)
    scripted().chat(MESSAGES)
    assert engine.ledger.totals().calls == 3
    assert separate.ledger.totals().calls == 1


async def test_concurrent_track_costs_blocks_keep_their_own_calls() -> None:
    async def block(n: int) -> CostEventHandler:
        llm = scripted(latency=0.001)
        with track_costs() as costs:
            await asyncio.gather(*(llm.achat(MESSAGES) for _ in range(n)))
            async for _ in await llm.astream_complete("q"):
                await asyncio.sleep(0)  # let the other block run mid-stream
        return costs

    a, b = await asyncio.gather(block(30), block(70))
    assert a.ledger.totals().calls == 31
    assert b.ledger.totals().calls == 71
    assert b.ledger.totals().cost_usd == COST * 71


def test_track_costs_in_threads_follows_the_context() -> None:
    llm = scripted(latency=0.001)
    with track_costs() as costs, ThreadPoolExecutor(16) as pool:
        ctx = contextvars.copy_context()
        # Each task runs in a copy of the block's context: tracked.
        list(pool.map(lambda _: ctx.copy().run(llm.chat, MESSAGES), range(64)))
        # A plain thread starts with an empty context: not the block's call.
        t = threading.Thread(target=llm.chat, args=(MESSAGES,))
        t.start()
        t.join()
    assert costs.ledger.totals().calls == 64
    assert costs.ledger.totals().cost_usd == COST * 64


def test_a_wrong_engine_is_a_configuration_error_naming_it() -> None:
    from costopt_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"engine='x'.*must be a costopt_core.CostEngine"):
        CostEventHandler("x")  # type: ignore[arg-type]
    with (
        pytest.raises(ConfigurationError, match=r"track_costs: engine='x'.*CostEngine\(\.\.\.\)"),
        track_costs(engine="x"),  # type: ignore[arg-type]
    ):
        pass
    with pytest.raises(ConfigurationError, match=r"tenant=5"):
        CostEventHandler(CostEngine(), tenant=5)  # type: ignore[arg-type]
