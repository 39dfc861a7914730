"""Translation between engine batch types and the providers' batch wire formats.

Pure functions over plain JSON data, so the OpenAI and Anthropic providers'
sync and async paths share them, and they can be tested without a server:
``BatchRequest`` -> a JSONL line (OpenAI) or a ``{custom_id, params}`` entry
(Anthropic); a result line -> ``BatchResult``; a provider batch status ->
``RemoteBatch`` status and counts. Token usage goes through
``costopt_core.usage`` and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from costopt_core.batch.provider import (
    BatchLimits,
    BatchRequest,
    BatchResult,
    RemoteStatus,
    retryable_status,
)
from costopt_core.errors import ConfigurationError
from costopt_core.types import Message
from costopt_core.usage import normalize_usage

__all__ = [
    "ANTHROPIC_DEFAULT_MAX_TOKENS",
    "ANTHROPIC_LIMITS",
    "COUNT_KEYS",
    "OPENAI_CHAT_ENDPOINT",
    "OPENAI_LIMITS",
    "anthropic_counts",
    "anthropic_messages",
    "anthropic_request",
    "anthropic_request_size",
    "anthropic_result",
    "check_batch",
    "check_custom_id",
    "job_custom_id",
    "openai_batch_counts",
    "openai_batch_status",
    "openai_chat_body",
    "openai_jsonl_line",
    "openai_line_result",
    "openai_messages",
    "openai_missing_result",
    "parse_jsonl",
]

#: The one endpoint the OpenAI provider batches (chat requests).
OPENAI_CHAT_ENDPOINT = "/v1/chat/completions"

# OpenAI Batch API: "The file can contain up to 50,000 requests, and can be up to
# 200 MB in size" (batches.create reference, ``input_file_id``; the same text is in
# the openai SDK's ``resources/batches.py``). MB read as 10^6 bytes: the smaller reading.
OPENAI_LIMITS = BatchLimits(max_requests=50_000, max_bytes=200 * 1_000_000)

# Anthropic Message Batches: "A Message Batch is limited to either 100,000 Message
# requests or 256 MB in size, whichever is reached first" (batch-processing guide,
# "Batch limitations"; the API reference gives ``requests`` maxItems 100000). The
# 256 MB is the whole request body: keep 64 KiB for its ``{"requests": [...]}`` frame.
ANTHROPIC_LIMITS = BatchLimits(max_requests=100_000, max_bytes=256 * 1_000_000 - 65_536)

#: ``max_tokens`` is required by Anthropic; LangChain's ``ChatAnthropic`` default.
ANTHROPIC_DEFAULT_MAX_TOKENS = 1024

#: Anthropic's ``custom_id`` rule (Message Batches API reference); OpenAI's ids fit it too.
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

#: The keys of ``RemoteBatch.counts``, the same for every provider.
COUNT_KEYS = ("processing", "succeeded", "errored", "canceled", "expired")

# Anthropic error types worth retrying: capacity and transient server faults.
_ANTHROPIC_RETRYABLE = frozenset(
    {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}
)


def check_custom_id(request_id: str) -> None:
    """Reject an id the Anthropic API would refuse (and OpenAI may), before any upload.

    Raises:
        ConfigurationError: ``request_id`` is not 1-64 letters, digits, ``_`` or ``-``.
    """
    if not _CUSTOM_ID.match(request_id):
        raise ConfigurationError(
            f"batch request id {request_id!r} is not a valid custom_id: use 1-64 letters,"
            " digits, '_' or '-' (the providers' rule for custom_id)"
        )


def job_custom_id(job_key: str, request_id: str) -> str:
    """The ``custom_id`` a job sends for one of its requests: unique to the job, always valid.

    ``<job_key>-<request_id>`` when that fits the providers' rule, so the id
    stays readable at the provider; otherwise (an id with other characters,
    or too long) ``<job_key>_`` and a hash of it, so no id the caller picked
    can make the provider refuse the batch. The two forms differ in the
    character after the key, so they never collide.

    Args:
        job_key: the job's key (letters and digits, at most 12 characters).
        request_id: the caller's id, unique within the job.
    """
    readable = f"{job_key}-{request_id}"
    if _CUSTOM_ID.match(readable):
        return readable
    digest = hashlib.sha256(request_id.encode("utf-8")).hexdigest()
    return f"{job_key}_{digest[: 63 - len(job_key)]}"


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


# Characters other than "\n" and "\r" that some readers take for line breaks
# (``str.splitlines`` does, and JavaScript did before ES2019). ``json.dumps``
# escapes the C0 ones (``\x1c``...) itself; these three it leaves raw.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_LINE_BREAK = re.compile("[\x85\u2028\u2029]")


def _jsonl_dumps(data: Any) -> str:
    """``data`` as one JSONL line (no newline) that no reader splits, whatever its text.

    Non-ASCII text stays raw UTF-8 (a line's size is what the limits count),
    except for the Unicode line breaks, written as ``\\uXXXX`` escapes: raw,
    they can occur only inside a JSON string, where the escape means the same.
    """
    return _LINE_BREAK.sub(lambda m: _LINE_BREAKS[m.group()], _dumps(data))


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL text (blank lines skipped).

    Lines end at ``"\\n"`` only (a ``"\\r"`` before it is dropped): a JSON
    string may hold other characters ``str.splitlines`` breaks at (U+2028,
    U+0085, ``\\x1c``...) raw, and such a line still is one line.
    """
    out: list[dict[str, Any]] = []
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if line.strip():
            obj = json.loads(line)
            if isinstance(obj, dict):
                out.append(obj)
    return out


def _not_run(custom_id: str, status: Literal["expired", "canceled"], error: str) -> BatchResult:
    # Never judged: an expired request may go in another batch; a canceled one was
    # stopped on purpose, so it is not retried.
    return BatchResult(id=custom_id, status=status, error=error, retryable=status == "expired")


# -- OpenAI ------------------------------------------------------------------------------


def _openai_tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    if "function" in call:  # already in OpenAI's shape
        return dict(call)
    args = call.get("args", {})
    return {
        "id": call.get("id"),
        "type": "function",
        "function": {
            "name": call.get("name"),
            "arguments": args if isinstance(args, str) else _dumps(args),
        },
    }


def openai_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Engine messages as Chat Completions ``messages``."""
    out: list[dict[str, Any]] = []
    for m in messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name and m.role in ("system", "user", "assistant"):
            msg["name"] = m.name
        if m.role == "assistant" and m.tool_calls:
            msg["tool_calls"] = [_openai_tool_call(c) for c in m.tool_calls]
            if not m.content:
                msg["content"] = None
        if m.role == "tool":
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out


def openai_chat_body(request: BatchRequest) -> dict[str, Any]:
    """The Chat Completions request body of ``request`` (``params`` sent as given)."""
    return {
        **dict(request.params),
        "model": request.model,
        "messages": openai_messages(request.messages),
    }


def openai_jsonl_line(request: BatchRequest) -> bytes:
    """``request`` as one line of a Batch API input file, newline included."""
    line = {
        "custom_id": request.id,
        "method": "POST",
        "url": OPENAI_CHAT_ENDPOINT,
        "body": openai_chat_body(request),
    }
    return (_jsonl_dumps(line) + "\n").encode("utf-8")


def openai_batch_status(status: str) -> RemoteStatus:
    """An OpenAI batch status (``validating`` ... ``cancelled``) as a ``RemoteStatus``."""
    if status in ("validating", "in_progress", "finalizing"):
        return "in_progress"
    if status == "cancelling":
        return "canceling"
    return "ended"  # completed, failed, expired, cancelled


def openai_batch_counts(status: str, total: int, completed: int, failed: int) -> dict[str, int]:
    """OpenAI's ``request_counts`` spread over the common ``COUNT_KEYS``.

    OpenAI counts only completed and failed requests; what is neither is still
    processing, or, once the batch expired or was cancelled, expired or canceled.
    """
    counts = dict.fromkeys(COUNT_KEYS, 0)
    rest = max(total - completed - failed, 0)
    if status == "failed":  # the input failed validation: nothing ran
        counts["errored"] = total
        return counts
    counts["succeeded"], counts["errored"] = completed, failed
    if status in ("expired", "cancelled"):
        counts["expired" if status == "expired" else "canceled"] = rest
    elif status != "completed":
        counts["processing"] = rest
    return counts


def _openai_error_text(body: Any, fallback: str) -> str:
    err = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(err, Mapping):
        kind = err.get("code") or err.get("type")
        message = err.get("message") or fallback
        return f"{kind}: {message}" if kind else str(message)
    return fallback


def openai_line_result(line: Mapping[str, Any]) -> BatchResult:
    """One line of a batch's output or error file as a ``BatchResult``.

    HTTP 200 -> ``succeeded``; another status -> ``errored``, retryable on 408,
    429 and 5xx; a non-HTTP ``error`` -> ``expired`` (``batch_expired``, retryable),
    ``canceled`` (``batch_cancelled``) or ``errored`` (retryable: the request
    itself was never judged).
    """
    custom_id = str(line.get("custom_id"))
    response = line.get("response")
    error = line.get("error")
    if isinstance(response, Mapping):
        status_code = int(response.get("status_code") or 0)
        body = response.get("body")
        body = body if isinstance(body, Mapping) else {}
        if status_code == 200:
            choices = body.get("choices") or [{}]
            message = choices[0].get("message") or {}
            return BatchResult(
                id=custom_id,
                status="succeeded",
                text=message.get("content") or "",
                usage=normalize_usage(body.get("usage"), "openai"),
                model=body.get("model"),
                raw=body,
            )
        return BatchResult(
            id=custom_id,
            status="errored",
            error=f"HTTP {status_code}: " + _openai_error_text(body, "request failed"),
            retryable=retryable_status(status_code),
            raw=body or None,
        )
    err = error if isinstance(error, Mapping) else {}
    code = str(err.get("code") or "unknown_error")
    message = f"{code}: {err.get('message') or 'no message'}"
    if code in ("batch_expired", "batch_cancelled"):
        return _not_run(custom_id, "expired" if code == "batch_expired" else "canceled", message)
    return BatchResult(id=custom_id, status="errored", error=message, retryable=True)


def openai_missing_result(custom_id: str, batch_status: str) -> BatchResult:
    """The result of a request that is in neither the output nor the error file."""
    if batch_status == "expired":
        error = "batch_expired: not run before the 24h completion window ended"
        return _not_run(custom_id, "expired", error)
    if batch_status in ("cancelled", "cancelling"):
        return _not_run(custom_id, "canceled", "batch_cancelled: the batch was cancelled")
    return BatchResult(
        id=custom_id,
        status="errored",
        error=f"missing_result: the {batch_status} batch reported nothing for this request",
        retryable=True,
    )


# -- Anthropic ---------------------------------------------------------------------------


def _anthropic_assistant_content(m: Message) -> str | list[dict[str, Any]]:
    if not m.tool_calls:
        return m.content
    blocks: list[dict[str, Any]] = []
    if m.content:
        blocks.append({"type": "text", "text": m.content})
    for call in m.tool_calls:
        if "function" in call:  # OpenAI's shape
            fn = call["function"]
            args = fn.get("arguments") or "{}"
            name, args = fn.get("name"), json.loads(args) if isinstance(args, str) else args
        else:
            name, args = call.get("name"), call.get("args", {})
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": name, "input": args})
    return blocks


def anthropic_messages(
    messages: Sequence[Message],
) -> tuple[str | None, list[dict[str, Any]]]:
    """Engine messages as Anthropic's top-level ``system`` and ``messages``.

    System messages move to ``system`` (joined by blank lines); tool results
    become ``tool_result`` blocks of a user turn, consecutive ones in one turn,
    as the API wants them right after the assistant's ``tool_use``.
    """
    system = [m.content for m in messages if m.role == "system"]
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            last = out[-1] if out else None
            if last and last["role"] == "user" and isinstance(last["content"], list):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        if m.role == "assistant":
            out.append({"role": "assistant", "content": _anthropic_assistant_content(m)})
        else:
            out.append({"role": "user", "content": m.content})
    return ("\n\n".join(system) if system else None), out


def anthropic_request(
    request: BatchRequest, *, default_max_tokens: int = ANTHROPIC_DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """``request`` as one entry of ``messages.batches.create(requests=[...])``."""
    system, messages = anthropic_messages(request.messages)
    params: dict[str, Any] = dict(request.params)
    params.setdefault("max_tokens", default_max_tokens)
    if system is not None:
        given = params.get("system")
        if isinstance(given, list):  # content blocks (e.g. with cache_control): append ours
            params["system"] = [*given, {"type": "text", "text": system}]
        elif isinstance(given, str) and given:
            params["system"] = given + "\n\n" + system
        else:
            params["system"] = system
    params["model"] = request.model
    params["messages"] = messages
    return {"custom_id": request.id, "params": params}


def anthropic_request_size(entry: Mapping[str, Any]) -> int:
    """Bytes ``entry`` takes in the create body (JSON with the SDK's spacing, plus a comma)."""
    return len(json.dumps(entry, ensure_ascii=False).encode("utf-8")) + 2


def anthropic_counts(request_counts: Mapping[str, Any]) -> dict[str, int]:
    """Anthropic's ``request_counts`` as ``RemoteBatch.counts``."""
    return {key: int(request_counts.get(key) or 0) for key in COUNT_KEYS}


def anthropic_result(entry: Mapping[str, Any]) -> BatchResult:
    """One line of a Message Batch's results as a ``BatchResult``.

    ``errored`` is retryable when the error is the provider's (overloaded, API
    error, rate limit, timeout), not the request's; ``expired`` is retryable,
    ``canceled`` is not (someone asked for it).
    """
    custom_id = str(entry.get("custom_id"))
    result = entry.get("result")
    result = result if isinstance(result, Mapping) else {}
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message")
        message = message if isinstance(message, Mapping) else {}
        blocks = message.get("content") or []
        text = "".join(
            str(b.get("text", ""))
            for b in blocks
            if isinstance(b, Mapping) and b.get("type") == "text"
        )
        return BatchResult(
            id=custom_id,
            status="succeeded",
            text=text,
            usage=normalize_usage(message.get("usage"), "anthropic"),
            model=message.get("model"),
            raw=message,
        )
    if kind == "errored":
        response = result.get("error")
        response = response if isinstance(response, Mapping) else {}
        err = response.get("error")
        err = err if isinstance(err, Mapping) else response
        etype = str(err.get("type") or "api_error")
        return BatchResult(
            id=custom_id,
            status="errored",
            error=f"{etype}: {err.get('message') or 'no message'}",
            retryable=etype in _ANTHROPIC_RETRYABLE,
            raw=response or None,
        )
    if kind == "expired":
        error = "expired: not run before the batch's 24h window ended"
        return _not_run(custom_id, "expired", error)
    if kind == "canceled":
        return _not_run(custom_id, "canceled", "canceled: the batch was canceled")
    return BatchResult(
        id=custom_id,
        status="errored",
        error=f"unknown result type {kind!r}",
        retryable=True,
        raw=dict(result) or None,
    )


# -- both --------------------------------------------------------------------------------


def check_batch(
    requests: Sequence[BatchRequest], limits: BatchLimits, sizes: Sequence[int], provider: str
) -> None:
    """Refuse a batch the provider would refuse, before anything is uploaded.

    Raises:
        ConfigurationError: no requests, an invalid or repeated id, or more
            requests or bytes than ``limits`` allow (split by ``limits`` first).
    """
    if not requests:
        raise ConfigurationError(f"{provider} batch: no requests to submit; pass at least one")
    seen: set[str] = set()
    for request in requests:
        check_custom_id(request.id)
        if request.id in seen:
            raise ConfigurationError(
                f"{provider} batch: request id {request.id!r} appears twice; ids must be unique"
            )
        seen.add(request.id)
    if len(requests) > limits.max_requests:
        raise ConfigurationError(
            f"{provider} batch: {len(requests)} requests exceed the limit of"
            f" {limits.max_requests} per batch; split the requests by provider.limits"
        )
    total = sum(sizes)
    if total > limits.max_bytes:
        raise ConfigurationError(
            f"{provider} batch: {total} bytes exceed the limit of {limits.max_bytes} per"
            " batch; split the requests by provider.limits and provider.request_size"
        )
