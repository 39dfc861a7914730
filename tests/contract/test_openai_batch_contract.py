"""The batch contract against the OpenAI Batch API, through the real ``openai`` SDK.

The SDK talks HTTP to a local fake of the Files and Batch endpoints
(``tests/fakes/openai_batch_server.py``); below the contract, what only the
OpenAI provider does: one remote batch per model, requests missing from the
files, batches that fail validation, and the wire the provider uploads.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Literal

import openai
import pytest

from costopt_core.batch._wire import OPENAI_LIMITS
from costopt_core.batch.openai_provider import OpenAIBatchProvider
from costopt_core.batch.provider import BatchRequest
from costopt_core.errors import BatchError, ConfigurationError
from costopt_core.types import Message
from tests.contract.batch_contract import (
    BatchProviderContract,
    ProviderOps,
    by_id,
    close,
    fail_creates,
    finish,
    flush,
    make_requests,
    new_job,
)
from tests.fakes.openai_batch_server import FakeOpenAIBatchServer


def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake() -> Iterator[FakeOpenAIBatchServer]:
    server = FakeOpenAIBatchServer().start()
    yield server
    server.stop()


def provider_for(server: FakeOpenAIBatchServer) -> OpenAIBatchProvider:
    return OpenAIBatchProvider(api_key=server.api_key, base_url=server.url, max_retries=0)


class TestOpenAIBatchContract(BatchProviderContract):
    @pytest.fixture
    def server(self) -> Iterator[FakeOpenAIBatchServer]:
        server = FakeOpenAIBatchServer().start()
        yield server
        server.stop()

    def make_provider(self, server: FakeOpenAIBatchServer) -> OpenAIBatchProvider:
        return provider_for(server)

    def make_unreachable_provider(self) -> OpenAIBatchProvider:
        return OpenAIBatchProvider(
            api_key="k", base_url=f"http://127.0.0.1:{dead_port()}/v1", max_retries=0, timeout_s=5
        )

    def fail_submits(self, server: FakeOpenAIBatchServer, status: int, times: int) -> bool:
        fail_creates(server, status, times)
        return True

    def provider_source(self, server: FakeOpenAIBatchServer) -> str:
        return (
            "from costopt_core.batch.openai_provider import OpenAIBatchProvider\n"
            f"provider = OpenAIBatchProvider(api_key={server.api_key!r},"
            f" base_url={server.url!r}, max_retries=0)\n"
        )


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_one_remote_batch_per_model_behind_one_id(
    fake: FakeOpenAIBatchServer, mode: str
) -> None:
    provider = provider_for(fake)
    requests = [*make_requests(2, model="model-a"), *make_requests(2, prefix="b", model="model-b")]
    ops = ProviderOps(provider, mode)  # type: ignore[arg-type]
    batch_id, results = await ops.run(requests)
    assert len(batch_id.split(",")) == 2
    assert set(fake.batches) == set(batch_id.split(","))
    for batch in fake.batches.values():  # the documented rule: one model per input file
        assert not batch.errors
        assert len({line["body"]["model"] for line in batch.lines}) == 1
    assert {i: r.model for i, r in results.items()} == {
        "q0": "model-a",
        "q1": "model-a",
        "b0": "model-b",
        "b1": "model-b",
    }
    assert (await ops.poll(batch_id)).counts["succeeded"] == 4
    await provider.aclose()
    provider.close()


async def test_the_uploaded_file_is_the_documented_jsonl(fake: FakeOpenAIBatchServer) -> None:
    provider = OpenAIBatchProvider(
        api_key=fake.api_key, base_url=fake.url, max_retries=0, metadata={"team": "search"}
    )
    requests = [
        BatchRequest(
            id="r1",
            model="gpt-4o-mini",
            messages=(Message("system", "Be brief."), Message("user", "Hi")),
            params={"max_tokens": 50, "temperature": 0},
        )
    ]
    batch_id = provider.submit(requests)
    batch = fake.batches[batch_id]
    data = fake.files[batch.input_file_id].data
    assert data.endswith(b"\n") and len(data) == provider.request_size(requests[0])
    line = json.loads(data)
    assert line == {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "max_tokens": 50,
            "temperature": 0,
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
        },
    }
    assert fake.files[batch.input_file_id].purpose == "batch"
    assert batch.endpoint == "/v1/chat/completions"
    assert batch.metadata == {"team": "search", "created_by": "costopt"}
    provider.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_unrun_requests_missing_from_both_files_are_found_in_the_input(
    fake: FakeOpenAIBatchServer, mode: str
) -> None:
    fake.omit_unrun()
    fake.expire_after(1)
    provider = provider_for(fake)
    ops = ProviderOps(provider, mode)  # type: ignore[arg-type]
    batch_id, results = await ops.run(make_requests(3))
    assert fake.batches[batch_id].error_file_id is None  # nothing told us about q1, q2
    assert [results[f"q{i}"].status for i in range(3)] == ["succeeded", "expired", "expired"]
    assert results["q1"].retryable and results["q2"].retryable
    fake.hold(5)
    fake.cancel_after(0)
    fake.script.expire_after = None
    batch_id = await ops.submit(make_requests(2, prefix="c"))
    await ops.cancel(batch_id)
    await ops.wait(batch_id)
    results = by_id(await ops.results(batch_id))
    assert {r.status for r in results.values()} == {"canceled"}
    await provider.aclose()
    provider.close()


def test_a_batch_that_failed_validation_reports_each_request(
    fake: FakeOpenAIBatchServer,
) -> None:
    # Built with the SDK directly: the provider never writes a bad line.
    client = openai.OpenAI(api_key=fake.api_key, base_url=fake.url, max_retries=0)
    good = {"method": "POST", "url": "/v1/chat/completions"}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    lines = [
        {"custom_id": "ok-1", **good, "body": body},
        {"custom_id": "bad", "method": "GET", "url": "/v1/chat/completions", "body": body},
        {"custom_id": "ok-2", **good, "body": body},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    provider = OpenAIBatchProvider(client=client)
    remote = provider.poll(batch.id)
    assert remote.status == "ended"
    assert client.batches.retrieve(batch.id).status == "failed"
    results = by_id(provider.results(batch.id))
    assert results["bad"].status == "errored" and not results["bad"].retryable
    assert "POST" in (results["bad"].error or "")
    for ok in ("ok-1", "ok-2"):  # never ran: fine to send again without the bad line
        assert results[ok].status == "errored" and results[ok].retryable
    provider.close()  # an injected client stays open
    assert client.batches.retrieve(batch.id).id == batch.id
    client.close()


def test_the_fake_refuses_what_the_api_refuses(fake: FakeOpenAIBatchServer) -> None:
    client = openai.OpenAI(api_key=fake.api_key, base_url=fake.url, max_retries=0)
    upload = client.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="1h",  # type: ignore[arg-type]
        )
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.txt", b"{}\n"), purpose="batch")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong", base_url=fake.url, max_retries=0).files.create(
            file=("in.jsonl", b"{}\n"), purpose="batch"
        )
    client.close()


def test_submit_refuses_what_breaks_the_limits(fake: FakeOpenAIBatchServer) -> None:
    provider = provider_for(fake)
    assert provider.limits == OPENAI_LIMITS
    provider.limits = type(OPENAI_LIMITS)(max_requests=2, max_bytes=10_000)
    with pytest.raises(ConfigurationError, match="3 requests exceed the limit of 2"):
        provider.submit(make_requests(3))
    big = BatchRequest(id="big", model="m", messages=(Message("user", "x" * 20_000),))
    with pytest.raises(ConfigurationError, match="bytes exceed the limit"):
        provider.submit([big])
    with pytest.raises(ConfigurationError, match="appears twice"):
        provider.submit(make_requests(1) * 2)
    with pytest.raises(ConfigurationError, match="not a valid custom_id"):
        provider.submit([BatchRequest(id="has space", model="m", messages=())])
    assert fake.files == {}  # refused before anything was uploaded
    provider.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("status", "requeued"), [(429, True), (500, False)])
async def test_a_submit_cut_off_between_models_runs_every_request_once(
    fake: FakeOpenAIBatchServer, mode: Literal["sync", "async"], status: int, requeued: bool
) -> None:
    # model-a's batch is created, model-b's refused (429) or failed (500): the provider
    # cancels model-a's batch, which must not be collected as the requests' answer.
    fail_creates(fake, status, 1, after=1)
    requests = [*make_requests(2, model="model-a"), *make_requests(2, prefix="b", model="model-b")]
    job = new_job(provider_for(fake), "j")
    try:
        job.enqueue(requests)
        with pytest.raises(BatchError, match=str(status)):
            await flush(job, mode)
        counts = job.queue.counts("j")
        # A refusal is queued again at once; a 500 is looked up first (and not found).
        assert (counts["queued"], counts["submitting"]) == ((4, 0) if requeued else (0, 4))
        results = await finish(job, mode)
    finally:
        await close(job.provider)
    assert {i: r.status for i, r in results.items()} == dict.fromkeys(
        ("q0", "q1", "b0", "b1"), "succeeded"
    )
    expected = fake.expected(requests)  # usage differs: the cache warms up in another order
    assert {i: r.text for i, r in results.items()} == {i: t for i, (t, _) in expected.items()}
    assert len(job.engine.ledger.records()) == 4
    stopped = [b for b in fake.batches.values() if b.status in ("cancelling", "cancelled")]
    assert len(stopped) == 1  # the first model's batch of the cut-off submit, stopped
