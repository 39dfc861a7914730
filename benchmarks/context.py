"""Context reduction on HotpotQA (distractor): relevance filtering, summarization, both.

Each question comes with about 10 paragraphs, 2 of them supporting (the
answer needs both: HotpotQA questions are multi-hop). The paragraphs are
"retrieved" by scoring them against the question with the engine's embedder
(all-MiniLM-L6-v2, cosine) and sent in rank order. Three pipelines are
compared with the context sent unfiltered:

- ``relevance only``: ``select_relevant`` on the scored paragraphs with the
  engine's default cutoffs (near-duplicates only; score cutoffs are opt-in,
  and ``sensitivity.relevance_relative_to_top`` shows what they cost here:
  HotpotQA's distractors are picked to resemble the question, so the second
  supporting paragraph often ranks low);
- ``summarize only``: extractive summarization of all paragraphs;
- ``relevance + summarize``: both, the shipped default.

Scoring (the protocol of ``../shared/data/README.md``, section rag):

- context tokens before and after (``cl100k_base``), summed over questions;
  the reduction is ``1 - after / before``;
- support retention, the share of questions whose support survives. After
  relevance filtering: both supporting paragraphs are still there. After
  summarization: the answer span (case and spacing aside) is still in the kept
  text of a supporting paragraph. Yes/no answers (comparison questions) have
  no span in the text; they count as retained when both supporting
  paragraphs keep at least one sentence. Questions whose answer appears in no
  paragraph at all are excluded and counted (``excluded``).
- ``both_supporting_kept``: the stricter multi-hop view for every question,
  both supporting paragraphs keep at least one sentence.

Timing: the shipped summarizer scores sentences lexically and embeds
nothing, so ``ms_per_question`` is the whole summarizer call (splitting,
scoring, selection, token counting). The ``with_sentence_embeddings``
ablation also embeds every sentence; ``embed_ms_per_question`` is that
cold batched embedding (all-MiniLM-L6-v2 on a 2-core CPU: about 10 ms per
sentence), measured once per question, and is not part of the default.

Not tuned per question: one configuration for every question, and the
sensitivity to the budget and to each scoring signal is reported so that a
setting that only suits this set would show. ``halves`` splits the questions
by a hash of their id into two fixed halves; similar figures on both mean
the defaults are not fitted to a few questions.

    python benchmarks/context.py --out benchmarks/results/context.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import numpy as np
import numpy.typing as npt
from _common import open_text, print_table, require, write_json

from costopt_core.context.relevance import RelevanceConfig, ScoredChunk, select_relevant
from costopt_core.context.summarize import SummarizerConfig, summarize_extractive
from costopt_core.embeddings import SentenceTransformerEmbedder
from costopt_core.tokens import default_counter

DEFAULT_DATA = _common.DATA / "rag" / "hotpotqa_distractor_dev.jsonl.gz"
BUDGET_RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7)
YES_NO = frozenset({"yes", "no"})

F32 = npt.NDArray[np.float32]


@dataclass
class Question:
    qid: str
    text: str
    answer: str
    paragraphs: list[str]
    supporting: list[bool]
    # filled by retrieval: paragraph indices by descending score, and the scores
    ranked: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


class StoredEmbedder:
    """Remembers every vector (no eviction) and can keep them in a file between runs."""

    def __init__(self, inner: SentenceTransformerEmbedder, path: str | None) -> None:
        self.inner = inner
        self.path = Path(path) if path else None
        self.vectors: dict[str, F32] = {}
        self.loaded = False
        if self.path is not None and self.path.exists():
            with np.load(self.path, allow_pickle=False) as z:
                self.vectors = dict(zip(z["texts"].tolist(), z["vectors"], strict=True))
            self.loaded = True

    def embed(self, texts: Sequence[str]) -> F32:
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            self.vectors.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32, copy=False)

    def save(self) -> None:
        if self.path is not None and not self.loaded:
            texts = list(self.vectors)
            np.savez(
                self.path, texts=np.array(texts), vectors=np.stack([self.vectors[t] for t in texts])
            )


def load(path: Path, limit: int | None) -> list[Question]:
    """The questions of a HotpotQA-format JSONL file, gzipped (``.gz``) or plain."""
    out: list[Question] = []
    with open_text(path) as f:
        for line in f:
            if limit is not None and len(out) >= limit:
                break
            if not line.strip():
                continue
            row = json.loads(line)
            out.append(
                Question(
                    qid=str(row["question_id"]),
                    text=row["question_text"],
                    answer=row["answers_objects"][0]["spans"][0],
                    paragraphs=[c["paragraph_text"] for c in row["contexts"]],
                    supporting=[bool(c["is_supporting"]) for c in row["contexts"]],
                )
            )
    return out


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def retrieve(questions: list[Question], embedder: StoredEmbedder) -> float:
    """Score and rank every question's paragraphs; returns ms per question."""
    start = time.perf_counter()
    for q in questions:
        vecs = embedder.embed([q.text, *q.paragraphs])
        scores = vecs[1:] @ vecs[0]
        q.scores = [float(s) for s in scores]
        q.ranked = [int(i) for i in np.argsort(-scores, kind="stable")]
    return (time.perf_counter() - start) / max(len(questions), 1) * 1e3


