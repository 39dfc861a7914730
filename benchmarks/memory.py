"""Summarizing conversation memory on LoCoMo: tokens per turn, total savings, facts kept.

Each LoCoMo conversation (hundreds of turns over weeks of sessions) is
replayed turn by turn: every utterance is appended to the history, the first
speaker as ``user`` and the second as ``assistant`` (their names kept as the
message ``name``), after a one-line system prompt. At every turn the input
tokens of the next call are counted (``cl100k_base``, chat framing
included) for three ways of building the context:

- ``naive``: the whole history, every turn;
- ``sliding window``: the latest turns that fit the same budget as our
  memory's bound (``MemoryConfig.max_context_tokens``), plus the system prompt;
- ``memory``: :func:`costopt_core.memory.plan_context` with the shipped
  default ``MemoryConfig()`` and the extractive summarizer (no model call),
  flushing with :func:`costopt_core.memory.flush` after every turn.

``token_reduction`` is ``1 - memory_total / naive_total`` over whole
conversations (all of them summed; per conversation too). Flatness: the
largest and the mean tokens per turn once the window is full, and the slope
of a line fitted to the second half of the conversation.

Fact retention (the protocol of ``../shared/data/README.md``, section
memory): after the last turn each question is asked as a new user message,
and the context the memory would send for it is checked for the facts of
its evidence turns:

- ``strict``: every evidence turn's full text is in the context verbatim;
- ``lenient``: the evidence is in the context as whole sentences, not as
  scattered words: the evidence turns' sentences found verbatim in the
  context hold at least half of the answer's content words (stop words
  out), or at least half of each evidence turn's content words, or the
  answer string itself is in the context (case and spacing aside). Recall
  and summaries keep sentences, not whole turns, so a greeting dropped
  from a turn does not lose its fact;
- ``answer_in_context``: the answer string is in the context.

``fact_retention`` is the share of single-hop questions (category 4) whose
facts are kept, ``lenient`` (the target's measure); ``fact_retention_detail``
has all three measures, and ``by_category`` the other categories (1
multi-hop, 2 temporal, 3 open-domain, 5 adversarial, which has no answer
string). ``evidence_before_window`` restricts to questions whose evidence
left the verbatim window, where only the summary, the key facts and recall
can help.

Not tuned to these conversations: one configuration (the shipped default)
for all, per-conversation figures, and ``sensitivity`` to each budget, so a
setting that only suits this set would show.

    python benchmarks/memory.py --out benchmarks/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import open_text, print_table, require, write_json

from costopt_core.context.lexical import content_words as _content_words
from costopt_core.context.sentences import split_sentences
from costopt_core.embeddings import CachingEmbedder, SentenceTransformerEmbedder
from costopt_core.memory import MemoryConfig, MemoryState, flush, message_tokens, plan_context
from costopt_core.memory.turns import REPLY_PRIMING_TOKENS
from costopt_core.pricing import PriceCatalog
from costopt_core.tokens import default_counter
from costopt_core.types import Message

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared/data/memory"
CATEGORIES = {1: "multi_hop", 2: "temporal", 3: "open_domain", 4: "single_hop", 5: "adversarial"}
LENIENT_COVERAGE = 0.5
#: Priced with automatic prefix caching as OpenAI bills it: a prefix of at
#: least 1024 tokens shared with the previous call is read from cache, in
#: 128-token steps.
CACHE_MODEL = "gpt-4o"
CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128
SENSITIVITY: dict[str, dict[str, Any]] = {
    "window_tokens=128": {"window_tokens": 128},
    "window_tokens=512": {"window_tokens": 512},
    "flush=192/384": {"flush_min_tokens": 192, "flush_max_tokens": 384},
    "flush=768/1536": {"flush_min_tokens": 768, "flush_max_tokens": 1536},
    "summary_tokens=192": {"summary_tokens": 192},
    "summary_tokens=768": {"summary_tokens": 768},
    "summary_tokens=192,facts_tokens=96": {"summary_tokens": 192, "facts_tokens": 96},
    "levels=1": {"levels": 1},
    "facts_tokens=0": {"facts_tokens": 0},
    "recall_tokens=0": {"recall_tokens": 0},
    "recall_tokens=768": {"recall_tokens": 768},
    "recall_tokens=1024": {"recall_tokens": 1024},
    "recall_tokens=2048": {"recall_tokens": 2048},
    "recall_min_score=0.1": {"recall_min_score": 0.1},
    "recall_embeddings=False": {"recall_embeddings": False},
}


@dataclass
class Conversation:
    cid: str
    history: list[Message]
    dia_index: dict[str, int]
    qa: list[dict[str, Any]]
    user_name: str


def load_all(path: Path) -> list[Conversation]:
    """The conversations of a LoCoMo-format file, gzipped (``.gz``) or plain.

    One conversation per file (``locomo_<id>.json.gz``: its fields at the top
    level or under ``conversation``, its ``qa`` at the top level), or a list of
    them as LoCoMo publishes it (``locomo10.json``), each named by its
    ``sample_id``.
    """
    with open_text(path) as f:
        data = json.load(f)
    stem = path.name.removesuffix(".gz").removesuffix(".json")
    if isinstance(data, dict):
        return [_conversation(data, stem)]
    return [
        _conversation(item, str(item.get("sample_id") or f"{stem}_{k}"))
        for k, item in enumerate(data)
    ]


def load(path: Path) -> Conversation:
    """The first (in a ``locomo_<id>`` file, the only) conversation of ``path``."""
    return load_all(path)[0]


def _conversation(data: dict[str, Any], cid: str) -> Conversation:
    conv = data.get("conversation", data)
    a, b = conv["speaker_a"], conv["speaker_b"]
    history = [Message("system", f"You are {b}, chatting with your friend {a}.")]
    dia_index: dict[str, int] = {}
    i = 1
    while f"session_{i}" in conv:
        for turn in conv[f"session_{i}"]:
            role = "user" if turn["speaker"] == a else "assistant"
            dia_index[turn["dia_id"]] = len(history)
            history.append(Message(role, str(turn["text"]), name=turn["speaker"]))
        i += 1
    return Conversation(cid, history, dia_index, list(data.get("qa", [])), a)


def memo_counter() -> Callable[[str], int]:
    counter = default_counter()
    cache: dict[str, int] = {}

    def count(text: str) -> int:
        n = cache.get(text)
        if n is None:
            n = cache[text] = counter.count(text)
        return n

    return count


def window_messages(history: Sequence[Message], sizes: Sequence[int], budget: int) -> list[int]:
    """The sliding-window baseline: system prompt plus the latest turns within ``budget``."""
    keep: list[int] = []
    used = 0
    for i in range(len(history) - 1, 0, -1):
        if used + sizes[i] > budget and keep:
            break
        keep.append(i)
        used += sizes[i]
    return [0, *reversed(keep)]


def _cached_tokens(prev: Sequence[Message] | None, cur: Sequence[Message], sizes: list[int]) -> int:
    if prev is None:
        return 0
    shared = 0
    for a, b, n in zip(prev, cur, sizes, strict=False):
        if a != b:
            break
        shared += n
    return shared - shared % CACHE_STEP if shared >= CACHE_MIN_TOKENS else 0


@dataclass
class Costs:
    tokens: list[int] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)
    prev: list[Message] | None = None

    def add(self, messages: list[Message], sizes: list[int]) -> None:
        self.tokens.append(REPLY_PRIMING_TOKENS + sum(sizes))
        self.cached.append(_cached_tokens(self.prev, messages, sizes))
        self.prev = messages

    def usd(self, catalog: PriceCatalog, cached: bool) -> Decimal:
        price = catalog.get(CACHE_MODEL)
        assert price is not None and price.usd_per_mtok_cache_read is not None
        total = Decimal(0)
        for t, c in zip(self.tokens, self.cached, strict=True):
            c = c if cached else 0
            total += (t - c) * price.usd_per_mtok_input + c * price.usd_per_mtok_cache_read
        return total / Decimal(1_000_000)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def check_question(
    qa: dict[str, Any], conv: Conversation, context: str, context_words: set[str]
) -> dict[str, bool] | None:
    """Strict / lenient / answer presence of one question's facts in ``context`` (normalised)."""
    ids = [e for ev in qa.get("evidence", []) for e in re.split(r"[;,\s]+", str(ev)) if e]
    turns = [conv.dia_index[e] for e in ids if e in conv.dia_index]
    if not turns:
        return None
    answer = qa.get("answer")
    answer_in = answer is not None and _norm(str(answer)) in context
    strict = all(_norm(conv.history[i].content) in context for i in turns)
    covered = []
    kept_sentences: set[str] = set()
    for i in turns:
        words = _content_words(conv.history[i].content)
        kept: set[str] = set()
        for sent in split_sentences(conv.history[i].content):
            if _norm(sent.text) in context:
                kept |= _content_words(sent.text)
        kept_sentences |= kept
        covered.append(not words or len(words & kept) / len(words) >= LENIENT_COVERAGE)
    answer_words = _content_words(str(answer)) if answer is not None else set()
    answer_sentences = bool(answer_words) and (
        len(answer_words & kept_sentences) / len(answer_words) >= LENIENT_COVERAGE
    )
    return {
        "strict": strict,
        "lenient": all(covered) or answer_in or answer_sentences,
        "answer_in_context": answer_in,
        "has_answer": answer is not None,
        "first_evidence": min(turns),
    }


