"""Keeps the KV state of recent prompts, so interleaved conversations keep their prefix.

llama.cpp holds one context: it reuses the previous prompt's tokens as a
prefix, and nothing else. Two conversations (or a conversation and one-off
questions) taking turns therefore re-read each other's history on every call
(seconds for a 1,000-token history on a small CPU). llama-cpp-python can keep
states in RAM (``LlamaRAMCache``), but its ``save_state``/``load_state`` copy
the logits buffer as well (``n_batch`` x vocabulary floats: 100 MB for
SmolLM2) and scan it on every restore, which costs most of what the cache
saves. Sampling does not read those logits (a restored state is decoded
again from its last token), so the state kept here is the KV data and the
tokens only.

The cache follows llama-cpp-python's cache protocol: the model looks up the
stored prompt sharing the longest prefix with a new one, restores it if it
shares more than the live context, and stores the state after each answer.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["PrefixStateCache", "install_prefix_cache", "longest_prefix"]


def longest_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PrefixStateCache:
    """Model states by prompt tokens, least recently used out first, within a byte budget.

    Args:
        capacity_bytes: the most KV data kept (a 2,000-token SmolLM2 state is
            about 46 MB).
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._states: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._bytes = 0

    def __bool__(self) -> bool:
        # llama-cpp-python tests ``if self.cache:``; an empty cache must still be used.
        return True

    @property
    def entries(self) -> int:
        """How many states are held."""
        return len(self._states)

    @property
    def cache_size(self) -> int:
        """Bytes of KV data held."""
        return self._bytes

    def _longest(self, key: Sequence[int]) -> tuple[int, ...] | None:
        best, best_len = None, 0
        for stored in self._states:
            n = longest_prefix(stored, key)
            if n > best_len:
                best, best_len = stored, n
        return best

    def __getitem__(self, key: Sequence[int]) -> Any:
        stored = self._longest(key)
        if stored is None:
            raise KeyError("no stored prompt shares a prefix with this one")
        self._states.move_to_end(stored)
        return self._states[stored]

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._longest(key) is not None

    def __setitem__(self, key: Sequence[int], state: Any) -> None:
        k = tuple(key)
        old = self._states.pop(k, None)
        if old is not None:
            self._bytes -= old.llama_state_size
        if state.llama_state_size > self.capacity_bytes:
            return  # larger than the whole budget: keeping it would evict everything
        self._states[k] = state
        self._bytes += state.llama_state_size
        while self._bytes > self.capacity_bytes:
            _, evicted = self._states.popitem(last=False)
            self._bytes -= evicted.llama_state_size


def _save(llama: Any) -> Any:
    """The KV data and tokens of the live context (no logits copy)."""
    import llama_cpp

    ctx = llama._ctx.ctx
    size = int(llama_cpp.llama_state_get_size(ctx))
    buf = (ctypes.c_uint8 * size)()
    written = int(llama_cpp.llama_state_get_data(ctx, buf, size))
    if written > size:
        raise RuntimeError("llama.cpp wrote more state than it said it would")
    n = int(llama.n_tokens)
    return llama_cpp.LlamaState(
        input_ids=np.array(llama.input_ids[:n], dtype=np.intc),
        scores=np.empty((0, 0), dtype=np.single),
        n_tokens=n,
        llama_state=bytes(memoryview(buf)[:written]),
        llama_state_size=written,
        seed=llama._seed,
    )


def _load(llama: Any, state: Any) -> None:
    """Restore a state saved by :func:`_save`; the next call decodes its last token again."""
    import llama_cpp

    size = int(state.llama_state_size)
    buf = (ctypes.c_uint8 * size).from_buffer_copy(state.llama_state)
    if int(llama_cpp.llama_state_set_data(llama._ctx.ctx, buf, size)) != size:
        raise RuntimeError("llama.cpp did not take the whole saved state")
    n = int(state.n_tokens)
    llama.input_ids[:n] = state.input_ids
    llama.n_tokens = n
    llama._seed = state.seed
    llama._requires_eval = True


def install_prefix_cache(llama: Any, capacity_bytes: int) -> PrefixStateCache:
    """Give a ``llama_cpp.Llama`` a lean prefix-state cache of ``capacity_bytes``."""
    cache = PrefixStateCache(capacity_bytes)
    llama.set_cache(cache)
    # Per instance: this model's states skip the logits buffer (see the module docstring).
    llama.save_state = lambda: _save(llama)
    llama.load_state = lambda state: _load(llama, state)
    return cache
