"""Chunks ranked as wholes (first hop, second hop, retriever order), as the summarizer uses them."""

from __future__ import annotations

import numpy as np

from costopt_core.context.hops import idf_overlap, rank_chunks, top_chunks
from costopt_core.context.summarize import SummarizerConfig, summarize_extractive
from costopt_core.tokens import default_counter

COUNT = default_counter().count


def test_idf_overlap_weighs_rare_terms_more() -> None:
    sets = [{"bridge", "river"}, {"bridge"}, {"bridge", "toll"}]
    out = idf_overlap({"bridge", "toll"}, sets)
    # "toll" is in one text, "bridge" in all three: the toll text gets the larger share.
    assert out[2] == 1.0
    assert 0 < out[0] == out[1] < 0.5
    assert idf_overlap(set(), sets).tolist() == [0.0, 0.0, 0.0]
    assert idf_overlap({"absent"}, sets).tolist() == [0.0, 0.0, 0.0]
    assert idf_overlap({"x"}, []).shape == (0,)


def test_second_hop_chunk_outranks_a_distractor() -> None:
    question = "Where does the director of Big Stone Gap live?"
    chunks = [
        "Big Stone Gap is a 2014 film. It was directed by Adriana Trigiani.",
        "Coal mining shaped the Appalachian towns. Trains still pass daily.",
        "Adriana Trigiani is an American novelist. She lives in Greenwich Village.",
    ]
    leads = [c.split(". ")[0] for c in chunks]
    scores = rank_chunks(question, chunks, leads, order_weight=0.0)
    assert scores[0] > 0.0
    assert scores[2] > scores[1] == 0.0
    # Only the opening sentence counts for the second hop: a chunk that names
    # the bridge entity later on is not "about" it.
    later = [*chunks[:2], "Greenwich Village is in New York. Adriana Trigiani has a home there."]
    leads = [c.split(". ")[0] for c in later]
    assert rank_chunks(question, later, leads, order_weight=0.0)[2] == 0.0


def test_retriever_order_breaks_ties_and_can_be_ignored() -> None:
    chunks = ["Alpha text.", "Beta text.", "Gamma text."]
    ordered = rank_chunks("unrelated?", chunks, chunks, order_weight=0.6)
    assert ordered.tolist() == sorted(ordered.tolist(), reverse=True)
    assert ordered[0] - ordered[2] == np.float64(0.6 * 2 / 3)
    flat = rank_chunks("unrelated?", chunks, chunks, order_weight=0.0)
    assert flat.tolist() == [0.0, 0.0, 0.0]
    assert rank_chunks("q?", [], [], order_weight=0.6).shape == (0,)
    assert top_chunks(flat, 2) == {0, 1}  # ties go to the earlier chunk
    assert top_chunks(np.array([0.1, 0.9, 0.5]), 1) == {1}


def test_chunk_boost_prefers_the_sentence_of_the_more_relevant_chunk() -> None:
    # The two "signed" sentences score alike; the second chunk is about the
    # peace treaty as a whole, so with the boost its sentence is kept.
    question = "Where was the peace treaty signed?"
    chunks = [
        "The treaty was signed in Paris. Farmers grew wheat there.",
        "The treaty was signed in Rome. It ended the war and brought peace.",
    ]
    base = SummarizerConfig(
        budget_ratio=None,
        budget_tokens=COUNT(" The treaty was signed in Paris.") + 1,
        chunk_boost_top_k=1,
        retriever_order_weight=0.0,
    )
    kept = summarize_extractive(question, chunks, base, count_tokens=COUNT)
    assert [c.text for c in kept.chunks] == ["The treaty was signed in Rome."]
    off = base.model_copy(update={"chunk_boost": 0.0})
    kept = summarize_extractive(question, chunks, off, count_tokens=COUNT)
    assert [c.text for c in kept.chunks] == ["The treaty was signed in Paris."]


def test_length_penalty_fits_the_shorter_of_two_equal_sentences() -> None:
    question = "Who opened the bridge?"
    long = (
        "The mayor opened the bridge with a long speech about the river, the town and the "
        "many workers who had built it over the years."
    )
    chunks = [long, "The bridge was opened by the mayor."]
    config = SummarizerConfig(
        budget_ratio=None, budget_tokens=COUNT(" " + long) + 1, chunk_boost=0.0
    )
    kept = summarize_extractive(question, chunks, config, count_tokens=COUNT)
    assert [c.index for c in kept.chunks] == [1]
    by_score = config.model_copy(update={"length_penalty": 0.0})
    kept = summarize_extractive(question, chunks, by_score, count_tokens=COUNT)
    assert [c.index for c in kept.chunks] == [0]
