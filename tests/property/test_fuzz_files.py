"""Ledger exports, workload samples, calibration samples and the CLI under junk files.

A file a user hands to costopt may be anything: random bytes, a truncated
line, a field of the wrong type, a number too large for a float. The answer
is a ``ConfigurationError`` naming ``file:line`` (or, in the CLI, a usage error
with exit code 2), never a traceback from inside.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from costopt_core.cli import app
from costopt_core.engine import CostEngine
from costopt_core.errors import ConfigurationError
from costopt_core.ledger import CostLedger
from costopt_core.routing.tiers import Tier, Tiers
from costopt_core.testing import FakeEmbedder
from costopt_core.types import Usage
from costopt_core.workload import WorkloadSample, read_calibration_samples

from ._strategies import FUZZ, json_like

TIERS = Tiers([Tier("small", ("gpt-4o-mini",)), Tier("frontier", ("gpt-4o",))])


def _record_dict(i: int = 0) -> dict[str, Any]:
    record = CostEngine(embedder=FakeEmbedder()).record_call(
        model="gpt-4o-mini", usage=Usage(100, 10), tier="small", tenant="acme"
    )
    out: dict[str, Any] = record.to_dict()
    out["call_id"] = f"c{i}"
    return out


GOOD_LINES = [
    json.dumps(_record_dict()),
    json.dumps({"prompt": "How do I reset my password?", "tier": "small"}),
    json.dumps({"prompt": "What is 2+2?", "labels": {"small": 1, "frontier": 1}}),
    json.dumps({"a": "reset password", "b": "change password", "label": 1}),
]


@st.composite
def mutated_record(draw: st.DrawFn) -> dict[str, Any]:
    """A ledger record with some fields replaced by junk (or removed)."""
    rec = _record_dict(draw(st.integers(0, 5)))
    keys = [*sorted(rec), "usage.input_tokens", "savings_usd.routing"]
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
        value = draw(
            st.one_of(json_like, st.just(10**400), st.just("1e999"), st.just("NaN"), st.just(-1))
        )
        outer, _, inner = key.partition(".")
        if inner and isinstance(rec.get(outer), dict):
            rec[outer][inner] = value
        elif draw(st.booleans()):
            rec.pop(outer, None)
        else:
            rec[outer] = value
    return rec


def _line(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=60))
    if kind == 1:
        good = draw(st.sampled_from(GOOD_LINES))
        return good[: draw(st.integers(0, len(good)))].encode()  # truncated
    if kind == 2:
        return json.dumps(draw(mutated_record()), default=str).encode()
    if kind == 3:
        return json.dumps(draw(json_like), default=str).encode()
    if kind == 4:
        return draw(st.text(max_size=40)).encode("utf-8", "surrogatepass")
    return draw(st.sampled_from(GOOD_LINES)).encode()


@st.composite
def files(draw: st.DrawFn) -> bytes:
    return b"\n".join(_line(draw) for _ in range(draw(st.integers(1, 4))))


LINE_REF = re.compile(r":\d+: ")


def _readers(path: Path) -> list[Any]:
    return [
        lambda: CostLedger.from_jsonl(path),
        lambda: WorkloadSample.from_jsonl(path),
        lambda: read_calibration_samples(path, TIERS),
    ]


@FUZZ
@given(content=files())
def test_readers_load_or_name_the_bad_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.jsonl"
        path.write_bytes(content)
        for read in _readers(path):
            try:
                read()
            except ConfigurationError as exc:
                msg = str(exc)
                assert str(path) in msg, msg
                # A problem on a line names it; whole-file problems need not.
                assert LINE_REF.search(msg) or "no " in msg or "mixes" in msg, msg


@FUZZ
@given(records=st.lists(mutated_record(), min_size=1, max_size=3))
def test_a_loaded_ledger_is_consistent(records: list[dict[str, Any]]) -> None:
    """Whatever a ledger accepts, it can total, summarise and export again."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.jsonl"
        path.write_text("\n".join(json.dumps(r, default=str) for r in records), "utf-8")
        try:
            ledger = CostLedger.from_jsonl(path)
        except ConfigurationError as exc:
            assert f"{path}:" in str(exc)
            return
        totals = ledger.totals()
        assert totals.calls == len({str(r.get("call_id")) for r in records})
        ledger.summary_table()
        again = CostLedger.from_jsonl(ledger.to_jsonl(Path(tmp) / "again.jsonl"))
        assert [r.to_dict() for r in again.records()] == [r.to_dict() for r in ledger.records()]


