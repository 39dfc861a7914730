"""Request features: values on hand-written requests, flags, the routing text, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from costopt_core.cache.keys import semantic_text
from costopt_core.errors import ConfigurationError
from costopt_core.routing import (
    FEATURE_NAMES,
    as_messages,
    extract_features,
    feature_matrix,
    routing_text,
)
from costopt_core.tokens import default_counter
from costopt_core.types import ChatRequest, Message


def test_short_factual_question() -> None:
    f = extract_features("What is the capital of France?")
    assert f.question_type == "factual"
    assert f.turns == 1 and f.messages == 1 and not f.has_system
    assert f.code == 0 and f.math == 0 and f.reasoning == 0
    assert f.questions == 1 and not f.multiple_choice
    assert not f.tools and not f.structured_output
    assert f.last_user_tokens == default_counter().count("What is the capital of France?")
    assert f.tokens > f.last_user_tokens  # chat framing is included


def test_code_request() -> None:
    prompt = (
        "Fix the bug in this Python function:\n```python\ndef add(a, b):\n    return a - b\n```"
    )
    f = extract_features(prompt)
    assert f.code >= 3  # a fenced block counts three, plus code-like lines and words
    assert f.question_type == "code"


def test_math_and_reasoning_cues() -> None:
    f = extract_features(
        "Prove that the sum of the first n odd numbers is n^2. Explain why, step by step."
    )
    assert f.math >= 2
    assert f.reasoning >= 2  # "prove", "explain why", "step by step"
    g = extract_features("Solve the equation 3x + 5 = 20 and compute x^2 - 1.")
    assert g.math >= 3 and g.question_type == "math"


def test_multi_step_and_constraints() -> None:
    f = extract_features(
        "1. Read the report.\n2. Summarize each section.\n3. Then list the risks.\n"
        "Answer in JSON with at most 100 words."
    )
    assert f.steps >= 3
    assert f.constraints >= 3  # JSON, at most, words


def test_multiple_choice_and_question_types() -> None:
    mc = extract_features("Which gas do plants absorb?\nA) Oxygen\nB) Carbon dioxide\nC) Neon")
    assert mc.multiple_choice and mc.question_type == "choice"
    assert extract_features("Why is the sky blue?").question_type == "why"
    assert extract_features("How do I reset my password?").question_type == "how"
    assert extract_features("Write a short poem about rain").question_type == "creative"
    assert extract_features("Translate 'good morning' into German").question_type == "transform"
    assert extract_features("Is Paris in France?").question_type == "yes_no"
    assert extract_features("hello there").question_type == "other"


def test_conversation_depth_and_system_prompt() -> None:
    msgs = [
        Message("system", "You are terse."),
        Message("user", "Hi"),
        Message("assistant", "Hello"),
        Message("user", "What is 2 + 2?"),
    ]
    f = extract_features(msgs)
    assert f.turns == 2 and f.messages == 3 and f.has_system
    assert f.last_user_tokens == default_counter().count("What is 2 + 2?")


def test_flags_from_a_chat_request_and_overrides() -> None:
    req = ChatRequest(
        messages=(Message("user", "Extract the names"),),
        tools=({"name": "lookup"},),
        params={"response_format": {"type": "json_object"}},
    )
    f = extract_features(req)
    assert f.tools and f.structured_output
    plain = ChatRequest(messages=(Message("user", "hi"),), params={"response_format": "text"})
    assert not extract_features(plain).structured_output
    assert extract_features("hi", tools=True, structured_output=True).tools


def test_vector_matches_names() -> None:
    f = extract_features("Why is the sky blue?")
    v = f.as_array()
    assert v.shape == (len(FEATURE_NAMES),)
    assert v[FEATURE_NAMES.index("type_why")] == 1.0
    assert v[FEATURE_NAMES.index("log_questions")] == pytest.approx(np.log1p(1))
    m = feature_matrix(["a", "Why?", f])
    assert m.shape == (3, len(FEATURE_NAMES))
    assert feature_matrix([]).shape == (0, len(FEATURE_NAMES))


def test_routing_text_keeps_the_end_of_a_long_prompt() -> None:
    shots = "\n\n".join(f"Example {i}: question {i}?\nAnswer: {i}" for i in range(200))
    prompt = shots + "\n\nWhat is the boiling point of water?\nAnswer:"
    text = routing_text(prompt, max_chars=300)
    assert text.endswith("What is the boiling point of water?\nAnswer:")
    assert len(text) <= 300
    assert routing_text("short prompt") == "short prompt"
    # Whitespace is normalised as the semantic cache does, so both embed one string
    # (line breaks and indentation kept: in code they are meaning).
    msgs = (Message("user", "  What is\n\nthe  capital of France? "),)
    assert routing_text(msgs) == semantic_text(msgs, 2) == "What is\nthe capital of France?"
    code = (Message("user", "Is this valid?\n\ndef f():\n\treturn  1\n"),)
    assert routing_text(code) == semantic_text(code, 2) == "Is this valid?\ndef f():\n\treturn 1"
    # The last user turn is what is embedded, not the system prompt or the answer.
    msgs = [Message("system", "S"), Message("user", "Q1"), Message("assistant", "A1")]
    assert routing_text(msgs) == "Q1"
    # A single paragraph longer than the budget is kept whole.
    assert routing_text("x" * 2000, max_chars=100) == "x" * 2000


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="sequence of Message"):
        as_messages([{"role": "user", "content": "hi"}])  # type: ignore[list-item]


def test_features_are_cheap() -> None:
    prompt = "Explain step by step how to compute 17 * 23, then verify it. " * 40
    extract_features(prompt)  # warm the tokenizer
    runs = []
    for _ in range(5):  # best of five: robust to a busy machine
        start = time.perf_counter()
        for _ in range(20):
            extract_features(prompt)
        runs.append((time.perf_counter() - start) / 20 * 1e3)
    assert min(runs) < 5  # ~0.5 ms here for 2,400 characters
