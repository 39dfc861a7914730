"""``costopt project``, ``calibrate``, ``report`` and ``bench``, run as a user would."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from costopt_core import CostEngine, Usage
from costopt_core.cli import app
from costopt_core.routing.calibrate import CalibrationReport

RUNNER = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
OPUS_LADDER = ["--tier", "small=claude-haiku-4-5", "--tier", "frontier=claude-opus-4-5"]


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_project_sanity_case(tmp_path) -> None:
    sample = _jsonl(
        tmp_path / "s.jsonl", [{"prompt": "x", "input_tokens": 1000, "output_tokens": 0}]
    )
    out = tmp_path / "p.json"
    res = RUNNER.invoke(app, ["project", sample, "-n", "1000000", *OPUS_LADDER, "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "$150,000.00" in res.output and "claude-opus-4-5" in res.output
    data = json.loads(out.read_text())
    base = data["scenarios"][0]
    assert base["scenario"] == "all-frontier" and Decimal(base["usd_per_month_input"]) == 150000


CONTEXT = "Passwords are reset from Settings > Security. " * 3


def _support_sample(n: int = 60) -> list[dict]:
    questions = [
        ("How do I reset my password?", "small"),
        ("Where can I download my invoice?", "small"),
        (
            "Compare synchronous and asynchronous replication step by step, prove which "
            "bounds data loss, and write a Terraform module for the failover policy.",
            "frontier",
        ),
    ]
    rows = []
    for i in range(n):
        q, label = questions[i % 3]
        rows.append(
            {
                "prompt": q,
                "system": "You are a support assistant.",
                "response": "Here is how. " * 20,
                "tier": label,
                "tenant": "acme" if i % 2 else "globex",
                "latency_tolerant": i % 5 == 0,
                "context": [
                    "Passwords are reset from Settings > Security. " * 3,
                    "Unrelated. " * 80,
                ]
                if i % 3 == 0
                else [],
            }
        )
    return rows


def test_project_measures_a_request_sample_and_draws_a_chart(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    sample = _jsonl(tmp_path / "s.jsonl", _support_sample())
    chart, out = tmp_path / "p.png", tmp_path / "p.json"
    res = RUNNER.invoke(
        app,
        ["project", sample, "-n", "50000", "--chart", str(chart), "--json", str(out)],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    m = data["measured"]
    # 60 requests, 3 distinct prompts x 2 tenants: 6 misses, 54 exact hits
    assert m["cache_exact_rate"] == pytest.approx(54 / 60)
    assert m["batch_share"] == pytest.approx(12 / 60)
    assert "compression" in m["input_tokens_removed_share"]
    combined = data["scenarios"][-1]
    assert combined["scenario"] == "combined" and combined["savings_fraction"] > 0.8
    total = sum(Decimal(v) for v in data["savings_by_lever"].values())
    assert abs(total - Decimal(combined["savings_usd_per_month"])) <= Decimal("0.05")
    assert chart.read_bytes()[:4] == b"\x89PNG"
    assert "all levers combined" in res.output


def test_project_rejects_bad_input_with_usage_errors(tmp_path) -> None:
    sample = _jsonl(tmp_path / "s.jsonl", [{"prompt": "x"}])
    cases = [
        (["project", sample, "-n", "0"], "requests-per-day"),
        (["project", str(tmp_path / "nope.jsonl"), "-n", "5"], "does not exist"),
        (["project", sample, "-n", "5", "--tier", "small"], "NAME=MODEL"),
        (["project", sample, "-n", "5", "--tier", "a=gpt-4o"], "at least two tiers"),
        (["project", sample, "-n", "5", "--baseline", "gpt-99"], "gpt-99"),
        (["project", sample, "-n", "5", "--calibration", str(tmp_path / "c.json")], "exist"),
    ]
    for args, message in cases:
        res = RUNNER.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "tier": "huge"}])
    res = RUNNER.invoke(app, ["project", bad, "-n", "5"])
    assert res.exit_code == 2 and "tier label 'huge'" in res.output


def test_calibrate_then_project_with_the_thresholds(tmp_path) -> None:
    easy = [f"What is {i} plus {i}?" for i in range(20)]
    hard = [
        f"Prove step by step that algorithm {i} is optimal, then write the code and analyse "
        "its complexity with a formal argument."
        for i in range(20)
    ]
    rows = [{"prompt": p, "labels": {"small": 1, "mid": 1, "frontier": 1}} for p in easy]
    rows += [{"prompt": p, "labels": {"small": 0, "mid": 0, "frontier": 1}} for p in hard]
    rows += [
        {"a": "How do I reset my password?", "b": "how can I reset my password", "label": 1},
        {"a": "How do I reset my password?", "b": "How do I delete my account?", "label": 0},
    ]
    samples = _jsonl(tmp_path / "cal.jsonl", rows)
    out = tmp_path / "router.json"
    res = RUNNER.invoke(app, ["calibrate", samples, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Router (40 samples, heuristic classifier)" in res.output
    assert "Cache (2 labelled pairs)" in res.output
    report = CalibrationReport.from_dict(json.loads(out.read_text()))
    assert report.tier_names == ("small", "mid", "frontier") and report.n_samples == 40
    cache = json.loads((tmp_path / "router.cache.json").read_text())
    assert cache["n_pairs"] == 2 and 0 < cache["threshold"] <= 1
    # the default embedder turns the pair check on, so its threshold is calibrated too
    assert "with the pair check" in res.output and 0 < cache["pair_threshold"] <= 1

    sample = _jsonl(tmp_path / "s.jsonl", [{"prompt": p} for p in easy + hard])
    res = RUNNER.invoke(
        app, ["project", sample, "-n", "1000", "--calibration", str(out), "--no-cache"]
    )
    assert res.exit_code == 0, res.output
    res = RUNNER.invoke(
        app, ["project", sample, "-n", "1000", "--calibration", str(out), *OPUS_LADDER]
    )
    assert res.exit_code == 2 and "are not the --tier ladder" in res.output
    # Another classifier's report is refused, by the router's own rule: one that
    # names no classifier cannot be checked and passes, as with Router(...).
    saved = json.loads(out.read_text())
    outputs = {}
    for classifier, code in (("learned", 2), ("", 0)):
        out.write_text(json.dumps(saved | {"classifier": classifier}))
        res = RUNNER.invoke(
            app, ["project", sample, "-n", "1000", "--calibration", str(out), "--no-cache"]
        )
        assert res.exit_code == code, res.output
        outputs[classifier] = " ".join(res.output.replace("│", " ").split())
    assert "the calibration is for the 'learned' classifier, not the" in outputs["learned"]
    assert "--classifier heuristic" in outputs["learned"]


def test_calibration_report_round_trips() -> None:
    import numpy as np

    from costopt_core.errors import ConfigurationError
    from costopt_core.routing.calibrate import calibrate_from_predictions

    probs = np.array([[0.9, 1.0], [0.2, 1.0], [0.8, 1.0]])
    labels = np.array([[1, 1], [0, 1], [1, 1]], dtype=float)
    costs = np.array([[1, 10], [1, 10], [1, 10]], dtype=float)
    report = calibrate_from_predictions(
        probs, labels, costs, tokens=np.array([10, 10, 10]), tier_names=("s", "f")
    )
    again = CalibrationReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report
    with pytest.raises(ConfigurationError, match="not a routing calibration report"):
        CalibrationReport.from_dict({"tier_names": ["a"]})


def test_calibrate_rejects_bad_samples(tmp_path) -> None:
    bad = _jsonl(tmp_path / "b.jsonl", [{"prompt": "x", "labels": [1]}])
    res = RUNNER.invoke(app, ["calibrate", bad])
    assert res.exit_code == 2 and "1 labels for 3 tiers" in res.output
    res = RUNNER.invoke(app, ["calibrate", bad, "--classifier", "magic"])
    assert res.exit_code == 2 and "heuristic or learned" in res.output


def _ledger(tmp_path) -> str:
    engine = CostEngine()
    for i, (model, tenant) in enumerate(
        [("gpt-4o", "acme"), ("gpt-4o-mini", "acme"), ("gpt-4o-mini", "globex")]
    ):
        engine.record_call(
            model=model,
            usage=Usage(input_tokens=1000, output_tokens=100),
            tenant=tenant,
            tier="frontier" if model == "gpt-4o" else "small",
            call_id=f"c{i}",
        )
    return str(engine.ledger.to_jsonl(tmp_path / "ledger.jsonl"))


def test_report_breakdowns_and_chart(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    ledger = _ledger(tmp_path)
    chart = tmp_path / "r.png"
    res = RUNNER.invoke(
        app, ["report", ledger, "--by", "tenant", "--by", "model", "--chart", str(chart)]
    )
    assert res.exit_code == 0, res.output
    assert "By tenant" in res.output and "By model" in res.output and "By tier" in res.output
    tenant_table = res.output.split("By tenant")[1].split("By model")[0]
    assert tenant_table.index("acme") < tenant_table.index("globex")  # dearest first
    assert chart.read_bytes()[:4] == b"\x89PNG"
    res = RUNNER.invoke(app, ["report", ledger, "--by", "colour"])
    assert res.exit_code == 2 and "'colour' is not one of" in res.output
    (tmp_path / "bad.jsonl").write_text("{}\n")
    res = RUNNER.invoke(app, ["report", str(tmp_path / "bad.jsonl")])
    assert res.exit_code == 2 and "bad.jsonl:1" in res.output


def test_bench_lists_runs_and_reports_failures(tmp_path) -> None:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "_common.py").write_text("")
    (folder / "fast.py").write_text(
        "import sys, json\nout = sys.argv[sys.argv.index('--out') + 1]\n"
        "open(out, 'w').write(json.dumps({'ok': True}))\n"
    )
    (folder / "broken.py").write_text("raise SystemExit(3)\n")
    res = RUNNER.invoke(app, ["bench", "--dir", str(folder), "--list"])
    assert res.exit_code == 0 and res.output.split() == ["broken", "fast"]
    res = RUNNER.invoke(app, ["bench", "fast", "--dir", str(folder)])
    assert res.exit_code == 0, res.output
    assert json.loads((folder / "results" / "fast.json").read_text()) == {"ok": True}
    res = RUNNER.invoke(app, ["bench", "--dir", str(folder)])
    assert res.exit_code == 1 and "failed: broken" in res.output
    res = RUNNER.invoke(app, ["bench", "nope", "--dir", str(folder)])
    assert res.exit_code == 2 and "unknown benchmark" in res.output
    res = RUNNER.invoke(app, ["bench", "--dir", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "source checkout" in res.output


@pytest.mark.parametrize("command", ["demo", "report", "project", "calibrate", "bench"])
def test_every_command_has_help(command) -> None:
    res = RUNNER.invoke(app, [command, "--help"])
    assert res.exit_code == 0 and "Usage" in res.output
