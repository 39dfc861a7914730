"""False hits that slipped past every check: near-identical long prompts, follow-ups
after different conversations, quantifiers, and/or, comparatives, roles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from costopt_core.cache import CacheConfig, CachedResponse, CacheRequest, SemanticCache
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.cache.guards import GuardConfig, check_guards
from costopt_core.cache.keys import earlier_user_turns, prepare
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message, Usage

STORED = "how do i reset my password"
ASKED = "how do i reset my password please"


def answer() -> CachedResponse:
    return CachedResponse(text="Use the reset link.", model="m", usage=Usage(10, 5))


class SizedScorer:
    """A pair model that reads pairs up to ``limit`` characters; counts its calls."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.fitted: list[tuple[str, str]] = []
        self.scored: list[tuple[str, str]] = []

    def fits(self, cached: str, query: str) -> bool:
        self.fitted.append((cached, query))
        return len(cached) + len(query) <= self.limit

    def logits(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.float32]:
        self.scored.extend(pairs)
        return np.full(len(pairs), 10.0, dtype=np.float32)


def _cache(scorer: SizedScorer) -> SemanticCache:
    # Every candidate counts as near-identical (skip at 0.01): only the fit decides.
    config = CacheConfig(
        pair_check="on", guards=GUARDS_OFF, similarity_threshold=0.5, pair_skip_similarity=0.01
    )
    return SemanticCache(embedder=FakeEmbedder(dim=256), config=config, pair_model=scorer)


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize(("limit", "served"), [(1000, True), (40, False)])
async def test_near_identical_prompts_skip_the_pair_model_only_when_it_reads_them_whole(
    sync: bool, limit: int, served: bool
) -> None:
    scorer = SizedScorer(limit)
    cache = _cache(scorer)
    ask = CacheRequest((Message("user", ASKED),))
    if sync:
        cache.store(CacheRequest((Message("user", STORED),)), answer())
        hit = cache.lookup(ask)
    else:
        await cache.astore(CacheRequest((Message("user", STORED),)), answer())
        hit = await cache.alookup(ask)
    assert (hit is not None) is served
    assert scorer.fitted == [(STORED, ASKED)] and scorer.scored == []  # skipped, never scored
    assert cache.stats().guard_rejections.get("pair_check", 0) == (0 if served else 1)


def _convo(topic: str, follow_up: str = "Now give me an example.") -> tuple[Message, ...]:
    return (
        Message("user", f"I want to learn about {topic}."),
        Message("assistant", "Sure, what would you like to know?"),
        Message("user", "Start with the basics."),
        Message("assistant", "Here are the basics."),
        Message("user", follow_up),
    )


def test_a_follow_up_after_another_conversation_is_not_served() -> None:
    # The embedded window (context_turns=2) holds the same three turns in both.
    cache = SemanticCache(embedder=FakeEmbedder(dim=256))
    cache.store(CacheRequest(_convo("Python")), answer())
    assert (
        prepare(CacheRequest(_convo("Python")), 2).text
        == prepare(CacheRequest(_convo("Rust")), 2).text
    )
    assert cache.lookup(CacheRequest(_convo("Rust"))) is None
    reworded = _convo("Python", "Now give me an example please.")
    hit = cache.lookup(CacheRequest(reworded))
    assert hit is not None and hit.tier == "semantic"  # the same conversation still shares


def test_single_turn_scopes_are_unchanged_by_the_earlier_turns() -> None:
    one = CacheRequest((Message("system", "be brief"), Message("user", "hi there friend")))
    assert earlier_user_turns(one.messages, 2) == ()
    assert earlier_user_turns(_convo("Rust"), 2) == ("I want to learn about Rust.",)
    # The scope of a single-turn request is the one stored entries already have.
    assert prepare(one, 2).scope == "b55315a99729b4f297a85d416530ca77"


@pytest.mark.parametrize(
    ("query", "candidate"),
    [
        ("Are all dogs colorblind?", "Are some dogs colorblind?"),
        ("Does every plan include phone support?", "Does any plan include phone support?"),
        (
            "Is it always necessary to restart the router?",
            "Is it ever necessary to restart the router?",
        ),
        ("Is it usually safe to eat raw eggs?", "Is it rarely safe to eat raw eggs?"),
        ("Find users who are admins and active", "Find users who are admins or active"),
        (
            "Is rail faster than flying for short trips?",
            "Is rail slower than flying for short trips?",
        ),
        ("Explain the French Revolution briefly", "Explain the French Revolution in detail"),
        ("Can my landlord enter without notice?", "Can my tenant enter without notice?"),
        ("Can I deposit cash at any branch?", "Can I withdraw cash at any branch?"),
        ("¿Puedo devolverlo antes de 30 días?", "¿Puedo devolverlo después de 30 días?"),
    ],
)
def test_other_claims_and_parties_are_polarity_mismatches(query: str, candidate: str) -> None:
    assert check_guards(query, candidate, GuardConfig()) == "polarity_mismatch"
    assert check_guards(candidate, query, GuardConfig()) == "polarity_mismatch"


