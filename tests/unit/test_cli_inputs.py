"""``costopt`` commands refuse bad inputs and output paths up front, with a usage error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from costopt_core import Usage
from costopt_core.charts import request_mix
from costopt_core.cli import app
from costopt_core.projection import MeasuredRequest, project
from costopt_core.report import format_table

RUNNER = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def _record(i: int, **kw: Any) -> dict[str, Any]:
    rec = {
        "call_id": f"c{i}",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "model": "gpt-4o-mini",
        "usage": {"input_tokens": 1000, "output_tokens": 100},
        "cost_usd": "0.00021",
        "baseline_cost_usd": "0.0035",
        "savings_usd": {"routing": "0.00329"},
        "tier": "small",
        "outcome": "model",
    }
    rec.update(kw)
    return rec


def _jsonl(path: Path, rows: list[dict[str, Any]], bom: bool = False) -> str:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return str(path)


def _requests(tmp_path: Path) -> str:
    return _jsonl(
        tmp_path / "reqs.jsonl",
        [{"prompt": "How do I reset my password?", "input_tokens": 100, "output_tokens": 10}],
    )


def test_unpriced_tier_model_is_a_usage_error(tmp_path: Path) -> None:
    ladder = ["--tier", "small=gpt-4o-mni", "--tier", "frontier=gpt-4o"]
    res = RUNNER.invoke(app, ["project", _requests(tmp_path), "-n", "1000", *ladder])
    assert res.exit_code == 2, res.output
    assert "--tier" in res.output and "'gpt-4o-mni'" in res.output
    assert "no price" in res.output and "Projected spend" not in res.output


def test_an_unpriced_last_tier_is_blamed_on_tier_not_baseline(tmp_path: Path) -> None:
    # the last tier is the default baseline: its error named --baseline, never given
    ladder = ["--tier", "small=gpt-4o-mini", "--tier", "frontier=gpt-4o-fake"]
    res = RUNNER.invoke(app, ["project", _requests(tmp_path), "-n", "1000", *ladder])
    assert res.exit_code == 2, res.output
    assert "Invalid value for --tier" in res.output and "--baseline" not in res.output
    assert "tier 'frontier': model 'gpt-4o-fake' has no price" in res.output
    # a --baseline given and unpriced is still blamed on --baseline
    res = RUNNER.invoke(
        app, ["project", _requests(tmp_path), "-n", "1000", "--baseline", "gpt-4o-fake"]
    )
    assert res.exit_code == 2 and "Invalid value for --baseline" in res.output


@pytest.mark.parametrize(
    "option",
    [
        ["--no-cache"],
        ["--no-compression"],
        ["--output-tokens", "5000"],
        ["--calibration", "c"],
        ["--tier", "small=gpt-4o-mini", "--tier", "frontier=claude-opus-4-5"],
    ],
)
def test_request_only_options_are_refused_for_a_ledger(tmp_path: Path, option: list[str]) -> None:
    ledger = _jsonl(tmp_path / "ledger.jsonl", [_record(1)])
    res = RUNNER.invoke(app, ["project", ledger, "-n", "1000", *option])
    assert res.exit_code == 2, res.output
    assert f"Invalid value for {option[0]}" in res.output and "ledger export" in res.output
    assert "Projected spend" not in res.output
    # without them the same ledger projects
    assert RUNNER.invoke(app, ["project", ledger, "-n", "1000"]).exit_code == 0


def test_json_and_out_create_missing_folders(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "p.json"
    res = RUNNER.invoke(app, ["project", _requests(tmp_path), "-n", "10", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["requests_per_day"] == 10

    samples = _jsonl(tmp_path / "pairs.jsonl", [{"a": "hi", "b": "hello", "label": 1}])
    cal = tmp_path / "cal" / "c.json"
    res = RUNNER.invoke(app, ["calibrate", samples, "--out", str(cal)])
    assert res.exit_code == 0, res.output
    assert "threshold" in json.loads(cal.read_text())["cache"]


def test_json_to_a_directory_fails_before_the_work(tmp_path: Path) -> None:
    res = RUNNER.invoke(app, ["project", _requests(tmp_path), "-n", "10", "--json", str(tmp_path)])
    assert res.exit_code == 2 and "--json" in res.output and "directory" in res.output
    assert "Projected spend" not in res.output


def test_chart_extension_is_checked_and_the_real_path_printed(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ledger = _jsonl(tmp_path / "ledger.jsonl", [_record(1)])
    res = RUNNER.invoke(app, ["report", ledger, "--chart", str(tmp_path / "r.txt")])
    assert res.exit_code == 2, res.output
    assert "--chart" in res.output and ".txt" in res.output and ".png" in res.output
    assert "Cost vs" not in res.output  # refused before the report

    res = RUNNER.invoke(app, ["report", ledger, "--chart", str(tmp_path / "noext")])
    assert res.exit_code == 0, res.output
    assert f"chart written to {tmp_path / 'noext.png'}" in res.output
    assert (tmp_path / "noext.png").is_file()

    res = RUNNER.invoke(
        app, ["project", _requests(tmp_path), "-n", "10", "--chart", str(tmp_path / "p.bad")]
    )
    assert res.exit_code == 2 and "--chart" in res.output


def test_demo_out_on_a_file_fails_before_the_run(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = RUNNER.invoke(app, ["demo", "--requests", "5", "--no-progress", "--out", str(afile)])
    assert res.exit_code == 2, res.output
    assert "--out" in res.output and "it is a file" in res.output
    assert "costopt demo:" not in res.output  # nothing ran


def test_report_chart_counts_every_record_of_a_big_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 100_050  # past the in-memory ledger's default cap of 100,000
    ledger = _jsonl(tmp_path / "big.jsonl", [_record(i) for i in range(n)])
    seen: dict[str, Any] = {}

    def fake_chart(loaded: Any, path: Any, **_: Any) -> Path:
        seen["ledger"] = loaded
        return Path(path)

    monkeypatch.setattr("costopt_core.charts.ledger_chart", fake_chart)
    res = RUNNER.invoke(app, ["report", ledger, "--chart", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    loaded = seen["ledger"]
    assert loaded.totals().requests == n
    assert sum(request_mix(loaded).values()) == n


def test_cache_hits_are_not_escalations() -> None:
    usage = Usage(input_tokens=1000, output_tokens=10)
    reqs = [
        MeasuredRequest("gpt-4o", usage, escalated=("gpt-4o-mini",)),
        MeasuredRequest("gpt-4o", usage, cache="cache_exact", escalated=("gpt-4o-mini",)),
    ]
    p = project(reqs, requests_per_day=100, baseline_model="gpt-4o")
    assert p.measured["escalation_rate"] == 0.5


def test_cli_escalation_rate_skips_the_cache_hit(tmp_path: Path) -> None:
    row = {"prompt": "How do I reset my password?", "response": "Settings.", "tier": "frontier"}
    sample = _jsonl(tmp_path / "s.jsonl", [row, row])  # the second is a cache hit
    res = RUNNER.invoke(app, ["project", sample, "-n", "1000"])
    assert res.exit_code == 0, res.output
    assert "escalations 50.0%" in res.output


def test_tables_align_wide_characters() -> None:
    table = format_table(["tenant", "n"], [["Müller 日本", "1"], ["acme", "1"]])
    rows = table.splitlines()[2:]
    # the "n" column ends in the same terminal column on both rows
    assert rows[0].index("1") + 2 == rows[1].index("1")


def test_calibration_json_with_a_bom_is_read(tmp_path: Path) -> None:
    cal = tmp_path / "cal.json"
    cal.write_text("\ufeff{}", encoding="utf-8")
    res = RUNNER.invoke(
        app, ["project", _requests(tmp_path), "-n", "10", "--calibration", str(cal)]
    )
    assert "not JSON" not in res.output  # it parsed; {} is then refused as a calibration


def test_unpriced_ledger_model_is_named_once(tmp_path: Path) -> None:
    ledger = _jsonl(
        tmp_path / "l.jsonl",
        [_record(1), _record(2, model="my-model", cost_usd=None, savings_usd={})],
    )
    res = RUNNER.invoke(app, ["project", ledger, "-n", "100"])
    assert res.exit_code == 0, res.output
    assert res.output.count("my-model") == 1 and "note:" in res.output


def test_a_jsonl_file_starting_with_a_bom_is_read(tmp_path: Path) -> None:
    from costopt_core.jsonl import json_lines

    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    assert [d["a"] for _, d in json_lines(path, "sample")] == [1, 2]


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("report", "costopt report [OPTIONS] {LEDGER}"),
        ("project", "costopt project [OPTIONS] {SAMPLE}"),
        ("calibrate", "costopt calibrate [OPTIONS] {SAMPLES}"),
        ("bench", "costopt bench [OPTIONS] [NAMES]..."),
    ],
)
def test_usage_lines_name_arguments_as_the_readme_and_the_errors_do(
    command: str, usage: str
) -> None:
    # the usage line showed "{ledger}" while the README and the errors say LEDGER
    # ({...} is typer's mark for a required argument, [...] for an optional one)
    res = RUNNER.invoke(app, [command, "--help"], prog_name="costopt")
    assert res.exit_code == 0 and usage in res.output, res.output


@pytest.mark.parametrize("bad", ["not_utf8", "directory"])
def test_an_unreadable_calibration_file_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    calibration = tmp_path / "cal.json"
    if bad == "not_utf8":
        calibration.write_bytes(b"\xff\xfe{")
    else:
        calibration.mkdir()
    args = ["project", _requests(tmp_path), "-n", "10", "--calibration", str(calibration)]
    res = RUNNER.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "--calibration" in res.output and "Traceback" not in res.output
    assert ("not UTF-8" if bad == "not_utf8" else "is a directory") in res.output


def _bench_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "hello.py").write_text(
        "import json, sys\njson.dump({}, open(sys.argv[sys.argv.index('--out') + 1], 'w'))\n"
    )
    (folder / "train_pair_model.py").write_text("raise SystemExit('must not run')\n")
    (folder / "_common.py").write_text("")
    return folder


def test_bench_all_runs_benchmarks_not_training_scripts(tmp_path: Path) -> None:
    folder = _bench_folder(tmp_path)
    listed = RUNNER.invoke(app, ["bench", "--dir", str(folder), "--list"])
    assert listed.output.split() == ["hello"]
    res = RUNNER.invoke(app, ["bench", "--dir", str(folder)])
    assert res.exit_code == 0, res.output
    assert (folder / "results" / "hello.json").exists()


def test_bench_results_path_taken_by_a_file_is_a_usage_error(tmp_path: Path) -> None:
    folder = _bench_folder(tmp_path)
    (folder / "results").write_text("")
    res = RUNNER.invoke(app, ["bench", "--dir", str(folder), "hello"])
    assert res.exit_code == 2, res.output
    assert "remove or rename it" in res.output and "Traceback" not in res.output


def test_an_unknown_tier_label_names_the_request_and_the_fix(tmp_path: Path) -> None:
    sample = _jsonl(tmp_path / "s.jsonl", [{"prompt": "hi", "tier": "huge"}])
    ladder = ["--tier", "small=gpt-4o-mini", "--tier", "frontier=gpt-4o"]
    res = RUNNER.invoke(app, ["project", sample, "-n", "10", *ladder])
    assert res.exit_code == 2, res.output
    assert "request 1" in res.output and "'huge'" in res.output
    assert "NAME=MODEL" in res.output


@pytest.mark.parametrize("command", ["project", "calibrate", "report"])
def test_help_names_every_option_whole_in_80_columns(command: str) -> None:
    """Rich's help table cut long option names short ("--requests-per…") at 80 columns."""
    out = CliRunner(env={"COLUMNS": "80", "NO_COLOR": "1"}).invoke(app, [command, "--help"])
    assert out.exit_code == 0, out.output
    assert "…" not in out.output
    group: Any = typer.main.get_command(app)
    flags = [p.opts[-1] for p in group.commands[command].params if p.param_type_name == "option"]
    assert len(flags) >= 2
    for flag in flags:
        assert flag in out.output, f"{flag} missing from {command} --help"


