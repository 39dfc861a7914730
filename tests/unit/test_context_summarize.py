"""Extractive and abstractive context summarization, and the sentence splitter under it."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from costopt_core.cache import SemanticCache
from costopt_core.cache.component import ComponentCache
from costopt_core.context.sentences import split_sentences
from costopt_core.context.summarize import (
    AbstractiveConfig,
    SummarizerConfig,
    abstractive_messages,
    asummarize_abstractive,
    asummarize_extractive,
    blank_question,
    summarize_abstractive,
    summarize_extractive,
)
from costopt_core.errors import ConfigurationError
from costopt_core.testing import FakeEmbedder
from costopt_core.tokens import default_counter
from costopt_core.types import Message

COUNT = default_counter().count


def texts(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


# --- sentence splitting -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
        ("It costs $3.50 today. Tomorrow 4.75.", ["It costs $3.50 today.", "Tomorrow 4.75."]),
        (
            "She moved to the U.S. in 1990. Then she left.",
            ["She moved to the U.S. in 1990.", "Then she left."],
        ),
        ("J. K. Rowling wrote it. It sold.", ["J. K. Rowling wrote it.", "It sold."]),
        ('He said "Stop!" Then he ran.', ['He said "Stop!"', "Then he ran."]),
        ("Acme Inc. was founded in 1901. It grew.", ["Acme Inc. was founded in 1901.", "It grew."]),
        (
            "Version 2.0.1 shipped (see notes.) Next one?",
            ["Version 2.0.1 shipped (see notes.)", "Next one?"],
        ),
        ("Wait... What happened?", ["Wait...", "What happened?"]),
        (
            "Al-Karaji (c. 953 – c. 1029) was a mathematician. He was born in Karaj.",
            ["Al-Karaji (c. 953 – c. 1029) was a mathematician.", "He was born in Karaj."],
        ),
        ("Smith (b. 1920) wrote it. It sold.", ["Smith (b. 1920) wrote it.", "It sold."]),
        ("no final stop", ["no final stop"]),
        ("First part\n\nsecond part", ["First part", "second part"]),
        ("", []),
        ("   \n ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


def test_split_spans_cover_every_character() -> None:
    text = "  Mr. Li paid 1,200.50 euros in Jan. 2020.  It was  the U.K. branch!\nNext line? Yes. "
    sentences = split_sentences(text)
    for s in sentences:
        assert text[s.start : s.end] == s.text
    rest = text
    for s in reversed(sentences):
        rest = rest[: s.start] + rest[s.end :]
    assert rest.strip() == ""


# --- extractive: helpers -------------------------------------------------------------


def steer(preferred: dict[str, float]) -> FakeEmbedder:
    """An embedder whose similarity to the question is set per sentence by a substring."""

    class Steered(FakeEmbedder):
        def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
            out = np.zeros((len(texts), 2), dtype=np.float32)
            for i, t in enumerate(texts):
                sim = next((v for k, v in preferred.items() if k in t), 0.0)
                out[i] = [sim, np.sqrt(max(0.0, 1 - sim * sim))]
            return out

    return Steered(dim=2)


Q_VEC = np.array([1.0, 0.0], dtype=np.float32)

CHUNKS = [
    "The Golden Gate Bridge opened in 1937. It is painted International Orange. "
    "Fog often hides its towers. The bridge is 2,737 metres long.",
    "San Francisco is a city in California. It has many hills. The cable cars date from 1873.",
]


def test_budget_is_respected_exactly() -> None:
    before = sum(COUNT(c) for c in CHUNKS)
    for budget in (5, 12, 20, 33, 50):
        r = summarize_extractive(
            "When did the Golden Gate Bridge open?",
            CHUNKS,
            SummarizerConfig(budget_ratio=None, budget_tokens=budget),
            embed=FakeEmbedder().embed,
            count_tokens=COUNT,
        )
        assert r.tokens_before == before
        assert r.budget_tokens == min(budget, before)
        assert r.tokens_after == sum(COUNT(c.text) for c in r.chunks)
        assert r.tokens_after <= budget
        assert r.removed_tokens == before - r.tokens_after


def test_ratio_budget_and_smallest_budget_wins() -> None:
    before = sum(COUNT(c) for c in CHUNKS)
    r = summarize_extractive(
        "Golden Gate Bridge",
        CHUNKS,
        SummarizerConfig(budget_ratio=0.5, ratio_floor_tokens=0),
        embed=FakeEmbedder().embed,
        count_tokens=COUNT,
    )
    assert r.budget_tokens == before // 2
    assert 0 < r.tokens_after <= before // 2
    both = SummarizerConfig(budget_ratio=0.5, budget_tokens=10)
    assert both.budget_for(before) == 10
    assert SummarizerConfig(budget_ratio=None, budget_tokens=10_000).budget_for(before) == before


def test_ratio_never_cuts_below_the_floor() -> None:
    config = SummarizerConfig(budget_ratio=0.4, ratio_floor_tokens=100)
    assert config.budget_for(60) == 60  # a short context is kept whole
    assert config.budget_for(200) == 100
    assert config.budget_for(1000) == 400
    # An explicit token budget still applies below the floor.
    capped = config.model_copy(update={"budget_tokens": 30})
    assert capped.budget_for(60) == 30
    r = summarize_extractive("When did it open?", CHUNKS, SummarizerConfig(), count_tokens=COUNT)
    assert r.tokens_after == r.tokens_before == sum(COUNT(c) for c in CHUNKS) < 64


async def test_a_context_within_its_budget_is_returned_unchanged() -> None:
    # Per-sentence costs (each with a separator) overstate a chunk's tokens:
    # this 27-token context, under the 64-token floor, used to lose its last
    # sentence. It is now returned as it came, before any scoring.
    chunks = ["42 is the answer.\nTolls rose in 1990.\nTolls rose in 1990.\nGulls nest on it!"]
    embedder = FakeEmbedder()
    config = SummarizerConfig(sentence_embeddings=True)
    r = summarize_extractive(
        "When did the bridge open?", chunks, config, embed=embedder.embed, count_tokens=COUNT
    )
    assert [c.text for c in r.chunks] == chunks
    assert r.chunks[0].sentence_indices == (0, 1, 2, 3)
    assert r.tokens_after == r.tokens_before == r.budget_tokens == COUNT(chunks[0])
    assert embedder.calls == 0  # nothing to score
    a = await asummarize_extractive(
        "When did the bridge open?", chunks, config, aembed=embedder.aembed, count_tokens=COUNT
    )
    assert a == r
    # Many short contexts, odd separators included: none is cut.
    rng = random.Random(2)
    sentences = [
        "The bridge opened in 1932.",
        "It is painted grey.",
        "Gulls nest on it!",
        "Why?",
        "Dr. Smith paid $3.50.",
        "42 is the answer.",
        "Tolls rose in 1990.",
        "東京は大きい。",
    ]
    checked = 0
    for _ in range(300):
        sep = rng.choice([" ", "\n", "\n\n", "  "])
        short = [
            sep.join(rng.choices(sentences, k=rng.randint(1, 5))) for _ in range(rng.randint(1, 3))
        ]
        if sum(COUNT(c) for c in short) > 64:
            continue  # past the floor: summarized, as it should be
        out = summarize_extractive("When did the bridge open?", short, count_tokens=COUNT)
        assert [c.text for c in out.chunks] == short
        assert out.removed_tokens == 0
        checked += 1
    assert checked > 200
    # Within an explicit budget too; min_score still drops weak sentences with room to spare.
    roomy = SummarizerConfig(budget_ratio=None, budget_tokens=10_000, ratio_floor_tokens=0)
    long = [" ".join(CHUNKS * 4)]
    whole = summarize_extractive("q", long, roomy, count_tokens=COUNT)
    assert [c.text for c in whole.chunks] == long
    strict = roomy.model_copy(update={"min_score": 0.3, "expand_query": False})
    kept = summarize_extractive("Where do gulls nest?", chunks, strict, count_tokens=COUNT)
    assert [(c.text, c.sentence_indices) for c in kept.chunks] == [("Gulls nest on it!", (3,))]


def test_kept_sentences_stay_in_original_order() -> None:
    # The last sentence is the most similar, the first the second most.
    embedder = steer({"2,737": 0.9, "opened": 0.8, "Fog": 0.1, "painted": 0.2})
    r = summarize_extractive(
        "How long is it?",
        CHUNKS[:1],
        SummarizerConfig(budget_ratio=None, budget_tokens=22, keep_named=False),
        embed=embedder.embed,
        count_tokens=COUNT,
        question_vector=Q_VEC,
    )
    assert r.chunks[0].sentence_indices == (0, 3)
    assert r.chunks[0].text == (
        "The Golden Gate Bridge opened in 1937. The bridge is 2,737 metres long."
    )


_CODE_DOC = """Install the package first. Then configure it as follows.

