"""Relevance filtering engine: normalisation, every cutoff alone and composed, dedupe, budget."""

from __future__ import annotations

import math
from typing import Any

import pytest

from costopt_core.context.relevance import (
    DROP_REASONS,
    RelevanceConfig,
    ScoredChunk,
    detect_convention,
    near_duplicate,
    normalize_scores,
    select_relevant,
    with_default_convention,
)
from costopt_core.errors import ConfigurationError
from costopt_core.tokens import TokenCounter

COUNTER = TokenCounter()
TOPICS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Gustave Eiffel's company designed and built the tower for the 1889 World's Fair.",
    "Paris is the capital and most populous city of France.",
    "Bananas are berries, botanically speaking, while strawberries are not.",
    "The Great Barrier Reef is the world's largest coral reef system.",
    "Mount Everest is Earth's highest mountain above sea level.",
]


def chunks(scores: list[float | None], texts: list[str] | None = None) -> list[ScoredChunk]:
    texts = texts or TOPICS
    return [ScoredChunk(texts[i], s) for i, s in enumerate(scores)]


def run(scores: list[float | None], **cfg: Any) -> Any:
    return select_relevant(chunks(scores), RelevanceConfig(**cfg), count_tokens=COUNTER.count)


# -- normalisation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("convention", "raw", "expected"),
    [
        ("similarity", [0.9, 0.4, -0.2], [0.9, 0.4, 0.0]),
        ("relevance", [0.75, 1.2], [0.75, 1.0]),
        ("inner_product", [0.8, -0.5], [0.8, 0.0]),
        ("cosine_distance", [0.1, 0.6, 1.4], [0.9, 0.4, 0.0]),
        # unit vectors: |a-b|^2 = 2 - 2cos, so d = sqrt(2 - 2cos) maps back to cos
        ("l2", [math.sqrt(2 - 2 * 0.9), math.sqrt(2 - 2 * 0.3), 1.8], [0.9, 0.3, 0.0]),
        ("l2_squared", [2 - 2 * 0.9, 2 - 2 * 0.3, 3.0], [0.9, 0.3, 0.0]),
        ("unbounded", [12.0, 6.0, 3.0], [1.0, 0.5, 0.25]),
    ],
)
def test_each_convention_maps_to_cosine_scale(
    convention: Any, raw: list[float], expected: list[float]
) -> None:
    sims, resolved = normalize_scores(raw, convention)
    assert resolved == convention
    assert sims == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([0.82, 0.61, 0.33], "similarity"),
        ([0.9, 0.1, -0.3], "similarity"),
        ([0.12, 0.35, 0.8], "cosine_distance"),
        ([0.4, 1.9, 2.6], "l2_squared"),
        ([14.2, 9.1, 3.3], "unbounded"),
        ([0.7], "similarity"),
        ([0.5, 0.5, 0.5], "similarity"),
        ([], "similarity"),
        # ties within ascending distances (a chunk indexed twice) are still distances
        ([0.1, 0.1, 0.3, 0.5], "cosine_distance"),
        ([0.3, 0.3, 2.4], "l2_squared"),
        # only a list sorted ascending is distances: similarities a reorder put
        # out of rank order mostly rise too (LongContextReorder: best last)
        ([0.1, 0.3, 0.25, 0.5, 0.7], "similarity"),
        ([0.8, 0.6, 0.72, 0.91], "similarity"),
        ([5.0, 3.1, 4.2, 9.0], "unbounded"),
    ],
)
def test_auto_detects_convention_from_rank_order(raw: list[float], expected: str) -> None:
    assert detect_convention(raw) == expected
    _, resolved = normalize_scores(raw, "auto")
    assert resolved == expected


def test_auto_with_distances_keeps_closest_and_drops_far() -> None:
    r = run([0.1, 0.2, 0.95], absolute_threshold=0.5)
    assert r.convention == "cosine_distance"
    assert r.similarities == pytest.approx((0.9, 0.8, 0.05))
    assert r.kept == (0, 1)
    assert r.dropped == {2: "below_threshold"}


def test_auto_keeps_the_best_of_similarities_out_of_rank_order() -> None:
    # After LongContextReorder the best chunk is last; reading these as
    # distances kept only the 0.6 chunk.
    r = run([0.8, 0.6, 0.72, 0.91], relative_to_top=0.8, min_k=0)
    assert r.convention == "similarity"
    assert r.similarities == pytest.approx((0.8, 0.6, 0.72, 0.91))
    assert r.kept == (0, 3)
    assert r.dropped == {1: "below_relative", 2: "below_relative"}