@pytest.mark.parametrize("command", ["report", "project"])
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_chart_that_cannot_be_written_is_a_usage_error(command: str, tmp_path: Path) -> None:
    """An unwritable --chart path gave a traceback (exit 1) after the whole output."""
    ledger = _jsonl(tmp_path / "l.jsonl", [_record(i) for i in range(3)])
    # A folder that exists and takes no new file, even for root.
    args = [command, ledger, "--chart", "/proc/costopt-chart.png"]
    out = RUNNER.invoke(app, args + (["-n", "10"] if command == "project" else []))
    assert out.exit_code == 2, out.output
    assert "Invalid value for --chart: could not write the chart" in out.output
    assert "pick a writable path" in out.output and "Traceback" not in out.output


def test_report_refuses_an_empty_ledger(tmp_path: Path) -> None:
    """An empty file printed all-$0 tables and exited 0."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = RUNNER.invoke(app, ["report", str(empty)])
    assert out.exit_code == 2
    assert "has no records" in out.output and "$0" not in out.output


def test_an_amount_too_large_to_add_up_is_a_usage_error(tmp_path: Path) -> None:
    """'1E+1000000' passed the finite check and overflowed the totals (a traceback)."""
    ledger = _jsonl(tmp_path / "huge.jsonl", [_record(0, cost_usd="1E+1000000")])
    out = RUNNER.invoke(app, ["report", ledger])
    assert out.exit_code == 2, out.output
    assert "huge.jsonl:1" in out.output and "must be below $1e15" in out.output


def test_chart_to_a_directory_fails_before_the_work(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ledger = _jsonl(tmp_path / "ledger.jsonl", [_record(1)])
    folder = tmp_path / "charts"
    folder.mkdir()
    res = RUNNER.invoke(app, ["report", ledger, "--chart", str(folder)])
    assert res.exit_code == 2, res.output
    assert "--chart" in res.output and "directory" in res.output
    assert not (tmp_path / "charts.png").exists()  # not written beside the folder


@pytest.mark.parametrize("command", ["project", "calibrate"])
def test_tiers_given_dearest_first_are_a_usage_error(tmp_path: Path, command: str) -> None:
    ladder = ["--tier", "small=gpt-4o", "--tier", "frontier=gpt-4o-mini"]
    args = ["-n", "10"] if command == "project" else []
    res = RUNNER.invoke(app, [command, _requests(tmp_path), *args, *ladder])
    assert res.exit_code == 2, res.output
    assert "--tier" in res.output and "cheapest first" in res.output
    assert "small=gpt-4o, frontier=gpt-4o-mini" in res.output


def test_the_demo_says_an_installed_local_model_did_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import costopt_demo

    monkeypatch.setattr(costopt_demo, "load_local_model", lambda local=None: (None, "it broke"))
    res = RUNNER.invoke(
        app, ["demo", "--requests", "3", "--no-progress", "--out", str(tmp_path / "out")]
    )
    assert res.exit_code == 0, res.output
    assert "tier 1 (small) was a stand-in: the local model did not load" in res.output
    assert "pip install" not in res.output
