"""The semantic cache's shipped accept decision: similarity threshold and guards.

Chosen for precision first (a wrong cached answer costs more than the call it
saves) with ``benchmarks/cache_quality.py`` on the 40,427 labelled Quora
question pairs of ``../shared/data/cache/qqp_pairs_dev.jsonl.gz``, embedded
with the default embedder (all-MiniLM-L6-v2).

How: the pairs are split in two halves by connected component of shared texts
(no question is in both halves; the half is a blake2b hash bit of the
component's smallest text). On the tune half only, every guard was measured
alone and switched off one at a time: each default-on guard rejects pairs
that are wrong more often than the pairs it lets through, while the one-sided
number and name variants and the content-word rule cost more recall than they
buy precision. (At 0.965 the guards reject 50 tune pairs, 27 of them wrong,
where the pairs they let through are 9% wrong.) ``calibrate_from_scores``
with these guards, target precision 0.90 checked against the 95% Wilson
lower bound (so the figure holds on unseen pairs, not just on average),
gives 0.9655 on the tune half; shipped rounded to 0.965. Pairwise figures at 0.965, guards on:

- tune half (20,238 pairs): precision 0.913, recall 0.139
- held-out half (20,189 pairs, used for no choice): precision 0.911,
  recall 0.141, false-hit rate 0.008 (raw cosine at 0.965: 0.898 / 0.145)
- held-out baselines, raw cosine: redisvl's 0.90 gives precision 0.788,
  recall 0.427; GPTCache's 0.80 gives 0.679 / 0.765
- raw cosine calibrated the same way needs 0.9816 (tune recall 0.07): the
  guards double the recall at the same precision guarantee

Recall stays well under 0.40 at this precision, and no decision built from
this embedder and lexical checks gets both: on QQP, pairs whose words are
identical are labelled duplicates only 91% of the time (pairs at cosine >=
0.99: 94%), and a gradient-boosted model on the cosine plus every lexical
feature here, IDF-weighted word differences included, trained on the tune
half, reaches only about 0.87 held-out precision at recall 0.40. Precision was
kept. The whole curve is in the benchmark JSON; reproduce with (12 to 21
minutes on 2 CPU cores, mostly embedding; ``--limit 10000`` for a quick look)::

    python benchmarks/cache_quality.py --out benchmarks/results/cache_quality.json
"""

from __future__ import annotations

from costopt_core.cache.guards import GuardConfig

__all__ = ["DEFAULT_GUARDS", "DEFAULT_SIMILARITY_THRESHOLD", "GUARDS_OFF"]

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

#: Every guard off: the threshold alone decides (raw cosine, as in the baselines).
GUARDS_OFF = GuardConfig(
    numbers=False,
    dates=False,
    entities=False,
    negation=False,
    polarity=False,
    question_word=False,
    min_query_words=0,
)
