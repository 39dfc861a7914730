"""Extractive memory without an LLM call: salient sentences, key facts, and recall.

All three reuse the context summarizer's sentence splitter and scoring
(:func:`~costopt_core.context.summarize.summarize_extractive`):

- a summary of old turns keeps the sentences that share the most rare words,
  names and numbers with the batch's own recurring topics (a pseudo-question
  made of the terms that several turns mention);
- key facts are sentences that state a preference, a decision, an identity
  or a figure (cue phrases, numbers, dates, money, addresses), kept verbatim
  under their own budget;
- recall keeps the older sentences that best answer the latest user message.

Each kept sentence keeps its speaker ("Alice: ..."), so a summary still says
who said what.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from costopt_core.context.lexical import content_words as _content_words
from costopt_core.context.lexical import names as _names
from costopt_core.context.lexical import numbers as _numbers
from costopt_core.context.sentences import cut_to_tokens, split_sentences
from costopt_core.context.summarize import (
    SummarizerConfig,
    SummaryResult,
    asummarize_extractive,
    summarize_extractive,
)
from costopt_core.memory.turns import CountTokens

__all__ = [
    "Recalled",
    "arecall_sentences",
    "fact_score",
    "key_fact_candidates",
    "recall_query",
    "recall_sentences",
    "select_facts",
    "summarize_lines",
]

Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]
AEmbed = Callable[[Sequence[str]], Awaitable[npt.NDArray[np.float32]]]

# Phrases that mark a durable fact about a person or a decision, in any domain.
_CUES = re.compile(
    r"\b(?:my name is|call me|i am an?|i'm an?|i work(?:ed)? (?:at|as|for|in)|i live|"
    r"i moved|i'm from|i am from|i was born|born in|my (?:wife|husband|partner|son|daughter|"
    r"kids?|children|mom|mother|dad|father|sister|brother|friend|dog|cat|job|team|boss|"
    r"birthday|address|email|phone|favou?rite)|my (?:\w+ )?(?:number|id)\b|favou?rite|"
    r"i (?:really )?(?:prefer|like|love|"
    r"enjoy|hate|dislike|can't stand|don't like|want|need|plan|decided|chose|bought|started|"
    r"joined|adopted|graduated|got married)|we (?:decided|agreed|chose|will|plan)|"
    r"decided|agreed|deadline|due (?:on|by)|allergic|remember (?:that|to)|don't forget)\b",
    re.IGNORECASE,
)
_FIGURE = re.compile(
    r"[$€£¥]\s?\d|\d+(?:\.\d+)?\s?%|\b\d{1,2}:\d{2}\b|\b(?:19|20)\d{2}\b|"
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? \d{1,2}\b|"
    r"\b\d{1,2} (?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b|"
    r"[\w.+-]+@[\w-]+\.[\w.]+|https?://\S+",
    re.IGNORECASE,
)
_MIN_FACT_WORDS = 3
_MIN_FACT_CONTENT_WORDS = 4
_MIN_SALIENT_WORDS = 3
_MAX_FACT_WORDS = 45
#: The least room left after the whole sentences that the beginning of a
#: sentence too long for it fills (a few words of a cut sentence say little).
_MIN_CUT_TOKENS = 12


def _states_something(rest: str) -> bool:
    """Whether what a short cued sentence says beside its cue is a fact ("My
    name is | Bob", "I live | in Paris", "My order number | is 48213"), not
    filler ("I love | it")."""
    told = _content_words(rest)
    return len(told) >= 2 or (len(told) == 1 and bool(_names(rest) or _numbers(rest)))


def fact_score(sentence: str) -> float:
    """How much a sentence looks like a key fact (0: not one).

    A cue phrase counts 2, a figure (date, money, percentage, time, address)
    1, another number 0.5, a name 0.5; a question is not a fact.
    """
    words = sentence.split()
    if not _MIN_FACT_WORDS <= len(words) <= _MAX_FACT_WORDS or sentence.rstrip().endswith("?"):
        return 0.0
    cues = len(_CUES.findall(sentence))
    if len(_content_words(sentence)) < _MIN_FACT_CONTENT_WORDS and not (
        cues and _states_something(_CUES.sub(" ", sentence))
    ):
        return 0.0
    score = 2.0 * min(2, cues)
    if _FIGURE.search(sentence):
        score += 1.0
    elif _numbers(sentence):
        score += 0.5
    if _names(" ".join(words[1:])):  # the first word's capital is grammar
        score += 0.5
    return score


def key_fact_candidates(lines: Sequence[tuple[str, str]], min_score: float = 2.0) -> list[str]:
    """Sentences of ``(speaker, text)`` turns that state a key fact, as "speaker: sentence"."""
    out: list[str] = []
    for who, text in lines:
        for s in split_sentences(text):
            if fact_score(s.text) >= min_score:
                out.append(f"{who}: {s.text}")
    return out


def select_facts(
    facts: Sequence[str], budget_tokens: int, count_tokens: CountTokens
) -> tuple[str, ...]:
    """The best facts under the budget, in their original order.

    Higher :func:`fact_score` first, then the more recent (a later statement
    of a preference supersedes an earlier one); exact duplicates once.
    """
    if budget_tokens <= 0:
        return ()
    unique = list(dict.fromkeys(facts))
    ranked = sorted(
        range(len(unique)),
        key=lambda i: (-fact_score(unique[i].split(": ", 1)[-1]), -i),
    )
    kept: set[int] = set()
    used = 0
    for i in ranked:
        cost = count_tokens(unique[i]) + 2  # "- " and the line break
        if used + cost <= budget_tokens:
            kept.add(i)
            used += cost
    return tuple(unique[i] for i in sorted(kept))


def _salience(texts: Sequence[str], exclude: set[str]) -> list[float]:
    """How much each sentence says: its rare content words per token, plus key-fact cues.

    Chat is mostly phatic ("Wow, that's great!"): few content words, all
    common. Rare words (inverse frequency across the batch's sentences, as
    the context summarizer weighs question terms) mark the specific ones.
    Speakers' own names are left out: they are in every other line.
    """
    words = [_content_words(t) - exclude for t in texts]
    n = len(texts)
    df: Counter[str] = Counter(w for ws in words for w in ws)
    out = []
    for text, ws in zip(texts, words, strict=True):
        if len(ws) < _MIN_SALIENT_WORDS:
            out.append(0.0)
            continue
        # ``ws`` is a set, whose order follows PYTHONHASHSEED: a plain float sum
        # differed in its last bits between processes, so equal scores broke ties
        # differently and replicas wrote different summaries of one history (a
        # prompt-cache miss). fsum is exactly rounded; sorting makes the order
        # explicit anyway.
        weight = math.fsum(math.log(1.0 + n / df[w]) for w in sorted(ws))
        out.append(weight / math.sqrt(len(text.split())) + 0.5 * fact_score(text))
    return out


def summarize_lines(
    lines: Sequence[tuple[str, str]], budget_tokens: int, count_tokens: CountTokens
) -> str:
    """An extractive summary of ``(speaker, text)`` turns in at most ``budget_tokens``.

    Keeps the most informative sentences (see :func:`_salience`) in their
    original order, one "speaker: sentences" line per turn that kept any.
    The best sentence that did not fit keeps its beginning (cut at a word
    boundary) in the room left when nothing else was kept or the room is
    worth a fragment: turns of one long sentence each (common outside
    English prose, and in run-on chat) otherwise left an empty summary.
    """
    if budget_tokens <= 0:
        return ""
    sents = [(k, s.text) for k, (_, text) in enumerate(lines) for s in split_sentences(text)]
    if not sents:
        return ""
    speakers = {w.lower() for who, _ in lines for w in who.split()}
    score = _salience([t for _, t in sents], speakers)
    kept: set[int] = set()
    turns: set[int] = set()
    used = 0
    skipped: int | None = None
    for i in sorted(range(len(sents)), key=lambda i: (-score[i], i)):
        if score[i] <= 0:
            break
        k, text = sents[i]
        cost = count_tokens(text) + 1
        if k not in turns:
            cost += count_tokens(f"{lines[k][0]}: ") if lines[k][0] else 0
        if used + cost <= budget_tokens:
            kept.add(i)
            turns.add(k)
            used += cost
        elif skipped is None:
            skipped = i
    cut: dict[int, str] = {}
    if skipped is not None and (not kept or budget_tokens - used >= _MIN_CUT_TOKENS):
        k, text = sents[skipped]
        label = count_tokens(f"{lines[k][0]}: ") if lines[k][0] and k not in turns else 0
        piece = cut_to_tokens(text, budget_tokens - used - label - 1, count_tokens)
        if piece:
            cut[skipped] = piece
            kept.add(skipped)
    by_turn: dict[int, list[str]] = {}
    for i in sorted(kept):
        k, text = sents[i]
        by_turn.setdefault(k, []).append(cut.get(i, text))
    rendered = [
        f"{lines[k][0]}: {' '.join(ts)}" if lines[k][0] else " ".join(ts)
        for k, ts in sorted(by_turn.items())
    ]
    return _truncate("\n".join(rendered), budget_tokens, count_tokens)


def _labelled(who: str, text: str) -> str:
    """One recalled line: "speaker: text", or the text alone for an unnamed speaker."""
    return f"{who}: {text}" if who else text


def _render(result: SummaryResult, lines: Sequence[tuple[str, str]]) -> list[tuple[int, str]]:
    out = []
    for c in result.chunks:
        who = lines[c.index][0]
        out.append((c.index, _labelled(who, c.text)))
    return out


def _size(rendered: Sequence[tuple[int, str]], count_tokens: CountTokens) -> int:
    return sum(count_tokens(t) + 1 for _, t in rendered)


def _truncate(text: str, budget_tokens: int, count_tokens: CountTokens) -> str:
    """Whole lines from the end dropped until the text fits (a last resort).

    A last line that alone is over the budget is cut, not dropped.
    """
    lines = text.split("\n")
    while len(lines) > 1 and count_tokens("\n".join(lines)) > budget_tokens:
        lines.pop()
    return cut_to_tokens("\n".join(lines), budget_tokens, count_tokens)


@dataclass(frozen=True, slots=True)
class Recalled:
    """Older sentences recalled for a query.

    Attributes:
        indices: positions (in the candidate list given) of the turns that
            contributed a sentence, in order.
        lines: "speaker: sentences" per recalled turn, in order.
        tokens: tokens of ``lines`` joined by line breaks.
    """

    indices: tuple[int, ...]
    lines: tuple[str, ...]
    tokens: int


def _recall_config(budget: int, min_score: float, embeddings: bool) -> SummarizerConfig:
    return SummarizerConfig(
        budget_ratio=None,
        budget_tokens=max(1, budget),
        min_score=min_score,
        # Turns are not retrieved chunks: their order is time, not rank, and a
        # turn's first sentence is not its topic.
        lead_prior=0.0,
        chunk_boost=0.0,
        length_penalty=0.0,
        sentence_embeddings=embeddings,
    )


def _recalled(rendered: Sequence[tuple[int, str]], count_tokens: CountTokens) -> Recalled:
    lines = tuple(t for _, t in rendered)
    return Recalled(tuple(i for i, _ in rendered), lines, count_tokens("\n".join(lines)))


#: Share of the recall budget kept for the rest of each recalled turn and for
#: the replies to recalled questions; the best sentences get the remainder.
#: A lone sentence loses what its turn said around it ("Yes! It was a gift
#: from my mom." names nothing), so fewer turns, shown whole, keep more facts
#: (LoCoMo single-hop: 86.4% of questions' facts kept at 0.7, 79.9% with
#: sentences only at 0.35; ``benchmarks/memory.py``).
REPLY_SHARE = 0.7
_POSSESSIVE = re.compile(r"(?i)['’]s\b")


def recall_query(query: str, participants: Sequence[str]) -> str:
    """``query`` without the participants' names (and their short forms, "Mel" for "Melanie").

    In a conversation every other line names one of its participants, so
    their names match everything and recall nothing in particular.
    """
    names = {w.lower() for p in participants for w in p.split() if len(w) >= 3}
    if not names:
        return query
    kept = []
    for word in _POSSESSIVE.sub("", query).split():
        w = word.strip(".,;:!?\"'()[]").lower()
        if len(w) >= 3 and any(n.startswith(w) for n in names):
            continue
        kept.append(word)
    return " ".join(kept)


def _complete_turns(
    rendered: list[tuple[int, str]],
    lines: Sequence[tuple[str, str]],
    budget_tokens: int,
    count_tokens: CountTokens,
) -> list[tuple[int, str]]:
    """Show recalled turns whole, the cheapest to complete first, within the budget."""
    used = _size(rendered, count_tokens)
    out = list(rendered)
    wanted = []
    for pos, (k, text) in enumerate(rendered):
        who, full = lines[k]
        line = _labelled(who, full)
        extra = count_tokens(line) - count_tokens(text)
        if extra > 0:
            wanted.append((extra, pos, line))
    for extra, pos, line in sorted(wanted):
        if used + extra <= budget_tokens:
            out[pos] = (out[pos][0], line)
            used += extra
    return out


def _follow_up(
    rendered: list[tuple[int, str]],
    lines: Sequence[tuple[str, str]],
    budget_tokens: int,
    count_tokens: CountTokens,
) -> Recalled:
    """The recalled sentences with the rest of their turns, then the replies to questions."""
    whole = _complete_turns(rendered, lines, budget_tokens, count_tokens)
    return _recalled(_add_replies(whole, lines, budget_tokens, count_tokens), count_tokens)


def _add_replies(
    rendered: list[tuple[int, str]],
    lines: Sequence[tuple[str, str]],
    budget_tokens: int,
    count_tokens: CountTokens,
) -> list[tuple[int, str]]:
    """Add the reply to each recalled question: in dialogue, the answer is the next turn."""
    have = {k for k, _ in rendered}
    used = _size(rendered, count_tokens)
    out = list(rendered)
    for k, text in sorted(rendered, reverse=True):
        nxt = k + 1
        if "?" not in text or nxt >= len(lines) or nxt in have or lines[nxt][0] == lines[k][0]:
            continue
        who, reply = lines[nxt]
        kept = ""
        for sent in split_sentences(reply):
            candidate = f"{kept} {sent.text}".strip()
            line = _labelled(who, candidate)
            if used + count_tokens(line) + 1 > budget_tokens:
                break
            kept = candidate
        if kept:
            line = _labelled(who, kept)
            out.append((nxt, line))
            have.add(nxt)
            used += count_tokens(line) + 1
    return sorted(out)


def _prepare_recall(
    query: str, lines: Sequence[tuple[str, str]], budget_tokens: int
) -> tuple[str, list[str], int] | None:
    if not query.strip() or not lines or budget_tokens <= 0:
        return None
    q = recall_query(query, sorted({w for w, _ in lines if w}))
    if not q.strip():
        return None
    return q, [t for _, t in lines], max(1, int(budget_tokens * (1 - REPLY_SHARE)))


def _fit_recall(
    result: SummaryResult,
    lines: Sequence[tuple[str, str]],
    primary: int,
    count_tokens: CountTokens,
) -> tuple[list[tuple[int, str]], int]:
    """The rendered recall and how far it overshoots ``primary`` (speaker labels)."""
    rendered = _render(result, lines)
    return rendered, _size(rendered, count_tokens) - primary


def _recall_steps(
    lines: Sequence[tuple[str, str]],
    primary: int,
    budget_tokens: int,
    min_score: float,
    embeddings: bool,
    count_tokens: CountTokens,
) -> Generator[SummarizerConfig, SummaryResult, Recalled]:
    """The recall both twins run: yields each summarizer configuration, is sent its result.

    The speaker labels make the rendered lines longer than the sentences the
    summarizer fitted, so the sentence budget shrinks by the overshoot and
    the summary is redone (at most four times).
    """
    budget = primary
    rendered: list[tuple[int, str]] = []
    for _ in range(4):
        result = yield _recall_config(budget, min_score, embeddings)
        rendered, over = _fit_recall(result, lines, primary, count_tokens)
        if over <= 0:
            break
        budget -= over
        if budget <= 0:
            rendered = []
            break
    return _follow_up(rendered, lines, budget_tokens, count_tokens)


def recall_sentences(
    query: str,
    lines: Sequence[tuple[str, str]],
    budget_tokens: int,
    count_tokens: CountTokens,
    *,
    min_score: float = 0.05,
    embed: Embed | None = None,
) -> Recalled:
    """The sentences of older ``(speaker, text)`` turns that best answer ``query``.

    The participants' names are left out of the query (:func:`recall_query`);
    the sentences are ranked as the context summarizer ranks them for a
    question, within ``1 - REPLY_SHARE`` of the budget; the rest of the budget
    shows their turns whole (cheapest first), then the replies to recalled
    questions ("What was your favourite book?" is answered by the next turn,
    which shares no word with the query).

    Args:
        query: the latest user message.
        lines: the older turns (not in the verbatim window), in order.
        budget_tokens: at most this many tokens are recalled.
        count_tokens: text -> tokens.
        min_score: sentences scoring less are never recalled.
        embed: when given, sentences are also scored by embedding similarity.
    """
    prepared = _prepare_recall(query, lines, budget_tokens)
    if prepared is None:
        return Recalled((), (), 0)
    q, texts, primary = prepared
    steps = _recall_steps(lines, primary, budget_tokens, min_score, embed is not None, count_tokens)
    try:
        config = next(steps)
        while True:
            config = steps.send(
                summarize_extractive(q, texts, config, embed=embed, count_tokens=count_tokens)
            )
    except StopIteration as stop:
        recalled: Recalled = stop.value
        return recalled


async def arecall_sentences(
    query: str,
    lines: Sequence[tuple[str, str]],
    budget_tokens: int,
    count_tokens: CountTokens,
    *,
    min_score: float = 0.05,
    aembed: AEmbed | None = None,
) -> Recalled:
    """Async twin of :func:`recall_sentences` (``aembed`` is awaited)."""
    if aembed is None:
        return recall_sentences(query, lines, budget_tokens, count_tokens, min_score=min_score)
    prepared = _prepare_recall(query, lines, budget_tokens)
    if prepared is None:
        return Recalled((), (), 0)
    q, texts, primary = prepared
    steps = _recall_steps(lines, primary, budget_tokens, min_score, True, count_tokens)
    try:
        config = next(steps)
        while True:
            config = steps.send(
                await asummarize_extractive(
                    q, texts, config, aembed=aembed, count_tokens=count_tokens
                )
            )
    except StopIteration as stop:
        recalled: Recalled = stop.value
        return recalled
