"""benchmarks/routing.py on data shaped like held-out sets: other names, columns, orders."""

from __future__ import annotations

import csv
import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import routing

from costopt_core.pricing import PriceCatalog

WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def routerbench_rows(models: list[str], n: int, seed: int) -> tuple[list[str], list[list[object]]]:
    rng = np.random.default_rng(seed)
    header = ["", "sample_id", "prompt", "eval_name", *models]
    header += [f"{m}|model_response" for m in models] + [f"{m}|total_cost" for m in models]
    rows = []
    for i in range(n):
        scores = [int(rng.integers(0, 2)) for _ in models]
        costs = [0.001 * (j + 1) for j in range(len(models))]
        rows.append(
            [i, f"s{i}", f"['question {i}?']", "task", *scores] + ["['A']" for _ in models] + costs
        )
    return header, rows


def discover(paths: list[Path]) -> list[routing.DataSet]:
    return routing.discover([str(p) for p in paths], PriceCatalog.default(), 3, 0)


def test_routerbench_file_without_split_is_split_in_halves(tmp_path: Path) -> None:
    header, rows = routerbench_rows(["m-a", "m-b", "m-c"], 40, 0)
    path = write_csv(tmp_path / "routerbench_hellaswag.csv.gz", header, rows)
    (ds,) = discover([path])
    assert (ds.key, ds.kind, ds.models) == (
        "routerbench_hellaswag",
        "routerbench",
        ["m-a", "m-b", "m-c"],
    )
    assert len(ds.train.prompts) == len(ds.test.prompts) == 20
    assert ds.train.costs[0].tolist() == pytest.approx([0.001, 0.002, 0.003])


def test_routerbench_pair_reads_columns_by_name_and_leaves_out_a_missing_model(
    tmp_path: Path,
) -> None:
    models = ["m-a", "m-b", "m-c"]
    header, rows = routerbench_rows(models, 12, 1)
    write_csv(tmp_path / "routerbench_my_train_set_train.csv", header, rows)
    # The test split: columns in another order, and no columns for m-c.
    header_t, rows_t = routerbench_rows(models, 6, 2)
    keep = [i for i, c in enumerate(header_t) if not c.startswith("m-c")][::-1]
    test = write_csv(
        tmp_path / "routerbench_my_train_set_test.csv.gz",
        [header_t[i] for i in keep],
        [[r[i] for i in keep] for r in rows_t],
    )
    (ds,) = discover([test])
    assert ds.key == "routerbench_my_train_set"
    assert ds.models == ["m-a", "m-b"]
    assert ds.test.scores.tolist() == [[float(r[4]), float(r[5])] for r in rows_t]
    assert ds.test.costs[0].tolist() == pytest.approx([0.001, 0.002])
    assert any("m-c" in n for n in ds.notes)


def test_routellm_file_ignores_index_and_text_columns(tmp_path: Path) -> None:
    rows = [[i, f"Q{i}?", "biology", "B", i % 2 == 0, True] for i in range(10)]
    path = write_csv(
        tmp_path / "mmlu_other.csv", ["", "prompt", "subject", "answer", STRONG, WEAK], rows
    )
    (ds,) = discover([path])
    assert (ds.key, ds.kind, ds.models) == ("mmlu_other", "routellm", [STRONG, WEAK])
    assert len(ds.train.prompts) + len(ds.test.prompts) == 10


def test_routellm_unknown_model_names_the_prices_option(tmp_path: Path) -> None:
    rows = [[f"Q{i}?", True, False] for i in range(4)]
    path = write_csv(tmp_path / "x.csv", ["prompt", "no-such-model-xyz", WEAK], rows)
    with pytest.raises(SystemExit, match="--prices"):
        discover([path])


def test_subject_router_does_not_depend_on_column_order(tmp_path: Path) -> None:
    # Subject s0: the strong model is needed; s1: both are right.
    folders = {}
    for name, order in (("weak_first", (WEAK, STRONG)), ("strong_first", (STRONG, WEAK))):
        d = tmp_path / name / "mmlu"
        d.mkdir(parents=True)
        for s, weak_ok in (("s0", False), ("s1", True)):
            value = {WEAK: weak_ok, STRONG: True}
            write_csv(
                d / f"mmlu_{s}.csv.gz",
                ["prompt", *order],
                [[f"{s} q{i}?", *(value[m] for m in order)] for i in range(40)],
            )
        folders[name] = d
    results = {}
    for name, d in folders.items():
        (ds,) = discover([d])
        weak_j, strong_j = ds.models.index(WEAK), ds.models.index(STRONG)
        results[name] = routing.subject_router(ds, 0, weak_j, strong_j)
    assert results["weak_first"] == results["strong_first"]
    assert results["weak_first"] is not None
    # Sending s0 first recovers the whole gap at half the calls: APGR well above random.
    assert results["weak_first"]["apgr"] > 0.7


def test_folder_of_separate_sets_reads_each_file_once(tmp_path: Path) -> None:
    header, rows = routerbench_rows(["m-a", "m-b"], 12, 3)
    write_csv(tmp_path / "routerbench_x_train.csv.gz", header, rows)
    write_csv(tmp_path / "routerbench_x_test.csv", header, rows[:6])
    write_csv(tmp_path / "routerbench_y.csv.gz", header, rows)
    write_csv(
        tmp_path / "mmlu_z.csv", ["prompt", WEAK, STRONG], [[f"q{i}", 1, 0] for i in range(8)]
    )
    sub = tmp_path / "mmlu"
    sub.mkdir()
    for s in ("a", "b"):
        write_csv(
            sub / f"mmlu_{s}.csv", ["prompt", WEAK, STRONG], [[f"{s}{i}", 1, 1] for i in range(4)]
        )
    sets = {ds.key: ds for ds in discover([tmp_path])}
    assert sorted(sets) == ["mmlu", "mmlu_z", "routerbench_x", "routerbench_y"]
    assert (len(sets["routerbench_x"].train.prompts), len(sets["routerbench_x"].test.prompts)) == (
        12,
        6,
    )
    assert sets["routerbench_y"].kind == "routerbench"
    assert sets["routerbench_y"].models == ["m-a", "m-b"]
    assert sets["mmlu"].models == [WEAK, STRONG]
    assert len(sets["mmlu"].train.prompts) + len(sets["mmlu"].test.prompts) == 8


def test_folder_of_subject_folders(tmp_path: Path) -> None:
    sub = tmp_path / "mmlu_sub"
    sub.mkdir()
    for s in ("a", "b"):
        write_csv(
            sub / f"mmlu_{s}.csv", ["prompt", WEAK, STRONG], [[f"{s}{i}", 1, 1] for i in range(4)]
        )
    (ds,) = discover([tmp_path])
    assert ds.key == "mmlu_sub"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match=r"no \.csv"):
        discover([empty])