# --- the relevance stage --------------------------------------------------------


#: The relevance stage of the shipped pipeline: the engine's default cutoffs
#: (``RelevanceConfig()``: near-duplicates dropped, no score cutoff, since a
#: good cutoff depends on the embedding model) on cosine similarities.
#: ``sensitivity.relevance_relative_to_top`` shows what score cutoffs cost here.
RELEVANCE = RelevanceConfig(score_convention="similarity")
RELATIVE_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)


def relevance_stage(
    q: Question, count_tokens: Callable[[str], int], config: RelevanceConfig = RELEVANCE
) -> list[int]:
    """Paragraph indices kept by relevance filtering (``select_relevant``), in rank order."""
    chunks = [ScoredChunk(q.paragraphs[i], q.scores[i]) for i in q.ranked]
    result = select_relevant(chunks, config, count_tokens=count_tokens)
    return [q.ranked[k] for k in result.kept]


# --- scoring --------------------------------------------------------------------


@dataclass
class Outcome:
    before: int
    after: int
    retained: bool | None  # None: excluded (the answer is in no paragraph)
    both_kept: bool
    span: bool  # an answer-span question (not yes/no)

    def whole_paragraphs(self) -> Outcome:
        """Scored as a paragraph filter: retained when both supporting paragraphs are kept."""
        return Outcome(self.before, self.after, self.both_kept, self.both_kept, self.span)


def judge(q: Question, kept: dict[int, str], before: int, after: int) -> Outcome:
    """``kept`` maps paragraph index -> kept text."""
    support = [i for i, s in enumerate(q.supporting) if s]
    both_kept = all(i in kept and kept[i].strip() for i in support)
    answer = _norm(q.answer)
    if answer in YES_NO:
        return Outcome(before, after, both_kept, both_kept, False)
    holders = [i for i in support if answer in _norm(q.paragraphs[i])]
    if not holders:  # the span is only in a distractor paragraph, if anywhere
        holders = [i for i, p in enumerate(q.paragraphs) if answer in _norm(p)]
    if not holders:
        return Outcome(before, after, None, both_kept, True)
    retained = any(i in kept and answer in _norm(kept[i]) for i in holders)
    return Outcome(before, after, retained, both_kept, True)


