"""A cache hit is a hit for every cost handler of the run, not only the first one."""

from __future__ import annotations

from costopt_core import CostEngine, Usage
from costopt_core.cache import CacheConfig
from costopt_core.cache import SemanticCache as CacheEngine
from costopt_core.cache.defaults import GUARDS_OFF
from costopt_core.served import ServedNotes
from costopt_core.testing import FakeEmbedder, Script, ScriptedResponse

USAGE = Usage(1000, 200, cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0)


def _cache() -> CacheEngine:
    return CacheEngine(embedder=FakeEmbedder(dim=256), config=CacheConfig(guards=GUARDS_OFF))


def test_a_taken_note_stays_with_its_run_and_only_its_run() -> None:
    notes = ServedNotes(max_notes=2)
    answer, other = object(), object()
    notes.note(answer, {"cache": "exact"})
    assert notes.take(answer, run="r1") == {"cache": "exact"}
    assert notes.take(answer, run="r1") == {"cache": "exact"}  # a second handler of r1
    assert notes.take(answer, run="r2") is None
    assert notes.take(answer) is None
    assert notes.take(other, run="r1") == {"cache": "exact"}  # r1's answer, re-wrapped
    for i in range(3):  # bounded like the notes
        notes.note(o := object(), {"cache": "semantic"})
        notes.take(o, run=f"x{i}")
    assert notes.take(answer, run="r1") is None


def test_langchain_two_ledgers_both_record_the_hit() -> None:
    from langchain_costopt import CostCallbackHandler, track_costs
    from langchain_costopt.cached_model import CachedChatModel
    from langchain_costopt.testing import ScriptedChatModel

    script = Script([ScriptedResponse("Use the reset link.", USAGE, model="gpt-4o-mini")])
    cached = CachedChatModel(model=ScriptedChatModel(script=script), semantic_cache=_cache())
    app = CostEngine(embedder=FakeEmbedder())
    cfg = {"callbacks": [CostCallbackHandler(app)]}
    cached.invoke("How do I reset my password?", config=cfg)
    with track_costs() as block:
        cached.invoke("How do I reset my password?", config=cfg)
        streamed = "".join(
            str(c.content) for c in cached.stream("How do I reset my password?", config=cfg)
        )
    assert streamed == "Use the reset link."
    assert [r.outcome for r in app.ledger.records()] == ["model", "cache_exact", "cache_exact"]
    assert [r.outcome for r in block.engine.ledger.records()] == ["cache_exact", "cache_exact"]


def test_llamaindex_two_ledgers_both_record_the_hit() -> None:
    from llama_index.core.llms import ChatMessage

    from llamaindex_costopt import CachedLLM, CostEventHandler, track_costs
    from llamaindex_costopt.testing import ScriptedLLM

    llm = ScriptedLLM(script=Script([ScriptedResponse("ok", Usage(1000, 100))]))
    cached = CachedLLM(llm=llm, semantic_cache=_cache())
    app = CostEngine()
    handler = CostEventHandler(app).attach()
    ask = [ChatMessage(role="user", content="How do I reset my password?")]
    try:
        with track_costs() as block:
            cached.chat(ask)
            cached.chat(ask)
    finally:
        handler.detach()
    assert [r.outcome for r in app.ledger.records()] == ["model", "cache_exact"]
    assert [r.outcome for r in block.engine.ledger.records()] == ["model", "cache_exact"]
