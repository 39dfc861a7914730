"""Classifiers: heuristic monotonicity, learned fit/predict, save/load without pickle."""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path

import numpy as np
import pytest

from costopt_core.errors import ConfigurationError
from costopt_core.routing import (
    HeuristicClassifier,
    LearnedClassifier,
    RouteClassifier,
    extract_features,
    is_trainable,
    monotone,
    probabilities_from_relative,
    relative_quality_targets,
)
from costopt_core.testing import FakeEmbedder

EASY = [
    "What is the capital city of {c}?",
    "Name the capital of {c} please",
    "Which city is the capital of {c}?",
]
HARD = [
    "Compute the integral of x^{n} times sin(x) and prove the bound",
    "Derive the eigenvalues of the {n} by {n} matrix and prove the theorem",
    "Prove the theorem about the derivative of the {n}th polynomial",
]
COUNTRIES = ["France", "Peru", "Japan", "Kenya", "Chile", "Norway", "Egypt", "Spain"]


def synthetic(n_each: int = 48) -> tuple[list[str], np.ndarray]:
    """Easy geography prompts the cheap tier gets right, hard math prompts it gets wrong."""
    prompts: list[str] = []
    labels: list[tuple[float, float, float]] = []
    for i in range(n_each):
        prompts.append(EASY[i % 3].format(c=COUNTRIES[i % len(COUNTRIES)]))
        labels.append((1.0, 1.0, 1.0))
        prompts.append(HARD[i % 3].format(n=i + 2))
        # cheap fails, mid gets every other one, frontier is right
        labels.append((0.0, float(i % 2), 1.0))
    return prompts, np.array(labels)


def test_heuristic_rows_are_monotone_and_end_at_one() -> None:
    clf = HeuristicClassifier(4)
    prompts = [
        "hi",
        "What is the capital of France?",
        "Write a poem",
        "Prove step by step that the integral of x^2 from 0 to 1 is 1/3, then compare "
        "with the sum of 1/n^2 and explain why",
        "```python\ndef f(x):\n    return x\n```\nRefactor this function and add unit tests",
    ]
    p = clf.predict(prompts)
    assert p.shape == (5, 4)
    assert (np.diff(p, axis=1) >= 0).all()
    assert (p[:, -1] == 1.0).all()
    assert ((p >= 0) & (p <= 1)).all()


def test_heuristic_scores_harder_requests_lower() -> None:
    clf = HeuristicClassifier(2)
    easy = extract_features("What is the capital of France?")
    hard = extract_features(
        "Prove step by step that the integral of x^2 from 0 to 1 is 1/3. Derive it, "
        "then compare it with a numerical estimate in Python:\n```python\nprint(1/3)\n```",
        tools=True,
    )
    assert clf.complexity(easy) < 0.3 < 0.7 < clf.complexity(hard)
    p = clf.predict_features([easy, hard])
    assert p[0, 0] > 0.8 and p[1, 0] < 0.2
    assert isinstance(clf, RouteClassifier) and not is_trainable(clf)
    assert asyncio.run(clf.apredict(["hi"])).shape == (1, 2)


def test_heuristic_needs_two_tiers() -> None:
    with pytest.raises(ConfigurationError, match="n_tiers must be >= 2"):
        HeuristicClassifier(1)


def test_targets_and_probabilities() -> None:
    labels = np.array([[0, 1], [1, 1], [0, 0], [1, 0], [0.5, 1.0]])
    t = relative_quality_targets(labels)
    assert t[:, 0].tolist() == [0.0, 0.5, 0.5, 1.0, 0.25]
    p = probabilities_from_relative(t)
    # 1 - E[q_frontier - q_t], capped at 1; frontier column 1.
    assert p[:, 0].tolist() == [0.0, 1.0, 1.0, 1.0, 0.5]
    assert (p[:, 1] == 1).all()
    with pytest.raises(ConfigurationError, match="in \\[0, 1\\]"):
        relative_quality_targets(np.array([[2.0, 1.0]]))
    assert monotone(np.array([[0.9, 0.2, 0.5]])).tolist() == [[0.9, 0.9, 1.0]]


