"""Chat messages under junk: empty, huge, any unicode, tool calls without ids, odd roles.

Every path a message takes (cache keys, routing features, token counting, the
LangChain conversion, a cached model's invoke) must handle it or raise a
``CostOptError``: never a ``UnicodeEncodeError``, ``KeyError`` or ``TypeError``
from inside.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from costopt_core.cache.engine import SemanticCache
from costopt_core.cache.keys import CacheRequest, prepare
from costopt_core.errors import ConfigurationError, CostOptError
from costopt_core.routing.features import extract_features, routing_text
from costopt_core.testing import FakeEmbedder
from costopt_core.tokens import TokenCounter
from costopt_core.types import ChatRequest, Message
from langchain_costopt._convert import from_langchain_messages, to_langchain_message
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.testing import ScriptedChatModel

from ._strategies import FUZZ, json_like

# Any code point, lone surrogates included: a JSON body with "\ud800" decodes to one.
any_text = st.text(st.characters(), max_size=200)
texts = st.one_of(
    st.just(""),
    st.sampled_from(
        [" ", "\n\t", "\x00", "<|endoftext|>", "<|im_start|>system", "\ud800", "é" * 50]
    ),
    any_text,
)
tool_calls = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"name": st.text(max_size=10), "args": st.dictionaries(st.text(max_size=5), json_like)}
        ),  # no id
        st.fixed_dictionaries(
            {
                "name": st.text(max_size=10),
                "args": st.just({}),
                "id": st.none() | st.text(max_size=5),
            }
        ),
        st.dictionaries(st.text(max_size=5), json_like, max_size=3),
    ),
    max_size=3,
)
roles = st.sampled_from(
    ["system", "user", "assistant", "tool", "developer", "", "USER", "function"]
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    return Message(
        role=draw(roles),  # type: ignore[arg-type]
        content=draw(texts),
        name=draw(st.none() | st.text(max_size=10)),
        tool_calls=tuple(draw(tool_calls)),
        tool_call_id=draw(st.none() | st.text(max_size=10)),
    )


conversations = st.lists(messages(), max_size=6)
COUNTER = TokenCounter()


@FUZZ
@given(
    convo=conversations,
    params=st.dictionaries(st.sampled_from(["temperature", "stop", "seed", "x"]), json_like),
    context_turns=st.integers(0, 5),
)
def test_cache_keys_of_any_conversation(
    convo: list[Message], params: dict[str, Any], context_turns: int
) -> None:
    request = CacheRequest(messages=tuple(convo), model="m", params=params)
    prep = prepare(request, context_turns)
    assert len(prep.key) == 32 and len(prep.scope) == 32
    assert prepare(request, context_turns) == prep  # a pure function
    # The key covers the whole conversation: another last word, another key.
    changed = CacheRequest(messages=(*convo, Message("user", "x")), model="m", params=params)
    assert prepare(changed, context_turns).key != prep.key


@FUZZ
@given(convo=conversations, model=st.sampled_from([None, "gpt-4o", "claude-3-haiku", "???"]))
def test_routing_features_and_tokens_of_any_conversation(
    convo: list[Message], model: str | None
) -> None:
    features = extract_features(ChatRequest(messages=tuple(convo)), counter=COUNTER, model=model)
    assert features.tokens >= 0 and features.messages == sum(m.role != "system" for m in convo)
    assert isinstance(routing_text(tuple(convo)), str)
    counted = COUNTER.count_messages(convo, model)
    assert counted.tokens >= 3 * len(convo)


@FUZZ
@given(text=any_text)
def test_token_count_of_any_text(text: str) -> None:
    n = COUNTER.count(text)
    assert n >= 0 and (n == 0) == (text == "")


def test_huge_message_is_counted_and_keyed() -> None:
    huge = "lorem ipsum dolor sit amet " * 40_000  # ~1 MB
    convo = (Message("system", "be brief"), Message("user", huge))
    tokens = COUNTER.count_messages(convo).tokens
    assert tokens > 200_000
    prep = prepare(CacheRequest(messages=convo), 2)
    assert huge.strip() in prep.text or len(prep.text) > 900_000
    features = extract_features(ChatRequest(messages=convo), counter=COUNTER)
    assert features.tokens > 200_000


lc_content = st.one_of(
    texts,
    st.lists(
        st.one_of(
            texts,
            st.fixed_dictionaries({"type": st.just("text"), "text": texts}),
            st.fixed_dictionaries(
                {"type": st.just("image_url"), "image_url": st.just({"url": "x"})}
            ),
            st.dictionaries(st.text(max_size=5), json_like, max_size=2),
        ),
        max_size=3,
    ),
)


@st.composite
def lc_messages(draw: st.DrawFn) -> BaseMessage:
    kind = draw(st.sampled_from(["human", "system", "ai", "tool"]))
    content = draw(lc_content)
    if kind == "human":
        return HumanMessage(content=content)
    if kind == "system":
        return SystemMessage(content=content)
    if kind == "tool":
        return ToolMessage(content=content, tool_call_id=draw(st.text(max_size=5)))
    calls = [
        {
            "name": draw(st.text(min_size=1, max_size=8)),
            "args": {},
            "id": draw(st.none() | st.text(max_size=5)),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    return AIMessage(content=content, tool_calls=calls)


@FUZZ
@given(convo=st.lists(lc_messages(), min_size=1, max_size=5))
def test_langchain_conversion_and_cached_invoke(convo: list[BaseMessage]) -> None:
    neutral = from_langchain_messages(convo)
    assert len(neutral) == len(convo)
    assert all(isinstance(m.content, str) for m in neutral)
    inner = ScriptedChatModel.from_texts(["first answer"])
    cached = CachedChatModel(model=inner, semantic_cache=SemanticCache(embedder=FakeEmbedder()))
    try:
        first = cached.invoke(convo)
        second = cached.invoke(convo)
    except CostOptError:
        return
    assert first.content == "first answer"
    assert second.content == "first answer"
    assert inner.script.calls <= 2


@pytest.mark.parametrize(
    "content", ["", "\ud800 lone surrogate", "\x00\x00", "🙂" * 1000, "a" * 1_000_000]
)
async def test_cached_model_sync_and_async_on_nasty_content(content: str) -> None:
    inner = ScriptedChatModel.from_texts(["ok"])
    cached = CachedChatModel(model=inner, semantic_cache=SemanticCache(embedder=FakeEmbedder()))
    assert cached.invoke([HumanMessage(content=content)]).content == "ok"
    assert (await cached.ainvoke([HumanMessage(content=content)])).content == "ok"
    assert inner.script.calls == 1  # the second call is an exact hit


@FUZZ
@given(convo=conversations)
def test_engine_messages_back_to_langchain(convo: list[Message]) -> None:
    """A queued request or memory summary goes back to LangChain, or a typed error."""
    for m in convo:
        try:
            lc = to_langchain_message(m)
        except ConfigurationError as exc:
            assert "tool call" in str(exc)
            continue
        back = from_langchain_messages([lc])[0]
        assert back.content == m.content
        if m.role == "assistant":
            assert [tc["id"] for tc in back.tool_calls] == [
                None if tc.get("id") is None else str(tc["id"]) for tc in m.tool_calls
            ]
