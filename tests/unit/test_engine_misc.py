"""Engine wiring, token counting and embedders."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import numpy as np
import pytest

from costopt_core import (
    CachingEmbedder,
    ConfigurationError,
    CostEngine,
    Message,
    SentenceTransformerEmbedder,
    TokenCounter,
    Usage,
    default_engine,
    set_default_engine,
)
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse


def test_engine_rejects_unpriced_baseline() -> None:
    with pytest.raises(ConfigurationError, match="baseline_model 'nope'"):
        CostEngine(baseline_model="nope")


def test_engine_construction_does_no_io() -> None:
    engine = CostEngine()
    assert engine._embedder is None  # the embedder is built on first use only


def test_default_engine_is_shared_and_replaceable() -> None:
    a = default_engine()
    assert default_engine() is a
    b = CostEngine(baseline_model="claude-sonnet-4-5")
    set_default_engine(b)
    try:
        assert default_engine() is b
    finally:
        set_default_engine(None)
    assert default_engine() is not b


def test_estimate_is_an_upper_bound(engine: CostEngine) -> None:
    msgs = [Message("system", "You are terse."), Message("user", "What is 2+2?")]
    est = engine.estimate("gpt-4o", msgs, max_output_tokens=10)
    n = engine.tokens.count_messages(msgs, "gpt-4o").tokens
    assert est == (n * Decimal("2.50") + 10 * Decimal("10.00")) / 10**6
    assert engine.estimate("unknown-model", msgs) is None


def test_token_counts() -> None:
    c = TokenCounter()
    assert c.count("") == 0
    assert c.count("hello world") == 2
    tc = c.count_text("hello world", "claude-sonnet-4-5")
    assert tc.exact is False  # another provider's tokenizer: an estimate
    assert c.count_text("hello world", "gpt-4").exact is True
    # framing: 3 per message + 3 reply priming
    msgs = [Message("user", "hello world")]
    assert c.count_messages(msgs, "gpt-4").tokens == 2 + 1 + 3 + 3
    assert c.count("<|endoftext|>") > 1  # special markers counted as text, not rejected


def test_caching_embedder_embeds_each_text_once() -> None:
    inner = FakeEmbedder(dim=32)
    emb = CachingEmbedder(inner, maxsize=2)
    v1 = emb.embed(["a b", "c d"])
    v2 = emb.embed(["c d", "a b"])
    assert inner.texts_embedded == 2
    np.testing.assert_array_equal(v1[0], v2[1])
    emb.embed(["e f"])  # evicts the least recently used ("c d" was used before "a b")
    emb.embed(["a b"])
    assert inner.texts_embedded == 3
    assert asyncio.run(emb.aembed(["a b"])).shape == (1, 32)
    with pytest.raises(ConfigurationError):
        CachingEmbedder(inner, maxsize=0)


def test_fake_embedder_similarity_follows_shared_words() -> None:
    e = FakeEmbedder(dim=256)
    a, b, c = e.embed(["how do I reset my password", "how do I reset my password?", "pizza"])
    assert float(a @ b) == pytest.approx(1.0)
    assert float(a @ c) < 0.5
    assert np.linalg.norm(e.embed([""])[0]) == pytest.approx(1.0)


@pytest.mark.slow
def test_default_embedder_loads_offline_and_is_normalised() -> None:
    emb = SentenceTransformerEmbedder()
    v = emb.embed(["How do I reset my password?", "I forgot my password, how to reset it?", "tax"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3


def test_script_errors_and_exhaustion() -> None:
    s = Script([ScriptedResponse("x", Usage(1, 1), error=TimeoutError("slow"))], cycle=False)
    with pytest.raises(TimeoutError):
        s.next()
    with pytest.raises(IndexError):
        s.next()
    with pytest.raises(ConfigurationError):
        Script([])


def test_removed_tokens_are_priced_on_the_baseline_and_are_no_request() -> None:
    engine = CostEngine()  # baseline gpt-4o: $2.50 per million input tokens
    engine.record_call(model="gpt-4o-mini", usage=Usage(input_tokens=1000, output_tokens=10))
    rec = engine.record_removed_tokens(4000, tenant="acme", framework="langchain")
    assert rec is not None and rec.outcome == "removed"
    assert rec.cost_usd == 0
    assert rec.baseline_cost_usd == Decimal("0.01")
    assert rec.savings_usd == {"compression": Decimal("0.01")}
    assert rec.usage.input_tokens == 4000
    t = engine.ledger.totals()
    assert (t.calls, t.requests, t.removals, t.removed_input_tokens) == (2, 1, 1, 4000)
    # Billed tokens are only the real call's; the ledger still sums.
    assert t.tokens["input_tokens"] == 1000
    assert t.total_savings_usd == sum(t.savings_usd.values())
    assert engine.ledger.totals_by("tenant")["acme"].savings_usd == {"compression": Decimal("0.01")}


def test_removed_tokens_memory_lever_and_nothing_removed() -> None:
    engine = CostEngine()
    assert engine.record_removed_tokens(0) is None
    assert engine.record_removed_tokens(-5) is None
    assert len(engine.ledger) == 0
    rec = engine.record_removed_tokens(1_000_000, lever="memory")
    assert rec is not None and rec.savings_usd == {"memory": Decimal("2.50")}
    with pytest.raises(ConfigurationError, match="'routing'"):
        engine.record_removed_tokens(10, lever="routing")  # type: ignore[arg-type]
