"""``OpenAIBatchProvider``: chat requests through the OpenAI Batch API.

The Batch API runs a JSONL file of requests within 24 hours at half price:
upload the file (``purpose="batch"``), create a batch on
``/v1/chat/completions``, poll its status, then read its output file (HTTP 200
answers) and error file (other answers, and requests that expired or were
cancelled). OpenAI wants one model per input file, so ``submit`` makes one
remote batch per model and returns their ids joined by commas; every other
method takes such an id apart again. Everything needed to collect lives at
OpenAI, so a new process can collect what an old one submitted. Each batch
carries the job's submission token in its metadata, so one whose id its
submitter never recorded is found again by listing recent batches.

The ``openai`` SDK is imported on first use: the engine imports without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from costopt_core.batch._sdk import Connect, SdkBatchProvider, Steps, as_dict
from costopt_core.batch._wire import (
    COUNT_KEYS,
    OPENAI_CHAT_ENDPOINT,
    OPENAI_LIMITS,
    check_batch,
    openai_batch_counts,
    openai_batch_status,
    openai_jsonl_line,
    openai_line_result,
    openai_missing_result,
    parse_jsonl,
)
from costopt_core.batch.provider import (
    CLOCK_SKEW_S,
    BatchLimits,
    BatchRequest,
    BatchResult,
    RemoteBatch,
    RemoteStatus,
    Submission,
    SubmitRefusedError,
)
from costopt_core.errors import BatchError, ConfigurationError

__all__ = ["OpenAIBatchProvider"]

_SEPARATOR = ","
#: The metadata key holding the job's submission token.
SUBMISSION_KEY = "costopt_submission"
#: Statuses of a batch that was cancelled (or is being cancelled).
_STOPPED = frozenset({"cancelling", "cancelled"})


def _split(batch_id: str) -> list[str]:
    ids = [part for part in batch_id.split(_SEPARATOR) if part]
    if not ids:
        raise BatchError(f"{batch_id!r} is not an OpenAI batch id")
    return ids


def _remote(batch_id: str, batches: Sequence[Mapping[str, Any]]) -> RemoteBatch:
    """The remote batches behind one submitted id, as one ``RemoteBatch``."""
    statuses = [openai_batch_status(str(b.get("status"))) for b in batches]
    status: RemoteStatus = "ended"
    if "canceling" in statuses:
        status = "canceling"
    elif "in_progress" in statuses:
        status = "in_progress"
    counts = dict.fromkeys(COUNT_KEYS, 0)
    expires: list[float] = []
    for b in batches:
        rc = b.get("request_counts") or {}
        part = openai_batch_counts(
            str(b.get("status")),
            int(rc.get("total") or 0),
            int(rc.get("completed") or 0),
            int(rc.get("failed") or 0),
        )
        for key, value in part.items():
            counts[key] += value
        if b.get("expires_at") is not None:
            expires.append(float(b["expires_at"]))
    return RemoteBatch(
        id=batch_id, status=status, counts=counts, expires_at=max(expires) if expires else None
    )


class _Collector:
    """Which files of one ended batch to read, and the results they hold.

    Output and error files first; the input file only when they may not cover
    every request (an expired, cancelled or failed batch), since OpenAI leaves
    out requests that never ran and the request ids are known only from it.
    """

    def __init__(self, batch: Mapping[str, Any]) -> None:
        self.batch = batch
        self.status = str(batch.get("status"))
        self._pending = [
            str(fid) for fid in (batch.get("output_file_id"), batch.get("error_file_id")) if fid
        ]
        self._found: dict[str, BatchResult] = {}
        self._input: list[dict[str, Any]] | None = None

    def next_file(self) -> str | None:
        if self._pending:
            return self._pending[0]
        if self._input is None and self._needs_input():
            return str(self.batch.get("input_file_id"))
        return None

    def _needs_input(self) -> bool:
        total = int((self.batch.get("request_counts") or {}).get("total") or 0)
        return self.status in ("failed", "expired", "cancelled") or len(self._found) < total

    def add(self, file_id: str, text: str) -> None:
        lines = parse_jsonl(text)
        if self._pending and file_id == self._pending[0]:
            self._pending.pop(0)
            for line in lines:
                result = openai_line_result(line)
                self._found[result.id] = result
        else:
            self._input = lines

    def results(self) -> list[BatchResult]:
        if self._input is None:
            return list(self._found.values())
        ids = [str(line.get("custom_id")) for line in self._input]
        if self.status == "failed":
            return self._failed(ids)
        out = [self._found.get(i) or openai_missing_result(i, self.status) for i in ids]
        known = set(ids)
        out.extend(r for i, r in self._found.items() if i not in known)
        return out

    def _failed(self, ids: list[str]) -> list[BatchResult]:
        # Nothing ran. The lines the errors name are wrong (not retryable as they
        # are); every other request can go in another batch, also when no error
        # names a line: such a failure is the batch's (an enqueued-token limit
        # reached, ``token_limit_exceeded``...) and says nothing about the requests.
        errors = (self.batch.get("errors") or {}).get("data") or []
        by_line: dict[int, str] = {}
        for err in errors:
            text = f"{err.get('code') or 'invalid'}: {err.get('message') or 'invalid request'}"
            if err.get("line") is not None:
                by_line[int(err["line"])] = text  # 1-based, as OpenAI numbers input lines
        summary = "; ".join(by_line.values()) or "; ".join(
            f"{e.get('code')}: {e.get('message')}" for e in errors
        )
        out = []
        for number, request_id in enumerate(ids, start=1):
            if number in by_line:
                out.append(BatchResult(id=request_id, status="errored", error=by_line[number]))
            else:
                out.append(
                    BatchResult(
                        id=request_id,
                        status="errored",
                        error=f"batch_failed: the batch failed ({summary or 'no reason given'})",
                        retryable=True,
                    )
                )
        return out


class OpenAIBatchProvider(SdkBatchProvider):
    """Runs chat requests through the OpenAI Batch API (50% off, 24h window).

    Args:
        client: an ``openai.OpenAI`` client to use; built from the other
            arguments on first use when omitted.
        async_client: an ``openai.AsyncOpenAI`` for the ``a*`` methods; built
            on first use when omitted.
        api_key: the key for built clients (default: ``OPENAI_API_KEY``).
        base_url: the API's URL for built clients (default: the SDK's, or
            ``OPENAI_BASE_URL``).
        max_retries: the SDK's retries of failed HTTP calls (default: the SDK's).
        timeout_s: the SDK's HTTP timeout in seconds (default: the SDK's).
        poll_interval_s: the wait between polls a ``BatchJob`` uses by default.
        metadata: up to 14 string pairs attached to every batch created.

    Raises:
        ConfigurationError: a negative ``max_retries``, a non-positive
            ``poll_interval_s`` or ``timeout_s``, or too much ``metadata``.
    """

    name = "openai"
    limits: BatchLimits = OPENAI_LIMITS
    _sdk = "openai"
    _vendor = "OpenAI"
    _client_class = "OpenAI"
    _async_client_class = "AsyncOpenAI"
    _sdk_error = "OpenAIError"
    _key_env = "OPENAI_API_KEY"
    _not_found = "no such batch or file"

    def __init__(
        self,
        *,
        client: Any | None = None,
        async_client: Any | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        metadata: Mapping[str, str] | None = None,
        poll_interval_s: float = 30.0,
    ) -> None:
        super().__init__(
            client, async_client, api_key, base_url, max_retries, timeout_s, poll_interval_s
        )
        if metadata is not None and len(metadata) > 14:
            raise ConfigurationError(
                f"metadata has {len(metadata)} keys: OpenAI allows 16 per batch and costopt"
                " uses two; pass at most 14"
            )
        self._metadata = {**(metadata or {}), "created_by": "costopt"}

    def request_size(self, request: BatchRequest) -> int:
        """Bytes of ``request``'s line in the JSONL input file."""
        return len(openai_jsonl_line(request))

    def _files(self, requests: Sequence[BatchRequest]) -> list[tuple[str, bytes]]:
        """The input file of each model's remote batch, checked against the limits."""
        lines = [openai_jsonl_line(r) for r in requests]
        check_batch(requests, self.limits, [len(line) for line in lines], self.name)
        by_model: dict[str, list[bytes]] = {}
        for request, line in zip(requests, lines, strict=True):
            by_model.setdefault(request.model, []).append(line)
        return [(model, b"".join(parts)) for model, parts in by_model.items()]

    def _create_kwargs(self, file_id: str, submission: str | None) -> dict[str, Any]:
        metadata = dict(self._metadata)
        if submission is not None:
            metadata[SUBMISSION_KEY] = submission
        return {
            "input_file_id": file_id,
            "endpoint": OPENAI_CHAT_ENDPOINT,
            "completion_window": "24h",
            "metadata": metadata,
        }

    def _submit(
        self, connect: Connect, requests: Sequence[BatchRequest], submission: str | None
    ) -> Steps[str]:
        """Upload the requests and create one remote batch per model.

        A failure cancels the batches already created for other models first.
        A refusal (``SubmitRefusedError``) stays one only when every such
        batch was stopped; otherwise it is raised as a plain ``BatchError``,
        so the job looks up the batch still running instead of sending its
        requests twice.
        """
        client = connect()
        created: list[str] = []
        try:
            for _model, data in self._files(requests):
                with self._errors("submit"):
                    upload = yield client.files.create(
                        file=("costopt-batch.jsonl", data, "application/jsonl"), purpose="batch"
                    )
                    batch = yield client.batches.create(
                        **self._create_kwargs(upload.id, submission)
                    )
                created.append(str(batch.id))
        except BatchError as exc:
            running = []
            for batch_id in created:  # do not leave half a submission running
                try:
                    yield from self._cancel(connect, batch_id)
                except BatchError:
                    running.append(batch_id)
            if running and isinstance(exc, SubmitRefusedError):
                raise BatchError(
                    f"{exc}; batch(es) {', '.join(running)} created for other models could not"
                    " be canceled: the job looks them up by token before submitting again"
                ) from exc
            raise
        return _SEPARATOR.join(created)

    def _find(self, connect: Connect, submission: Submission) -> Steps[str | None]:
        """The batches tagged with the token, newest first, back to shortly before it started.

        A submission that was cut off between models has only some of its
        batches; they are returned, and the requests of the missing models
        come back without a result and are queued again.
        """
        client = connect()
        batches = yield from self._listed_since(
            client.batches.list,
            cursor="after",
            oldest=submission.started_at - CLOCK_SKEW_S,
            created_at=lambda b: float(b.get("created_at") or 0),
        )
        # A cancelled batch is one ``_submit`` stopped after another model's
        # create failed (or someone stopped by hand): it will answer nothing,
        # so its requests are better submitted again than collected as canceled.
        found = [
            str(b["id"])
            for b in batches
            if (b.get("metadata") or {}).get(SUBMISSION_KEY) == submission.token
            and b.get("status") not in _STOPPED
        ]
        return _SEPARATOR.join(reversed(found)) or None

    def _poll(self, connect: Connect, batch_id: str) -> Steps[RemoteBatch]:
        client = connect()
        batches = []
        for part in _split(batch_id):
            with self._errors("poll", part):
                batches.append(as_dict((yield client.batches.retrieve(part))))
        return _remote(batch_id, batches)

    def _results(self, connect: Connect, batch_id: str) -> Steps[list[BatchResult]]:
        client = connect()
        out: list[BatchResult] = []
        for part in _split(batch_id):
            with self._errors("collection", part):
                collector = self._collector(as_dict((yield client.batches.retrieve(part))), part)
                while (file_id := collector.next_file()) is not None:
                    content = yield client.files.content(file_id)
                    collector.add(file_id, content.text)
            out.extend(collector.results())
        return out

    @staticmethod
    def _collector(batch: Mapping[str, Any], batch_id: str) -> _Collector:
        status = str(batch.get("status"))
        if openai_batch_status(status) != "ended":
            raise BatchError(
                f"OpenAI batch {batch_id} is still {status}: poll until it has ended, then"
                " collect its results"
            )
        return _Collector(batch)

    def _cancel(self, connect: Connect, batch_id: str) -> Steps[None]:
        """Stop each running part; a part that already ended is left as it is."""
        client = connect()
        for part in _split(batch_id):
            with self._errors("cancel", part):
                batch = yield client.batches.retrieve(part)
                if openai_batch_status(str(batch.status)) == "in_progress":
                    yield client.batches.cancel(part)
