"""The semantic cache's shipped accept decision: similarity threshold and guards.

Chosen for precision first (a wrong cached answer costs more than the call it
saves) with ``benchmarks/cache_quality.py`` on the 40,427 labelled Quora
question pairs of ``../shared/data/cache/qqp_pairs_dev.jsonl.gz``, embedded
with the default embedder (all-MiniLM-L6-v2).

How: the pairs are split in two halves by connected component of shared texts
(no question is in both halves; the half is a blake2b hash bit of the
component's smallest text). On the tune half only, every guard was measured
alone and switched off one at a time; each default-on guard rejects pairs that
are more often wrong than the pairs it lets through, and the one-sided number
and name variants and the content-word rule cost more recall than they buy.
``calibrate_from_scores`` with these guards, target precision 0.90 checked
against the 95% Wilson lower bound, gives 0.9655 on the tune half; shipped
rounded to 0.965. Figures at 0.965 (pairwise, guards on):

- tune half (20,238 pairs): precision 0.913, recall 0.139
- held-out half (20,189 pairs, never used for a choice): precision 0.912,
  recall 0.141, false-hit rate 0.011
- for comparison, raw cosine at redisvl's 0.90: precision 0.79, recall 0.43;
  at GPTCache's 0.80: precision 0.68, recall 0.77

Recall stays well under 0.40 at this precision: on QQP, pairs whose words are
identical are labelled duplicates only 91% of the time, and even a gradient-
boosted model on the cosine plus every lexical feature here (trained on the
tune half) reaches only 0.87 held-out precision at recall 0.40. Precision was
kept; see the benchmark JSON for the whole curve. Reproduce with::

    python benchmarks/cache_quality.py --out benchmarks/results/cache_quality.json
"""

from __future__ import annotations

from costopt_core.cache.guards import GuardConfig

__all__ = ["DEFAULT_GUARDS", "DEFAULT_SIMILARITY_THRESHOLD"]

#: Lowest cosine similarity (all-MiniLM-L6-v2) a semantic hit needs.
DEFAULT_SIMILARITY_THRESHOLD = 0.965

#: Guards applied above the threshold (equal to ``GuardConfig()``).
DEFAULT_GUARDS = GuardConfig(
    numbers=True,
    numbers_one_sided=False,
    dates=True,
    entities=True,
    entities_one_sided=False,
    negation=True,
    polarity=True,
    question_word=True,
    min_query_words=3,
    max_unmatched_content_words=None,
)
