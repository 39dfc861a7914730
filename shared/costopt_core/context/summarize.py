"""Context summarization: send the model the sentences that answer the question, not whole chunks.

Retrieved chunks are mostly text the answer does not need. The extractive
summarizer (the default: no LLM call and, unless sentence embeddings are
turned on, no embedding either: a few milliseconds) splits each chunk into
sentences, scores every sentence against the
question and keeps the best ones under a token budget, in their original
order. By default the score is lexical, with no model call: three signals
over the words the question and the sentences share:

- named items: a sentence that contains a number or a name the question
  mentions is kept first ("What happened in 1969?" needs the sentence with
  "1969" even if another sentence is closer in meaning);
- rare shared words: words the question shares with few sentences of the
  context weigh more than words every sentence has;
- bridges: a multi-hop question ("Where is the director of Big Stone Gap
  based?") needs a sentence about an entity that only the first-hop sentence
  names. A second pass expands the query with the names in the best
  sentences and rewards sentences that mention them;

a small prior for the first sentence of a chunk, which usually says what
the chunk is about, and a small lift for every sentence of the few chunks
that rank best as wholes (:mod:`costopt_core.context.hops`: the chunk that
holds a multi-hop answer is often found by what it is about, not by its
answer sentence). Sentences are then taken best value first (score per
token, softened), so the budget holds more facts.

``SummarizerConfig(sentence_embeddings=True)`` adds embedding similarity to
the question to the score. Turn it on when questions are worded unlike the
text that answers them (paraphrases and synonyms: "How long do I have to
return an item?" against "may send it back within thirty days"), which
shares no rare word, number or name with it and is cut. It is off by
default because on the benchmark (HotpotQA, where questions reuse the
context's names) the lexical signals alone kept more answers at the same
budget, in milliseconds instead of an embedding of every sentence (see
:class:`SummarizerConfig`).

The abstractive summarizer asks a (cheap) chat model to write the summary
instead; its answer can be cached with a
:class:`~costopt_core.cache.ComponentCache`.

Both are pure functions over plain strings; the embedding and chat calls are
passed in, so the LangChain and LlamaIndex adapters, sync and async, share
every decision.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from costopt_core.cache.component import ComponentCache
from costopt_core.context.hops import idf_overlap, rank_chunks, top_chunks
from costopt_core.context.lexical import contains as _contains
from costopt_core.context.lexical import name_tokens as _name_tokens
from costopt_core.context.lexical import names as _names
from costopt_core.context.lexical import numbers as _numbers
from costopt_core.context.lexical import stem as _stem
from costopt_core.context.lexical import terms as _terms
from costopt_core.context.sentences import Sentence, cut_to_tokens, split_sentences
from costopt_core.errors import ConfigurationError, config_error
from costopt_core.overhead import overhead_of
from costopt_core.types import Message

__all__ = [
    "ABSTRACTIVE_PROMPT",
    "AbstractiveConfig",
    "AbstractiveSummary",
    "ChunkSummary",
    "SummarizerConfig",
    "SummaryResult",
    "abstractive_messages",
    "asummarize_abstractive",
    "asummarize_extractive",
    "summarize_abstractive",
    "summarize_extractive",
]

Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]
AEmbed = Callable[[Sequence[str]], Awaitable[npt.NDArray[np.float32]]]
CountTokens = Callable[[str], int]
_F = TypeVar("_F", Embed, AEmbed)


class SummarizerConfig(BaseModel):
    """How much context the extractive summarizer keeps, and how it ranks sentences.

    The budget is the smaller of ``budget_ratio`` of the input tokens (but
    not below ``ratio_floor_tokens``) and ``budget_tokens``; at least one
    must be set. A context already within the budget is returned whole.

    Attributes:
        budget_ratio: keep at most this share of the input tokens.
        budget_tokens: keep at most this many tokens.
        ratio_floor_tokens: ``budget_ratio`` never cuts a context below this
            many tokens (``budget_tokens`` still does): summarizing a short
            context saves little and risks its answer. A context of at most
            this many tokens is returned whole unless ``budget_tokens`` is set.
        min_score: drop sentences scoring below this even when the budget has
            room (``None``: fill the budget).
        keep_named: keep first, for each number the question mentions (and
            each name, with ``keep_names``), the best sentence that contains it.
        keep_names: apply ``keep_named`` and ``named_weight`` to the question's
            names too, not only its numbers. Off by default: a name's words
            are rare, so the rare-word score already favours the sentences
            naming it, and forcing them in spends the budget twice (on
            HotpotQA at 40% of the tokens, 92.4% of answers kept with it on,
            95.2% with it off; ``benchmarks/context.py``).
        expand_query: second pass rewarding sentences that mention names from
            the best first-pass sentences (multi-hop "bridge" sentences).
        expansion_seeds: how many first-pass sentences feed the expansion.
        lexical_weight: weight of the rare-shared-words score (0 to 1 scale).
        expansion_weight: weight of the bridge score (0 to 1 scale).
        named_weight: score added per named item a sentence contains (share of
            the question's named items).
        lead_prior: score added to the first sentence of each chunk.
        length_penalty: sentences are taken in order of score divided by
            their tokens to this power: 0 ranks by score alone; above 0, of
            two sentences that score alike the shorter goes first, which fits
            more facts into the budget.
        chunk_boost: score added to every sentence of the
            ``chunk_boost_top_k`` chunks that rank best as wholes (rare
            question words, a second-hop bridge from the best chunk, and the
            retriever's order; :func:`costopt_core.context.hops.rank_chunks`).
            0 turns it off.
        chunk_boost_top_k: how many chunks get ``chunk_boost``.
        retriever_order_weight: how much the input order (the retriever's
            ranking, best first) counts in that chunk ranking; set 0 when the
            chunks come in no particular order.
        separator: joins the kept sentences of one chunk.
        sentence_embeddings: also score sentences by embedding similarity to
            the question. Turn it on when users paraphrase (a question that
            shares no rare word, number or name with its answer sentence loses
            that sentence without it), and pass ``embed``. Off by default: on
            HotpotQA the lexical signals alone
            kept more answers at the same budget (95.2% against 92.0% at 40%
            of the tokens, ``benchmarks/context.py``) and need no model call, so a
            question takes a few milliseconds instead of embedding every
            sentence (~0.5 s for 45 sentences with MiniLM on 2 CPU cores).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget_ratio: float | None = Field(default=0.4, gt=0.0, le=1.0)
    budget_tokens: int | None = Field(default=None, ge=1)
    ratio_floor_tokens: int = Field(default=64, ge=0)
    min_score: float | None = Field(default=None, ge=-1.0, le=10.0)
    keep_named: bool = True
    keep_names: bool = False
    expand_query: bool = True
    expansion_seeds: int = Field(default=2, ge=1, le=16)
    lexical_weight: float = Field(default=0.3, ge=0.0, le=5.0)
    expansion_weight: float = Field(default=0.2, ge=0.0, le=5.0)
    named_weight: float = Field(default=0.2, ge=0.0, le=5.0)
    lead_prior: float = Field(default=0.15, ge=0.0, le=1.0)
    length_penalty: float = Field(default=0.4, ge=0.0, le=2.0)
    chunk_boost: float = Field(default=0.05, ge=0.0, le=5.0)
    chunk_boost_top_k: int = Field(default=3, ge=1, le=64)
    retriever_order_weight: float = Field(default=0.6, ge=0.0, le=5.0)
    separator: str = " "
    sentence_embeddings: bool = False

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self).__name__, exc) from None

    @model_validator(mode="after")
    def _one_budget(self) -> SummarizerConfig:
        if self.budget_ratio is None and self.budget_tokens is None:
            raise ValueError("set budget_ratio (e.g. 0.5) or budget_tokens (e.g. 800), or both")
        return self

    def budget_for(self, tokens_in: int) -> int:
        """The token budget for a context of ``tokens_in`` tokens."""
        budget = tokens_in
        if self.budget_ratio is not None:
            by_ratio = max(math.floor(tokens_in * self.budget_ratio), self.ratio_floor_tokens)
            budget = min(budget, by_ratio)
        if self.budget_tokens is not None:
            budget = min(budget, self.budget_tokens)
        return budget


