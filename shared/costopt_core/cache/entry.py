"""What the cache stores and returns, framework-neutral.

A ``CachedResponse`` keeps the answer in neutral fields (text, tool calls,
structured output, finish reason, model, usage) that any adapter can rebuild a
message from, plus an optional ``payload``: the adapter's own lossless
serialization (e.g. LangChain's ``dumps`` of the generations), so a round trip
through the same framework is exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from costopt_core.types import Usage

__all__ = ["CacheEntry", "CacheHit", "CacheTier", "CachedResponse"]

CacheTier = Literal["exact", "semantic"]


@dataclass(frozen=True)
class CachedResponse:
    """A model answer as the cache keeps it."""

    text: str
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    structured: Any = None
    #: The adapter's own lossless serialization, tagged with its format.
    payload: str | None = None
    payload_format: str | None = None
    #: HMAC of the entry holding this response, when the cache signs entries.
    signature: str | None = None

    def to_json(self) -> str:
        extra = {} if self.signature is None else {"signature": self.signature}
        return json.dumps(
            {
                **extra,
                "text": self.text,
                "model": self.model,
                "usage": self.usage.to_dict(),
                "finish_reason": self.finish_reason,
                "tool_calls": list(self.tool_calls),
                "structured": self.structured,
                "payload": self.payload,
                "payload_format": self.payload_format,
            },
            sort_keys=True,
            default=str,
        )

    @classmethod
    def from_json(cls, text: str) -> CachedResponse:
        d = json.loads(text)
        return cls(
            text=d.get("text", ""),
            model=d.get("model"),
            usage=Usage.from_dict(d.get("usage") or {}),
            finish_reason=d.get("finish_reason"),
            tool_calls=tuple(d.get("tool_calls") or ()),
            structured=d.get("structured"),
            payload=d.get("payload"),
            payload_format=d.get("payload_format"),
            signature=d.get("signature"),
        )


@dataclass(frozen=True)
class CacheEntry:
    """One stored answer.

    ``scope`` is the hard partition (model, answer-changing parameters, system
    prompt, tools, tenant) as an opaque hash; ``namespace`` is the tenant's
    namespace, kept separately so a whole tenant can be invalidated.
    """

    key: str
    scope: str
    namespace: str
    prompt_text: str
    response: CachedResponse
    vector: npt.NDArray[np.float32] | None = None
    tags: tuple[str, ...] = ()
    created_at: float = 0.0
    #: Absolute expiry (epoch seconds, the cache's clock); ``None`` never expires.
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def size_bytes(self) -> int:
        vec = 0 if self.vector is None else int(self.vector.nbytes)
        return len(self.prompt_text) + len(self.response.to_json()) + vec + 200


@dataclass(frozen=True)
class CacheHit:
    """A lookup that found an answer."""

    entry: CacheEntry
    tier: CacheTier
    similarity: float

    @property
    def response(self) -> CachedResponse:
        return self.entry.response
