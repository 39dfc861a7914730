"""The batch contract against Anthropic's Message Batches, through the real ``anthropic`` SDK.

The SDK talks HTTP to a local fake of the Message Batches endpoints
(``tests/fakes/anthropic_batch_server.py``), results stream included; below
the contract, what only the Anthropic provider does: the request entries it
sends (system prompt on top, ``max_tokens`` always set), how big they are,
and the errors it retries.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import anthropic
import pytest

from costopt_core.batch._wire import ANTHROPIC_LIMITS
from costopt_core.batch.anthropic_provider import AnthropicBatchProvider
from costopt_core.batch.provider import BatchRequest
from costopt_core.errors import BatchError, ConfigurationError
from costopt_core.types import Message
from tests.contract.batch_contract import (
    BatchProviderContract,
    ProviderOps,
    fail_creates,
    make_requests,
)
from tests.fakes.anthropic_batch_server import FakeAnthropicBatchServer


def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake() -> Iterator[FakeAnthropicBatchServer]:
    server = FakeAnthropicBatchServer().start()
    yield server
    server.stop()


def provider_for(server: FakeAnthropicBatchServer, **kwargs: object) -> AnthropicBatchProvider:
    return AnthropicBatchProvider(
        api_key=server.api_key,
        base_url=server.url,
        max_retries=0,
        **kwargs,  # type: ignore[arg-type]
    )


class TestAnthropicBatchContract(BatchProviderContract):
    @pytest.fixture
    def server(self) -> Iterator[FakeAnthropicBatchServer]:
        server = FakeAnthropicBatchServer().start()
        yield server
        server.stop()

    def make_provider(self, server: FakeAnthropicBatchServer) -> AnthropicBatchProvider:
        return provider_for(server)

    def make_unreachable_provider(self) -> AnthropicBatchProvider:
        return AnthropicBatchProvider(
            api_key="k", base_url=f"http://127.0.0.1:{dead_port()}", max_retries=0, timeout_s=5
        )

    def fail_submits(self, server: FakeAnthropicBatchServer, status: int, times: int) -> bool:
        fail_creates(server, status, times)
        return True

    def provider_source(self, server: FakeAnthropicBatchServer) -> str:
        return (
            "from costopt_core.batch.anthropic_provider import AnthropicBatchProvider\n"
            f"provider = AnthropicBatchProvider(api_key={server.api_key!r},"
            f" base_url={server.url!r}, max_retries=0)\n"
        )


def test_requests_go_out_in_the_documented_shape(fake: FakeAnthropicBatchServer) -> None:
    provider = provider_for(fake, default_max_tokens=333)
    requests = [
        BatchRequest(
            id="sys-1",
            model="claude-haiku-4-5",
            messages=(Message("system", "Be brief."), Message("user", "Hi")),
        ),
        BatchRequest(
            id="own-max",
            model="claude-haiku-4-5",
            messages=(Message("user", "Hello"),),
            params={"max_tokens": 64, "temperature": 0.2},
        ),
    ]
    batch_id = provider.submit(requests)
    sent = fake.batches[batch_id].requests
    assert sent[0] == {
        "custom_id": "sys-1",
        "params": {
            "max_tokens": 333,
            "system": "Be brief.",
            "model": "claude-haiku-4-5",
            "messages": [{"role": "user", "content": "Hi"}],
        },
    }
    assert sent[1]["params"]["max_tokens"] == 64
    assert sent[1]["params"]["temperature"] == 0.2
    assert "system" not in sent[1]["params"]
    # request_size covers the body the SDK sent, frame aside.
    sizes = sum(provider.request_size(r) for r in requests)
    assert sizes <= fake.last_create_bytes + 64 <= sizes + 64 + 64
    provider.close()


def test_results_and_counts_use_anthropic_usage_semantics(
    fake: FakeAnthropicBatchServer,
) -> None:
    provider = provider_for(fake)
    requests = make_requests(3)
    batch_id = provider.submit(requests)
    while provider.poll(batch_id).status != "ended":
        pass
    results = {r.id: r for r in provider.results(batch_id)}
    # q0 wrote the system prompt to the cache, q1 and q2 read it; input_tokens
    # of Usage include both, as the engine counts them.
    first, later = results["q0"].usage, results["q1"].usage
    assert first is not None and later is not None
    assert first.cache_write_5m_tokens and not first.cache_read_tokens
    assert later.cache_read_tokens == first.cache_write_5m_tokens
    assert first.input_tokens == later.input_tokens
    assert (later.input_tokens or 0) > (later.cache_read_tokens or 0)
    raw = results["q0"].raw
    assert raw is not None and raw["usage"]["input_tokens"] < (first.input_tokens or 0)
    assert raw["content"][0]["text"] == results["q0"].text
    provider.close()


@pytest.mark.parametrize(
    ("kind", "retryable"), [("rate_limit", True), ("server", True), ("invalid", False)]
)
def test_errored_requests_are_retryable_only_for_provider_faults(
    fake: FakeAnthropicBatchServer, kind: str, retryable: bool
) -> None:
    fake.fail_model("claude-bad", kind)  # type: ignore[arg-type]
    provider = provider_for(fake)
    requests = [*make_requests(1), *make_requests(1, prefix="bad", model="claude-bad")]
    batch_id = provider.submit(requests)
    while provider.poll(batch_id).status != "ended":
        pass
    results = {r.id: r for r in provider.results(batch_id)}
    assert results["q0"].status == "succeeded"
    assert results["bad0"].status == "errored"
    assert results["bad0"].retryable is retryable
    provider.close()


def test_a_refused_batch_is_a_batch_error_and_the_fake_checks_the_format(
    fake: FakeAnthropicBatchServer,
) -> None:
    client = anthropic.Anthropic(api_key=fake.api_key, base_url=fake.url, max_retries=0)
    good = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    bad_requests = [
        [{"custom_id": "no spaces", "params": good}],
        [{"custom_id": "a", "params": {**good, "max_tokens": None}}],
        [{"custom_id": "a", "params": {**good, "messages": [{"role": "system", "content": "x"}]}}],
        [{"custom_id": "a", "params": good}, {"custom_id": "a", "params": good}],
    ]
    for requests in bad_requests:
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert fake.batches == {}
    # The provider never sends those; a refusal by the API becomes a BatchError.
    provider = AnthropicBatchProvider(client=client)
    provider.default_max_tokens = 0  # what a bad override would send
    with pytest.raises(BatchError, match="HTTP 400"):
        provider.submit(make_requests(1))
    client.close()


def test_submit_refuses_what_breaks_the_limits(fake: FakeAnthropicBatchServer) -> None:
    provider = provider_for(fake)
    assert provider.limits == ANTHROPIC_LIMITS
    provider.limits = type(ANTHROPIC_LIMITS)(max_requests=2, max_bytes=10_000)
    with pytest.raises(ConfigurationError, match="3 requests exceed the limit of 2"):
        provider.submit(make_requests(3))
    big = BatchRequest(id="big", model="m", messages=(Message("user", "x" * 20_000),))
    with pytest.raises(ConfigurationError, match="bytes exceed the limit"):
        provider.submit([big])
    assert fake.batches == {}
    provider.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_results_of_a_running_batch_name_its_status(
    fake: FakeAnthropicBatchServer, mode: str
) -> None:
    fake.hold(2)
    provider = provider_for(fake)
    ops = ProviderOps(provider, mode)  # type: ignore[arg-type]
    batch_id = await ops.submit(make_requests(1))
    with pytest.raises(BatchError, match="still in_progress"):
        await ops.results(batch_id)
    await provider.aclose()
    provider.close()