```python
def connect(host, port):
    client = Client(host)

    client.port = port
    return client
```

The retry limit is 5. Other settings are described in the reference manual for advanced users.
Logging is verbose by default. You can change the colour scheme in the preferences dialog.
"""

_LIST_DOC = """Shopping notes for the weekend trip. We drive on Saturday morning.

- Fruit
  - apples for the kids
  - pears

The car needs fuel before we leave. Remember the tent and the sleeping bags too."""


@pytest.mark.parametrize(
    ("question", "chunk", "budget", "expected"),
    [
        # A code block split at its blank line: the line after it stays in the
        # function body (it moved to the margin when kept lines were stripped).
        (
            "How do I connect to the host and port?",
            _CODE_DOC,
            40,
            "Install the package first. Then configure it as follows.\n```python\n"
            "def connect(host, port):\n    client = Client(host)\n"
            "    client.port = port\n    return client\n```",
        ),
        # Nested list items stay nested under their parent.
        (
            "Which fruit: apples or pears?",
            _LIST_DOC,
            30,
            "Shopping notes for the weekend trip. We drive on Saturday morning.\n"
            "- Fruit\n  - apples for the kids\n  - pears",
        ),
        # The first kept sentence keeps its line's indentation too; one that
        # begins mid-line (after another's stop) has none of its own.
        (
            "What does the nested step say?",
            "Intro text that is about something unrelated entirely, the weather.\n"
            "    Nested step one is here. Nested step two follows it.\n"
            "Closing words about the weather and the rain and the wind today.",
            14,
            "    Nested step one is here. Nested step two follows it.",
        ),
    ],
)
def test_kept_lines_keep_their_indentation(
    question: str, chunk: str, budget: int, expected: str
) -> None:
    config = SummarizerConfig(budget_ratio=None, budget_tokens=budget)
    r = summarize_extractive(question, [chunk], config, count_tokens=COUNT)
    (kept,) = r.chunks
    assert kept.text == expected
    assert kept.tokens_after == COUNT(expected) <= budget
    assert len(kept.text) < len(chunk)
    # A visible separator marks every cut: the sentences go between the marks
    # without line breaks or indentation, as before.
    flat = config.model_copy(update={"separator": " … "})
    (joined,) = summarize_extractive(question, [chunk], flat, count_tokens=COUNT).chunks
    sentences = texts(chunk)
    assert joined.text == " … ".join(sentences[i] for i in joined.sentence_indices)


def test_named_number_kept_even_with_low_similarity() -> None:
    embedder = steer({"cable": 0.0, "hills": 0.9, "California": 0.8, "Fog": 0.7})
    question = "What happened in 1873?"
    config = SummarizerConfig(budget_ratio=None, budget_tokens=12)
    r = summarize_extractive(
        question, CHUNKS, config, embed=embedder.embed, count_tokens=COUNT, question_vector=Q_VEC
    )
    kept = " ".join(c.text for c in r.chunks)
    assert "1873" in kept
    off = summarize_extractive(
        question,
        CHUNKS,
        config.model_copy(update={"keep_named": False, "named_weight": 0.0, "lexical_weight": 0.0}),
        embed=embedder.embed,
        count_tokens=COUNT,
        question_vector=Q_VEC,
    )
    assert "1873" not in " ".join(c.text for c in off.chunks)


def test_named_entity_from_question_is_kept_with_keep_names() -> None:
    embedder = steer({"painted": 0.9, "Fog": 0.85, "cable": 0.1})
    config = SummarizerConfig(
        budget_ratio=None,
        budget_tokens=10,
        keep_names=True,
        lexical_weight=0.0,
        sentence_embeddings=True,
    )
    kwargs = {"embed": embedder.embed, "count_tokens": COUNT, "question_vector": Q_VEC}
    question = "Which city has the cable cars of San Francisco?"
    r = summarize_extractive(question, CHUNKS, config, **kwargs)  # type: ignore[arg-type]
    assert [c.index for c in r.chunks] == [1]
    assert "San Francisco" in r.chunks[0].text
    # Without the rule only the (steered) similarity counts: the fog sentence wins.
    off = config.model_copy(update={"keep_names": False, "named_weight": 0.0})
    r = summarize_extractive(question, CHUNKS, off, **kwargs)  # type: ignore[arg-type]
    assert "San Francisco" not in " ".join(c.text for c in r.chunks)


def test_query_expansion_finds_the_bridge_sentence() -> None:
    chunks = [
        "Big Stone Gap is a 2014 film. It was directed by Adriana Trigiani.",
        "Trigiani lives in Greenwich Village. She writes novels.",
        "The Appalachian town has coal mines. Coal trains pass daily.",
    ]
    embedder = steer(
        {"directed": 0.9, "2014 film": 0.85, "Greenwich": 0.3, "coal mines": 0.32, "trains": 0.3}
    )
    question = "Where does the director of Big Stone Gap live?"
    base = SummarizerConfig(
        budget_ratio=None, budget_tokens=28, lexical_weight=0.0, sentence_embeddings=True
    )
    kwargs = {"embed": embedder.embed, "count_tokens": COUNT, "question_vector": Q_VEC}
    with_expansion = summarize_extractive(question, chunks, base, **kwargs)  # type: ignore[arg-type]
    without = summarize_extractive(
        question,
        chunks,
        base.model_copy(update={"expand_query": False}),
        **kwargs,  # type: ignore[arg-type]
    )
    assert 1 in [c.index for c in with_expansion.chunks]
    assert 1 not in [c.index for c in without.chunks]


def test_whole_chunk_kept_verbatim_and_empty_chunks_kept_as_they_were() -> None:
    # A chunk without text (an image's node, a PDF's blank page) costs nothing
    # and may carry what the model sees in its metadata: it comes back as it was.
    chunks = ["Short one.  Two spaces here.", "", "   "]
    r = summarize_extractive(
        "anything",
        chunks,
        SummarizerConfig(budget_ratio=1.0),
        embed=FakeEmbedder().embed,
        count_tokens=COUNT,
    )
    assert [c.index for c in r.chunks] == [0, 1, 2]
    assert [c.text for c in r.chunks] == chunks
    assert r.chunks[0].sentence_indices == (0, 1)
    assert r.chunks[1].sentence_indices == r.chunks[2].sentence_indices == ()


def test_empty_input_embeds_nothing() -> None:
    embedder = FakeEmbedder()
    for chunks in ([], ["", "  "]):
        r = summarize_extractive("q?", chunks, embed=embedder.embed, count_tokens=COUNT)
        assert [c.text for c in r.chunks] == chunks  # kept as they were (nothing to cut)
        assert r.tokens_after == r.tokens_before
    assert embedder.calls == 0


def test_one_batched_embedding_call_and_question_vector_reuse() -> None:
    # ratio_floor_tokens=0: CHUNKS is short enough to be returned whole otherwise.
    config = SummarizerConfig(sentence_embeddings=True, ratio_floor_tokens=0)
    embedder = FakeEmbedder()
    summarize_extractive("Golden Gate?", CHUNKS, config, embed=embedder.embed, count_tokens=COUNT)
    n_sentences = sum(len(split_sentences(c)) for c in CHUNKS)
    assert (embedder.calls, embedder.texts_embedded) == (1, n_sentences + 1)
    q = embedder.embed(["Golden Gate?"])[0]
    embedder2 = FakeEmbedder()
    summarize_extractive(
        "Golden Gate?",
        CHUNKS,
        config,
        embed=embedder2.embed,
        count_tokens=COUNT,
        question_vector=q,
    )
    assert embedder2.texts_embedded == n_sentences


EIFFEL = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built it. "
    "The tower opened in 1889 as the entrance arch of the World's Fair. "
    "It was initially criticised by some of France's leading artists for its design. "
    "It has become a global cultural icon of France and one of its best known structures. "
    "The tower received 5,889,000 visitors in 2022. "
    "It is 330 metres tall, about the same height as an 81-storey building."
]


@pytest.mark.parametrize("verb", ["open", "opened", "opening"])
def test_a_question_matches_another_form_of_the_answers_words(verb: str) -> None:
    """'When did it open?' is answered by 'it opened': word forms must not decide."""
    question = {
        "open": "When did the Eiffel Tower open?",
        "opened": "When was the Eiffel Tower opened?",
        "opening": "What was the Eiffel Tower's opening year?",
    }[verb]
    r = summarize_extractive(question, EIFFEL, count_tokens=COUNT)
    assert r.tokens_after < r.tokens_before
    assert "opened in 1889" in " ".join(c.text for c in r.chunks)


def test_stem_strips_inflections_only() -> None:
    from costopt_core.context.lexical import stem

    same = [
        ("opened", "open"), ("opens", "open"), ("opening", "open"), ("created", "create"),
        ("stopped", "stop"), ("towers", "tower"), ("cities", "city"), ("running", "run"),
    ]  # fmt: skip
    assert all(stem(a) == stem(b) for a, b in same)
    # short words and numbers stay as they are; a short stem takes no other word's place
    assert [stem(w) for w in ("1889", "bus", "tim", "a1b2")] == ["1889", "bus", "tim", "a1b2"]
    different = [("times", "tim"), ("plane", "plan"), ("rated", "rat"), ("stared", "star"),
                 ("cared", "car"), ("hoped", "hop"), ("experiments", "experience"),
                 ("venue", "venus"), ("university", "universe"), ("status", "statue"),
                 ("generous", "general"), ("news", "new"), ("goods", "good")]  # fmt: skip
    assert all(stem(a) != stem(b) for a, b in different)


def test_a_stem_does_not_match_a_name_it_is_not() -> None:
    """'How many times...' must not pull in a sentence about Tim (found by a review)."""
    text = [
        "The club was founded long ago in a small northern town. Tim chaired it. "
        "Over its long history the club won the league title nine times."
    ]
    config = SummarizerConfig(budget_tokens=14)
    words = lambda t: len(t.split())  # noqa: E731
    r = summarize_extractive("How many times did the club win?", text, config, count_tokens=words)
    assert "nine times" in " ".join(c.text for c in r.chunks)


def test_default_scoring_is_lexical_and_embeds_nothing() -> None:
    embedder = FakeEmbedder()
    r = summarize_extractive(
        "When did the Golden Gate Bridge open?",
        CHUNKS,
        embed=embedder.embed,
        count_tokens=COUNT,
    )
    assert embedder.calls == 0
    assert r.chunks and "1937" in " ".join(c.text for c in r.chunks)
    # Without an embedder the default works too; asking for embeddings without one is an error.
    assert summarize_extractive("q?", CHUNKS, count_tokens=COUNT).tokens_after > 0
    with pytest.raises(ConfigurationError, match="needs embed="):
        summarize_extractive(
            "q?", CHUNKS, SummarizerConfig(sentence_embeddings=True), count_tokens=COUNT
        )


def test_module_doc_describes_the_default_scoring_and_when_to_embed() -> None:
    import costopt_core.context.summarize as mod

    doc = " ".join((mod.__doc__ or "").split())
    assert SummarizerConfig().sentence_embeddings is False
    # the default is lexical: the doc must not promise embedding similarity by default
    assert "The score is embedding similarity" not in doc
    assert "By default the score is lexical" in doc
    assert "SummarizerConfig(sentence_embeddings=True)" in doc and "paraphrase" in doc
    field_doc = " ".join((SummarizerConfig.__doc__ or "").split())
    assert "Turn it on when users paraphrase" in field_doc


def test_min_score_drops_weak_sentences() -> None:
    embedder = steer({"opened": 0.9})
    r = summarize_extractive(
        "x",
        CHUNKS,
        SummarizerConfig(
            budget_ratio=1.0, min_score=0.5, expand_query=False, sentence_embeddings=True
        ),
        embed=embedder.embed,
        count_tokens=COUNT,
        question_vector=Q_VEC,
    )
    assert [(c.index, c.sentence_indices) for c in r.chunks] == [(0, (0,))]


async def test_sync_async_parity() -> None:
    embedder = FakeEmbedder()
    config = SummarizerConfig(budget_ratio=0.4, ratio_floor_tokens=0)
    for question in ("When did the bridge open?", "cable cars 1873", ""):
        sync = summarize_extractive(
            question, CHUNKS, config, embed=embedder.embed, count_tokens=COUNT
        )
        asyn = await asummarize_extractive(
            question, CHUNKS, config, aembed=embedder.aembed, count_tokens=COUNT
        )
        assert sync == asyn


@pytest.mark.parametrize(
    "kwargs",
    [
        {"budget_ratio": 0.0},
        {"budget_ratio": 1.5},
        {"budget_tokens": 0},
        {"budget_ratio": None, "budget_tokens": None},
        {"expansion_seeds": 0},
        {"ratio_floor_tokens": -1},
        {"length_penalty": -0.1},
        {"chunk_boost_top_k": 0},
        {"unknown": 1},
    ],
)
def test_bad_config_raises_configuration_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="SummarizerConfig"):
        SummarizerConfig(**kwargs)  # type: ignore[arg-type]


# --- abstractive ---------------------------------------------------------------------


def test_abstractive_summary_and_messages() -> None:
    seen: list[list[Message]] = []

    def chat(messages: list[Message]) -> str:
        seen.append(messages)
        return " The bridge opened in 1937. "

    r = summarize_abstractive("When did it open?", CHUNKS, chat, count_tokens=COUNT)
    assert r.summarized
    assert r.text == "The bridge opened in 1937."
    assert r.tokens_after == COUNT(r.text)
    assert r.removed_tokens == sum(COUNT(c) for c in CHUNKS) - r.tokens_after
    assert seen[0] == abstractive_messages("When did it open?", CHUNKS)
    assert seen[0][0].role == "system" and "256" in seen[0][0].content
    assert "[2] San Francisco" in seen[0][1].content


def test_abstractive_keeps_the_context_when_the_summary_is_longer() -> None:
    r = summarize_abstractive(
        "q?", ["Tiny."], lambda m: "A much longer text than the input was.", count_tokens=COUNT
    )
    assert not r.summarized
    assert r.text == "Tiny." and r.removed_tokens == 0
    empty = summarize_abstractive("q?", ["Some context here."], lambda m: "  ", count_tokens=COUNT)
    assert not empty.summarized and empty.text == "Some context here."


async def test_abstractive_no_answer_keeps_the_context() -> None:
    # A chat function that returns None (no text in the model's answer) is an empty
    # summary, not the text "None", which would be shorter than any context.
    def chat(messages: list[Message]) -> str:
        return None  # type: ignore[return-value]

    async def achat(messages: list[Message]) -> str:
        return None  # type: ignore[return-value]

    sync = summarize_abstractive("When did it open?", CHUNKS, chat, count_tokens=COUNT)
    asyn = await asummarize_abstractive("When did it open?", CHUNKS, achat, count_tokens=COUNT)
    for r in (sync, asyn):
        assert not r.summarized and r.removed_tokens == 0
        assert r.text == "\n\n".join(CHUNKS)


def test_abstractive_empty_context_makes_no_call() -> None:
    def chat(messages: list[Message]) -> str:
        raise AssertionError("no call expected")

    r = summarize_abstractive("q?", ["", " "], chat, count_tokens=COUNT)
    assert not r.summarized and r.removed_tokens == 0


async def test_abstractive_cached_and_async_parity() -> None:
    cache = ComponentCache(SemanticCache(embedder=FakeEmbedder()), "summarizer:gpt-4o-mini")
    calls = 0

    def chat(messages: list[Message]) -> str:
        nonlocal calls
        calls += 1
        return "Opened 1937."

    async def achat(messages: list[Message]) -> str:
        return chat(messages)

    first = summarize_abstractive("When?", CHUNKS, chat, count_tokens=COUNT, cache=cache)
    again = summarize_abstractive("When?", CHUNKS, chat, count_tokens=COUNT, cache=cache)
    asyn = await asummarize_abstractive("When?", CHUNKS, achat, count_tokens=COUNT, cache=cache)
    assert first == again == asyn
    assert calls == 1
    other = summarize_abstractive(
        "When?",
        CHUNKS,
        chat,
        AbstractiveConfig(max_summary_tokens=64),
        count_tokens=COUNT,
        cache=cache,
    )
    assert other.text == "Opened 1937." and calls == 2  # another prompt, another entry


def test_bad_abstractive_config() -> None:
    with pytest.raises(ConfigurationError, match="max_summary_tokens"):
        AbstractiveConfig(max_summary_tokens=1)


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
async def test_a_blank_question_keeps_the_context_whole(question: str) -> None:
    # A blank question selects nothing: the engine itself returns the context
    # whole (sync and async), and the abstractive summarizer makes no call,
    # whoever calls it (the adapters relied on their own check before).
    chunks = [
        "The bridge opened in 1932. It is painted grey. Gulls nest on it. " * 8,
        "The tunnel opened in 1950. It is lit at night. Cars pay a toll. " * 8,
    ]
    config = SummarizerConfig(budget_tokens=20)
    embed = FakeEmbedder()
    sync = summarize_extractive(question, chunks, config, embed=embed.embed, count_tokens=COUNT)
    asyn = await asummarize_extractive(
        question, chunks, config, aembed=embed.aembed, count_tokens=COUNT
    )
    for result in (sync, asyn):
        assert [c.text for c in result.chunks] == chunks
        assert result.removed_tokens == 0
    assert blank_question(question) and not blank_question("When did it open?")

    def chat(messages: list[Message]) -> str:
        raise AssertionError("no model call for a blank question")

    async def achat(messages: list[Message]) -> str:
        raise AssertionError("no model call for a blank question")

    summary = summarize_abstractive(question, chunks, chat, count_tokens=COUNT)
    asummary = await asummarize_abstractive(question, chunks, achat, count_tokens=COUNT)
    for s in (summary, asummary):
        assert s.text == "\n\n".join(chunks) and s.tokens_after == s.tokens_before