def summary(outcomes: Sequence[Outcome], ms: float | None = None) -> dict[str, Any]:
    before = sum(o.before for o in outcomes)
    after = sum(o.after for o in outcomes)
    scored = [o for o in outcomes if o.retained is not None]
    span = [o for o in scored if o.span]
    yes_no = [o for o in scored if not o.span]

    def share(xs: Sequence[Outcome], key: Callable[[Outcome], bool | None]) -> float | None:
        return round(sum(bool(key(o)) for o in xs) / len(xs), 4) if xs else None

    out: dict[str, Any] = {
        "questions": len(outcomes),
        "context_tokens_before": before,
        "context_tokens_after": after,
        "token_reduction": round(1 - after / before, 4) if before else None,
        "support_retention": share(scored, lambda o: o.retained),
        "support_retention_span_questions": share(span, lambda o: o.retained),
        "support_retention_yes_no_questions": share(yes_no, lambda o: o.retained),
        "both_supporting_kept": share(outcomes, lambda o: o.both_kept),
        "counted": {
            "span": len(span),
            "yes_no": len(yes_no),
            "excluded": len(outcomes) - len(scored),
        },
    }
    if ms is not None:
        out["ms_per_question"] = round(ms, 3)
    return out


# --- the stages -------------------------------------------------------------------


def run_unfiltered(q: Question, count: Callable[[str], int]) -> Outcome:
    kept = {i: q.paragraphs[i] for i in q.ranked}
    before = sum(count(p) for p in q.paragraphs)
    return judge(q, kept, before, before)


def run_relevance(
    q: Question, count: Callable[[str], int], rel: RelevanceConfig = RELEVANCE
) -> Outcome:
    idx = relevance_stage(q, count, rel)
    before = sum(count(p) for p in q.paragraphs)
    kept = {i: q.paragraphs[i] for i in idx}
    after = sum(count(q.paragraphs[i]) for i in idx)
    return judge(q, kept, before, after).whole_paragraphs()


def run_summarize(
    q: Question,
    count: Callable[[str], int],
    embedder: StoredEmbedder,
    config: SummarizerConfig,
    *,
    filtered: bool,
    q_vectors: dict[str, F32],
    rel: RelevanceConfig = RELEVANCE,
) -> tuple[Outcome, float]:
    idx = relevance_stage(q, count, rel) if filtered else list(q.ranked)
    chunks = [q.paragraphs[i] for i in idx]
    start = time.perf_counter()
    result = summarize_extractive(
        q.text,
        chunks,
        config,
        embed=embedder.embed,
        count_tokens=count,
        question_vector=q_vectors[q.qid],
    )
    elapsed = (time.perf_counter() - start) * 1e3
    kept = {idx[c.index]: c.text for c in result.chunks}
    before = sum(count(p) for p in q.paragraphs)
    return judge(q, kept, before, result.tokens_after), elapsed


def evaluate(
    questions: list[Question],
    count: Callable[[str], int],
    embedder: StoredEmbedder,
    config: SummarizerConfig,
    q_vectors: dict[str, F32],
    *,
    filtered: bool,
    rel: RelevanceConfig = RELEVANCE,
) -> dict[str, Any]:
    outcomes, times = [], []
    for q in questions:
        o, ms = run_summarize(
            q, count, embedder, config, filtered=filtered, q_vectors=q_vectors, rel=rel
        )
        outcomes.append(o)
        times.append(ms)
    if not times:  # no question (a half of a small set can be empty)
        return summary(outcomes) | {"ms_per_question": None, "ms_per_question_p95": None}
    return summary(outcomes, statistics.median(times)) | {
        "ms_per_question_p95": round(float(np.percentile(times, 95)), 3)
    }


def half_of(qid: str) -> int:
    return hashlib.sha256(qid.encode()).digest()[0] & 1


