"""The cache's learned pair check: when it is on, what it decides, how it fails."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from costopt_core.cache import (
    CacheConfig,
    CachedResponse,
    CacheRequest,
    SemanticCache,
    calibrate_pair_threshold,
    calibrate_threshold,
)
from costopt_core.cache.defaults import (
    DEFAULT_PAIR_GATE,
    DEFAULT_PAIR_THRESHOLD,
    DEFAULT_PAIR_WEIGHTS,
    DEFAULT_SIMILARITY_THRESHOLD,
    GUARDS_OFF,
)
from costopt_core.cache.pair_model import (
    PairModel,
    PairWeights,
    default_pair_model,
    pair_probability,
    word_overlap,
)
from costopt_core.embeddings import CachingEmbedder, SentenceTransformerEmbedder
from costopt_core.errors import ConfigurationError
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Message, Usage

STORED = "how do i reset my password"
ASKED = "how do i reset my password please"


def req(text: str) -> CacheRequest:
    return CacheRequest(messages=(Message("user", text),))


def answer() -> CachedResponse:
    return CachedResponse(text="Use the reset link.", model="m", usage=Usage(10, 5))


class TableScorer:
    """A pair model that answers from a table; counts its calls."""

    def __init__(self, table: dict[tuple[str, str], float], *, fail: bool = False) -> None:
        self.table = table
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    def logits(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.float32]:
        self.calls.extend(pairs)
        if self.fail:
            raise RuntimeError("scorer down")
        return np.array([self.table[p] for p in pairs], dtype=np.float32)


def cache_with(scorer: TableScorer, **cfg: object) -> SemanticCache:
    settings: dict[str, object] = {
        "similarity_threshold": 0.5,
        "pair_skip_similarity": None,
        **cfg,
    }
    config = CacheConfig(pair_check="on", guards=GUARDS_OFF, **settings)
    return SemanticCache(embedder=FakeEmbedder(dim=256), config=config, pair_model=scorer)


def test_auto_is_off_with_another_embedder_and_keeps_its_threshold() -> None:
    cache = SemanticCache(embedder=FakeEmbedder())
    assert not cache.pair_check
    assert cache.similarity_threshold == DEFAULT_SIMILARITY_THRESHOLD


@pytest.mark.parametrize(
    "embedder",
    [SentenceTransformerEmbedder(), CachingEmbedder(SentenceTransformerEmbedder())],
    ids=["bare", "behind-lru"],
)
def test_auto_is_on_with_the_default_embedder_and_lowers_the_gate(embedder: object) -> None:
    cache = SemanticCache(embedder=embedder)  # type: ignore[arg-type]
    assert cache.pair_check
    assert cache.similarity_threshold == DEFAULT_PAIR_GATE < DEFAULT_SIMILARITY_THRESHOLD


def test_auto_is_off_for_a_default_class_with_another_model() -> None:
    cache = SemanticCache(embedder=SentenceTransformerEmbedder("/models/other"))
    assert not cache.pair_check


def test_an_explicit_threshold_wins_and_off_turns_the_check_off() -> None:
    on = SemanticCache(
        embedder=SentenceTransformerEmbedder(), config=CacheConfig(similarity_threshold=0.9)
    )
    assert on.pair_check and on.similarity_threshold == 0.9
    off = SemanticCache(
        embedder=SentenceTransformerEmbedder(), config=CacheConfig(pair_check="off")
    )
    assert not off.pair_check and off.similarity_threshold == DEFAULT_SIMILARITY_THRESHOLD


def test_the_default_model_is_shared_and_built_without_io() -> None:
    assert default_pair_model() is default_pair_model()
    assert PairModel()._loaded is None  # weights load on the first call


def test_pair_probability_is_the_logistic_combination() -> None:
    w = PairWeights.of(DEFAULT_PAIR_WEIGHTS)
    pairs = [("how do i learn python", "how can i learn python"), ("why is the sky blue", "why")]
    got = pair_probability([2.0, -3.0], [0.9, 0.95], pairs=pairs)
    z = w.logit * np.array([2.0, -3.0]) + w.similarity * np.array([0.9, 0.95]) + w.bias
    z = z + w.overlap * np.array([4 / 6, 1 / 5])
    assert np.allclose(got, 1 / (1 + np.exp(-z)))
    # more similar and a higher logit are each never worse
    one = [pairs[0]]
    assert (
        pair_probability([1.0], [0.9], pairs=one)
        < pair_probability([2.0], [0.9], pairs=one)
        < pair_probability([2.0], [0.95], pairs=one)
    )


def test_the_shipped_weights_discount_shared_wording_at_the_same_similarity() -> None:
    # Same logit and cosine: the pair that gets there with fewer shared words
    # is the likelier paraphrase; all words shared, the likelier near miss.
    reworded = ("what are good books on investing", "which investment books should i read")
    one_word = ("how do i gain weight fast", "how do i lose weight fast")
    p_reworded, p_one_word = pair_probability([1.0, 1.0], [0.9, 0.9], pairs=[reworded, one_word])
    assert p_reworded > p_one_word


def test_word_overlap_is_the_share_of_words_in_common() -> None:
    got = word_overlap(
        [
            ("How do I learn Python?", "how do i learn python"),
            ("What is the capital of France?", "Best pizza recipe"),
            ("Don't stop", "don\u2019t go"),  # a curly apostrophe is the same word
            ("¿Dónde está el baño?", "dónde está la biblioteca"),
            ("¿Dónde está el baño?", unicodedata.normalize("NFD", "¿Dónde está el baño?")),
            ("如何重置我的密码", "如何修改我的密码"),  # one ideograph, one word
            ("पासवर्ड कैसे बदलें", "पासवर्ड कैसे बनाएं"),  # vowel signs stay in their word
        ]
    )
    assert got.tolist() == [1.0, 0.0, 1 / 3, 2 / 6, 1.0, 6 / 10, 2 / 4]


def test_word_overlap_is_full_where_it_was_not_fitted() -> None:
    # No words, or several lines (a conversation window, code): the cautious
    # value, since fewer shared words would help a hit.
    got = word_overlap(
        [
            ("", "?"),
            ("!!!", "..."),
            ("learn python\nnow give me an example", "learn rust\nnow give me an example"),
            ("def f():\n    return 1", "def g(): return 2"),
        ]
    )
    assert got.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_pair_weights_read_a_sequence_and_need_the_texts_for_the_overlap() -> None:
    w = PairWeights.of([1.0, 2.0, -3.0, -0.5])
    assert (w.logit, w.similarity, w.bias, w.overlap) == (1.0, 2.0, -3.0, -0.5)
    assert PairWeights.of(w.as_list()) == w and PairWeights.of((1.0, 2.0, -3.0)).overlap == 0.0
    with pytest.raises(ConfigurationError, match="logit, similarity, bias"):
        PairWeights.of([1.0, 2.0])
    with pytest.raises(ConfigurationError, match="pass pairs="):
        pair_probability([1.0], [0.9], w)
    with pytest.raises(ConfigurationError, match="2 pairs for 1 logits"):
        pair_probability([1.0], [0.9], w, pairs=[("a", "b"), ("c", "d")])
    # without an overlap weight the words are not read
    assert float(pair_probability(0.0, 1.0, (1.0, 2.0, -2.0))) == pytest.approx(0.5)


def test_a_candidate_the_pair_model_accepts_is_served() -> None:
    scorer = TableScorer({(STORED, ASKED): 12.0})
    cache = cache_with(scorer)
    cache.store(req(STORED), answer())
    hit = cache.lookup(req(ASKED))
    assert hit is not None and hit.tier == "semantic"
    assert scorer.calls == [(STORED, ASKED)]  # cached prompt first, as calibrated


def test_a_candidate_the_pair_model_rejects_is_a_counted_miss() -> None:
    scorer = TableScorer({(STORED, ASKED): -12.0})
    cache = cache_with(scorer)
    cache.store(req(STORED), answer())
    assert cache.lookup(req(ASKED)) is None
    stats = cache.stats()
    assert stats.guard_rejections is not None
    assert stats.guard_rejections["pair_check"] == 1 and stats.misses == 1


def test_the_threshold_is_applied_to_the_combined_probability() -> None:
    scorer = TableScorer({(STORED, ASKED): 0.0})
    sim = float(FakeEmbedder(dim=256).embed([STORED])[0] @ FakeEmbedder(dim=256).embed([ASKED])[0])
    p = float(pair_probability([0.0], [sim], pairs=[(STORED, ASKED)])[0])
    below = cache_with(scorer, pair_threshold=min(p + 0.01, 0.99))
    above = cache_with(scorer, pair_threshold=max(p - 0.01, 0.01))
    for c in (below, above):
        c.store(req(STORED), answer())
    assert below.lookup(req(ASKED)) is None
    assert above.lookup(req(ASKED)) is not None


def test_exact_hits_and_below_gate_candidates_never_reach_the_model() -> None:
    scorer = TableScorer({})
    cache = cache_with(scorer, similarity_threshold=0.99)
    cache.store(req(STORED), answer())
    assert cache.lookup(req(STORED)).tier == "exact"  # type: ignore[union-attr]
    assert cache.lookup(req("what is the weather in paris today")) is None
    assert scorer.calls == []


def test_a_near_identical_candidate_skips_the_pair_model() -> None:
    emb = FakeEmbedder(dim=256)
    sim = float(emb.embed([STORED])[0] @ emb.embed([ASKED])[0])
    scorer = TableScorer({(STORED, ASKED): -12.0})  # would reject
    skipped = cache_with(scorer, pair_skip_similarity=sim)
    checked = cache_with(scorer, pair_skip_similarity=min(sim + 0.01, 1.0))
    for c in (skipped, checked):
        c.store(req(STORED), answer())
    assert skipped.lookup(req(ASKED)) is not None and scorer.calls == []
    assert checked.lookup(req(ASKED)) is None and scorer.calls == [(STORED, ASKED)]


def test_a_failing_pair_model_is_a_miss_not_an_error() -> None:
    scorer = TableScorer({}, fail=True)
    cache = cache_with(scorer)
    cache.store(req(STORED), answer())
    assert cache.lookup(req(ASKED)) is None
    assert cache.stats().errors == 1


@pytest.mark.parametrize("logit", [12.0, -12.0])
async def test_sync_async_parity(logit: float) -> None:
    sync = cache_with(TableScorer({(STORED, ASKED): logit}))
    asyn = cache_with(TableScorer({(STORED, ASKED): logit}))
    sync.store(req(STORED), answer())
    await asyn.astore(req(STORED), answer())
    a, b = sync.lookup(req(ASKED)), await asyn.alookup(req(ASKED))
    assert (a is None) == (b is None) == (logit < 0)
    assert sync.stats().guard_rejections == asyn.stats().guard_rejections


def test_calibrate_pair_threshold_scores_only_what_clears_gate_and_guards() -> None:
    emb = FakeEmbedder(dim=256)
    same = [
        (f"how do i reset my password {w}", f"how do i reset my password {w} now") for w in "abcdef"
    ]
    diff = [
        (f"how do i reset my password {w}", f"how do i reset my password {w} then") for w in "ghij"
    ]
    far = ("how do i reset my password", "what is the weather in paris today")
    labelled = [(a, b, 1) for a, b in same] + [(a, b, 0) for a, b in diff] + [(*far, 0)]
    table = {p: 6.0 for p in same} | {p: -6.0 for p in diff}
    scorer = TableScorer(table)
    result = calibrate_pair_threshold(
        labelled,
        embedder=emb,
        pair_model=scorer,
        gate=0.5,
        skip=None,
        config=GUARDS_OFF,
        target_precision=1.0,
    )
    assert far not in scorer.calls and set(scorer.calls) == set(same) | set(diff)
    assert result.reached and result.precision == 1.0 and result.recall == 1.0
    sims = [float(emb.embed([a])[0] @ emb.embed([b])[0]) for a, b in same]
    assert result.threshold == pytest.approx(
        min(
            float(pair_probability([6.0], [s], pairs=[p])[0])
            for s, p in zip(sims, same, strict=True)
        ),
        rel=1e-5,
    )


class Unreadable:
    """Wraps a scorer or an embedder: ``fits`` says no for the given texts."""

    def __init__(self, inner: Any, unreadable: set[str]) -> None:
        self.inner, self.unreadable = inner, unreadable

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def fits(self, a: str, b: str | None = None) -> bool:
        return a not in self.unreadable and b not in self.unreadable


def test_calibration_counts_only_what_the_cache_can_read_whole() -> None:
    # The cache matches a text past the embedder's window, or a pair past the
    # pair model's, exactly only: calibration must not count it as served.
    emb = FakeEmbedder(dim=256)
    good = ("how do i reset my password a", "how do i reset my password a now")
    long = ("how do i reset my password b", "how do i reset my password b now")
    labelled = [(*good, 1), (*long, 1)]
    kw: dict[str, Any] = {"gate": 0.5, "skip": None, "config": GUARDS_OFF, "target_precision": 1.0}
    scorer = TableScorer({good: 6.0, long: 6.0})
    both = calibrate_pair_threshold(labelled, embedder=emb, pair_model=scorer, **kw)
    assert both.recall == 1.0
    by_model = calibrate_pair_threshold(
        labelled, embedder=emb, pair_model=Unreadable(scorer, {long[1]}), **kw
    )
    by_embedder = calibrate_pair_threshold(
        labelled, embedder=Unreadable(emb, {long[1]}), pair_model=scorer, **kw
    )
    assert by_model.recall == by_embedder.recall == 0.5
    cosine = calibrate_threshold(
        labelled, embedder=Unreadable(emb, {long[1]}), config=GUARDS_OFF, target_precision=1.0
    )
    assert cosine.recall == 0.5


def test_calibrate_pair_threshold_checks_its_gate() -> None:
    with pytest.raises(ConfigurationError, match="gate"):
        calibrate_pair_threshold([("a", "b", 1)], embedder=FakeEmbedder(), gate=0.0)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_pair_threshold_is_validated(bad: float) -> None:
    with pytest.raises(ConfigurationError, match="pair_threshold"):
        CacheConfig(pair_threshold=bad)


def test_a_replaced_config_is_resolved_again() -> None:
    cache = SemanticCache(embedder=SentenceTransformerEmbedder())
    assert cache.pair_check
    cache.config = CacheConfig(pair_check="off")
    assert not cache.pair_check and cache.similarity_threshold == DEFAULT_SIMILARITY_THRESHOLD


def test_a_failed_load_is_not_retried_on_every_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import costopt_core.cache.pair_model as pm

    calls = []

    def broken(*args: object) -> None:
        calls.append(args)
        raise ConfigurationError("adapter unreadable")

    monkeypatch.setattr(pm, "_build", broken)
    model = PairModel(adapter_path=tmp_path / "x.npz")
    for _ in range(3):
        with pytest.raises(ConfigurationError, match="adapter unreadable"):
            model.logits([("a", "b")])
    assert len(calls) == 1


def test_max_length_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_length"):
        PairModel(max_length=2)


def test_an_adapter_for_another_model_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "adapter.npz"
    arrays: dict[str, Any] = {
        "lora_scale": np.float16(2.0),
        "head.weight": np.zeros((1, 384), np.float16),
        "head.bias": np.zeros(1, np.float16),
        "pooler.extra.weight": np.zeros(3, np.float16),
    }
    np.savez(bad, **arrays)
    with pytest.raises(ConfigurationError, match=r"pooler\.extra\.weight"):
        PairModel(adapter_path=bad).logits([("a", "b")])


# -- the shipped model, for real ----------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> PairModel:
    return default_pair_model()


def test_the_shipped_model_ranks_a_paraphrase_above_another_question(shipped: PairModel) -> None:
    same, other = shipped.logits(
        [
            ("How do I reset my password?", "How can I reset my password?"),
            ("How do I reset my password?", "What is the capital of Australia?"),
        ]
    )
    assert same > 0 > other and same - other > 4


def test_the_shipped_model_is_batch_independent_and_symmetric(shipped: PairModel) -> None:
    pairs = [
        ("What are the best books on investing?", "Which investing books should I read?"),
        ("Why is the sky blue?", "Why is the sea blue?"),
        ("How do I learn Python?", "How can I learn the Python programming language fast?"),
    ]
    batch = shipped.logits(pairs)
    one = np.array([shipped.logits([p])[0] for p in pairs])
    swapped = shipped.logits([(b, a) for a, b in pairs])
    assert np.allclose(batch, one, atol=1e-3)  # padding in a batch changes nothing
    assert np.allclose(batch, swapped, atol=1e-3)  # both orders read, whichever was cached


def test_the_shipped_model_is_safe_to_call_from_many_threads(shipped: PairModel) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(f"How do I learn {w}?", f"What is the best way to learn {w}?") for w in "ABCDEFGH"]
    want = shipped.logits(pairs)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda p: float(shipped.logits([p])[0]), pairs))
    assert np.allclose(got, want, atol=1e-3)


def test_the_shipped_decision_serves_a_paraphrase_and_refuses_a_near_miss(
    shipped: PairModel,
) -> None:
    cache = SemanticCache(embedder=SentenceTransformerEmbedder())
    assert cache.pair_check and cache.config.pair_threshold == DEFAULT_PAIR_THRESHOLD
    cache.store(req("How do I reset my password?"), answer())
    hit = cache.lookup(req("How can I reset my password?"))
    assert hit is not None and hit.tier == "semantic"
    # close enough for the gate and the guards, refused by the pair check
    assert cache.lookup(req("How do I change my password?")) is None
    stats = cache.stats()
    assert stats.guard_rejections is not None and stats.guard_rejections["pair_check"] == 1


def test_the_shipped_embedder_knows_when_it_reads_a_prompt_whole() -> None:
    embedder = SentenceTransformerEmbedder()
    question = "How many days do I have to return an item?"
    assert embedder.fits(question)
    long = "Orders placed online are packed and dispatched by the team. " * 40 + question
    assert not embedder.fits(long)
    # The model really does stop reading: the question makes no difference.
    a, b = embedder.embed([long, long.replace(question, "Is shipping to Canada free?")])
    assert float(a @ b) > 0.999
    assert CachingEmbedder(embedder).fits(question) and not CachingEmbedder(embedder).fits(long)


def test_text_the_shipped_embedder_cannot_read_is_matched_exactly_only() -> None:
    # Its vocabulary has no Chinese characters: reset / delete embed alike.
    embedder = SentenceTransformerEmbedder()
    stored, asked = "How do I 重置 my 密码", "How do I 删除 my 密码"
    a, b = embedder.embed([stored, asked])
    assert float(a @ b) > 0.999
    assert not embedder.fits(asked) and embedder.fits("Où est la gare, s'il vous plaît ?")
    cache = SemanticCache(embedder=embedder)
    cache.store(req(stored), answer())
    assert cache.lookup(req(asked)) is None
    hit = cache.lookup(req(stored))
    assert hit is not None and hit.tier == "exact"


def test_a_pair_the_model_cannot_read_whole_is_not_served(shipped: PairModel) -> None:
    short = ("How do I reset my password?", "How can I reset my password?")
    assert shipped.fits(*short)
    filler = "I use the app on my phone and on my laptop at work every day. " * 12
    assert not shipped.fits(filler + short[0], filler + short[1])
    cache = SemanticCache(
        embedder=SentenceTransformerEmbedder(), config=CacheConfig(pair_skip_similarity=None)
    )
    near = filler + "How do I reset my password?", filler + "How do I change my password?"
    cache.store(CacheRequest(messages=(Message("user", near[0]),)), CachedResponse(text="Reset."))
    assert cache.lookup(CacheRequest(messages=(Message("user", near[1]),))) is None
    assert cache.stats().guard_rejections["pair_check"] == 1
