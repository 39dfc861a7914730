"""Provider faults through the real OpenAI SDK: timeouts, 429, 5xx and malformed usage.

A local HTTP server speaks the Chat Completions wire format and misbehaves on
demand (sleeps past the client timeout, answers 429 / 500 / 503, or a 200 whose
``usage`` is missing or impossible). The routed model is the ``openai`` SDK
wrapped in a small ``BaseChatModel`` (what ``langchain-openai`` does, minus the
dependency), behind ``RouterChatModel`` with a scripted fallback. The router must
fall back per its policy (retries of the same model, then the next model of the
tier, then the next tier), a failed attempt must add no cost, and a call whose
usage cannot be read must be recorded with cost ``None`` (``unpriced_calls``),
never dropped, never $0.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

from costopt_core import CostEngine
from costopt_core.errors import RoutingError
from costopt_core.pricing.cost import cost_of
from costopt_core.routing.router import RouterConfig
from costopt_core.routing.validators import ValidatorConfig
from costopt_core.testing import Script, ScriptedResponse
from costopt_core.types import Usage
from langchain_costopt.callbacks import CostCallbackHandler
from langchain_costopt.router import RouterChatModel
from langchain_costopt.testing import ScriptedChatModel

PROVIDER_MODEL = "gpt-4o-mini"
FALLBACK_MODEL = "gpt-4.1-mini"
FRONTIER_MODEL = "gpt-4o"
CLIENT_TIMEOUT_S = 0.3
GOOD_USAGE = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}


class _Provider:
    """What the fake provider does next; every request it receives is counted."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0
        self.lock = threading.Lock()


def _handler_for(provider: _Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            if status == 429:
                self.send_header("retry-after", "0")
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            request = json.loads(self.rfile.read(length) or b"{}")
            with provider.lock:
                provider.requests += 1
                mode = provider.mode
            if mode == "timeout":
                time.sleep(CLIENT_TIMEOUT_S * 5)  # the client gives up long before
                return
            elif mode in ("429", "500", "503"):
                self._send(int(mode), {"error": {"message": f"fake {mode}", "type": "x"}})
                return
            body: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1,
                "model": request.get("model", PROVIDER_MODEL),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "From the provider."},
                        "finish_reason": "stop",
                    }
                ],
            }
            if mode == "ok":
                body["usage"] = GOOD_USAGE
            elif mode == "negative_usage":
                body["usage"] = {"prompt_tokens": -12, "completion_tokens": 4, "total_tokens": -8}
            elif mode == "missing_completion":
                body["usage"] = {"prompt_tokens": 12}
            # "no_usage": the key is absent
            self._send(200, body)

    return Handler


@pytest.fixture
def provider() -> Iterator[tuple[_Provider, str]]:
    state = _Provider()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


