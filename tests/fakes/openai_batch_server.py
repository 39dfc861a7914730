"""A local OpenAI Batch API: files and batches, as the ``openai`` SDK calls them.

Implements ``POST /v1/files`` (multipart upload), ``GET /v1/files/{id}`` and
``/content``, ``POST /v1/batches``, ``GET /v1/batches`` (newest first, by
cursor), ``GET /v1/batches/{id}`` and
``POST /v1/batches/{id}/cancel`` with the documented objects: the batch object
(``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed``, or
``failed`` / ``expired`` / ``cancelling`` -> ``cancelled``, with
``request_counts``), the request input lines it validates, and the output and
error files (``{"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error"}``; requests that never ran go to the error file with the
documented ``batch_expired`` / ``batch_cancelled`` codes). Errors use the API's
``{"error": {"message", "type", "param", "code"}}`` shape.

Each status read moves a batch one step, so tests poll without sleeping.
Validation error codes of a failed batch are this fake's own names; the
documented rules they enforce are cited beside them.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from costopt_core.types import Usage
from tests.fakes import FailureKind, FakeBatchServer, Reply, Response, Turns, reply_for

__all__ = ["FakeOpenAIBatchServer"]

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses")
MAX_FILE_BYTES = 200 * 1_000_000  # "can be up to 200 MB in size"
MAX_REQUESTS = 50_000  # "The file can contain up to 50,000 requests"
ROLES = ("system", "developer", "user", "assistant", "tool")

_HTTP_FAILURES: dict[FailureKind, tuple[int, str, str]] = {
    "rate_limit": (429, "rate_limit_exceeded", "Rate limit reached for requests"),
    "server": (500, "server_error", "The server had an error while processing your request."),
    "invalid": (400, "invalid_request_error", "Invalid value for 'messages'."),
}


@dataclass
class _File:
    id: str
    purpose: str
    filename: str
    data: bytes
    created_at: int

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: Mapping[str, str] | None
    created_at: int
    lines: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    hold: int
    expire_after: int | None
    cancel_after: int
    omit_unrun: bool
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None

    def obj(self) -> dict[str, Any]:
        total = 0 if self.status in ("validating", "failed") else len(self.lines)
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.times.get("in_progress"),
            "expires_at": self.created_at + 24 * 3600,
            "finalizing_at": self.times.get("finalizing"),
            "completed_at": self.times.get("completed"),
            "failed_at": self.times.get("failed"),
            "expired_at": self.times.get("expired"),
            "cancelling_at": self.times.get("cancelling"),
            "cancelled_at": self.times.get("cancelled"),
            "request_counts": {
                "total": total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": dict(self.metadata) if self.metadata is not None else None,
        }


def _check_line(raw: str, number: int, endpoint: str, seen: set[str]) -> dict[str, Any] | str:
    """One input line, or why it is invalid (per the documented request input object)."""
    try:
        line = json.loads(raw)
    except ValueError:
        return "invalid_json_line: line is not valid JSON"
    if not isinstance(line, dict):
        return "invalid_json_line: line is not a JSON object"
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "missing_custom_id: every request needs a custom_id string"
    if custom_id in seen:  # "Must be unique for each request in a batch."
        return f"duplicate_custom_id: custom_id {custom_id!r} is not unique"
    seen.add(custom_id)
    if line.get("method") != "POST":  # "Currently only POST is supported."
        return f"invalid_method: method must be POST, got {line.get('method')!r}"
    if line.get("url") != endpoint:
        return f"mismatched_endpoint: url {line.get('url')!r} is not the batch's {endpoint}"
    body = line.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "invalid_body: body must be an object with a model"
    messages = body.get("messages")
    if endpoint == "/v1/chat/completions":
        if not isinstance(messages, list) or not messages:
            return "invalid_body: body.messages must be a non-empty array"
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                return f"invalid_body: bad message {m!r}"
            if m["role"] == "tool" and not m.get("tool_call_id"):
                return "invalid_body: a tool message needs tool_call_id"
            content = m.get("content")
            if content is None and not (m["role"] == "assistant" and m.get("tool_calls")):
                return "invalid_body: message content is missing"
    return line


def _turns(body: Mapping[str, Any]) -> Turns:
    system: list[str] = []
    texts: list[str] = []
    last_user = ""
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        text = content or ""
        if m.get("role") in ("system", "developer"):
            system.append(text)
        else:
            texts.append(text)
            if m.get("role") == "user":
                last_user = text
    return Turns(str(body.get("model")), "\n\n".join(system) or None, tuple(texts), last_user)


class FakeOpenAIBatchServer(FakeBatchServer):
    """The OpenAI Files + Batch endpoints on 127.0.0.1; point ``base_url`` at :attr:`url`."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}

    @property
    def url(self) -> str:
        """The SDK's ``base_url`` (OpenAI's paths sit under ``/v1``)."""
        return self.origin + "/v1"

    def omit_unrun(self) -> None:
        """Leave requests that never ran out of the error file (providers must cope)."""
        self.script.omit_unrun = True

    def expected_usage(self, reply: Reply, *, first_write: bool) -> Usage:
        # OpenAI reports no cache writes; a prefix is read from the cache once written.
        cached = 0 if first_write else reply.cached_prefix_tokens
        return Usage(reply.prompt_tokens, reply.output_tokens, cached, 0, 0, 0)

    # -- HTTP ---------------------------------------------------------------------------

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        return {
            "error": {
                "message": message,
                "type": kind or "invalid_request_error",
                "param": None,
                "code": None,
            }
        }

    def _error(self, status: int, message: str, kind: str | None = None) -> Response:
        return Response.json(status, self.error_body(status, message, kind))

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Incorrect API key provided.", "invalid_request_error")
        with self.lock:
            if method == "POST" and path == "/v1/files":
                return self._upload(headers, body)
            if m := re.fullmatch(r"/v1/files/([^/]+)(/content)?", path):
                file = self.files.get(m.group(1))
                if file is None or method != "GET":
                    return self._error(404, f"No such File object: {m.group(1)}")
                if m.group(2):
                    return Response(200, file.data, "application/octet-stream")
                return Response.json(200, file.obj())
            if method == "POST" and path == "/v1/batches":
                return self._create(body)
            if method == "GET" and path == "/v1/batches":
                return self._list()
            if m := re.fullmatch(r"/v1/batches/([^/]+)(/cancel)?", path):
                batch = self.batches.get(m.group(1))
                if batch is None:
                    return self._error(404, f"No batch found with id '{m.group(1)}'.")
                if m.group(2) and method == "POST":
                    return self._cancel(batch)
                if method == "GET" and not m.group(2):
                    self._advance(batch)
                    return Response.json(200, batch.obj())
            return self._error(404, f"Invalid URL ({method} {path})")

    def _list(self) -> Response:
        """``GET /v1/batches``: newest first, ``limit`` (1-100, default 20) after ``after``."""
        limit = int(self.query.get("limit", 20))
        if not 1 <= limit <= 100:
            return self._error(400, "Invalid 'limit': must be between 1 and 100.")
        newest = list(reversed(self.batches.values()))  # created in insertion order
        chunk, more = self.page(newest, self.query.get("after", ""), limit)
        data = [b.obj() for b in chunk]
        return Response.json(
            200,
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            },
        )

    def _upload(self, headers: Mapping[str, str], body: bytes) -> Response:
        ctype = headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return self._error(400, "Uploads must be multipart/form-data.")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + body
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (
                part.get_filename(),
                payload if isinstance(payload, bytes) else b"",
            )
        purpose = fields.get("purpose", (None, b""))[1].decode()
        filename, data = fields.get("file", (None, b""))
        if "file" not in fields:
            return self._error(400, "Missing required parameter: 'file'.")
        if purpose not in ("batch", "fine-tune", "assistants", "vision", "user_data", "evals"):
            return self._error(400, f"Invalid value for 'purpose': {purpose!r}.")
        if purpose == "batch":
            if not (filename or "").endswith(".jsonl"):
                return self._error(400, "Batch input files must be .jsonl files.")
            if len(data) > MAX_FILE_BYTES:
                return self._error(400, f"File is too large: {len(data)} bytes (max 200 MB).")
        file = _File(self.new_id("file-"), purpose, filename or "upload", data, int(time.time()))
        self.files[file.id] = file
        return Response.json(200, file.obj())

    def _create(self, body: bytes) -> Response:
        try:
            params = json.loads(body)
        except ValueError:
            return self._error(400, "We could not parse the JSON body of your request.")
        if params.get("completion_window") != "24h":  # "Currently only 24h is supported."
            return self._error(400, "Invalid value for 'completion_window': must be '24h'.")
        endpoint = params.get("endpoint")
        if endpoint not in ENDPOINTS:
            return self._error(400, f"Invalid value for 'endpoint': {endpoint!r}.")
        file = self.files.get(str(params.get("input_file_id")))
        if file is None:
            return self._error(400, f"Invalid 'input_file_id': {params.get('input_file_id')!r}.")
        if file.purpose != "batch":
            return self._error(400, "The input file must be uploaded with purpose 'batch'.")
        metadata = params.get("metadata")
        if metadata is not None and (
            len(metadata) > 16
            or any(
                len(k) > 64 or not isinstance(v, str) or len(v) > 512 for k, v in metadata.items()
            )
        ):
            return self._error(400, "Invalid 'metadata': at most 16 string pairs.")
        lines, errors = self._validate(file.data.decode("utf-8"), str(endpoint))
        batch = _Batch(
            id=self.new_id("batch_"),
            input_file_id=file.id,
            endpoint=str(endpoint),
            metadata=metadata,
            created_at=int(time.time()),
            lines=lines,
            errors=errors,
            hold=self.script.hold_polls,
            expire_after=self.script.expire_after,
            cancel_after=self.script.cancel_after,
            omit_unrun=self.script.omit_unrun,
        )
        self.batches[batch.id] = batch
        return Response.json(200, batch.obj())

    @staticmethod
    def _validate(text: str, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lines: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        raw_lines = [raw for raw in text.split("\n") if raw.strip()]
        if not raw_lines:
            errors.append({"code": "empty_file", "message": "The input file is empty."})
        if len(raw_lines) > MAX_REQUESTS:
            errors.append(
                {"code": "too_many_requests", "message": f"{len(raw_lines)} requests > 50,000."}
            )
        for number, raw in enumerate(raw_lines, start=1):
            checked = _check_line(raw, number, endpoint, seen)
            if isinstance(checked, str):
                code, message = checked.split(": ", 1)
                errors.append({"code": code, "message": message, "line": number, "param": None})
                continue
            lines.append(checked)
            models.add(str(checked["body"]["model"]))
            # The Batch guide: "each input file can only include requests to a single model".
            if len(models) > 1:
                errors.append(
                    {
                        "code": "mismatched_model",
                        "message": "All requests in a batch must use the same model.",
                        "line": number,
                        "param": "body.model",
                    }
                )
                models = {next(iter(models))}
        return lines, errors

    # -- running a batch ----------------------------------------------------------------

    def _advance(self, batch: _Batch) -> None:
        """One status read's worth of progress."""
        now = int(time.time())
        if batch.status == "validating":
            if batch.errors:
                batch.status, batch.times["failed"] = "failed", now
            else:
                batch.status, batch.times["in_progress"] = "in_progress", now
        elif batch.status == "in_progress":
            if batch.hold > 0:
                batch.hold -= 1
            elif batch.expire_after is not None:
                self._finish(batch, batch.expire_after, unrun_code="batch_expired")
                batch.status, batch.times["expired"] = "expired", now
            else:
                batch.status, batch.times["finalizing"] = "finalizing", now
        elif batch.status == "finalizing":
            self._finish(batch, len(batch.lines), unrun_code=None)
            batch.status, batch.times["completed"] = "completed", now
        elif batch.status == "cancelling":
            self._finish(batch, batch.cancel_after, unrun_code="batch_cancelled")
            batch.status, batch.times["cancelled"] = "cancelled", now

    def _cancel(self, batch: _Batch) -> Response:
        if batch.status not in ("validating", "in_progress", "finalizing"):
            return self._error(400, f"Cannot cancel a batch with status '{batch.status}'.")
        batch.status, batch.times["cancelling"] = "cancelling", int(time.time())
        return Response.json(200, batch.obj())

    def _finish(self, batch: _Batch, run: int, unrun_code: str | None) -> None:
        """Run the first ``run`` requests; write the output and error files."""
        outputs: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, line in enumerate(batch.lines):
            custom_id = str(line["custom_id"])
            if i >= run:
                if unrun_code and not batch.omit_unrun:
                    failures.append(self._unrun_line(custom_id, unrun_code))
                continue
            turns = _turns(line["body"])
            first = turns.system is not None and turns.system not in seen
            if turns.system:
                seen.add(turns.system)
            kind = self.failure_for(custom_id, turns.model)
            if kind is None:
                outputs.append(self._success_line(custom_id, turns, first_write=first))
            else:
                failures.append(self._failure_line(custom_id, kind))
        batch.completed, batch.failed = (
            len(outputs),
            sum(1 for f in failures if f["response"] is not None),
        )
        if outputs:
            batch.output_file_id = self._store_output(outputs, "batch_output.jsonl")
        if failures:
            batch.error_file_id = self._store_output(failures, "batch_errors.jsonl")

    def _store_output(self, lines: list[dict[str, Any]], name: str) -> str:
        data = "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")
        file = _File(self.new_id("file-"), "batch_output", name, data, int(time.time()))
        self.files[file.id] = file
        return file.id

    def _success_line(self, custom_id: str, turns: Turns, *, first_write: bool) -> dict[str, Any]:
        reply = reply_for(turns)
        cached = 0 if first_write else reply.cached_prefix_tokens
        body = {
            "id": self.new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": turns.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.output_tokens,
                "total_tokens": reply.prompt_tokens + reply.output_tokens,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "system_fingerprint": "fp_fake",
        }
        return {
            "id": self.new_id("batch_req_"),
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": self.new_id("req_"), "body": body},
            "error": None,
        }

    def _failure_line(self, custom_id: str, kind: FailureKind) -> dict[str, Any]:
        status, code, message = _HTTP_FAILURES[kind]
        etype = {"rate_limit": "requests", "server": "server_error"}.get(
            kind, "invalid_request_error"
        )
        return {
            "id": self.new_id("batch_req_"),
            "custom_id": custom_id,
            "response": {
                "status_code": status,
                "request_id": self.new_id("req_"),
                "body": {"error": {"message": message, "type": etype, "param": None, "code": code}},
            },
            "error": None,
        }

    def _unrun_line(self, custom_id: str, code: str) -> dict[str, Any]:
        message = (
            "This request could not be executed before the completion window expired."
            if code == "batch_expired"
            else "This request was not executed because the batch was cancelled."
        )
        return {
            "id": self.new_id("batch_req_"),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