def test_an_explicit_convention_is_kept_by_with_default_convention() -> None:
    default = with_default_convention(RelevanceConfig(min_k=2), "similarity")
    assert default.score_convention == "similarity" and default.min_k == 2
    for declared in ("auto", "cosine_distance"):
        cfg = RelevanceConfig(score_convention=declared)  # type: ignore[arg-type]
        assert with_default_convention(cfg, "similarity") is cfg


def test_non_finite_scores_count_as_unscored() -> None:
    sims, _ = normalize_scores([0.8, float("nan"), float("inf"), None], "similarity")
    assert sims == (0.8, None, None, None)
    r = run([0.8, float("nan")], unscored_policy="drop")
    assert r.dropped == {1: "unscored"}


def test_unbounded_with_no_positive_score_keeps_its_ranking() -> None:
    # Cross-encoder logits, all negative (ms-marco rerankers): each becomes the
    # model's probability of relevance, sigmoid(logit). Regression: all became
    # 0.0, and relative_to_top and gap_detection then kept every chunk.
    logits = [-1.2, -4.8, -9.7, -11.3]
    sims, resolved = normalize_scores(logits, "auto")
    assert resolved == "unbounded"
    assert sims == pytest.approx([1 / (1 + math.exp(-x)) for x in logits])
    assert sims[0] == pytest.approx(0.23147521650098238)
    assert list(sims) == sorted(sims, reverse=True) and len(set(sims)) == 4
    assert normalize_scores([0.0, -800.0, None], "unbounded")[0] == (0.5, 0.0, None)
    # A positive top score keeps the earlier share-of-the-top mapping.
    assert normalize_scores([7.1, 2.0, -3.0], "unbounded")[0] == pytest.approx(
        (1.0, 2.0 / 7.1, 0.0)
    )
    assert run(logits, relative_to_top=0.5).kept == (0,)
    assert run(logits, relative_to_top=0.5).dropped == {
        1: "below_relative",
        2: "below_relative",
        3: "below_relative",
    }
    assert run(logits, gap_detection=True).kept == (0,)


# -- cutoffs alone ----------------------------------------------------------------------
def test_defaults_drop_nothing_on_score() -> None:
    r = run([0.9, 0.1, 0.01, 0.0])
    assert r.kept == (0, 1, 2, 3)
    assert r.dropped == {}
    assert r.tokens_removed == 0
    assert r.tokens_before == sum(COUNTER.count(t) for t in TOPICS[:4])


def test_absolute_threshold() -> None:
    r = run([0.9, 0.7, 0.5, 0.3], absolute_threshold=0.5)
    assert r.kept == (0, 1, 2)
    assert r.dropped == {3: "below_threshold"}


def test_relative_to_top() -> None:
    r = run([0.8, 0.7, 0.6, 0.3], relative_to_top=0.8)  # keep >= 0.64
    assert r.kept == (0, 1)
    assert r.dropped == {2: "below_relative", 3: "below_relative"}


def test_gap_detection_cuts_at_the_widest_drop() -> None:
    r = run([0.82, 0.78, 0.74, 0.41, 0.38], gap_detection=True, min_gap=0.1)
    assert r.kept == (0, 1, 2)
    assert r.dropped == {3: "below_gap", 4: "below_gap"}


def test_gap_detection_needs_min_gap() -> None:
    r = run([0.82, 0.78, 0.74, 0.70], gap_detection=True, min_gap=0.1)
    assert r.kept == (0, 1, 2, 3)


def test_gap_detection_on_unsorted_scores_uses_score_order() -> None:
    # a reranked list: rank order differs from score order
    r = run([0.7, 0.2, 0.75, 0.25], gap_detection=True, min_gap=0.1)
    assert r.kept == (0, 2)
    assert r.dropped == {1: "below_gap", 3: "below_gap"}


def test_max_k() -> None:
    r = run([0.9, 0.8, 0.7, 0.6], max_k=2)
    assert r.kept == (0, 1)
    assert r.dropped == {2: "max_k", 3: "max_k"}