class OpenAIChat(BaseChatModel):
    """The ``openai`` SDK as a LangChain chat model, mapping usage as langchain-openai does."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: Any
    aclient: Any
    model_name: str = PROVIDER_MODEL

    @property
    def _llm_type(self) -> str:
        return "test-openai"

    @staticmethod
    def _result(completion: Any) -> ChatResult:
        u = completion.usage
        usage = None
        if u is not None and u.prompt_tokens is not None and u.completion_tokens is not None:
            usage = {
                "input_tokens": u.prompt_tokens,
                "output_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
            }
        msg = AIMessage(
            content=completion.choices[0].message.content or "",
            usage_metadata=usage,  # type: ignore[arg-type]
            response_metadata={"model_name": completion.model, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _payload(self, messages: list[BaseMessage]) -> list[dict[str, str]]:
        return [{"role": "user", "content": str(m.content)} for m in messages]

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        completion = self.client.chat.completions.create(
            model=self.model_name, messages=self._payload(messages)
        )
        return self._result(completion)

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        completion = await self.aclient.chat.completions.create(
            model=self.model_name, messages=self._payload(messages)
        )
        return self._result(completion)


def _provider_model(base_url: str) -> OpenAIChat:
    # max_retries=0: the router's policy decides the retries, not the SDK.
    kw: dict[str, Any] = {
        "api_key": "sk-test",
        "base_url": base_url,
        "timeout": CLIENT_TIMEOUT_S,
        "max_retries": 0,
    }
    return OpenAIChat(client=openai.OpenAI(**kw), aclient=openai.AsyncOpenAI(**kw))


def _fallback(text: str, model: str) -> ScriptedChatModel:
    usage = Usage(input_tokens=12, output_tokens=4)
    return ScriptedChatModel(
        script=Script([ScriptedResponse(text=text, model=model, usage=usage)]), model_name=model
    )


def _router(base_url: str, *, same_tier_fallback: bool = True) -> RouterChatModel:
    small: list[BaseChatModel] = [_provider_model(base_url)]
    if same_tier_fallback:
        small.append(_fallback("From the fallback.", FALLBACK_MODEL))
    return RouterChatModel(
        tiers={"small": small, "frontier": _fallback("From the frontier.", FRONTIER_MODEL)},
        router_config=RouterConfig(retries_per_model=1, validate_answers=False),
    )


def _price(engine: CostEngine, model: str) -> Decimal | None:
    return cost_of(engine.catalog.get(model), Usage(input_tokens=12, output_tokens=4))


def _attempts(msg: BaseMessage) -> list[tuple[str, str, str]]:
    route = msg.response_metadata["costopt"]["route"]
    return [(a["tier"], a["model"], a["outcome"]) for a in route["attempts"]]


FAULTS = [
    ("timeout", "APITimeoutError"),
    ("429", "RateLimitError"),
    ("500", "InternalServerError"),
    ("503", "InternalServerError"),
]


@pytest.mark.parametrize(("mode", "error"), FAULTS)
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_failing_provider_falls_back_per_policy_and_adds_no_cost(
    provider: tuple[_Provider, str], mode: str, error: str, use_async: bool
) -> None:
    state, url = provider
    state.mode = mode
    engine = CostEngine()
    handler = CostCallbackHandler(engine)
    router = _router(url)
    started = time.perf_counter()
    config: Any = {"callbacks": [handler]}
    msg = (
        await router.ainvoke("What is 2 + 2?", config=config)
        if use_async
        else router.invoke("What is 2 + 2?", config=config)
    )
    elapsed = time.perf_counter() - started

    assert msg.content == "From the fallback."
    # The policy: one retry of the failing model, then the next model of the tier.
    assert state.requests == 2
    assert _attempts(msg) == [
        ("small", PROVIDER_MODEL, f"error: {error}"),
        ("small", PROVIDER_MODEL, f"error: {error}"),
        ("small", FALLBACK_MODEL, "kept"),
    ]
    # Only the answer that came back costs money: the failed attempts add nothing.
    totals = engine.ledger.totals()
    expected = _price(engine, FALLBACK_MODEL)
    assert totals.calls == 1 and totals.unpriced_calls == 0
    assert [r.model for r in engine.ledger.records()] == [FALLBACK_MODEL]
    assert expected is not None and expected > 0
    assert totals.cost_usd == expected
    # Timeouts bound the added latency: two attempts at the client timeout, plus slack.
    assert elapsed < 2 * CLIENT_TIMEOUT_S + 1.5
    print(f"\n{mode} ({'async' if use_async else 'sync'}): answered in {elapsed * 1000:.0f} ms")


def test_with_no_fallback_in_the_tier_the_next_tier_answers(
    provider: tuple[_Provider, str],
) -> None:
    state, url = provider
    state.mode = "503"
    engine = CostEngine()
    msg = _router(url, same_tier_fallback=False).invoke(
        "What is 2 + 2?", config={"callbacks": [CostCallbackHandler(engine)]}
    )
    assert msg.content == "From the frontier."
    assert [a[2] for a in _attempts(msg)][-1] == "kept"
    assert _attempts(msg)[-1][:2] == ("frontier", FRONTIER_MODEL)
    assert [r.model for r in engine.ledger.records()] == [FRONTIER_MODEL]


def test_when_every_tier_fails_the_error_names_the_attempts_and_nothing_is_charged(
    provider: tuple[_Provider, str],
) -> None:
    state, url = provider
    state.mode = "429"
    engine = CostEngine()
    router = RouterChatModel(
        tiers={"small": _provider_model(url), "frontier": _provider_model(url)},
        router_config=RouterConfig(retries_per_model=0),
    )
    with pytest.raises(RoutingError, match="RateLimitError") as info:
        router.invoke("What is 2 + 2?", config={"callbacks": [CostCallbackHandler(engine)]})
    assert isinstance(info.value.__cause__, openai.RateLimitError)
    assert state.requests == 2
    assert engine.ledger.totals().calls == 0
    assert engine.ledger.totals().cost_usd == Decimal(0)


@pytest.mark.parametrize("mode", ["no_usage", "missing_completion", "negative_usage"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_malformed_usage_is_recorded_as_an_unknown_cost(
    provider: tuple[_Provider, str], mode: str, use_async: bool
) -> None:
    state, url = provider
    state.mode = mode
    engine = CostEngine()
    handler = CostCallbackHandler(engine)
    router = _router(url)
    config: Any = {"callbacks": [handler]}
    msg = (
        await router.ainvoke("What is 2 + 2?", config=config)
        if use_async
        else router.invoke("What is 2 + 2?", config=config)
    )
    # The provider answered: that answer is kept (usage is accounting, not quality).
    assert msg.content == "From the provider."
    assert state.requests == 1
    totals = engine.ledger.totals()
    # Recorded (never dropped), with a cost that is unknown (never $0, never a guess).
    assert totals.calls == 1
    assert totals.unpriced_calls == 1
    assert totals.cost_usd is None  # no call could be priced: unknown, not $0
    (record,) = engine.ledger.records()
    assert record.model == PROVIDER_MODEL
    assert record.cost_usd is None
    assert handler.errors == 0


def test_good_usage_through_the_same_path_is_priced(provider: tuple[_Provider, str]) -> None:
    # The control: the same SDK path with a well-formed usage gives a real cost.
    state, url = provider
    state.mode = "ok"
    engine = CostEngine()
    msg = _router(url).invoke("What is 2 + 2?", config={"callbacks": [CostCallbackHandler(engine)]})
    assert msg.content == "From the provider."
    (record,) = engine.ledger.records()
    expected = _price(engine, PROVIDER_MODEL)
    assert record.cost_usd == expected and expected is not None and expected > 0
    assert engine.ledger.totals().unpriced_calls == 0


def test_a_malformed_usage_on_an_escalated_answer_does_not_fail_the_call(
    provider: tuple[_Provider, str],
) -> None:
    # An answer the validators reject is recorded as "escalated" by the router itself;
    # impossible counts there must not turn into an exception in the user's call.
    state, url = provider
    state.mode = "negative_usage"
    engine = CostEngine()

    router = RouterChatModel(
        tiers={
            "small": _provider_model(url),
            "frontier": _fallback("From the frontier.", FRONTIER_MODEL),
        },
        # The user's own check rejects the cheap answer: it is escalated.
        validators=ValidatorConfig(accept=lambda answer: answer.text != "From the provider."),
        engine=engine,
    )
    msg = router.invoke("What is 2 + 2?")
    assert msg.content == "From the frontier.", _attempts(msg)
    assert state.requests == 1
    escalated = [r for r in engine.ledger.records() if r.outcome == "escalated"]
    assert len(escalated) == 1 and escalated[0].cost_usd is None


@pytest.mark.parametrize(
    "payload",
    [
        {"prompt_tokens": -12, "completion_tokens": 4},
        {"prompt_tokens": "many", "completion_tokens": 4},
        {"input_tokens": 3.5, "output_tokens": 1},
    ],
)
def test_llamaindex_reads_malformed_usage_as_unknown(payload: dict[str, Any]) -> None:
    # The LlamaIndex side reads usage from the provider's raw response (cached LLM,
    # batch runner, event handler): an impossible count is an unknown cost there too.
    from types import SimpleNamespace

    from llamaindex_costopt.handler import usage_of

    assert usage_of(SimpleNamespace(raw={"usage": payload})) == Usage()
    good = SimpleNamespace(raw={"usage": {"prompt_tokens": 12, "completion_tokens": 4}})
    assert usage_of(good).input_tokens == 12
