"""The semantic cache's shipped accept decision: similarity gate, guards, pair check.

Chosen for precision first (a wrong cached answer costs more than the call it
saves) with ``benchmarks/cache_quality.py`` on the 40,427 labelled Quora
question pairs of ``../shared/data/cache/qqp_pairs_dev.jsonl.gz``, embedded
with the default embedder (all-MiniLM-L6-v2).

With the default embedder a semantic candidate is served when (1) its cosine
similarity is at least ``DEFAULT_PAIR_GATE`` (0.80), (2) the guards pass it
and (3) either its cosine is at least ``DEFAULT_PAIR_SKIP`` (0.97: near-identical
prompts, served without the model) or ``pair_probability`` of the pair
model's logit, that cosine and the word overlap is at least
``DEFAULT_PAIR_THRESHOLD``. With
``pair_check="off"`` or another embedder, (1) and (3) become one cosine
threshold, ``DEFAULT_SIMILARITY_THRESHOLD``.

How each part was chosen, without looking at the pairs it is scored on: the
pairs are split in two halves by connected component of shared texts (no
question is in both halves; the half is bit 0 of a blake2b hash of the
component's smallest text), and the held-out half in two quarters by bit 1.

- Guards, on the tune half: every guard was measured alone and switched off
  one at a time; each default-on guard rejects pairs that are wrong more
  often than the pairs it lets through, while the one-sided number and name
  variants and the content-word rule cost more recall than they buy
  precision.
- 0.965, on the tune half: ``calibrate_from_scores`` with these guards,
  target precision 0.90 checked against the 95% Wilson lower bound, gives
  0.9655 (shipped rounded).
- The pair model's adapter, on the tune half only
  (``benchmarks/train_pair_model.py``: LoRA rank 16 on MiniLM read as a
  cross-encoder, on the tune pairs and the 6,016 pairs they imply, 3
  epochs, 41 minutes on 2 CPU cores). It reads each pair in both orders and
  averages the two logits, so which prompt was cached never decides a hit.
- The four weights and the pair threshold, on the held-out calibration
  quarter (the model's scores on its own training half are optimistic): a
  logistic regression of the label on (logit, cosine, word overlap) over the
  pairs that clear the gate and the guards, then ``calibrate_from_scores``,
  target 0.90 against the 95% Wilson lower bound with the pairs at or above
  the skip similarity always accepted, which gives 0.8642 (with the refit's
  weights, within 0.05 of the shipped ones); shipped rounded
  up to 0.87, as a bound met by a handful of pairs should be (on the
  adversarial pairs of ``benchmarks/cache_false_hits.py``, 0.865 serves 13
  different questions, 0.87 12, 0.88 11, for 44, 44 and 40 paraphrases).
  The word overlap's weight is negative: at the same cosine, two prompts
  that share fewer words are more often one question asked two ways. The
  benchmark redoes this fit and reports it next to the shipped constants.
- The skip similarity, on the calibration quarter: 0.97 and 0.975 gave the
  most recall there (0.98, 0.985, 0.99 and no skip gave less); 0.97 skips the
  model for more hits. Near-identical prompts are also where QQP's labels
  are least like a cache's traffic (identical words, labelled different 9%
  of the time), and without the skip the check refused some of them.
- The gate: 0.70, 0.75, 0.80 and 0.85, each fitted the same way, gave the
  same held-out precision within 0.001 and recall within 0.02; 0.80 sends
  fewer pairs to the model than the lower two.

Pairwise figures on the held-out half (20,189 pairs):

- shipped decision: precision 0.914, recall 0.292, false-hit rate 0.016; on
  the unseen quarter, used for no choice at all: 0.915 / 0.301 (the previous
  adapter, read one way and combined without the word overlap: 0.919 /
  0.246, unseen 0.920 / 0.260)
- pair check off (0.965 + guards): 0.917 / 0.140; raw cosine at 0.965:
  0.898 / 0.145
- baselines, raw cosine: redisvl's 0.90 gives 0.788 / 0.427; GPTCache's 0.80
  gives 0.679 / 0.765
- retrieval (every ``text_a`` stored, every ``text_b`` looked up): 1,685
  right hits on the pair's own question against 964 with the pair check off,
  for 176 wrong ones against 90

So at the same precision the pair check finds twice as many of the
duplicate pairs, and serves 75% more right hits in retrieval.
Recall 0.40 at precision 0.90 is still out of reach: on QQP, pairs whose
words are identical are labelled duplicates only 91% of the time, and at
recall 0.43 the shipped combination gives precision 0.885 (0.875 at 0.41
before; raw cosine 0.79; a gradient-boosted model on the cosine and lexical
features, 0.87; MiniLM itself fine-tuned as a bi-encoder on the tune half,
0.867; the shipped logit with four more lexical features, or averaged with
the previous adapter's, no better; a rank-32 adapter trained on up to 16
implied pairs per text, worse: 0.893 / 0.882 at recall 0.40 on the two
held-out quarters, against 0.899 / 0.889). The whole
curve is in the benchmark JSON; reproduce with (about 15 to 25 minutes on 2
CPU cores, mostly embedding; ``--limit 10000`` for a quick look)::

    python benchmarks/cache_quality.py --out benchmarks/results/cache_quality.json
"""

from __future__ import annotations

from costopt_core.cache.guards import GuardConfig

__all__ = [
    "DEFAULT_GUARDS",
    "DEFAULT_PAIR_GATE",
    "DEFAULT_PAIR_SKIP",
    "DEFAULT_PAIR_THRESHOLD",
    "DEFAULT_PAIR_WEIGHTS",
    "DEFAULT_SIMILARITY_THRESHOLD",
    "GUARDS_OFF",
]

#: Lowest cosine similarity (all-MiniLM-L6-v2) a semantic hit needs without the pair check.
DEFAULT_SIMILARITY_THRESHOLD = 0.965

#: Lowest cosine similarity a candidate needs before the pair check looks at it.
DEFAULT_PAIR_GATE = 0.80

#: ``pair_probability`` weights: per pair-model logit, per unit of cosine, bias,
#: per unit of ``word_overlap`` (``PairWeights.of`` reads this order).
DEFAULT_PAIR_WEIGHTS: tuple[float, float, float, float] = (0.3869, 7.4963, -5.5323, -1.1971)

#: Lowest combined probability (``pair_probability``) that serves a hit.
DEFAULT_PAIR_THRESHOLD = 0.87

#: Cosine at or above which a candidate the guards pass is served without the pair check.
DEFAULT_PAIR_SKIP = 0.97

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
    layout=True,
    order=True,
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
    layout=False,
    order=False,
    min_query_words=0,
)