@dataclass(frozen=True, slots=True)
class ChunkSummary:
    """What was kept of one input chunk.

    Attributes:
        index: position of the chunk in the input (adapters map back with it).
        text: the kept sentences, in their original order.
        sentence_indices: which sentences of the chunk were kept (0-based).
        tokens_before: tokens of the whole chunk.
        tokens_after: tokens of ``text``.
        cut: the sentence (one of ``sentence_indices``) kept only in part,
            its beginning, because it alone was longer than the budget;
            ``None`` when every kept sentence is whole.
    """

    index: int
    text: str
    sentence_indices: tuple[int, ...]
    tokens_before: int
    tokens_after: int
    cut: int | None = None


@dataclass(frozen=True, slots=True)
class SummaryResult:
    """The summarized context: kept chunks only, in input order.

    Attributes:
        chunks: one entry per chunk that kept at least one sentence, and one
            per chunk without text (empty or blank: an image's document, a
            table kept in metadata), unchanged: it costs (next to) nothing,
            and dropping it would lose what its metadata carries.
        tokens_before: tokens of all input chunks.
        tokens_after: tokens of all kept text.
        budget_tokens: the budget that applied.
    """

    chunks: tuple[ChunkSummary, ...]
    tokens_before: int
    tokens_after: int
    budget_tokens: int

    @property
    def removed_tokens(self) -> int:
        """Tokens kept out of the prompt (what the ledger records as compression)."""
        return self.tokens_before - self.tokens_after


