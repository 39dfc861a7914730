"""Memory summaries keep what fits of an over-long summary or sentence, never nothing.

Regression: a model's summary slightly over the entry budget was cut only at
sentence ends, so a bullet list (no stops) or one long sentence was stored
as an empty entry; the extractive summary dropped every sentence longer than
its budget, so a conversation of long sentences (Russian here) was folded
into an empty summary and vanished from the view.
"""

from __future__ import annotations

import pytest

from costopt_core.memory import MemoryConfig, MemoryState, aflush, flush
from costopt_core.memory.extract import summarize_lines
from costopt_core.tokens import default_counter
from costopt_core.types import Message

COUNT = default_counter().count

CONFIG = MemoryConfig(
    window_tokens=80,
    flush_min_tokens=100,
    flush_max_tokens=200,
    summary_tokens=384,  # 48 tokens per entry
    facts_tokens=40,
    recall_tokens=48,
)

BULLETS = (
    "- Ana lives in Porto and works as a nurse at the city hospital\n"
    "- Her dog Biscuit is a beagle who loves carrots\n"
    "- She plans a trip to Kyoto in April 2026 with her brother Rui\n"
    "- Budget for the trip is 4,000 euros\n"
    "- She prefers window seats and vegetarian meals"
)
LONG = "Ana said that " + ", and then ".join(
    f"on day {i} she walked the dog along the river in Porto" for i in range(30)
)


def history(turns: int) -> list[Message]:
    out = [Message("system", "You are helpful.")]
    for i in range(turns):
        out.append(Message("user", f"Turn {i}: Ana talks about Porto, Biscuit and Kyoto, {i}."))
        out.append(Message("assistant", f"Turn {i}: noted detail {i} about the trip."))
    return out


@pytest.mark.parametrize("answer", [BULLETS, LONG])
async def test_an_over_long_model_summary_keeps_what_fits(answer: str) -> None:
    def chat(messages: list[Message]) -> str:
        return answer

    async def achat(messages: list[Message]) -> str:
        return answer

    budget = CONFIG.entry_tokens
    assert budget == 48 and COUNT(answer) > budget
    r = flush(history(30), MemoryState(), CONFIG, count_tokens=COUNT, chat=chat, force=True)
    a = await aflush(
        history(30), MemoryState(), CONFIG, count_tokens=COUNT, achat=achat, force=True
    )
    assert r.state == a.state
    assert r.state.entries
    for entry in r.state.entries:
        assert 0 < entry.tokens == COUNT(entry.text) <= budget
        assert answer.startswith(entry.text)
    text = r.state.entries[0].text
    if answer is BULLETS:
        # Whole bullets, on their own lines, as many as fit.
        lines = BULLETS.split("\n")
        n = text.count("\n") + 1
        assert text == "\n".join(lines[:n]) and n >= 2
        assert COUNT("\n".join(lines[: n + 1])) > budget
    else:
        # One long sentence: its beginning, cut at a word boundary.
        assert LONG[len(text)] == " "
        assert COUNT(LONG[: LONG.index(" ", len(text) + 1)]) > budget


def test_extractive_summary_of_long_non_english_sentences_is_not_empty() -> None:
    cities = ["Москве", "Казани", "Новосибирске"]
    lines = []
    for i, city in enumerate(cities):
        lines.append(
            (
                "user",
                f"Меня зовут Анна, в {2000 + i} году я жила в {city} и работала инженером на "
                f"заводе номер {i + 10}, а мой брат учился в университете и любил играть в "
                "шахматы по выходным.",
            )
        )
    budget = 48
    assert all(COUNT(t) > budget for _, t in lines)
    summary = summarize_lines(lines, budget, COUNT)
    assert summary.startswith("user: Меня зовут Анна, в 2000 году я жила в Москве")
    assert 0 < COUNT(summary) <= budget
    body = summary.removeprefix("user: ")
    assert lines[0][1].startswith(body) and lines[0][1][len(body)] == " "


def test_extractive_summary_fills_its_room_with_the_best_long_sentence() -> None:
    short = ("user", "The cello lessons start on Monday at the community school downtown.")
    long = ("user", LONG)
    budget = 60
    summary = summarize_lines([short, long], budget, COUNT)
    first, second = summary.split("\n")
    assert first == f"user: {short[1]}"
    assert second.startswith("user: Ana said that on day 0")
    assert COUNT(summary) <= budget
    # Whole sentences only when the room left is too small for a useful fragment.
    tight = COUNT(f"user: {short[1]}") + 5
    assert summarize_lines([short, long], tight, COUNT) == f"user: {short[1]}"