ABLATIONS: dict[str, dict[str, Any]] = {
    "with_sentence_embeddings": {"sentence_embeddings": True},
    "no_named_rule": {"keep_named": False, "named_weight": 0.0},
    "keep_names_too": {"keep_names": True},
    "no_query_expansion": {"expand_query": False},
    "no_rare_word_score": {"lexical_weight": 0.0},
    "no_lead_prior": {"lead_prior": 0.0},
    "no_chunk_boost": {"chunk_boost": 0.0},
    "chunks_in_no_order": {"retriever_order_weight": 0.0},
    "no_length_penalty": {"length_penalty": 0.0},
    "embedding_similarity_only": {
        "sentence_embeddings": True,
        "keep_named": False,
        "named_weight": 0.0,
        "expand_query": False,
        "lexical_weight": 0.0,
        "lead_prior": 0.0,
    },
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="HotpotQA-format .jsonl.gz or .jsonl")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    ap.add_argument("--embeddings", default=None, help="npz file to keep/reuse the vectors")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    questions = load(require(Path(args.data)), args.limit)
    if not questions:
        print(f"no questions in {args.data}", file=sys.stderr)
        return 2
    counter = default_counter()
    count = counter.count
    embedder = StoredEmbedder(SentenceTransformerEmbedder(), args.embeddings)
    embedder.inner.embed(["warm up"])
    print(f"{len(questions)} questions, {sum(len(q.paragraphs) for q in questions)} paragraphs")

    retrieve_ms = retrieve(questions, embedder)
    q_vectors = {q.qid: embedder.embed([q.text])[0] for q in questions}

    # Cold batched embedding of each question's sentences (what the summarizer
    # embeds on a first call); later runs read them from the LRU.
    from costopt_core.context.sentences import split_sentences

    embed_times, n_sentences = [], []
    for q in questions:
        texts = [s.text for p in q.paragraphs for s in split_sentences(p)]
        if embedder.loaded:
            embedder.embed(texts)
        else:
            t0 = time.perf_counter()
            vecs = embedder.inner.embed(texts)
            embed_times.append((time.perf_counter() - t0) * 1e3)
            embedder.vectors.update(zip(texts, vecs, strict=True))
        n_sentences.append(len(texts))

    embedder.save()
    cold = not embedder.loaded
    default = SummarizerConfig()
    t0 = time.perf_counter()
    unfiltered = summary([run_unfiltered(q, count) for q in questions])
    rel_outcomes, rel_times = [], []
    for q in questions:
        t1 = time.perf_counter()
        rel_outcomes.append(run_relevance(q, count))
        rel_times.append((time.perf_counter() - t1) * 1e3)
    relevance = summary(rel_outcomes, statistics.median(rel_times))
    gold_first = [q for q in questions if q.supporting[q.ranked[0]]]
    relevance["gold_ranked_first_kept"] = {
        "questions": len(gold_first),
        "kept": sum(q.ranked[0] in relevance_stage(q, count) for q in gold_first),
    }
    summarize_only = evaluate(questions, count, embedder, default, q_vectors, filtered=False)
    combined = evaluate(questions, count, embedder, default, q_vectors, filtered=True)
    del t0

    sensitivity: dict[str, Any] = {"budget_ratio": {}, "ablations": {}}
    for ratio in BUDGET_RATIOS:
        cfg = default.model_copy(update={"budget_ratio": ratio})
        sensitivity["budget_ratio"][str(ratio)] = {
            "relevance + summarize": _short(
                evaluate(questions, count, embedder, cfg, q_vectors, filtered=True)
            ),
            "summarize only": _short(
                evaluate(questions, count, embedder, cfg, q_vectors, filtered=False)
            ),
        }
    sensitivity["relevance_relative_to_top"] = {}
    for rel_ratio in RELATIVE_GRID:
        rel = RELEVANCE.model_copy(update={"relative_to_top": rel_ratio})
        sensitivity["relevance_relative_to_top"][str(rel_ratio)] = {
            "relevance only": _short(summary([run_relevance(q, count, rel) for q in questions])),
            "relevance + summarize": _short(
                evaluate(questions, count, embedder, default, q_vectors, filtered=True, rel=rel)
            ),
        }
    for name, update in ABLATIONS.items():
        cfg = SummarizerConfig(**(default.model_dump() | update))
        sensitivity["ablations"][name] = _short(
            evaluate(questions, count, embedder, cfg, q_vectors, filtered=True)
        )
    halves = {}
    for h in (0, 1):
        sub = [q for q in questions if half_of(q.qid) == h]
        halves[f"half_{h}"] = _short(
            evaluate(sub, count, embedder, default, q_vectors, filtered=True)
        )

    rows = []
    for name, r in (
        ("unfiltered", unfiltered),
        ("relevance only", relevance),
        ("summarize only", summarize_only),
        ("relevance + summarize (default)", combined),
    ):
        rows.append(
            [
                name,
                r["context_tokens_before"],
                r["context_tokens_after"],
                _pct(r["token_reduction"]),
                _pct(r["support_retention"]),
                _pct(r["both_supporting_kept"]),
                f"{r.get('ms_per_question', 0.0):.2f}",
            ]
        )
    print_table(
        f"Context reduction, HotpotQA distractor ({len(questions)} questions)",
        ["stage", "tokens before", "after", "reduction %", "retention %", "both kept %", "ms/q"],
        rows,
    )
    srows = [
        [
            ratio,
            _pct(v["relevance + summarize"]["token_reduction"]),
            _pct(v["relevance + summarize"]["support_retention"]),
            _pct(v["summarize only"]["token_reduction"]),
            _pct(v["summarize only"]["support_retention"]),
        ]
        for ratio, v in sensitivity["budget_ratio"].items()
    ]
    print_table(
        "Budget sensitivity",
        ["budget_ratio", "rel+sum red %", "rel+sum ret %", "sum red %", "sum ret %"],
        srows,
    )
    arows = [
        [
            name,
            _pct(v["token_reduction"]),
            _pct(v["support_retention"]),
            _pct(v["both_supporting_kept"]),
        ]
        for name, v in [
            ("default", _short(combined)),
            *sensitivity["ablations"].items(),
            *halves.items(),
        ]
    ]
    print_table(
        "Ablations and halves (relevance + summarize)",
        ["variant", "red %", "ret %", "both %"],
        arows,
    )

    payload = {
        "benchmark": "context",
        "data": Path(args.data).name,
        "questions": len(questions),
        "shipped_default": {
            "pipeline": "relevance + summarize",
            "relevance": RELEVANCE.model_dump(),
            "summarizer": default.model_dump(),
        },
        "token_reduction": combined["token_reduction"],
        "support_retention": combined["support_retention"],
        "targets": {
            "token_reduction": ">= 0.60",
            "support_retention": ">= 0.95",
            "relevance_keeps_gold_ranked_first": "always",
            "summarize_ms_per_question": "<= 20 (extractive, CPU)",
        },
        "stages": {
            "unfiltered": unfiltered,
            "relevance only": relevance,
            "summarize only": summarize_only,
            "relevance + summarize": combined,
        },
        "sensitivity": sensitivity,
        "halves": halves,
        "timing": {
            "what": "ms_per_question: the whole default summarizer call (split, score, select, "
            "count tokens; it embeds nothing), median over questions; embed_ms_per_question: "
            "the cold batched embedding of all of a question's sentences that the "
            "with_sentence_embeddings ablation adds (all-MiniLM-L6-v2, CPU, 2 cores), median",
            "embed_ms_per_question": round(statistics.median(embed_times), 1) if cold else None,
            "sentences_per_question": round(statistics.mean(n_sentences), 1),
            "retrieve_ms_per_question": round(retrieve_ms, 1),
        },
        "protocol": {
            "retrieval": "cosine of all-MiniLM-L6-v2 embeddings of question and paragraph text; "
            "paragraphs sent in rank order",
            "retention_after_relevance": "both supporting paragraphs kept",
            "retention_after_summarization": "the answer span (lower-cased, spaces folded) is in "
            "the kept text of a supporting paragraph (of any paragraph if no supporting one has "
            "it); yes/no answers: both supporting paragraphs keep at least one sentence; answers "
            "found in no paragraph are excluded (counted)",
            "tokens": "cl100k_base, summed over questions",
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(args.out, payload)
    return 0


def _pct(x: float | None) -> str:
    """A share in percent for the tables; "-" when nothing was counted."""
    return "-" if x is None else f"{100 * x:.1f}"


def _short(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("token_reduction", "support_retention", "both_supporting_kept", "ms_per_question")
    return {k: r[k] for k in keys if k in r}


if __name__ == "__main__":
    raise SystemExit(main())