def test_token_budget_packs_in_rank_order_with_a_real_counter() -> None:
    texts = ["alpha " * 50, "beta " * 30, "gamma " * 10, "delta " * 5]
    sizes = [COUNTER.count(t) for t in texts]
    budget = sizes[0] + sizes[2]  # the second chunk does not fit, smaller later ones do
    r = select_relevant(
        chunks([0.9, 0.8, 0.7, 0.6], texts),
        RelevanceConfig(token_budget=budget + sizes[3] - 1),
        count_tokens=COUNTER.count,
    )
    assert r.kept == (0, 2)
    assert r.dropped == {1: "token_budget", 3: "token_budget"}
    assert r.tokens_after == sizes[0] + sizes[2] <= budget
    assert r.tokens_before == sum(sizes)


def test_token_budget_never_below_min_k() -> None:
    texts = ["alpha " * 50, "beta " * 30, "gamma"]
    r = select_relevant(
        chunks([0.9, 0.8, 0.7], texts),
        RelevanceConfig(token_budget=5, min_k=2),
        count_tokens=COUNTER.count,
    )
    assert r.kept == (0, 1)  # both over budget, kept by min_k
    assert r.dropped == {2: "token_budget"}


# -- min_k -------------------------------------------------------------------------------
def test_min_k_keeps_the_top_chunk_under_an_impossible_threshold() -> None:
    r = run([0.3, 0.2, 0.1], absolute_threshold=1.0, relative_to_top=1.0, gap_detection=True)
    assert r.kept == (0,)
    assert set(r.dropped) == {1, 2}


def test_min_k_protects_the_top_ranked_chunk_not_the_top_scored() -> None:
    # the retriever's first chunk scores lower than the second (reranked order)
    r = run([0.2, 0.9, 0.1], absolute_threshold=0.5)
    assert r.kept == (0, 1)
    assert r.dropped == {2: "below_threshold"}


def test_min_k_two_and_zero() -> None:
    assert run([0.9, 0.3, 0.2], absolute_threshold=0.5, min_k=2).kept == (0, 1)
    r = run([0.3, 0.2], absolute_threshold=0.5, min_k=0)
    assert r.kept == ()
    assert r.tokens_after == 0


# -- composition ----------------------------------------------------------------------------
def test_cutoffs_compose_absolute_then_relative_then_gap() -> None:
    scores = [0.95, 0.9, 0.6, 0.55, 0.2, 0.05]
    r = run(scores, absolute_threshold=0.1, relative_to_top=0.5, gap_detection=True)
    # absolute drops 0.05, relative (>= 0.475) drops 0.2, the gap 0.9 -> 0.6 drops the rest
    assert r.kept == (0, 1)
    assert r.dropped == {
        2: "below_gap",
        3: "below_gap",
        4: "below_relative",
        5: "below_threshold",
    }


def test_composed_with_max_k_and_budget() -> None:
    scores = [0.9, 0.85, 0.8, 0.75, 0.1]
    sizes = [COUNTER.count(t) for t in TOPICS[:5]]
    r = run(scores, absolute_threshold=0.5, max_k=3, token_budget=sizes[0] + sizes[1])
    assert r.kept == (0, 1)
    assert r.dropped == {2: "token_budget", 3: "max_k", 4: "below_threshold"}
    assert r.tokens_removed == sum(sizes) - sizes[0] - sizes[1]


def test_result_reasons_are_all_known() -> None:
    r = run([0.9, None, 0.2, 0.1], absolute_threshold=0.5, unscored_policy="drop")
    assert set(r.dropped.values()) <= set(DROP_REASONS)


# -- unscored policies --------------------------------------------------------------------
def test_unscored_keep_stays_in_rank_and_skips_score_cutoffs() -> None:
    r = run([0.9, None, 0.1, None], absolute_threshold=0.5)
    assert r.kept == (0, 1, 3)
    assert r.similarities == (0.9, None, 0.1, None)
    assert r.dropped == {2: "below_threshold"}


def test_unscored_keep_after_scored_moves_them_last() -> None:
    r = run([None, 0.9, None, 0.8], unscored_policy="keep_after_scored", max_k=3)
    assert r.kept == (1, 3, 0)
    assert r.dropped == {2: "max_k"}


def test_unscored_drop_is_reported() -> None:
    r = run([0.9, None, 0.8], unscored_policy="drop")
    assert r.kept == (0, 2)
    assert r.dropped == {1: "unscored"}


