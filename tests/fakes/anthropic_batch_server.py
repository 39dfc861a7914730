"""A local Anthropic Message Batches API, as the ``anthropic`` SDK calls it.

Implements ``POST /v1/messages/batches``, ``GET /v1/messages/batches`` (newest
first, by cursor), ``GET /v1/messages/batches/{id}``,
``POST /v1/messages/batches/{id}/cancel`` and the results stream
``GET /v1/messages/batches/{id}/results`` (JSONL, in no particular order, as
documented; the SDK finds it through the batch's ``results_url``, which this
server points at itself). Batches go ``in_progress`` -> (``canceling``) ->
``ended`` with ``request_counts`` (processing, succeeded, errored, canceled,
expired); each result is ``{"custom_id", "result": {"type": "succeeded",
"message"} | {"type": "errored", "error"} | {"type": "expired"} |
{"type": "canceled"}}``. Requests are validated as the API documents them
(custom_id pattern and uniqueness, ``params`` with ``model``, ``max_tokens`` and
user/assistant ``messages``); a bad one refuses the whole batch with HTTP 400
and the API's ``{"type": "error", "error": {"type", "message"}}`` body.

Each status read moves a batch one step, so tests poll without sleeping.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from costopt_core.types import Usage
from tests.fakes import FailureKind, FakeBatchServer, Reply, Response, Turns, reply_for

__all__ = ["FakeAnthropicBatchServer"]

MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1_000_000
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

_ERRORS: dict[FailureKind, tuple[str, str]] = {
    "rate_limit": ("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
    "server": ("api_error", "Internal server error"),
    "invalid": ("invalid_request_error", "messages: text content blocks must be non-empty"),
}


def _stamp(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


@dataclass
class _Batch:
    id: str
    requests: list[dict[str, Any]]
    created_at: datetime
    hold: int
    expire_after: int | None
    cancel_after: int
    status: str = "in_progress"
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if self.status != "ended":
            counts["processing"] = len(self.requests)
            return counts
        for entry in self.results:
            counts[entry["result"]["type"]] += 1
        return counts

    def obj(self, origin: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": self.counts(),
            "ended_at": _stamp(self.ended_at),
            "created_at": _stamp(self.created_at),
            "expires_at": _stamp(self.created_at + timedelta(hours=24)),
            "archived_at": None,
            "cancel_initiated_at": _stamp(self.cancel_initiated_at),
            "results_url": (
                f"{origin}/v1/messages/batches/{self.id}/results"
                if self.status == "ended"
                else None
            ),
        }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict):
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(_text(block.get("content")))
    return " ".join(parts)


def _turns(params: Mapping[str, Any]) -> Turns:
    system = params.get("system")
    texts: list[str] = []
    last_user = ""
    for m in params["messages"]:
        text = _text(m.get("content"))
        texts.append(text)
        if m.get("role") == "user":
            last_user = text
    return Turns(str(params["model"]), _text(system) if system else None, tuple(texts), last_user)


def _check_request(index: int, entry: Any, seen: set[str]) -> str | None:
    """Why ``entry`` is not a valid batch request (None when it is)."""
    where = f"requests.{index}"
    if not isinstance(entry, dict):
        return f"{where}: Input should be an object"
    custom_id = entry.get("custom_id")
    if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
        return f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
    if custom_id in seen:
        return f"{where}.custom_id: custom_id {custom_id!r} is not unique within the batch"
    seen.add(custom_id)
    params = entry.get("params")
    if not isinstance(params, dict):
        return f"{where}.params: Field required"
    if not isinstance(params.get("model"), str):
        return f"{where}.params.model: Field required"
    max_tokens = params.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return f"{where}.params.max_tokens: Field required (a positive integer)"
    system = params.get("system")
    if system is not None and not isinstance(system, str | list):
        return f"{where}.params.system: Input should be a string or a list of text blocks"
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        return f"{where}.params.messages: Field required (at least one message)"
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            return (
                f"{where}.params.messages.{j}.role: Input should be 'user' or 'assistant'"
                " (system prompts go in the top-level system parameter)"
            )
        content = m.get("content")
        if not isinstance(content, str | list) or (isinstance(content, list) and not content):
            return f"{where}.params.messages.{j}.content: Field required"
    return None


class FakeAnthropicBatchServer(FakeBatchServer):
    """The Message Batches endpoints on 127.0.0.1; point ``base_url`` at :attr:`url`."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: dict[str, _Batch] = {}
        #: size of the last create call's JSON body (to check ``request_size``).
        self.last_create_bytes = 0

    @property
    def url(self) -> str:
        """The SDK's ``base_url`` (Anthropic's paths carry their ``/v1``)."""
        return self.origin

    def expected_usage(self, reply: Reply, *, first_write: bool) -> Usage:
        # Anthropic's input_tokens exclude cache reads and writes; Usage counts them in.
        prefix = reply.cached_prefix_tokens
        read, write = (0, prefix) if first_write else (prefix, 0)
        return Usage(reply.prompt_tokens, reply.output_tokens, read, write, 0, None)

    # -- HTTP ---------------------------------------------------------------------------

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        default = {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
            413: "request_too_large",
        }.get(status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind or default, "message": message},
            "request_id": self.new_id("req_"),
        }

    def _error(self, status: int, message: str, kind: str | None = None) -> Response:
        return Response.json(status, self.error_body(status, message, kind))

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        # The API takes the key as x-api-key; newer SDKs send it as a bearer token.
        given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        if given != self.api_key:
            return self._error(401, "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return self._error(400, "anthropic-version: header is required")
        with self.lock:
            if method == "POST" and path == "/v1/messages/batches":
                return self._create(body)
            if method == "GET" and path == "/v1/messages/batches":
                return self._list()
            m = re.fullmatch(r"/v1/messages/batches/([^/]+)(/cancel|/results)?", path)
            if m:
                batch = self.batches.get(m.group(1))
                if batch is None:
                    return self._error(404, f"No message batch with id {m.group(1)!r}")
                action = m.group(2)
                if method == "GET" and action is None:
                    self._advance(batch)
                    return Response.json(200, batch.obj(self.origin))
                if method == "POST" and action == "/cancel":
                    if batch.status == "in_progress":
                        batch.status = "canceling"
                        batch.cancel_initiated_at = datetime.now(UTC)
                    return Response.json(200, batch.obj(self.origin))
                if method == "GET" and action == "/results":
                    if batch.status != "ended":
                        return self._error(
                            404, f"Results for batch {batch.id} are not available yet"
                        )
                    # Documented: results come in no particular order; match by custom_id.
                    data = "".join(json.dumps(r) + "\n" for r in reversed(batch.results))
                    return Response(200, data.encode("utf-8"), "application/binary")
            return self._error(404, f"Not found: {method} {path}")

    def _list(self) -> Response:
        """``GET /v1/messages/batches``: newest first, ``limit`` (1-1000) after ``after_id``."""
        limit = int(self.query.get("limit", 20))
        if not 1 <= limit <= 1000:
            return self._error(400, "limit: Input should be between 1 and 1000")
        newest = list(reversed(self.batches.values()))  # created in insertion order
        chunk, more = self.page(newest, self.query.get("after_id", ""), limit)
        data = [b.obj(self.origin) for b in chunk]
        return Response.json(
            200,
            {
                "data": data,
                "has_more": more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    def _create(self, body: bytes) -> Response:
        self.last_create_bytes = len(body)
        if len(body) > MAX_BODY_BYTES:
            return self._error(413, f"Request exceeds the maximum size of {MAX_BODY_BYTES} bytes")
        try:
            params = json.loads(body)
        except ValueError:
            return self._error(400, "There was an issue with the JSON body of your request.")
        requests = params.get("requests") if isinstance(params, dict) else None
        if not isinstance(requests, list) or not requests:
            return self._error(400, "requests: List should have at least 1 item")
        if len(requests) > MAX_REQUESTS:
            return self._error(400, f"requests: List should have at most {MAX_REQUESTS} items")
        seen: set[str] = set()
        for i, entry in enumerate(requests):
            problem = _check_request(i, entry, seen)
            if problem:
                return self._error(400, problem)
        batch = _Batch(
            id=self.new_id("msgbatch_"),
            requests=requests,
            created_at=datetime.now(UTC),
            hold=self.script.hold_polls,
            expire_after=self.script.expire_after,
            cancel_after=self.script.cancel_after,
        )
        self.batches[batch.id] = batch
        return Response.json(200, batch.obj(self.origin))

    # -- running a batch ----------------------------------------------------------------

    def _advance(self, batch: _Batch) -> None:
        if batch.status == "in_progress":
            if batch.hold > 0:
                batch.hold -= 1
            elif batch.expire_after is not None:
                self._finish(batch, batch.expire_after, "expired")
            else:
                self._finish(batch, len(batch.requests), "expired")
        elif batch.status == "canceling":
            self._finish(batch, batch.cancel_after, "canceled")

    def _finish(self, batch: _Batch, run: int, unrun: str) -> None:
        seen: set[str] = set()
        results = []
        for i, entry in enumerate(batch.requests):
            custom_id = entry["custom_id"]
            if i >= run:
                results.append({"custom_id": custom_id, "result": {"type": unrun}})
                continue
            turns = _turns(entry["params"])
            first = turns.system is not None and turns.system not in seen
            if turns.system:
                seen.add(turns.system)
            kind = self.failure_for(custom_id, turns.model)
            if kind is None:
                result = {"type": "succeeded", "message": self._message(turns, first)}
            else:
                etype, message = _ERRORS[kind]
                result = {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": etype, "message": message},
                        "request_id": self.new_id("req_"),
                    },
                }
            results.append({"custom_id": custom_id, "result": result})
        batch.results = results
        batch.status = "ended"
        batch.ended_at = datetime.now(UTC)

    def _message(self, turns: Turns, first_write: bool) -> dict[str, Any]:
        reply = reply_for(turns)
        prefix = reply.cached_prefix_tokens
        read, write = (0, prefix) if first_write else (prefix, 0)
        return {
            "id": self.new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": turns.model,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.prompt_tokens - read - write,
                "output_tokens": reply.output_tokens,
                "cache_read_input_tokens": read,
                "cache_creation_input_tokens": write,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": write,
                    "ephemeral_1h_input_tokens": 0,
                },
                "service_tier": "batch",
            },
        }
