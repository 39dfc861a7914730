"""Public fakes for tests, notebooks and demos: no keys, no network, deterministic.

- :class:`Script`: the framework-neutral part of a scripted chat model (which
  answer comes next, with which usage). The LangChain and LlamaIndex fakes in
  ``langchain_costopt.testing`` / ``llamaindex_costopt.testing`` wrap it.
- ``usage_to_*``: write a ``Usage`` in each provider's wire format, so fakes
  exercise the same normalization real providers go through.
- :class:`FakeEmbedder`: hashed bag-of-words vectors; shared words mean
  similar vectors, which is enough to test a semantic cache without a model.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from costopt_core.errors import ConfigurationError
from costopt_core.types import Usage

__all__ = [
    "FakeEmbedder",
    "Script",
    "ScriptedResponse",
    "usage_to_anthropic",
    "usage_to_gemini",
    "usage_to_langchain",
    "usage_to_openai",
]


@dataclass(frozen=True)
class ScriptedResponse:
    """One canned answer of a scripted model."""

    text: str
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=10, output_tokens=5))
    model: str = "gpt-4o-mini"
    finish_reason: str = "stop"
    tool_calls: tuple[dict[str, Any], ...] = ()
    #: Raise this instead of answering (provider errors, timeouts).
    error: Exception | None = None


class Script:
    """Hands out scripted responses in order (cycling), thread-safe.

    Args:
        responses: answers to give; plain strings get default usage.
        model: model name for plain-string responses.
        latency_s: sleep before each answer (load and timeout tests).
        cycle: start again after the last response; otherwise raise.
    """

    def __init__(
        self,
        responses: Sequence[ScriptedResponse | str],
        *,
        model: str = "gpt-4o-mini",
        latency_s: float = 0.0,
        cycle: bool = True,
    ) -> None:
        if not responses:
            raise ConfigurationError("a Script needs at least one response")
        if latency_s < 0:
            raise ConfigurationError(f"latency_s must be >= 0, got {latency_s}")
        self.responses = [
            r if isinstance(r, ScriptedResponse) else ScriptedResponse(text=r, model=model)
            for r in responses
        ]
        self.latency_s = latency_s
        self.cycle = cycle
        self.calls = 0
        self._i = 0
        self._lock = threading.Lock()

    def _take(self) -> ScriptedResponse:
        with self._lock:
            if self._i >= len(self.responses):
                if not self.cycle:
                    raise IndexError("the script has no more responses")
                self._i = 0
            r = self.responses[self._i]
            self._i += 1
            self.calls += 1
        if r.error is not None:
            raise r.error
        return r

    def next(self) -> ScriptedResponse:
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._take()

    async def anext(self) -> ScriptedResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._take()


def usage_to_langchain(u: Usage) -> dict[str, Any]:
    """LangChain ``usage_metadata`` (input includes cache reads and writes)."""
    out: dict[str, Any] = {
        "input_tokens": u.input_tokens or 0,
        "output_tokens": u.output_tokens or 0,
        "total_tokens": (u.input_tokens or 0) + (u.output_tokens or 0),
    }
    details = {
        k: v
        for k, v in {
            "cache_read": u.cache_read_tokens,
            "ephemeral_5m_input_tokens": u.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
        }.items()
        if v is not None
    }
    if details:
        out["input_token_details"] = details
    if u.reasoning_tokens is not None:
        out["output_token_details"] = {"reasoning": u.reasoning_tokens}
    return out


def _no_cache_writes(u: Usage, fmt: str) -> None:
    if u.cache_write_5m_tokens or u.cache_write_1h_tokens:
        raise ConfigurationError(
            f"the {fmt} usage format has no cache-write tokens, so {u} cannot be written "
            "in it without under-pricing the call; use the anthropic or langchain format"
        )


def usage_to_openai(u: Usage) -> dict[str, Any]:
    """OpenAI Chat Completions ``usage`` (prompt_tokens includes cached_tokens)."""
    _no_cache_writes(u, "openai")
    out: dict[str, Any] = {
        "prompt_tokens": u.input_tokens or 0,
        "completion_tokens": u.output_tokens or 0,
        "total_tokens": (u.input_tokens or 0) + (u.output_tokens or 0),
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens or 0},
    }
    if u.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out


def usage_to_anthropic(u: Usage) -> dict[str, Any]:
    """Anthropic ``usage`` (input_tokens EXCLUDES cache reads and writes)."""
    w5, w1h = u.cache_write_5m_tokens or 0, u.cache_write_1h_tokens or 0
    return {
        "input_tokens": u.uncached_input_tokens or 0,
        "output_tokens": u.output_tokens or 0,
        "cache_read_input_tokens": u.cache_read_tokens or 0,
        "cache_creation_input_tokens": w5 + w1h,
        "cache_creation": {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1h},
    }


def usage_to_gemini(u: Usage) -> dict[str, Any]:
    """Gemini ``usage_metadata`` (thoughts are outside candidates)."""
    _no_cache_writes(u, "gemini")
    thoughts = u.reasoning_tokens or 0
    out: dict[str, Any] = {
        "prompt_token_count": u.input_tokens or 0,
        "cached_content_token_count": u.cache_read_tokens or 0,
        "candidates_token_count": (u.output_tokens or 0) - thoughts,
    }
    if u.reasoning_tokens is not None:
        out["thoughts_token_count"] = u.reasoning_tokens
    return out


_WORD = re.compile(r"\w+")


class FakeEmbedder:
    """Deterministic hashed bag-of-words embedder (no model, no network).

    Args:
        dim: vector size.
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 2:
            raise ConfigurationError(f"dim must be >= 2, got {dim}")
        self._dim = dim
        self.calls = 0
        self.texts_embedded = 0
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    def _one(self, text: str) -> npt.NDArray[np.float32]:
        v = np.zeros(self._dim, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            v[h % self._dim] += 1.0 if (h >> 32) & 1 else -1.0
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            v[0] = 1.0
            return v
        return v / norm

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        with self._lock:
            self.calls += 1
            self.texts_embedded += len(texts)
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.stack([self._one(t) for t in texts])

    async def aembed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.embed(texts)