@pytest.mark.parametrize(
    ("query", "candidate"),
    [
        ("How do I delete all files in a folder?", "How do I remove every file in a folder?"),
        ("Are dogs colorblind?", "Are all dogs colorblind?"),
        ("Is there any way to speed up my laptop?", "Is there some way to speed up my laptop?"),
        ("What is the difference between TCP and UDP?", "TCP vs UDP: what is the difference?"),
        ("What are some facts about NASA?", "What are the most interesting facts about NASA?"),
        ("Will Trump or Clinton win?", "Between Trump and Clinton who will win?"),
    ],
)
def test_same_claims_still_pass(query: str, candidate: str) -> None:
    assert check_guards(query, candidate, GuardConfig()) is None


CODE = (
    "def find_user(users, name):\n"
    "    for user in users:\n"
    "        if user.name == name:\n"
    "            return user\n"
    "    return None\n"
)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("return user\n", "return users\n"),
        ("for user in users:", "for user in admins:"),
        ("if user.name == name:", "if not user.name == name:"),
        ("def find_user(users, name):", "def find_user(users, key):"),
    ],
)
def test_one_token_changed_inside_pasted_code_is_another_program(old: str, new: str) -> None:
    a = "Find the bug:\n" + CODE
    b = a.replace(old, new)
    assert check_guards(b, a, GuardConfig()) == "layout_mismatch"
    assert check_guards(b, a, GuardConfig(layout=False)) != "layout_mismatch"


def test_the_words_around_the_same_code_may_differ() -> None:
    a = "Explain this code:\n" + CODE
    b = "What does this code do?\n" + CODE
    assert check_guards(b, a, GuardConfig()) is None


def test_invalidate_scope_removes_the_conversations_under_it_too() -> None:
    cache = SemanticCache(embedder=FakeEmbedder(dim=256))
    system = Message("system", "You are the ACME support bot. Refund window: 30 days.")
    convo = (system, *_convo("kettles"))
    single = (system, Message("user", "what is the refund window?"))
    for msgs in (convo, single):
        cache.store(CacheRequest(msgs, model="m"), answer())
    other = (Message("system", "Another bot."), Message("user", "what is the refund window?"))
    cache.store(CacheRequest(other, model="m"), answer())
    assert cache.invalidate_scope(CacheRequest((system, Message("user", "x")), model="m")) == 2
    assert cache.lookup(CacheRequest(convo, model="m")) is None
    assert cache.lookup(CacheRequest(other, model="m")) is not None  # another scope stays


def test_a_snippet_that_starts_indented_keeps_the_words_above_it_free() -> None:
    snippet = "    for user in users:\n        print(user)"
    a, b = "Explain this code:\n" + snippet, "What does this code do?\n" + snippet
    assert check_guards(b, a, GuardConfig()) is None
    assert check_guards(b.replace("print(user)", "print(users)"), a, GuardConfig()) == (
        "layout_mismatch"
    )


def test_the_same_words_from_two_named_speakers_are_two_questions() -> None:
    """In a chat of several users, Bob was served Alice's personal answer at
    similarity 1.0: message names were in the exact key only. Found by a review."""
    cache = SemanticCache(embedder=FakeEmbedder(dim=256))
    asked = "how many overdue invoices do i have?"
    alice = CacheRequest((Message("user", asked, name="alice"),), model="m")
    bob = CacheRequest((Message("user", asked, name="bob"),), model="m")
    cache.store(alice, CachedResponse(text="Alice, you have 3.", model="m", usage=Usage(9, 4)))
    assert cache.lookup(bob) is None
    hit = cache.lookup(CacheRequest((Message("user", asked + " ", name="alice"),), model="m"))
    assert hit is not None and hit.response.text == "Alice, you have 3."
    unnamed = CacheRequest((Message("user", asked),), model="m")
    assert prepare(unnamed, 2).scope == prepare(unnamed, 2).base_scope  # scopes as before
    assert cache.lookup(unnamed) is None
    # invalidate_scope finds named conversations under the scope they share.
    assert cache.invalidate_scope(unnamed) == 1
    assert cache.lookup(alice) is None
