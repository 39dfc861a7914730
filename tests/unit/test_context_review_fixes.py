"""Regressions for four context-engine bugs found in review.

1. Chunks without text (an image's document, a table kept in metadata) were
   near-duplicates of each other (both had one empty shingle: Jaccard 1.0)
   and the extractive summarizer dropped them.
2. Chinese and Japanese, written without spaces, made a whole clause one
   "word" and glued numbers to their characters ("1889年"), so a question
   shared no term with its answer and its year was never found.
3. A number the question names with a thousands separator ("12,000") was
   normalised to "12000" but looked for in the raw sentence: never found.
4. Sentence splitting rescanned the whole text before every full stop:
   quadratic in the text's length (246 KB took about 19 s).
"""

from __future__ import annotations

import random
import re
import statistics
import time

import pytest

from costopt_core.context import sentences as sentences_module
from costopt_core.context.lexical import contains, content_words, numbers, terms, words
from costopt_core.context.relevance import (
    RelevanceConfig,
    ScoredChunk,
    near_duplicate,
    select_relevant,
)
from costopt_core.context.sentences import split_sentences
from costopt_core.context.summarize import SummarizerConfig, summarize_extractive
from costopt_core.tokens import default_counter

COUNT = default_counter().count

FILLER = " ".join(
    f"Regiment {r} marched {n} miles along the northern road before the autumn rains came."
    for r, n in zip("ABCDEFGHIJ", range(10, 20), strict=True)
)


# -- 1. chunks without text -------------------------------------------------------------


def test_chunks_without_text_are_never_duplicates() -> None:
    r = select_relevant([ScoredChunk("", 0.9), ScoredChunk("", 0.8), ScoredChunk("  \n", 0.7)])
    assert r.kept == (0, 1, 2)
    assert dict(r.dropped) == {}
    assert not near_duplicate("", "")
    assert not near_duplicate("   ", "--- !")
    # Text still deduplicates as before.
    r = select_relevant([ScoredChunk("A b c d e", 0.9), ScoredChunk("a, b. c d e", 0.8)])
    assert r.kept == (0,) and dict(r.duplicate_of) == {1: 0}
    assert near_duplicate("short", "SHORT")


def test_empty_dedupe_text_compares_what_the_model_sees() -> None:
    chunks = [
        ScoredChunk("caption: the Eiffel Tower at night", 0.9, dedupe_text=""),
        ScoredChunk("caption: the Louvre pyramid", 0.8, dedupe_text=""),
        ScoredChunk("caption: the Eiffel Tower at night", 0.7, dedupe_text=""),
    ]
    r = select_relevant(chunks, RelevanceConfig())
    assert r.kept == (0, 1)
    assert dict(r.dropped) == {2: "duplicate"} and dict(r.duplicate_of) == {2: 0}


def test_summarizer_keeps_chunks_without_text_as_they_were() -> None:
    long = " ".join([FILLER, "The bridge opened in 1937.", FILLER])
    chunks = ["", long, "  \n"]
    r = summarize_extractive(
        "When did the bridge open?",
        chunks,
        SummarizerConfig(budget_ratio=0.3),
        count_tokens=COUNT,
    )
    by_index = {c.index: c for c in r.chunks}
    assert sorted(by_index) == [0, 1, 2]
    assert by_index[0].text == "" and by_index[0].tokens_after == 0
    assert by_index[2].text == "  \n" and by_index[2].sentence_indices == ()
    assert "opened in 1937" in by_index[1].text
    assert r.tokens_after == sum(c.tokens_after for c in r.chunks) <= r.budget_tokens