@dataclass
class Run:
    cid: str
    turns: int
    naive: Costs
    window: Costs
    memory: Costs
    flushes: int
    summarizer_calls: int
    questions: list[dict[str, Any]]
    ms_per_turn: float


#: The engine's offline MiniLM, with an LRU large enough that each sentence of
#: a conversation is embedded once (as an app's embedder cache would).
_EMBEDDER = CachingEmbedder(SentenceTransformerEmbedder(), maxsize=100_000)


def replay(conv: Conversation, config: MemoryConfig, count: Callable[[str], int]) -> Run:
    embed = _EMBEDDER.embed if config.recall_embeddings else None
    history = conv.history
    sizes = [message_tokens(m, count) for m in history]
    naive, window, memory = Costs(), Costs(), Costs()
    state = MemoryState()
    budget = config.max_context_tokens
    started = time.perf_counter()
    for n in range(2, len(history) + 1):
        h = history[:n]
        naive.add(list(h), sizes[:n])
        w = window_messages(h, sizes, budget)
        window.add([h[i] for i in w], [sizes[i] for i in w])
        view = plan_context(h, state, config, count_tokens=count, embed=embed)
        memory.add(list(view.messages), [message_tokens(m, count) for m in view.messages])
        state = flush(h, state, config, count_tokens=count).state
    ms = (time.perf_counter() - started) * 1e3 / max(1, len(history) - 1)

    questions = []
    for qa in conv.qa:
        asked = [*history, Message("user", str(qa["question"]), name=conv.user_name)]
        view = plan_context(asked, state, config, count_tokens=count, embed=embed)
        ctx = "\n".join(m.content for m in view.messages)
        w_sizes = [message_tokens(m, count) for m in asked]
        w_ctx = "\n".join(asked[i].content for i in window_messages(asked, w_sizes, budget))
        ours = check_question(qa, conv, _norm(ctx), _content_words(ctx))
        base = check_question(qa, conv, _norm(w_ctx), _content_words(w_ctx))
        if ours is None or base is None:
            continue
        questions.append(
            {
                "category": int(qa.get("category", 0)),
                "memory": ours,
                "window": base,
                "before_window": ours["first_evidence"] < view.window_start,
            }
        )
    return Run(
        conv.cid,
        len(history) - 1,
        naive,
        window,
        memory,
        state.flushes,
        state.summarizer_calls,
        questions,
        ms,
    )


