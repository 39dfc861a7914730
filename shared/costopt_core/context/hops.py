"""Which retrieved chunks a question needs as wholes, second hop included.

Sentence scores alone miss the chunk that answers a multi-hop question ("Who
is the younger brother of the actor who guest stars in The Hard Easy?"): its
answer sentence ("He is the older brother of Bill Murray") shares almost no
words with the question. What ties that chunk in is that it is *about* an
entity the first-hop chunk names ("The episode guest stars Brian
Doyle-Murray"). So chunks are ranked as wholes by

- the rare question words each contains (the first hop),
- whether its opening sentence, which says what a chunk is about, names an
  entity that the best first-hop chunk mentions (the second hop), and
- the order the retriever returned them in (best first),

and the summarizer gives the sentences of the top few chunks a small lift.
Pure functions of strings; no model call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from costopt_core.context.lexical import name_tokens, names, stem, terms

__all__ = ["idf_overlap", "rank_chunks", "top_chunks"]


def idf_overlap(terms: set[str], word_sets: Sequence[set[str]]) -> npt.NDArray[np.float64]:
    """Share of the query terms' weight each text contains; terms in few texts weigh more.

    Args:
        terms: the query's words.
        word_sets: the words of each text (a sentence or a chunk).

    Returns:
        One value in [0, 1] per text; all zeros when no term occurs anywhere.
    """
    n = len(word_sets)
    out = np.zeros(n, dtype=np.float64)
    if not terms or not n:
        return out
    weights = {}
    for t in terms:
        df = sum(1 for ws in word_sets if t in ws)
        if df:
            weights[t] = math.log(1.0 + n / df)
    total = sum(weights.values())
    if total <= 0:
        return out
    for i, ws in enumerate(word_sets):
        out[i] = sum(w for t, w in weights.items() if t in ws) / total
    return out


def rank_chunks(
    question: str,
    chunks: Sequence[str],
    leads: Sequence[str],
    *,
    order_weight: float,
) -> npt.NDArray[np.float64]:
    """Relevance of each chunk as a whole: first hop, second hop and retriever order.

    Args:
        question: the user's question.
        chunks: chunk texts, in the retriever's order (best first).
        leads: the opening sentence of each chunk ("" for an empty chunk).
        order_weight: how much the input order counts; 0 when the chunks
            come in no particular order.

    Returns:
        One score per chunk; higher is more likely needed.
    """
    n = len(chunks)
    if not n:
        return np.zeros(0, dtype=np.float64)
    q_terms = terms(question)
    first_hop = idf_overlap(q_terms, [terms(c) for c in chunks])
    score = first_hop.copy()
    if n > 1:
        best = int(np.argmax(first_hop))
        bridge = name_tokens(names(chunks[best])) - name_tokens(names(question))
        bridge_terms = {stem(w) for w in bridge} - q_terms
        second_hop = idf_overlap(bridge_terms, [terms(lead) for lead in leads])
        second_hop[best] = 0.0  # the first-hop chunk does not bridge to itself
        score += second_hop
    return score + order_weight * (1.0 - np.arange(n, dtype=np.float64) / n)


def top_chunks(scores: npt.NDArray[np.float64], k: int) -> set[int]:
    """The ``k`` best chunks (ties go to the earlier chunk)."""
    return {int(i) for i in np.argsort(-scores, kind="stable")[:k]}