def test_a_short_context_with_empty_chunks_is_sent_whole() -> None:
    chunks = ["Short one.  Two spaces here.", "", "   "]
    for config in (SummarizerConfig(), SummarizerConfig(min_score=-1.0)):
        r = summarize_extractive("anything", chunks, config, count_tokens=COUNT)
        assert [c.text for c in r.chunks] == chunks
        assert r.removed_tokens == 0
    # Only empty chunks: nothing to score, nothing dropped.
    for config in (SummarizerConfig(), SummarizerConfig(min_score=0.5)):
        r = summarize_extractive("q?", ["", ""], config, count_tokens=COUNT)
        assert [(c.index, c.text) for c in r.chunks] == [(0, ""), (1, "")]


# -- 2. scripts written without spaces --------------------------------------------------

ZH_ANSWER = (
    "埃菲尔铁塔是法国巴黎战神广场上的一座铁制镂空塔，"
    "它于1889年作为世界博览会的入口拱门正式向公众开放。"
)


def test_cjk_text_is_matched_on_character_bigrams() -> None:
    question = "埃菲尔铁塔是哪一年开放的？"
    shared = terms(question) & terms(ZH_ANSWER)
    assert {"埃菲", "铁塔", "开放"} <= shared
    assert words("東京タワーは1958年に") == ["東京", "京タ", "タワ", "ワー", "ーは", "1958", "年に"]
    assert "首都" in content_words("日本の首都は東京です")


def test_numbers_beside_cjk_characters_are_found() -> None:
    assert numbers(ZH_ANSWER) == {"1889"}
    assert contains(ZH_ANSWER, "1889")
    assert numbers("人口は1,396万人") == {"1396"}
    assert not contains("于18890年", "1889")  # still bounded by digits
    assert contains("埃菲尔铁塔是", "铁塔")


def test_summarizer_keeps_the_cjk_answer() -> None:
    filler = [f"公园{i}很美。" for i in range(60)]
    text = "".join(filler[:30]) + ZH_ANSWER + "".join(filler[30:])
    for question in ("埃菲尔铁塔是哪一年开放的？", "1889年埃菲尔铁塔发生了什么？"):
        r = summarize_extractive(question, [text], count_tokens=COUNT)
        assert r.removed_tokens > 0
        assert "1889" in r.chunks[0].text


# The matching rules before the fix, for text without CJK characters.
_OLD_WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")
_OLD_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.,])\d+(?:\.\d+)?")

ENGLISH = [
    "The Eiffel Tower opened in 1889; it cost 7,799,401.31 francs (v1.2, x3.5 or 12,000).",
    "Dr. O'Brien's well-known U.S. team scored 3-2 at 10.30 on 2024-01-05, e.g. item_7.",
    "Привет, мир: Ο Πύργος 1,5 km — café naïve résumé 100% 1st 2nd ½ ².",
    "Numbers 1,2345 and 12,000.5 and .5 and 5. and ,7 and $3,000 and #42.",
]


@pytest.mark.parametrize("text", ENGLISH)
def test_text_without_cjk_is_matched_as_before(text: str) -> None:
    assert words(text) == [w.lower().rstrip(".") for w in _OLD_WORD.findall(text)]
    assert numbers(text) == {n.replace(",", "") for n in _OLD_NUMBER.findall(text)}
    assert not contains("party", "art") and not contains("19690", "1969")
    assert contains("the art of war", "art") and contains("in 1969.", "1969")


# -- 3. thousands separators ------------------------------------------------------------


def test_contains_ignores_thousands_separators_on_both_sides() -> None:
    assert numbers("Some 12,000 perished.") == {"12000"}
    assert contains("some 12,000 perished", "12000")
    assert contains("some 12000 perished", "12,000")
    assert contains("a fund of 1,250,000.50 dollars", "1250000.50")
    assert not contains("some 120,000 perished", "12000")
    # A list written without spaces cannot be told from a grouped number: each
    # number in it is named too (a sentence kept, never one dropped).
    assert contains("rooms 101,102 and 103 were booked.", "102")
    assert contains("some 12,000 perished", "12")


