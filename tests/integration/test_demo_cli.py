"""The demo and the CLI, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

from typer.testing import CliRunner

from costopt_core.cli import app


def test_cli_demo_and_report(tmp_path) -> None:
    runner = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})
    res = runner.invoke(
        app, ["demo", "--requests", "30", "--out", str(tmp_path), "--no-progress", "--no-local"]
    )
    assert res.exit_code == 0, res.output
    assert "STAND-INS" in res.output and "Savings by lever" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "demo-ledger.jsonl")])
    assert res.exit_code == 0 and "By tier" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "nope.jsonl")])
    assert res.exit_code != 0 and "does not exist" in res.output


def test_cli_rejects_bad_arguments() -> None:
    res = CliRunner().invoke(app, ["demo", "--requests", "0"])
    assert res.exit_code == 2 and "requests" in res.output.lower()


def test_costopt_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "costopt_core.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "demo" in out.stdout
    assert Decimal("0") == 0
