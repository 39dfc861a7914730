"""The data-reading benchmarks on files shaped like held-out sets: plain or gzipped,
blank lines, a LoCoMo list, sets too small for every split."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import cache_quality
import context
import memory


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_qqp_pairs_plain_or_gzipped_with_blank_lines(tmp_path: Path) -> None:
    rows = [{"text_a": f"q{i}?", "text_b": f"r{i}?", "label": i % 2} for i in range(5)]
    text = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    for name in ("pairs.jsonl", "pairs.jsonl.gz"):
        pairs = cache_quality.load_pairs(write(tmp_path / name, text), None)
        assert pairs == [(f"q{i}?", f"r{i}?", i % 2) for i in range(5)]
    assert len(cache_quality.load_pairs(tmp_path / "pairs.jsonl", 3)) == 3


def test_pair_check_refit_without_both_labels_keeps_its_keys() -> None:
    # A small file: the calibration quarter's gated pairs are all duplicates.
    n = 8
    splits = {
        "held_out_calibration": np.array([True] * 4 + [False] * 4),
        "held_out_unseen": np.array([False] * 4 + [True] * 4),
    }
    out = cache_quality.refit_pair_check(
        np.zeros(n, dtype=np.float32),
        np.full(n, 0.9, dtype=np.float32),
        [("how do i learn python", "how can i learn python")] * n,
        np.array([1, 1, 1, 1, 0, 1, 0, 1]),
        np.ones(n, dtype=bool),
        splits,
    )
    assert out["threshold"] is None and out["weights_logit_similarity_bias_overlap"] is None
    assert out["unseen"] == {"precision": None, "recall": None, "false_hit_rate": None}


def hotpot_row(qid: str) -> dict[str, object]:
    return {
        "question_id": qid,
        "question_text": "Where was the author of X born?",
        "answers_objects": [{"spans": ["Paris"]}],
        "contexts": [
            {"id": 0, "title": "X", "paragraph_text": "X was written by Y.", "is_supporting": True},
            {
                "id": 1,
                "title": "Y",
                "paragraph_text": "Y was born in Paris.",
                "is_supporting": True,
            },
            {"id": 2, "title": "Z", "paragraph_text": "Z is a river.", "is_supporting": False},
        ],
    }


def test_hotpotqa_plain_or_gzipped_with_blank_lines(tmp_path: Path) -> None:
    text = "\n".join(json.dumps(hotpot_row(f"q{i}")) for i in range(3)) + "\n\n"
    for name in ("h.jsonl", "h.jsonl.gz"):
        questions = context.load(write(tmp_path / name, text), None)
        assert [q.qid for q in questions] == ["q0", "q1", "q2"]
        assert questions[0].supporting == [True, True, False]
    assert len(context.load(tmp_path / "h.jsonl", 2)) == 2


def test_context_evaluate_on_an_empty_half() -> None:
    out = context.evaluate([], len, None, context.SummarizerConfig(), {}, filtered=True)  # type: ignore[arg-type]
    assert out["questions"] == 0
    assert out["ms_per_question"] is None
    assert out["support_retention"] is None


def locomo_conversation() -> dict[str, object]:
    return {
        "speaker_a": "Ann",
        "speaker_b": "Bob",
        "session_1_date_time": "1 May 2023",
        "session_1": [
            {"speaker": "Ann", "dia_id": "D1:1", "text": "I moved to Oslo."},
            {"speaker": "Bob", "dia_id": "D1:2", "text": "Nice!"},
        ],
    }


def test_locomo_one_file_per_conversation_or_a_list(tmp_path: Path) -> None:
    qa = [
        {"question": "Where did Ann move?", "answer": "Oslo", "evidence": ["D1:1"], "category": 4}
    ]
    one = write(tmp_path / "locomo_7.json.gz", json.dumps(locomo_conversation() | {"qa": qa}))
    (conv,) = memory.load_all(one)
    assert conv.cid == "locomo_7"
    assert conv.dia_index == {"D1:1": 1, "D1:2": 2}
    assert conv.qa == qa
    listed = [
        {"sample_id": f"conv-{i}", "qa": qa, "conversation": locomo_conversation()} for i in (1, 2)
    ]
    convs = memory.load_all(write(tmp_path / "locomo10.json", json.dumps(listed)))
    assert [c.cid for c in convs] == ["conv-1", "conv-2"]
    assert [len(c.history) for c in convs] == [3, 3]
    plain = write(tmp_path / "locomo_8.json", json.dumps(locomo_conversation() | {"qa": qa}))
    assert memory.load(plain).cid == "locomo_8"


def test_memory_percentages_of_nothing() -> None:
    assert memory._pct(None) == "-"
    assert memory._pct(0.5, 0) == "50%"


def test_false_hit_pairs_load_plain_or_gzipped_and_multi_turn(tmp_path: Path) -> None:
    import cache_false_hits

    from costopt_core.cache import SemanticCache
    from costopt_core.testing import FakeEmbedder

    rows = [
        {"category": "c", "same": True, "a": "how do i reset it?", "b": "how do i reset it?"},
        {
            "category": "m",
            "same": False,
            "a": [["user", "learn python"], ["assistant", "ok"], ["user", "an example?"]],
            "b": [["user", "learn rust"], ["assistant", "ok"], ["user", "an example?"]],
        },
    ]
    text = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    for name in ("pairs.jsonl", "pairs.jsonl.gz"):
        assert cache_false_hits.load(write(tmp_path / name, text)) == rows
    served = cache_false_hits.served_by_cache(SemanticCache(embedder=FakeEmbedder()), rows)
    assert served == [True, False]  # the same prompt is an exact hit; the follow-up is not