def blank_question(question: str | None) -> bool:
    """No question to summarize for: missing, empty or whitespace.

    A blank question selects nothing: cutting the context for it would only
    keep sentences at random, so the summarizers return the context whole
    (and the abstractive one makes no model call). The adapters pass their
    documents or nodes through unchanged then.
    """
    return question is None or not str(question).strip()


# --- extractive -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    question: str
    chunks: tuple[str, ...]
    sentences: tuple[tuple[Sentence, ...], ...]
    flat: tuple[tuple[int, int], ...]  # (chunk index, sentence index) per sentence

    @property
    def texts(self) -> list[str]:
        return [self.sentences[c][s].text for c, s in self.flat]

    def indents(self, separator: str) -> list[str]:
        """Per sentence, the indentation :func:`_join` puts before it (see there)."""
        if not _keeps_lines(separator):
            return ["" for _ in self.flat]
        return [_indent(self.chunks[c], self.sentences[c][s].start) for c, s in self.flat]


def _plan(question: str, chunks: Sequence[str]) -> _Plan:
    sentences = tuple(tuple(split_sentences(c)) for c in chunks)
    flat = tuple((c, s) for c, sents in enumerate(sentences) for s in range(len(sents)))
    return _Plan(question, tuple(chunks), sentences, flat)


