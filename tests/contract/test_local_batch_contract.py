"""The batch contract against the ``local`` provider, over a scripted chat function.

The "server" is the chat function the provider runs: it answers from the
request (so results can be checked by id), reports the shared system prompt
as a provider-cache read after the first request, and fails requests on
demand the way a provider does (rate limit and server errors are retried,
an invalid request is not). Local batches live in their process, so the
restart tests are skipped (``durable = False``); holding, expiring and
cancelling a running local batch are covered by ``tests/unit/test_batch_local.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest

from costopt_core.batch import BatchRequest, BatchResult, LocalBatchProvider
from costopt_core.types import Usage
from tests.contract.batch_contract import BatchProviderContract


class RateLimited(Exception):
    pass


class ServerError(Exception):
    pass


_FAILURES: dict[str, Exception] = {
    "rate_limit": RateLimited("rate limit exceeded, retry later"),
    "server": ServerError("internal server error"),
    "invalid": ValueError("invalid request: unknown parameter"),
}


class ScriptedChat:
    """The local provider's backend: deterministic answers, failures by request id."""

    supports = frozenset({"expected", "fail"})

    def __init__(self) -> None:
        self._fail: dict[str, str] = {}
        self._lock = threading.Lock()

    def fail(self, request_id: str, kind: str) -> None:
        with self._lock:
            self._fail[request_id] = kind

    def _answer(self, request: BatchRequest) -> tuple[str, Usage]:
        text = f"Answer to: {request.messages[-1].content}"
        words = sum(len(m.content.split()) for m in request.messages)
        has_system = any(m.role == "system" for m in request.messages)
        first = request.id.rstrip("0123456789") + "0" == request.id
        cached = 16 if has_system and not first else 0
        usage = Usage(
            input_tokens=words + 24, output_tokens=len(text.split()), cache_read_tokens=cached
        )
        return text, usage

    def expected(self, requests: Sequence[BatchRequest]) -> dict[str, tuple[str, Usage]]:
        return {r.id: self._answer(r) for r in requests}

    def __call__(self, request: BatchRequest) -> BatchResult:
        with self._lock:
            kind = self._fail.get(request.id)
        if kind is not None:
            raise _FAILURES[kind]
        text, usage = self._answer(request)
        return BatchResult(
            id=request.id, status="succeeded", text=text, usage=usage, model=request.model
        )


class TestLocalBatchContract(BatchProviderContract):
    durable = False

    def make_provider(self, server: ScriptedChat) -> LocalBatchProvider:
        return LocalBatchProvider(
            server, max_concurrency=4, max_retries=1, retry_on=(RateLimited, ServerError)
        )

    @pytest.fixture
    def server(self) -> Iterator[ScriptedChat]:
        yield ScriptedChat()