@pytest.mark.parametrize("reader", [0, 1, 2], ids=["ledger", "workload", "calibration"])
@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"\xff\xfe\x00garbage\n", 1),
        (GOOD_LINES[0].encode() + b"\n\x80\x81\n", 2),
        (b'{"call_id": "x", "usage": {"input_tokens": 1e999}}\n', 1),
    ],
    ids=["binary", "binary-second-line", "huge-float"],
)
def test_non_utf8_and_huge_numbers_name_the_line(
    tmp_path: Path, reader: int, content: bytes, line: int
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        _readers(path)[reader]()
    assert str(path) in str(info.value)
    if reader == 0 or content.startswith(b"\xff") or line == 1:
        assert f"{path}:{line}" in str(info.value), str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    for read in _readers(tmp_path):
        with pytest.raises(ConfigurationError, match=re.escape(str(tmp_path))):
            read()


# -- the CLI ------------------------------------------------------------------

runner = CliRunner()


def _invoke(args: list[str]) -> Any:
    result = runner.invoke(app, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"costopt {args} crashed: {result.exception!r}\n{result.output}")
    return result


option_values = st.one_of(
    st.sampled_from(["", "-1", "0", "1e999", "nan", "small=", "=gpt-4o", "a=b", "x=gpt-4o,"]),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=15),
)


@FUZZ
@given(content=files(), data=st.data())
def test_cli_commands_exit_0_or_2_on_any_input(content: bytes, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(content)
        command = data.draw(st.sampled_from(["report", "project", "calibrate"]))
        args = [command, str(path)]
        options = {
            "report": ["--by"],
            "project": ["-n", "--tier", "--baseline", "--days", "--output-tokens", "--calibration"],
            "calibrate": ["--tier", "--target-quality", "--target-precision", "--classifier"],
        }[command]
        for opt in data.draw(st.lists(st.sampled_from(options), max_size=2)):
            args += [opt, data.draw(option_values)]
        if command == "project":
            args += ["--no-cache", "--no-compression"] + ([] if "-n" in args else ["-n", "100"])
        # The CLI builds its own engine: the fake embedder stands in for the real model.
        with patch("costopt_core.engine.SentenceTransformerEmbedder", FakeEmbedder):
            result = _invoke(args)
        assert result.exit_code in (0, 2), (args, result.exit_code, result.output)


@FUZZ
@given(
    names=st.lists(st.text(st.characters(blacklist_categories=["Cs"]), max_size=10), max_size=2),
    where=st.sampled_from(["missing", "empty", "file", "junk"]),
)
def test_cli_bench_with_any_dir_and_names(names: list[str], where: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "b"
        if where == "empty":
            folder.mkdir()
        elif where == "file":
            folder.write_text("not a folder")
        elif where == "junk":
            folder.mkdir()
            (folder / "_private.py").write_text("raise SystemExit(0)\n")
        result = _invoke(["bench", "--dir", str(folder), *names])
        assert result.exit_code == 2, result.output


def test_cli_bench_runs_only_known_names(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("import sys\nsys.exit(0)\n")
    assert _invoke(["bench", "--dir", str(tmp_path), "--list"]).output.split() == ["ok"]
    unknown = _invoke(["bench", "--dir", str(tmp_path), "../../etc/passwd"])
    assert unknown.exit_code == 2 and "unknown benchmark" in unknown.output
    assert _invoke(["bench", "--dir", str(tmp_path), "ok"]).exit_code == 0


@pytest.mark.parametrize(
    ("command", "lines", "extra"),
    [
        ("report", [GOOD_LINES[0]], ["--by", "tenant"]),
        ("project", [GOOD_LINES[1]] * 3, ["-n", "100", "--no-cache", "--no-compression"]),
        ("calibrate", [GOOD_LINES[2], GOOD_LINES[3]], ["--tier", "small=gpt-4o-mini"]),
        (
            "calibrate",
            [GOOD_LINES[2], GOOD_LINES[3]],
            ["--tier", "small=gpt-4o-mini", "--tier", "frontier=gpt-4o"],
        ),
    ],
)
def test_cli_good_inputs_still_exit_0(
    tmp_path: Path, command: str, lines: list[str], extra: list[str]
) -> None:
    """The control: the fuzzed commands do succeed on good files (one --tier is too few)."""
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    with patch("costopt_core.engine.SentenceTransformerEmbedder", FakeEmbedder):
        result = _invoke([command, str(path), *extra])
    expected = 2 if extra == ["--tier", "small=gpt-4o-mini"] else 0
    assert result.exit_code == expected, result.output