def _score(
    plan: _Plan,
    sims: npt.NDArray[np.float64],
    config: SummarizerConfig,
) -> tuple[npt.NDArray[np.float64], list[int]]:
    """Final sentence scores and the sentences to keep first (named items)."""
    texts = plan.texts
    lowered = [t.lower() for t in texts]
    words = [_terms(t) for t in texts]
    q_terms = _terms(plan.question)
    q_numbers = _numbers(plan.question)
    q_names = _names(plan.question)
    named_items = sorted(q_numbers | q_names if config.keep_names else q_numbers)

    score = sims + config.lexical_weight * idf_overlap(q_terms, words)
    contains = np.zeros((len(named_items), len(texts)), dtype=bool)
    for k, item in enumerate(named_items):
        for i, low in enumerate(lowered):
            contains[k, i] = _contains(low, item)
    if named_items:
        score = score + config.named_weight * contains.mean(axis=0)
    score = score + config.lead_prior * np.array(
        [1.0 if s == 0 else 0.0 for _, s in plan.flat], dtype=np.float64
    )

    if config.expand_query and len(texts) > 1:
        seeds = np.argsort(-score, kind="stable")[: config.expansion_seeds]
        seed_names: set[str] = set()
        for i in seeds:
            seed_names |= _names(texts[int(i)])
        expansion = {_stem(w) for w in _name_tokens(seed_names) - _name_tokens(q_names)} - q_terms
        bridge = idf_overlap(expansion, words)
        bridge[seeds] = 0.0  # a seed does not bridge to itself
        score = score + config.expansion_weight * bridge

    if config.chunk_boost > 0 and len(plan.chunks) > 1:
        leads = [sents[0].text if sents else "" for sents in plan.sentences]
        ranked = rank_chunks(
            plan.question, plan.chunks, leads, order_weight=config.retriever_order_weight
        )
        boosted = top_chunks(ranked, config.chunk_boost_top_k)
        score = score + config.chunk_boost * np.array(
            [1.0 if c in boosted else 0.0 for c, _ in plan.flat], dtype=np.float64
        )

    first: list[int] = []
    if config.keep_named:
        for k in range(len(named_items)):
            hits = np.flatnonzero(contains[k])
            if hits.size:
                best = int(hits[np.argmax(score[hits])])
                if best not in first:
                    first.append(best)
        first.sort(key=lambda i: -score[i])
    return score, first


def _whole(
    plan: _Plan, config: SummarizerConfig, count_tokens: CountTokens
) -> SummaryResult | None:
    """The context unchanged when the question is blank (see :func:`blank_question`)
    or the context is within its budget, else ``None`` (summarize it).

    Decided on the whole chunks' tokens, before any scoring: summed per
    sentence (each with a separator) a chunk can cost more than it does
    whole, and the greedy fill then cut a context it had promised to return
    whole (a short context under ``ratio_floor_tokens`` lost a sentence).
    With ``min_score`` the weak sentences go even when the budget has room,
    so the context is scored (and :func:`_select` keeps every sentence that
    passes).
    """
    blank = blank_question(plan.question)
    if config.min_score is not None and not blank:
        return None
    chunk_tokens = [count_tokens(c) for c in plan.chunks]
    tokens = sum(chunk_tokens)
    budget = config.budget_for(tokens)
    if tokens > budget and not blank:
        return None
    chunks = tuple(
        ChunkSummary(c, plan.chunks[c], tuple(range(len(sents))), chunk_tokens[c], chunk_tokens[c])
        for c, sents in enumerate(plan.sentences)
    )
    return SummaryResult(chunks, tokens, tokens, budget)