def test_all_unscored() -> None:
    assert run([None, None, None], absolute_threshold=0.9).kept == (0, 1, 2)
    assert run([None, None], unscored_policy="drop").kept == ()


def test_empty_input() -> None:
    r = run([], absolute_threshold=0.5)
    assert r.kept == ()
    assert r.tokens_before == r.tokens_after == 0


# -- dedupe -------------------------------------------------------------------------------------
def test_exact_and_near_duplicates_are_dropped() -> None:
    base = TOPICS[1]
    texts = [
        TOPICS[0],
        base,
        base.upper().replace(",", " ,"),  # same words, other case/punctuation
        base + " It opened in 1889.",  # overlapping split
        TOPICS[2],
    ]
    r = select_relevant(
        chunks([0.9, 0.8, 0.79, 0.78, 0.7], texts),
        RelevanceConfig(dedupe_threshold=0.6),
        count_tokens=COUNTER.count,
    )
    assert r.kept == (0, 1, 4)
    assert r.dropped == {2: "duplicate", 3: "duplicate"}
    assert r.duplicate_of == {2: 1, 3: 1}


def test_dedupe_threshold_one_means_normalised_equality_and_none_disables() -> None:
    texts = [TOPICS[0], TOPICS[0].lower() + "!", TOPICS[0] + " Extra words here."]
    one = select_relevant(
        chunks([0.9, 0.8, 0.7], texts), RelevanceConfig(dedupe_threshold=1.0), count_tokens=len
    )
    assert one.kept == (0, 2)
    off = select_relevant(
        chunks([0.9, 0.8, 0.7], texts), RelevanceConfig(dedupe_threshold=None), count_tokens=len
    )
    assert off.kept == (0, 1, 2)


def test_near_duplicate_helper() -> None:
    assert near_duplicate("A b c d e", "a, b. c d e")
    assert not near_duplicate(TOPICS[0], TOPICS[2])
    assert near_duplicate("short", "SHORT")


def test_duplicate_of_a_protected_chunk_is_still_a_duplicate() -> None:
    r = select_relevant(
        chunks([0.1, 0.1], [TOPICS[0], TOPICS[0]]),
        RelevanceConfig(absolute_threshold=0.5, min_k=2),
        count_tokens=len,
    )
    assert r.kept == (0,)
    assert r.dropped == {1: "duplicate"}


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"absolute_threshold": 1.5}, "absolute_threshold=1.5"),
        ({"relative_to_top": 0}, "relative_to_top=0"),
        ({"score_convention": "cosine"}, "score_convention='cosine'"),
        ({"unscored_policy": "ignore"}, "unscored_policy='ignore'"),
        ({"max_k": 0}, "max_k=0"),
        ({"min_k": -1}, "min_k=-1"),
        ({"token_budget": 0}, "token_budget=0"),
        ({"min_k": 3, "max_k": 2}, "min_k=3 is larger than max_k=2"),
        ({"threshold": 0.5}, "threshold=0.5"),
    ],
)
def test_bad_config_names_the_value(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid RelevanceConfig") as info:
        RelevanceConfig(**kwargs)
    assert named in str(info.value)


def test_config_is_frozen() -> None:
    cfg = RelevanceConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.min_k = 3  # type: ignore[misc]


def test_default_token_counter_is_used_when_none_given() -> None:
    r = select_relevant(chunks([0.9, 0.2]), RelevanceConfig(absolute_threshold=0.5))
    assert r.tokens_removed == COUNTER.count(TOPICS[1])


def test_dedupe_compares_dedupe_text_when_given() -> None:
    header_a, header_b = "file: a.txt\n\n", "file: b.txt\n\n"
    two = [
        ScoredChunk(header_a + TOPICS[0], 0.9, dedupe_text=TOPICS[0]),
        ScoredChunk(header_b + TOPICS[0], 0.8, dedupe_text=TOPICS[0]),
    ]
    r = select_relevant(two, RelevanceConfig(dedupe_threshold=1.0), count_tokens=COUNTER.count)
    assert r.kept == (0,)
    assert r.duplicate_of == {1: 0}
    assert r.tokens_removed == COUNTER.count(header_b + TOPICS[0])  # tokens of the full text
    plain = [ScoredChunk(c.text, c.score) for c in two]
    assert select_relevant(plain, RelevanceConfig(dedupe_threshold=1.0)).kept == (0, 1)