def test_learned_fit_predict_separates_easy_from_hard() -> None:
    prompts, labels = synthetic()
    clf = LearnedClassifier(FakeEmbedder(dim=64), k=5)
    assert is_trainable(clf) and not clf.is_fitted
    clf.fit(prompts, labels)
    assert clf.n_tiers == 3
    new = ["What is the capital of Italy?", "Prove the theorem on the integral of x^7"]
    p = clf.predict(new)
    assert p.shape == (2, 3)
    assert (np.diff(p, axis=1) >= 0).all() and (p[:, -1] == 1).all()
    assert p[0, 0] > 0.6 > 0.4 > p[1, 0]  # cheap tier fine for geography, not for proofs
    assert p[1, 1] > p[1, 0]  # the mid tier is right half the time on the hard ones
    assert asyncio.run(clf.apredict(new)) == pytest.approx(p)


@pytest.mark.parametrize("method", ["logistic", "knn", "ensemble"])
def test_each_method_learns_the_split(method: str) -> None:
    prompts, labels = synthetic()
    clf = LearnedClassifier(FakeEmbedder(dim=64), method=method, k=5)  # type: ignore[arg-type]
    p = clf.fit(prompts, labels).predict(prompts)
    easy, hard = p[0::2, 0], p[1::2, 0]
    assert easy.mean() > hard.mean() + 0.4


def test_predict_with_embeddings_the_caller_already_has() -> None:
    prompts, labels = synthetic()
    emb = FakeEmbedder(dim=64)
    clf = LearnedClassifier(emb, k=5).fit(prompts, labels)
    vecs = emb.embed(clf.texts(prompts[:4]))
    calls = emb.calls
    got = LearnedClassifier.predict_embeddings(clf, vecs, prompts[:4])
    assert emb.calls == calls  # no embedding call
    assert got == pytest.approx(clf.predict(prompts[:4]))


def test_save_load_round_trip_without_pickle(tmp_path: Path) -> None:
    prompts, labels = synthetic()
    emb = FakeEmbedder(dim=64)
    clf = LearnedClassifier(emb, k=7, C=0.5, knn_dims=16).fit(prompts, labels)
    path = clf.save(tmp_path / "router")
    assert path.name == "router.npz"
    with zipfile.ZipFile(path) as z:  # arrays and a JSON string only
        assert {n.removesuffix(".npy") for n in z.namelist()} >= {"meta", "coef", "bank"}
    with np.load(path, allow_pickle=False) as data:
        assert "knn_dims" in str(data["meta"])
    loaded = LearnedClassifier.load(path, emb)
    assert (loaded.k, loaded.C, loaded.knn_dims, loaded.n_tiers) == (7, 0.5, 16, 3)
    assert loaded.predict(prompts) == pytest.approx(clf.predict(prompts))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        LearnedClassifier.load(tmp_path / "missing.npz")
    bogus = tmp_path / "bogus.npz"
    np.savez(bogus, meta=np.array('{"format": "other", "version": 1}'))
    with pytest.raises(ConfigurationError, match="format 'other'"):
        LearnedClassifier.load(bogus)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ConfigurationError, match="not a saved route classifier"):
        LearnedClassifier.load(tmp_path / "text.npz")


def test_learned_errors() -> None:
    clf = LearnedClassifier(None)
    with pytest.raises(ConfigurationError, match="not fitted"):
        _ = clf.n_tiers
    with pytest.raises(ConfigurationError, match="needs an embedder"):
        clf.predict(["hi"])
    with pytest.raises(ConfigurationError, match="method must be"):
        LearnedClassifier(method="forest")  # type: ignore[arg-type]
    emb = FakeEmbedder(dim=16)
    with pytest.raises(ConfigurationError, match="3 label rows for 2 requests"):
        LearnedClassifier(emb).fit(["a", "b"], np.ones((3, 2)))
    with pytest.raises(ConfigurationError, match="at least 2"):
        LearnedClassifier(emb).fit(["a"], np.ones((1, 2)))


def test_constant_labels_give_the_base_rate() -> None:
    emb = FakeEmbedder(dim=16)
    clf = LearnedClassifier(emb).fit(["a b", "c d", "e f"], np.ones((3, 2)))
    assert clf.predict(["x y"])[0].tolist() == pytest.approx([1.0, 1.0])


def test_clone_is_unfitted_with_the_same_settings() -> None:
    prompts, labels = synthetic(8)
    emb = FakeEmbedder(dim=16)
    clf = LearnedClassifier(emb, k=3, method="knn").fit(prompts, labels)
    twin = clf.clone()
    assert not twin.is_fitted and twin.embedder is emb
    assert (twin.k, twin.method) == (3, "knn")
    assert "unfitted" in repr(twin) and "n_tiers=3" in repr(clf)