def _select(
    plan: _Plan,
    sentence_vectors: npt.NDArray[np.float32],
    question_vector: npt.NDArray[np.float32] | None,
    config: SummarizerConfig,
    count_tokens: CountTokens,
) -> SummaryResult:
    chunk_tokens = [count_tokens(c) for c in plan.chunks]
    tokens_before = sum(chunk_tokens)
    budget = config.budget_for(tokens_before)
    if not plan.flat:
        blank = _assemble(plan, set(), {}, chunk_tokens, config, count_tokens)
        after = sum(s.tokens_after for s in blank)
        return SummaryResult(tuple(blank), tokens_before, after, budget)
    if question_vector is not None and sentence_vectors.size:
        sims = (sentence_vectors @ question_vector).astype(np.float64)
    else:
        sims = np.zeros(len(plan.flat), dtype=np.float64)
    score, first = _score(plan, sims, config)

    # A sentence joined after another costs about its tokens with a leading
    # separator (and the indentation of its line, which the join keeps); the
    # exact count of the joined text is checked below.
    cost = [
        count_tokens(config.separator + lead + t)
        for lead, t in zip(plan.indents(config.separator), plan.texts, strict=True)
    ]
    order = first + [int(i) for i in _by_value(score, cost, config) if int(i) not in first]
    # A context within its budget keeps every sentence min_score lets through:
    # the per-sentence costs overstate it and must not cut it.
    fits = tokens_before <= budget
    kept: set[int] = set()
    oversized: int | None = None
    used = 0
    for i in order:
        if config.min_score is not None and score[i] < config.min_score and i not in first:
            continue
        if fits or used + cost[i] <= budget:
            kept.add(i)
            used += cost[i]
        elif oversized is None and cost[i] > budget:
            oversized = i

    def joined_cost(text: str) -> int:
        return count_tokens(config.separator + text)

    # A sentence longer than the whole budget can never be taken whole: a
    # chunk that is one long sentence (a paragraph without stops, a table
    # row run) would be dropped entirely, its tokens booked as savings. The
    # best such sentence keeps its beginning in the room left, when nothing
    # else was kept or the room is worth a fragment.
    cut: dict[int, str] = {}
    room = budget - used
    if oversized is not None and (not kept or room >= min(_MIN_CUT_TOKENS, budget)):
        piece = cut_to_tokens(plan.texts[oversized], room, joined_cost)
        if piece:
            cut[oversized] = piece
            kept.add(oversized)

    while True:
        summaries = _assemble(plan, kept, cut, chunk_tokens, config, count_tokens)
        after = sum(s.tokens_after for s in summaries)
        if after <= budget or not kept:
            return SummaryResult(tuple(summaries), tokens_before, after, budget)
        if cut:
            # The cut sentence is the filler: shorten it before dropping a whole one.
            ((i, piece),) = cut.items()
            shorter = cut_to_tokens(piece, joined_cost(piece) - (after - budget), joined_cost)
            if shorter and shorter != piece:
                cut[i] = shorter
                continue
            del cut[i]
            kept.discard(i)
            continue
        kept.discard(min(kept, key=lambda i: score[i]))


#: The least room worth filling with the beginning of a sentence too long
#: for the whole budget, once other sentences were kept (a few words of a
#: cut sentence say little; with nothing else kept any room is used).
_MIN_CUT_TOKENS = 12


def _by_value(
    score: npt.NDArray[np.float64], cost: list[int], config: SummarizerConfig
) -> npt.NDArray[np.intp]:
    """Sentence indices, best value first: score per token, softened by ``length_penalty``."""
    if config.length_penalty == 0:
        return np.argsort(-score, kind="stable")
    scale = np.maximum(np.asarray(cost, dtype=np.float64), 1.0) ** config.length_penalty
    # A negative score (embedding similarity) must not improve by being long.
    value = np.where(score > 0, score / scale, score * scale)
    return np.argsort(-value, kind="stable")


def _assemble(
    plan: _Plan,
    kept: set[int],
    cut: dict[int, str],
    chunk_tokens: list[int],
    config: SummarizerConfig,
    count_tokens: CountTokens,
) -> list[ChunkSummary]:
    by_chunk: dict[int, list[int]] = {}
    partial: dict[int, int] = {}
    for i in sorted(kept):
        c, s = plan.flat[i]
        by_chunk.setdefault(c, []).append(s)
        if i in cut:
            partial[c] = s
    texts = {plan.flat[i]: t for i, t in cut.items()}
    # A chunk without text has no sentence to keep or drop: it goes as it
    # came (an image's document, a table in metadata), not dropped as empty.
    blank = {c for c, sents in enumerate(plan.sentences) if not sents}
    out = []
    for c in sorted(by_chunk.keys() | blank):
        idx = by_chunk.get(c, [])
        sents = plan.sentences[c]
        if len(idx) == len(sents) and c not in partial:
            text = plan.chunks[c]  # whole chunk kept: its own text, unchanged
        else:
            text = _join(plan.chunks[c], sents, idx, texts, c, config.separator)
        out.append(
            ChunkSummary(c, text, tuple(idx), chunk_tokens[c], count_tokens(text), partial.get(c))
        )
    return out