def _share(qs: Sequence[dict[str, Any]], who: str, key: str) -> float | None:
    pool = [q for q in qs if key != "answer_in_context" or q[who]["has_answer"]]
    if not pool:
        return None
    return round(sum(q[who][key] for q in pool) / len(pool), 4)


def retention(qs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": len(qs)}
    for who in ("memory", "window"):
        out[who] = {k: _share(qs, who, k) for k in ("strict", "lenient", "answer_in_context")}
    return out


def by_category(qs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        name: retention([q for q in qs if q["category"] == c]) for c, name in CATEGORIES.items()
    }


def flatness(run: Run, config: MemoryConfig) -> dict[str, Any]:
    full = next(
        (i for i, t in enumerate(run.naive.tokens) if t > config.max_context_tokens),
        len(run.naive.tokens),
    )
    after = run.memory.tokens[full:]
    half = run.memory.tokens[len(run.memory.tokens) // 2 :]
    slope = 0.0
    if len(half) > 2:
        xs = list(range(len(half)))
        mx, my = statistics.fmean(xs), statistics.fmean(half)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, half, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
    return {
        "window_full_at_turn": full + 1,
        "max_tokens_after_full": max(after) if after else None,
        "mean_tokens_after_full": round(statistics.fmean(after), 1) if after else None,
        "naive_max_tokens": max(run.naive.tokens),
        "second_half_slope_tokens_per_100_turns": round(slope * 100, 1),
    }


def summarize_runs(runs: Sequence[Run], config: MemoryConfig) -> dict[str, Any]:
    naive = sum(sum(r.naive.tokens) for r in runs)
    ours = sum(sum(r.memory.tokens) for r in runs)
    window = sum(sum(r.window.tokens) for r in runs)
    qs = [q for r in runs for q in r.questions]
    single = [q for q in qs if q["category"] == 4]
    return {
        "token_reduction": round(1 - ours / naive, 4),
        "window_token_reduction": round(1 - window / naive, 4),
        "token_reduction_per_conversation": {r.cid: run_reduction(r) for r in runs},
        "fact_retention_single_hop": retention(single),
        "fact_retention_single_hop_before_window": retention(
            [q for q in single if q["before_window"]]
        ),
        "max_tokens_after_full": max(
            flatness(r, config)["max_tokens_after_full"] or 0 for r in runs
        ),
    }


def run_reduction(run: Run) -> float:
    """Share of the naive input tokens one conversation's memory replay did not send."""
    return round(1 - sum(run.memory.tokens) / sum(run.naive.tokens), 4)


def per_conversation(run: Run, config: MemoryConfig, catalog: PriceCatalog) -> dict[str, Any]:
    naive, window, ours = (sum(c.tokens) for c in (run.naive, run.window, run.memory))
    single = [q for q in run.questions if q["category"] == 4]
    return {
        "conversation": run.cid,
        "turns": run.turns,
        "input_tokens": {"naive": naive, "sliding_window": window, "memory": ours},
        "token_reduction": run_reduction(run),
        "window_token_reduction": round(1 - window / naive, 4),
        "flatness": flatness(run, config),
        "flushes": run.flushes,
        "summarizer_calls": run.summarizer_calls,
        "fact_retention_single_hop": retention(single),
        "usd_" + CACHE_MODEL: {
            name: {
                "no_prefix_cache": str(c.usd(catalog, cached=False).quantize(Decimal("0.0001"))),
                "with_prefix_cache": str(c.usd(catalog, cached=True).quantize(Decimal("0.0001"))),
                "cached_share_of_input": round(sum(c.cached) / max(1, sum(c.tokens)), 4),
            }
            for name, c in (
                ("naive", run.naive),
                ("sliding_window", run.window),
                ("memory", run.memory),
            )
        },
        "ms_per_turn": round(run.ms_per_turn, 2),
    }


def local_model_status() -> tuple[None, str]:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None, (
            "llama-cpp-python is not installed on this machine (optional extra 'local'); "
            "only the extractive summarizer was measured, no abstractive run was faked"
        )
    return None, (
        "llama-cpp-python is installed but an abstractive replay (one cheap-model call per "
        "flush, hundreds per conversation) is not part of this run"
    )


def plot(run: Run, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 4.5))
    turns = range(1, len(run.naive.tokens) + 1)
    ax.plot(turns, run.naive.tokens, label="naive (whole history)")
    ax.plot(turns, run.window.tokens, label="sliding window (same budget)")
    ax.plot(turns, run.memory.tokens, label="summarizing memory (default)")
    ax.set_xlabel("turn")
    ax.set_ylabel("input tokens of the call")
    ax.set_title(f"LoCoMo {run.cid}: input tokens per turn")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _pct(x: float | None, digits: int = 1) -> str:
    """A share as a percentage; "-" when there was nothing to count (no such question)."""
    return "-" if x is None else f"{x:.{digits}%}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data",
        action="append",
        default=None,
        help="LoCoMo-format .json.gz or .json (repeatable); default: every locomo_*.json.gz in "
        f"{DEFAULT_DATA_DIR}",
    )
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--png", default=None, help="tokens-per-turn plot (default: next to --out)")
    ap.add_argument("--no-sensitivity", action="store_true", help="skip the budget sweep")
    args = ap.parse_args(argv)

    paths = (
        [Path(p) for p in args.data]
        if args.data
        else sorted(require(DEFAULT_DATA_DIR).glob("locomo_*.json.gz"))
    )
    if not paths:
        print(f"no locomo_*.json.gz in {DEFAULT_DATA_DIR}", file=sys.stderr)
        return 2
    convs = [c for p in paths for c in load_all(require(p))]
    cids = [c.cid for c in convs]
    if len(set(cids)) < len(cids):
        dup = sorted({c for c in cids if cids.count(c) > 1})
        print(f"several conversations are named {dup}: rename a file", file=sys.stderr)
        return 2
    count = memo_counter()
    catalog = PriceCatalog.default()
    config = MemoryConfig()
    started = time.perf_counter()
    runs = [replay(c, config, count) for c in convs]
    headline = summarize_runs(runs, config)
    qs = [q for r in runs for q in r.questions]
    single = headline["fact_retention_single_hop"]

    sensitivity: dict[str, Any] = {}
    if not args.no_sensitivity:
        for name, update in SENSITIVITY.items():
            cfg = MemoryConfig(**(config.model_dump() | update))
            sensitivity[name] = summarize_runs([replay(c, cfg, count) for c in convs], cfg)
            print(
                f"  sensitivity {name}: {sensitivity[name]['token_reduction']:.3f} "
                f"{sensitivity[name]['fact_retention_single_hop']['memory']}"
            )

    status, reason = local_model_status()
    flat_max = headline["max_tokens_after_full"]
    payload: dict[str, Any] = {
        "benchmark": "memory",
        "data": [str(p) for p in paths],
        "protocol": __doc__,
        "config": config.model_dump(),
        "max_context_tokens": config.max_context_tokens,
        "summarizer": "extractive (no model call)",
        "local_model": status,
        "local_model_reason": reason,
        "token_reduction": headline["token_reduction"],
        "token_reduction_per_conversation": headline["token_reduction_per_conversation"],
        # The target's measure: single-hop questions, lenient; the rest below.
        "fact_retention": single["memory"]["lenient"],
        "fact_retention_detail": {
            "single_hop": single,
            "single_hop_before_window": headline["fact_retention_single_hop_before_window"],
            "definition": {
                "strict": "every evidence turn's full text verbatim in the context",
                "lenient": "the evidence turns' sentences found verbatim in the context hold "
                f">= {LENIENT_COVERAGE:.0%} of the answer's content words, or of each evidence "
                "turn's content words; or the answer string is in the context",
                "answer_in_context": "the answer string (case and spacing aside)",
            },
        },
        "by_category": by_category(qs),
        "baselines": {"sliding_window_token_reduction": headline["window_token_reduction"]},
        "targets": {
            "flat_after_window_fills": {
                "max_tokens_after_full": flat_max,
                "bound": config.max_context_tokens,
                "met": flat_max <= config.max_context_tokens + 200,
            },
            "token_reduction_ge_0.80": headline["token_reduction"] >= 0.80,
            "token_reduction_ge_0.80_every_conversation": min(
                headline["token_reduction_per_conversation"].values()
            )
            >= 0.80,
            "single_hop_lenient_ge_0.90": (single["memory"]["lenient"] or 0) >= 0.90,
        },
        "per_conversation": [per_conversation(r, config, catalog) for r in runs],
        "sensitivity": sensitivity,
        "seconds": round(time.perf_counter() - started, 1),
    }

    rows = []
    for r in runs:
        pc = per_conversation(r, config, catalog)
        s = pc["fact_retention_single_hop"]
        rows.append(
            [
                r.cid,
                r.turns,
                pc["input_tokens"]["naive"],
                pc["input_tokens"]["sliding_window"],
                pc["input_tokens"]["memory"],
                f"{pc['token_reduction']:.1%}",
                pc["flatness"]["max_tokens_after_full"],
                f"{_pct(s['memory']['strict'], 0)}/{_pct(s['memory']['lenient'], 0)}",
                f"{_pct(s['window']['strict'], 0)}/{_pct(s['window']['lenient'], 0)}",
            ]
        )
    print_table(
        "LoCoMo replay: input tokens (sum over turns) and single-hop facts kept",
        [
            "conversation",
            "turns",
            "naive",
            "window",
            "memory",
            "reduction",
            "max/turn",
            "facts strict/lenient",
            "window strict/lenient",
        ],
        rows,
    )
    cat_rows = [
        [
            name,
            v["questions"],
            f"{v['memory']['strict']}",
            f"{v['memory']['lenient']}",
            f"{v['memory']['answer_in_context']}",
            f"{v['window']['lenient']}",
        ]
        for name, v in payload["by_category"].items()
    ]
    print_table(
        "Fact retention by category (questions asked after the last turn)",
        ["category", "questions", "strict", "lenient", "answer", "window lenient"],
        cat_rows,
    )
    print(
        f"token_reduction {headline['token_reduction']:.1%} (window "
        f"{headline['window_token_reduction']:.1%}); single-hop lenient "
        f"{_pct(single['memory']['lenient'])} strict {_pct(single['memory']['strict'])}"
    )
    write_json(args.out, payload)
    png = (
        Path(args.png)
        if args.png
        else (Path(args.out).with_name("memory_tokens_per_turn.png") if args.out else None)
    )
    if png is not None and plot(runs[0], png):
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