def test_keep_named_finds_a_number_written_with_commas() -> None:
    def context(fmt: str) -> str:
        fill = [
            f"The {fmt.format(n)} soldiers of regiment {r} crossed the river on day 12 "
            "and camped near the old mill."
            for r, n in zip("ABCDEFGHIJKLMNO", range(13000, 28000, 1000), strict=True)
        ]
        answer = (
            f"Some {fmt.format(12000)} perished during the long cruel winter when storms "
            "buried the passes, rivers froze solid and supply wagons stopped arriving at "
            "the forts for many weeks."
        )
        return " ".join([*fill[:7], answer, *fill[7:]])

    for fmt in ("{}", "{:,}"):
        question = f"What happened to the {fmt.format(12000)} soldiers?"
        r = summarize_extractive(question, [context(fmt)], count_tokens=COUNT)
        assert r.removed_tokens > 0
        assert "perished" in r.chunks[0].text, fmt


# -- 4. linear sentence splitting -------------------------------------------------------


def _old_is_false_stop(text: str, stop_at: int) -> bool:
    """``sentences._is_false_stop`` before the fix (quadratic), the reference for results."""
    s = sentences_module
    if text[stop_at] != ".":
        return False
    m = s._WORD_BEFORE.search(text, 0, stop_at)
    if m is None:
        return False
    word = m.group(1)
    if word.isdigit() and len(word) <= 3 and not text[: m.start(1)].rsplit("\n", 1)[-1].strip():
        return True
    last = word.rsplit(".", 1)[-1] if "." in word else word
    if "." in word.strip("."):
        return True
    if len(last) == 1 and last.isupper():
        return True
    if last in s._BEFORE_NUMBER and text[stop_at + 1 :].lstrip()[:1].isdigit():
        return True
    return last.lower() in s._ABBREVIATIONS


_PIECES = [
    "Dr. Smith left.",
    "J. K. Rowling wrote it.",
    "the U.S. team won.",
    "e.g. this one.",
    "Ph.D. students came.",
    "c. 953 – c. 1029 he lived.",
    "b. 1920.",
    "it costs 3.5 dollars.",
    "v1.2 shipped.",
    "1. open the page",
    "  12. step twelve",
    "- item one",
    "Acme Inc. grew.",
    "and so on, etc.",
    "a lone . stop",
    "word\n. next",
    "abc\n.",
    "x" * 150 + ".",
    "a.b" * 60 + ". Then",
    "well-known.word-x. Next",
    "“Quoted.” Then more.",
    "Done! Really? Yes…",
    "埃菲尔铁塔于1889年开放。它很高！",
    "lower case start. next one.",
    "St. Mary’s Rd. is near.",
    "No. 5 is here.",
    "d. 12 ",
    "r.\n 7",
    "\t\n",
    ".",
]


def _varied_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    seps = [" ", "  ", "\n", "\n\n", " \n ", "", "\t"]
    return [
        "".join(rng.choice(_PIECES) + rng.choice(seps) for _ in range(rng.randint(1, 25)))
        for _ in range(n)
    ]


def test_split_is_unchanged_by_the_linear_stop_check(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _varied_texts(400, seed=7)
    for text in texts:
        for i, ch in enumerate(text):
            if ch == ".":
                assert sentences_module._is_false_stop(text, i) == _old_is_false_stop(text, i), (
                    text,
                    i,
                )
    new = [split_sentences(t) for t in texts]
    monkeypatch.setattr(sentences_module, "_is_false_stop", _old_is_false_stop)
    old = [split_sentences(t) for t in texts]
    assert new == old


def _split_seconds(text: str) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        split_sentences(text)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_split_time_is_linear_in_the_text_length() -> None:
    def text(n: int) -> str:
        return " ".join(
            f"Sentence {i} talks about topic {i % 50} in the archive of records." for i in range(n)
        )

    small, large = text(300), text(2400)  # 8x the text
    split_sentences(small)  # warm up
    ratio = _split_seconds(large) / _split_seconds(small)
    assert ratio < 20, f"8x the text took {ratio:.1f}x the time"
