"""False-hit guards, the semantic accept decision, and threshold calibration.

No model here: guards are pure string functions and calibration runs on the
hashed bag-of-words ``FakeEmbedder`` or on explicit similarity scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from costopt_core.cache.calibrate import (
    CalibrationResult,
    calibrate_from_scores,
    calibrate_threshold,
    guard_verdicts,
    pair_similarities,
    wilson_lower_bound,
)
from costopt_core.cache.defaults import DEFAULT_GUARDS, DEFAULT_SIMILARITY_THRESHOLD, GUARDS_OFF
from costopt_core.cache.guards import (
    REASONS,
    GuardConfig,
    SemanticDecision,
    check_guards,
    decide,
    extract_features,
)
from costopt_core.errors import ConfigurationError
from costopt_core.testing import FakeEmbedder
from costopt_core.text import normalize_text

DEFAULT = GuardConfig()


# --- each guard: rejects what it should, accepts paraphrases ----------------


@pytest.mark.parametrize(
    ("query", "candidate", "reason"),
    [
        # numbers, digits and words alike
        ("Is 7 a prime number?", "Is 9 a prime number?", "number_mismatch"),
        ("What can I buy for 500 dollars?", "What can I buy for 1,000 dollars?", "number_mismatch"),
        (
            "Is the 4th state of matter plasma?",
            "Is the fifth state of matter plasma?",
            "number_mismatch",
        ),
        ("Lessons you learned in your 40s?", "Lessons you learned in your 50s?", "number_mismatch"),
        # dates
        (
            "Which festivals take place in July?",
            "Which festivals take place in August?",
            "date_mismatch",
        ),
        # names: capitalised words, acronyms, mixed case, letters+digits, quotes
        (
            "What is the best way to learn Python?",
            "What is the best way to learn Java?",
            "entity_mismatch",
        ),
        (
            "Is IIT better than NIT for engineering?",
            "Is IIT better than BITS for engineering?",
            "entity_mismatch",
        ),
        ("How do I learn C++ quickly?", "How do I learn C# quickly?", "entity_mismatch"),
        (
            "Is the iPhone better than the Pixel?",
            "Is the Galaxy better than the Pixel?",
            "entity_mismatch",
        ),
        (
            "Is the A320 safer than other jets?",
            "Is the B737 safer than other jets?",
            "entity_mismatch",
        ),
        ('What does "carpe diem" mean?', 'What does "memento mori" mean?', "entity_mismatch"),
        ("How is life in New York?", "How is life in New Delhi?", "entity_mismatch"),
        # negation
        ("Why do cats purr?", "Why don't cats purr?", "negation_mismatch"),
        (
            "Is it safe to drive with a cold?",
            "Is it not safe to drive with a cold?",
            "negation_mismatch",
        ),
        # polarity
        (
            "Where can I buy used books online?",
            "Where can I sell used books online?",
            "polarity_mismatch",
        ),
        (
            "What are the advantages of solar power?",
            "What are the disadvantages of solar power?",
            "polarity_mismatch",
        ),
        (
            "Which is the best phone to buy?",
            "Which is the worst phone to buy?",
            "polarity_mismatch",
        ),
        # question word
        (
            "How did God create the universe?",
            "Why did God create the universe?",
            "question_word_mismatch",
        ),
        ("Where do penguins live?", "When do penguins live?", "question_word_mismatch"),
        ("How many people live in Tokyo?", "How big is Tokyo?", "question_word_mismatch"),
        # very short queries only hit the same words
        ("Python?", "Python language?", "too_short"),
        ("Best laptops", "Best laptops 2024", "too_short"),
    ],
)
def test_guard_rejects(query: str, candidate: str, reason: str) -> None:
    assert check_guards(query, candidate, DEFAULT) == reason
    assert reason in REASONS


@pytest.mark.parametrize(
    ("query", "candidate"),
    [
        ("How do I lose 10 kg in 2 months?", "How can I lose 10 kg within two months?"),
        ("Can I earn 3,000 dollars a month?", "Can I earn 3000 dollars a month?"),
        (
            "What should I study in the 1st year of MBBS?",
            "What should I study in first year of MBBS?",
        ),
        ("Why is Donald Trump so popular?", "Why is Trump so popular?"),
        ("How do I get a work visa for the US?", "How do I get a work visa for America?"),
        (
            "What Is The Best Way To Learn Cooking Fast?",
            "What is the best way to learn cooking quickly?",
        ),
        ("Why can't I sleep at night?", "Why am I not able to sleep at night?"),
        ("What are the advantages and disadvantages of X?", "What are the pros and cons of X?"),
        ("How can I improve my English?", "What is the best way to improve my English?"),
        ("How do I improve my English?", "How can I improve my English speaking?"),
        ("What are some psychology hacks?", "What are some cool Psychological hacks?"),
        ("python", "Python!"),
        ("What is the capital of France?", "What's the capital city of France?"),
        ("Which laptop should I buy for programming?", "What laptop should I buy for coding?"),
    ],
)
def test_paraphrases_pass(query: str, candidate: str) -> None:
    assert check_guards(query, candidate, DEFAULT) is None


def test_number_guard_is_two_sided_by_default() -> None:
    q, c = "What is the best phone?", "What is the best phone under 200 dollars?"
    assert check_guards(q, c, DEFAULT) is None
    strict = GuardConfig(numbers_one_sided=True)
    assert check_guards(q, c, strict) == "number_mismatch"
    assert check_guards(c, q, strict) == "number_mismatch"


def test_entity_guard_is_substitution_only_by_default() -> None:
    q, c = "How do I get a student visa?", "How do I get a student visa for Canada?"
    assert check_guards(q, c, DEFAULT) is None
    assert check_guards(q, c, GuardConfig(entities_one_sided=True)) == "entity_mismatch"


def test_sentence_initial_capital_is_not_a_name() -> None:
    # "Cooking" and "Baking" only carry a capital because they start a sentence.
    assert extract_features("Cooking tips for beginners?").names == ()
    assert extract_features("Tips? Baking for beginners").names == ()
    assert extract_features("Tips for Baking").names == (("baking",),)
    assert extract_features("NASA budget?").names == (("nasa",),)


def test_content_word_rule_is_off_by_default_and_counts_both_directions() -> None:
    q, c = "How do I cook rice fast?", "How do I cook brown rice quickly?"
    assert check_guards(q, c, DEFAULT) is None
    assert check_guards(q, c, GuardConfig(max_unmatched_content_words=2)) == "content_mismatch"
    assert check_guards(q, c, GuardConfig(max_unmatched_content_words=3)) is None


def test_min_query_words_zero_lets_short_queries_through() -> None:
    assert check_guards("Python?", "Python language?", GuardConfig(min_query_words=0)) is None


def test_identical_words_always_pass() -> None:
    assert check_guards("Is 7 prime?", "is 7 PRIME", DEFAULT) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_guards_never_raise(query: str, candidate: str) -> None:
    reason = check_guards(query, candidate, GuardConfig(numbers_one_sided=True))
    assert reason is None or reason in REASONS


def test_huge_numbers_are_compared_as_text() -> None:
    big = "9" * 400
    assert check_guards(f"Is {big} prime?", f"Is {big}8 prime?", DEFAULT) == "number_mismatch"
    assert check_guards(f"Is {big} prime?", f"Is {big} prime??", DEFAULT) is None


def test_features_are_memoised() -> None:
    assert extract_features("Why is the sky blue?") is extract_features("Why is the sky blue?")


# --- config switches ------------------------------------------------------


@pytest.mark.parametrize(
    ("switch", "query", "candidate"),
    [
        ("numbers", "Is 7 a prime number?", "Is 9 a prime number?"),
        ("dates", "what should i do on a monday evening", "what should i do on a friday evening"),
        (
            "entities",
            "What is the best way to learn Python?",
            "What is the best way to learn Java?",
        ),
        ("negation", "Why do cats purr?", "Why don't cats purr?"),
        ("polarity", "Where can I buy used books online?", "Where can I sell used books online?"),
        ("question_word", "How did God create the universe?", "Why did God create the universe?"),
    ],
)
def test_each_switch_turns_its_guard_off(switch: str, query: str, candidate: str) -> None:
    assert check_guards(query, candidate, DEFAULT) is not None
    assert check_guards(query, candidate, DEFAULT.model_copy(update={switch: False})) is None
    assert check_guards(query, candidate, GUARDS_OFF) is None
    assert check_guards(query, candidate, GUARDS_OFF.model_copy(update={switch: True})) is not None


def test_defaults_equal_guardconfig_and_are_sane() -> None:
    assert GuardConfig() == DEFAULT_GUARDS
    assert 0.9 <= DEFAULT_SIMILARITY_THRESHOLD < 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_query_words": -1},
        {"min_query_words": 1000},
        {"max_unmatched_content_words": -1},
        {"numbers": "maybe"},
        {"entities": None},
        {"no_such_guard": True},
    ],
)
def test_bad_config_raises(kwargs: dict[str, object]) -> None:
    from costopt_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        GuardConfig(**kwargs)


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        DEFAULT.numbers = False  # type: ignore[misc]


# --- decide ---------------------------------------------------------------


def test_decide_checks_threshold_before_guards() -> None:
    q, c = "Is 7 a prime number?", "Is 9 a prime number?"
    assert decide(q, c, 0.50, threshold=0.9, config=DEFAULT) == "below_threshold"
    assert decide(q, c, 0.95, threshold=0.9, config=DEFAULT) == "number_mismatch"
    assert decide(q, c, 0.95, threshold=0.9, config=GUARDS_OFF) is None


def test_decide_accepts_at_exactly_the_threshold() -> None:
    q, c = "How do I bake bread?", "How can I bake bread?"
    assert decide(q, c, 0.9, threshold=0.9, config=DEFAULT) is None
    assert decide(q, c, 0.8999, threshold=0.9, config=DEFAULT) == "below_threshold"


def test_guard_order_is_stable() -> None:
    # Both a number and a name differ: the number guard, earlier in REASONS, wins.
    q, c = "Is Python 3 faster?", "Is Java 8 faster?"
    assert check_guards(q, c, DEFAULT) == "number_mismatch"
    assert check_guards(q, c, DEFAULT.model_copy(update={"numbers": False})) == "entity_mismatch"


def test_semantic_decision_bundles_threshold_and_guards() -> None:
    d = SemanticDecision(threshold=0.9)
    assert d("Is 7 prime?", "Is 9 prime?", 0.99) == "number_mismatch"
    assert d("How do I bake bread?", "How can I bake bread?", 0.95) is None
    assert d("How do I bake bread?", "How can I bake bread?", 0.5) == "below_threshold"


# --- calibration ----------------------------------------------------------


def test_calibrate_from_scores_picks_lowest_threshold_meeting_target() -> None:
    sims = [0.99, 0.95, 0.90, 0.80, 0.70]
    labels = [1, 0, 1, 1, 0]
    # precision at each threshold: 1.0, 0.5, 0.667, 0.75, 0.6
    r = calibrate_from_scores(sims, labels, target_precision=0.75)
    assert r.reached
    assert r.threshold == pytest.approx(0.80)
    assert r.precision == pytest.approx(0.75)
    assert r.recall == pytest.approx(1.0)
    assert r.n_pairs == 5
    assert calibrate_from_scores(sims, labels, target_precision=0.9).threshold == pytest.approx(
        0.99
    )


def test_calibration_cannot_split_ties() -> None:
    # At 0.9 both tied pairs are accepted together (P 2/3), so 0.95 it is.
    r = calibrate_from_scores([0.95, 0.9, 0.9], [1, 1, 0], target_precision=0.7)
    assert r.threshold == pytest.approx(0.95)
    assert r.recall == pytest.approx(0.5)


def test_guard_verdicts_remove_pairs_before_the_sweep() -> None:
    sims, labels = [0.99, 0.95, 0.90], [0, 1, 1]
    assert not calibrate_from_scores(sims, labels, target_precision=0.9).reached
    r = calibrate_from_scores(sims, labels, [False, True, True], target_precision=0.9)
    assert r.threshold == pytest.approx(0.90)
    assert r.precision == 1.0


def test_calibration_not_reached_returns_threshold_one() -> None:
    r = calibrate_from_scores([0.9, 0.8], [0, 0], target_precision=0.9)
    assert not r.reached
    assert r.threshold == 1.0
    assert r.recall == 0.0


def test_calibration_when_guards_reject_everything() -> None:
    r = calibrate_from_scores([0.9, 0.8], [1, 0], [False, False], target_precision=0.9)
    assert not r.reached
    assert (r.threshold, r.recall) == (1.0, 0.0)


def test_confidence_demands_more_evidence() -> None:
    sims = [0.99, 0.98, 0.97, 0.96, 0.95, 0.90]
    labels = [1, 1, 1, 1, 1, 0]
    assert calibrate_from_scores(sims, labels, target_precision=0.8).threshold == pytest.approx(
        0.90
    )
    # 5 of 5 is not enough evidence for "precision >= 0.8" at 95%.
    strict = calibrate_from_scores(sims, labels, target_precision=0.8, confidence=0.95)
    assert not strict.reached
    lb = wilson_lower_bound([5, 900], [5, 1000], 1.645)
    assert lb[0] == pytest.approx(0.649, abs=1e-3)
    assert 0.88 < lb[1] < 0.9


def test_curve_points_on_the_grid() -> None:
    r = calibrate_from_scores(
        [0.99, 0.95, 0.90, 0.80], [1, 0, 1, 0], target_precision=0.5, grid=[0.9, 0.5]
    )
    assert [p.threshold for p in r.curve] == [0.5, 0.9]
    low, high = r.curve
    assert (low.precision, low.recall, low.accepted, low.false_hits) == (0.5, 1.0, 4, 2)
    assert low.false_hit_rate == 1.0
    assert high.precision == pytest.approx(2 / 3)
    assert high.false_hit_rate == 0.5


@pytest.mark.parametrize(
    ("sims", "labels", "kwargs"),
    [
        ([], [], {}),
        ([0.9], [1, 0], {}),
        ([0.9], [2], {}),
        ([0.9], [1], {"target_precision": 0.0}),
        ([0.9], [1], {"target_precision": 1.5}),
        ([0.9], [1], {"confidence": 0.3}),
    ],
)
def test_calibrate_from_scores_rejects_bad_input(
    sims: list[float], labels: list[int], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError):
        calibrate_from_scores(sims, labels, **kwargs)


POSITIVES = [
    ("how do i bake sourdough bread at home", "how do i bake sourdough bread at home easily"),
    ("what is the capital city of france", "what is the capital city of france today"),
    ("how can i learn to swim as an adult", "how can i learn to swim as adult"),
]
NEGATIVES = [
    ("how do i bake sourdough bread at home", "what are good books about roman history"),
    ("what is the capital city of france", "why do cats sleep so much during the day"),
]


def test_calibrate_threshold_with_fake_embedder_picks_lowest_positive() -> None:
    emb = FakeEmbedder(dim=256)
    pos_sims = pair_similarities(POSITIVES, emb)
    neg_sims = pair_similarities(NEGATIVES, emb)
    assert neg_sims.max() < pos_sims.min()  # the synthetic set is separable

    pairs = [(a, b, 1) for a, b in POSITIVES] + [(a, b, 0) for a, b in NEGATIVES]
    emb = FakeEmbedder(dim=256)
    r = calibrate_threshold(pairs, target_precision=1.0, embedder=emb, config=DEFAULT)
    assert isinstance(r, CalibrationResult)
    assert r.reached
    assert r.threshold == pytest.approx(float(pos_sims.min()))
    assert (r.precision, r.recall, r.n_pairs) == (1.0, 1.0, 5)
    # Every distinct text embedded once, in one batch.
    assert emb.calls == 1
    assert emb.texts_embedded == len({t for a, b, _ in pairs for t in (a, b)})


def test_calibrate_threshold_applies_guards() -> None:
    # The negative differs only in a number, so it is more similar than the
    # reworded positive; only the number guard can keep it out.
    pairs = [
        ("is 7 a prime number or not", "is 7 a prime number or not really", 1),
        ("is 7 a prime number or not", "is 9 a prime number or not", 0),
        (
            "how do i bake sourdough bread at home",
            "how can i bake my own sourdough bread in my kitchen",
            1,
        ),
    ]
    emb = FakeEmbedder(dim=256)
    sims = pair_similarities([(a, b) for a, b, _ in pairs], emb)
    assert sims[0] > sims[1] > sims[2]
    guarded = calibrate_threshold(pairs, target_precision=1.0, embedder=emb, config=DEFAULT)
    raw = calibrate_threshold(pairs, target_precision=1.0, embedder=emb, config=GUARDS_OFF)
    assert guarded.threshold == pytest.approx(float(sims[2]))
    assert guarded.recall == 1.0
    assert raw.threshold == pytest.approx(float(sims[0]))  # must climb above the negative
    assert raw.recall == 0.5


def test_guard_verdicts_read_pairs_as_cache_holds_a() -> None:
    pairs = [
        ("Python?", "Python programming language?"),
        ("Python programming language?", "Python?"),
    ]
    # Only the short one as the *query* triggers the minimum-length rule.
    assert guard_verdicts(pairs, DEFAULT) == [None, "too_short"]


def test_calibrate_threshold_needs_pairs() -> None:
    with pytest.raises(ConfigurationError):
        calibrate_threshold([], embedder=FakeEmbedder())


def test_pair_similarities_are_cosines() -> None:
    emb = FakeEmbedder(dim=64)
    sims = pair_similarities([("a b c", "a b c"), ("a b c", "x y z")], emb)
    assert sims.dtype == np.float32
    assert sims[0] == pytest.approx(1.0, abs=1e-6)
    assert sims[1] < 1.0
    assert pair_similarities([], emb).shape == (0,)


def test_code_indented_differently_is_a_different_question() -> None:
    valid = normalize_text("Is this valid Python?\ndef f(x):\n    if x:\n        return 1")
    invalid = normalize_text("Is this valid Python?\ndef f(x):\n    if x:\n    return 1")
    assert check_guards(valid, invalid, GuardConfig()) == "layout_mismatch"
    assert check_guards(valid, valid, GuardConfig()) is None
    assert check_guards(valid, invalid, GuardConfig(layout=False)) is None
    # Prose broken over lines has no indentation: its line breaks do not matter.
    prose = ("How do I\nreset my password?", "How do I reset my password?")
    assert check_guards(*prose, GuardConfig()) is None


def test_normalize_text_keeps_layout_and_drops_noise() -> None:
    assert normalize_text("  How do I   reset my password? ") == "How do I reset my password?"
    assert normalize_text("def f():\r\n\n    return  1 \n") == "def f():\n    return 1"
    assert normalize_text("all:\r\n\tgcc  main.c\n") == "all:\n\tgcc main.c"  # tab kept
    # The indentation all lines share (pasted from a class) is not part of the code.
    assert normalize_text("    def f():\n        return 1") == "def f():\n    return 1"
    assert normalize_text(" \n\t\n") == ""


@given(st.text(alphabet=st.characters(blacklist_characters="\n\r"), max_size=80))
@settings(max_examples=300, deadline=None)
def test_a_one_line_prompt_normalises_as_before(text: str) -> None:
    # Exact keys of one-line prompts (most of them) did not change with layout-keeping;
    # spaces inside a quoted literal are kept ('a  b' is not 'a b'), words always.
    import re

    if not any(q in text for q in "'\"`"):
        assert normalize_text(text) == re.sub(r"\s+", " ", text).strip()
    else:
        assert normalize_text(text).split() == text.split()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What does len('a  b') return in Python?", "What does len('a b') return in Python?"),
        (
            "Is this Makefile valid?\nall:\n\tgcc main.c",
            "Is this Makefile valid?\nall:\n    gcc main.c",
        ),
        (
            "Will this YAML parse?\nserver:\n\tport: 80",
            "Will this YAML parse?\nserver:\n    port: 80",
        ),
    ],
)
def test_whitespace_that_is_meaning_splits_both_tiers(a: str, b: str) -> None:
    """Tabs were expanded to four spaces and spaces inside a quoted literal folded,
    so a space-indented Makefile got the tab one's answer, and len('a b') the
    answer for len('a  b'), from the exact tier (found by a review); the
    semantic tier then served them too (same words)."""
    assert normalize_text(a) != normalize_text(b)
    assert check_guards(normalize_text(b), normalize_text(a), GuardConfig()) == "layout_mismatch"
    # Spacing that means nothing still folds: one key, no guard (an apostrophe
    # inside a word quotes nothing: found by a review).
    assert normalize_text("How do I   reset my password?") == "How do I reset my password?"
    assert normalize_text("What's  the capital of France?") == "What's the capital of France?"
    assert normalize_text("the students'  grades") == "the students' grades"
    assert normalize_text("rock 'n'  roll") == "rock 'n' roll"
    assert (
        check_guards("How do I\nreset my password?", "How do I reset my password?", GuardConfig())
        is None
    )


@pytest.mark.parametrize(
    ("query", "cached", "reason"),
    [
        (
            "Convert 40 degrees Celsius to Fahrenheit",
            "Convert -40 degrees Celsius to Fahrenheit",
            "number_mismatch",
        ),
        ("What is 10 + 4?", "What is 10 - 4?", "number_mismatch"),
        ("Is 3 < 5 true?", "Is 3 > 5 true?", "number_mismatch"),
        ("How do I install C# on Linux?", "How do I install C++ on Linux?", "entity_mismatch"),
    ],
)
def test_prompts_with_the_same_words_but_other_signs_are_told_apart(
    query: str, cached: str, reason: str
) -> None:
    # The words leave signs and operators out; the same-words shortcut must not
    # serve "-40" for "40" or "10 - 4" for "10 + 4".
    assert check_guards(query, cached, GuardConfig()) == reason
    off = GuardConfig(numbers=False, entities=False)
    assert check_guards(query, cached, off) is None
    assert check_guards(query, query.upper(), GuardConfig()) is None


def test_a_calibrated_threshold_is_never_above_one() -> None:
    # float32 puts some texts' similarity to themselves a hair above 1.0.
    from costopt_core.cache import CacheConfig
    from costopt_core.cache.calibrate import calibrate_threshold, pair_similarities
    from costopt_core.testing import FakeEmbedder

    emb = FakeEmbedder(dim=64)
    texts = [f"how do i reset password number {w} please now" for w in "abcdefghijklmnop"]
    sims = pair_similarities([(t, t) for t in texts], emb)
    over = [t for t, s in zip(texts, sims, strict=True) if s > 1.0]
    assert over, "no text whose self-similarity rounds above 1.0: pick other texts"
    pairs = [(over[0], over[0], 1), ("how do I reset my password", "how do I change my email", 0)]
    res = calibrate_threshold(
        pairs, target_precision=1.0, embedder=emb, config=GuardConfig(min_query_words=0)
    )
    assert res.reached and res.threshold == 1.0
    assert CacheConfig(similarity_threshold=res.threshold).similarity_threshold == 1.0


@pytest.mark.parametrize(
    ("query", "candidate"),
    [
        ("Cheapest flights from Paris to London", "Cheapest flights from London to Paris"),
        ("Does Alice owe Bob money?", "Does Bob owe Alice money?"),
        (
            "Is express shipping faster than standard shipping?",
            "Is standard shipping faster than express shipping?",
        ),
        ("Translate hello from English to French", "Translate hello from French to English"),
        ("Flights from New York to New Jersey", "Flights from New Jersey to New York"),
        ("What is 10 - 4?", "What is 4 - 10?"),
    ],
)
def test_phrases_traded_across_a_one_way_relation_are_refused(query: str, candidate: str) -> None:
    # Embeddings barely see word order: each of these pairs scores above 0.99.
    assert check_guards(query, candidate, DEFAULT) == "order_mismatch"
    assert check_guards(candidate, query, DEFAULT) == "order_mismatch"
    assert check_guards(query, candidate, GuardConfig(order=False)) is None


@pytest.mark.parametrize(
    ("query", "candidate"),
    [
        ("Who is older, Obama or Trump?", "Who is older, Trump or Obama?"),
        (
            "What is the difference between TCP and UDP?",
            "What is the difference between UDP and TCP?",
        ),
        ("Python vs Java for beginners?", "Java vs Python for beginners?"),
        ("How do I quickly learn Python?", "How do I learn Python quickly?"),
        ("What is 2 + 3?", "What is 3 + 2?"),
        ("Best chicken curry recipe", "Best curry chicken recipe"),
    ],
)
def test_symmetric_swaps_and_moved_words_pass_the_order_guard(query: str, candidate: str) -> None:
    assert check_guards(query, candidate, DEFAULT) is None


@pytest.mark.parametrize(
    ("query", "candidate"),
    [
        ("Can I return an item within 30 days?", "Can I return an item after 30 days?"),
        (
            "How do I add a user to a group in Linux?",
            "How do I remove a user from a group in Linux?",
        ),
        ("How do I enable two-factor login?", "How do I disable two-factor login?"),
        ("What is the maximum dose of ibuprofen?", "What is the minimum dose of ibuprofen?"),
    ],
)
def test_inverse_operations_and_limits_are_polarity_mismatches(query: str, candidate: str) -> None:
    assert check_guards(query, candidate, DEFAULT) == "polarity_mismatch"
