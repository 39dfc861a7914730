"""Helpers every benchmark shares: timing medians, tables, JSON output, data files."""

from __future__ import annotations

import gzip
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
for p in (str(REPO / "shared"), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    """Mean wall time of one call in microseconds over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from costopt_core.report import format_table

    print(format_table(headers, [[str(c) for c in r] for r in rows], title))


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {out}")


def open_text(path: Path) -> IO[str]:
    """A data file to read as UTF-8 text, gzipped (``.gz``) or plain."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def require(path: Path) -> Path:
    """Benchmarks need the shared data; say so and exit non-zero when it is missing."""
    if not path.exists():
        print(f"benchmark data not found: {path} (see ../shared/data/README.md)", file=sys.stderr)
        raise SystemExit(2)
    return path