def _join(
    chunk: str,
    sents: Sequence[Sentence],
    idx: list[int],
    texts: dict[tuple[int, int], str],
    c: int,
    separator: str,
) -> str:
    """The kept sentences of one chunk joined by ``separator``.

    With a whitespace separator, a sentence that began a line in the chunk
    (a list item, a table row) begins one in the summary too: a table
    flattened onto one line loses its rows. It also keeps its line's
    indentation (:func:`_indent`): sentences are stripped spans, and a line of
    code split off at a blank line (``client.port = port`` in a function
    body) or a nested list item would otherwise move to the margin, changing
    what the code or the list says. The kept text stays an excerpt: the
    indentation is the input's, and "\n" plus it is the tail of the gap it
    replaces, so nothing grows.
    """
    lines = _keeps_lines(separator)
    parts: list[str] = []
    for k, s in enumerate(idx):
        if k:
            gap = chunk[sents[idx[k - 1]].end : sents[s].start]
            parts.append("\n" if lines and "\n" in gap else separator)
        if lines:
            parts.append(_indent(chunk, sents[s].start))
        parts.append(texts.get((c, s), sents[s].text))
    return "".join(parts)


def _keeps_lines(separator: str) -> bool:
    """Whether the join keeps line breaks (and indentation): a whitespace separator.

    A visible separator (" ... ") marks every cut, so the sentences go on one
    line between the marks.
    """
    return not separator.strip()


def _indent(chunk: str, start: int) -> str:
    """The whitespace before ``chunk[start]`` on its line, or "" when text precedes it there.

    A sentence that begins mid-line (after another's stop) has no indentation
    of its own.
    """
    lead = chunk[chunk.rfind("\n", 0, start) + 1 : start]
    return lead if lead.isspace() else ""


def _split_vectors(
    plan: _Plan, vectors: npt.NDArray[np.float32], question_vector: npt.NDArray[np.float32] | None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    if question_vector is not None:
        return vectors, np.asarray(question_vector, dtype=np.float32).reshape(-1)
    return vectors[1:], vectors[0]


def _needs(fn: _F | None, name: str) -> _F:
    if fn is None:
        raise ConfigurationError(
            f"SummarizerConfig(sentence_embeddings=True) needs {name}=..., e.g. "
            f"{name}=engine.embedder.{name}; or set sentence_embeddings=False"
        )
    return fn


def _to_embed(
    plan: _Plan, question_vector: npt.NDArray[np.float32] | None, config: SummarizerConfig
) -> list[str]:
    texts = plan.texts
    if not texts or not config.sentence_embeddings:
        return []
    return texts if question_vector is not None else [plan.question, *texts]


def summarize_extractive(
    question: str,
    chunks: Sequence[str],
    config: SummarizerConfig | None = None,
    *,
    embed: Embed | None = None,
    count_tokens: CountTokens,
    question_vector: npt.NDArray[np.float32] | None = None,
) -> SummaryResult:
    """Keep the sentences of ``chunks`` that best answer ``question``, under a token budget.

    Sentences are scored by the rare words, numbers and names they share with
    the question (and, for multi-hop questions, with the best sentences found
    first). With ``config.sentence_embeddings`` all sentences (and the
    question, unless its vector is given) are also embedded, in one ``embed``
    call.

    Args:
        question: the user's question (the retriever query).
        chunks: retrieved chunk texts, in the order they will be sent.
        config: budget and scoring; ``SummarizerConfig()`` by default.
        embed: texts -> unit-length vectors (e.g. ``engine.embedder.embed``);
            needed only with ``config.sentence_embeddings``.
        count_tokens: text -> tokens (e.g. ``engine.tokens.count``).
        question_vector: the question's embedding, if already computed.

    Returns:
        The kept text per chunk (chunks with nothing kept are left out;
        chunks without text are kept as they are) and the token counts
        before and after; ``tokens_after <= budget_tokens`` unless the
        chunks without text alone exceed it.
        A context within its budget (by default any of at most
        ``ratio_floor_tokens``), or asked with a blank question, comes back
        unchanged, with no ``embed`` call.

    Example:
        >>> from costopt_core.testing import FakeEmbedder
        >>> r = summarize_extractive(
        ...     "When was the bridge opened?",
        ...     ["The bridge opened in 1932. It is painted grey. Gulls nest on it."],
        ...     SummarizerConfig(budget_tokens=6),
        ...     embed=FakeEmbedder().embed,
        ...     count_tokens=lambda t: len(t.split()),
        ... )
        >>> r.chunks[0].text
        'The bridge opened in 1932.'
    """
    config = config or SummarizerConfig()
    plan = _plan(question, chunks)
    if config.sentence_embeddings and plan.flat:
        _needs(embed, "embed")  # a missing embedder is a setup error, short context or not
    whole = _whole(plan, config, count_tokens)
    if whole is not None:
        return whole
    texts = _to_embed(plan, question_vector, config)
    if not texts:
        return _select(plan, np.zeros((0, 0), dtype=np.float32), None, config, count_tokens)
    vectors = _needs(embed, "embed")(texts)
    sentence_vectors, q = _split_vectors(plan, vectors, question_vector)
    return _select(plan, sentence_vectors, q, config, count_tokens)


async def asummarize_extractive(
    question: str,
    chunks: Sequence[str],
    config: SummarizerConfig | None = None,
    *,
    aembed: AEmbed | None = None,
    count_tokens: CountTokens,
    question_vector: npt.NDArray[np.float32] | None = None,
) -> SummaryResult:
    """Async twin of :func:`summarize_extractive`; ``aembed`` is awaited once."""
    config = config or SummarizerConfig()
    plan = _plan(question, chunks)
    if config.sentence_embeddings and plan.flat:
        _needs(aembed, "aembed")  # a missing embedder is a setup error, short context or not
    whole = _whole(plan, config, count_tokens)
    if whole is not None:
        return whole
    texts = _to_embed(plan, question_vector, config)
    if not texts:
        return _select(plan, np.zeros((0, 0), dtype=np.float32), None, config, count_tokens)
    vectors = await _needs(aembed, "aembed")(texts)
    sentence_vectors, q = _split_vectors(plan, vectors, question_vector)
    return _select(plan, sentence_vectors, q, config, count_tokens)


# --- abstractive ------------------------------------------------------------------

#: The instruction the cheap model gets; part of the cache key, so editing it
#: never serves summaries written under the old one.
ABSTRACTIVE_PROMPT = (
    "You shorten retrieved context for a question. From the numbered passages, copy only "
    "the facts needed to answer the question, keeping names, numbers and dates exactly as "
    "written. Do not answer the question, do not add anything that is not in the passages, "
    "and write at most {max_tokens} tokens. If nothing is relevant, reply with nothing."
)


class AbstractiveConfig(BaseModel):
    """How the abstractive summarizer asks the cheap model.

    Attributes:
        max_summary_tokens: the length the prompt asks for (pass the same
            limit as ``max_tokens`` to the model to enforce it).
        prompt: the system instruction; ``{max_tokens}`` is filled in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_summary_tokens: int = Field(default=256, ge=16, le=8192)
    prompt: str = Field(default=ABSTRACTIVE_PROMPT, min_length=1)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self).__name__, exc) from None


@dataclass(frozen=True, slots=True)
class AbstractiveSummary:
    """The model-written summary of a whole context.

    Attributes:
        text: the summary, or the original chunks joined by blank lines when
            the model's summary was empty or not shorter.
        tokens_before: tokens of all input chunks.
        tokens_after: tokens of ``text`` (``tokens_before`` when the original
            context was kept).
        summarized: False when the original context was kept.
    """

    text: str
    tokens_before: int
    tokens_after: int
    summarized: bool

    @property
    def removed_tokens(self) -> int:
        return self.tokens_before - self.tokens_after


def abstractive_messages(
    question: str, chunks: Sequence[str], config: AbstractiveConfig | None = None
) -> list[Message]:
    """The chat request that asks the cheap model for a summary."""
    config = config or AbstractiveConfig()
    passages = "\n\n".join(f"[{i + 1}] {c.strip()}" for i, c in enumerate(chunks) if c.strip())
    return [
        Message("system", config.prompt.replace("{max_tokens}", str(config.max_summary_tokens))),
        Message("user", f"Question: {question.strip()}\n\nPassages:\n{passages}"),
    ]


def _cache_input(question: str, chunks: Sequence[str]) -> dict[str, Any]:
    return {"question": question, "chunks": list(chunks)}


def _cache_variant(config: AbstractiveConfig) -> dict[str, Any]:
    return {"prompt": config.prompt, "max_summary_tokens": config.max_summary_tokens}


def _abstract_result(
    chunks: Sequence[str], summary: str | None, count_tokens: CountTokens
) -> AbstractiveSummary:
    before = sum(count_tokens(c) for c in chunks)
    # No answer is an empty summary, which keeps the original context: str(None)
    # would be the four-letter "summary" "None", shorter than any context.
    text = "" if summary is None else str(summary).strip()
    after = count_tokens(text)
    if not text or after >= before:
        return AbstractiveSummary("\n\n".join(chunks), before, before, False)
    return AbstractiveSummary(text, before, after, True)


def summarize_abstractive(
    question: str,
    chunks: Sequence[str],
    chat: Callable[[list[Message]], str],
    config: AbstractiveConfig | None = None,
    *,
    count_tokens: CountTokens,
    cache: ComponentCache | None = None,
) -> AbstractiveSummary:
    """Ask a cheap chat model to summarize ``chunks`` for ``question``.

    The model call is the caller's: its cost is recorded by whatever cost
    handler is attached to that model (``CostCallbackHandler`` /
    ``CostEventHandler``). It runs inside ``overhead_of("compression")``, so
    it is recorded as compression's overhead (no baseline, its cost taken
    off compression's saving), not as a request. The tokens the summary
    removes are for the caller to record as ``compression``.

    Args:
        question: the user's question.
        chunks: the retrieved context.
        chat: messages -> the model's text answer.
        config: prompt and length.
        count_tokens: text -> tokens.
        cache: a :class:`~costopt_core.cache.ComponentCache` that stores
            summaries by (question, chunks, prompt); give each summarizer
            model its own cache name.

    Returns:
        The summary, or the original context when the summary is not shorter
        (an empty context, or a blank question, is returned as is, without a
        model call).
    """
    config = config or AbstractiveConfig()
    if blank_question(question) or not any(c.strip() for c in chunks):
        return _abstract_result(chunks, "", count_tokens)
    messages = abstractive_messages(question, chunks, config)
    with overhead_of("compression"):
        if cache is None:
            summary = chat(messages)
        else:
            summary = cache.get_or_call(
                _cache_input(question, chunks),
                lambda: chat(messages),
                variant=_cache_variant(config),
            )
    return _abstract_result(chunks, summary, count_tokens)


async def asummarize_abstractive(
    question: str,
    chunks: Sequence[str],
    achat: Callable[[list[Message]], Awaitable[str]],
    config: AbstractiveConfig | None = None,
    *,
    count_tokens: CountTokens,
    cache: ComponentCache | None = None,
) -> AbstractiveSummary:
    """Async twin of :func:`summarize_abstractive`; ``achat`` is awaited."""
    config = config or AbstractiveConfig()
    if blank_question(question) or not any(c.strip() for c in chunks):
        return _abstract_result(chunks, "", count_tokens)
    messages = abstractive_messages(question, chunks, config)
    with overhead_of("compression"):
        if cache is None:
            summary = await achat(messages)
        else:
            summary = await cache.aget_or_call(
                _cache_input(question, chunks),
                lambda: achat(messages),
                variant=_cache_variant(config),
            )
    return _abstract_result(chunks, summary, count_tokens)
