"""Reading a JSONL file a user handed us: each problem is an error naming its ``file:line``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from costopt_core.errors import ConfigurationError

__all__ = ["json_lines"]


def json_lines(path: Path, what: str) -> Iterator[tuple[str, Any]]:
    """(``file:line``, parsed JSON) per non-blank line.

    Args:
        path: the file.
        what: what the file holds (``ledger``, ``sample``...), for the error messages.

    Raises:
        ConfigurationError: the file is missing, or a line is not UTF-8 or not JSON.
    """
    if not path.is_file():
        raise ConfigurationError(f"{what} file {str(path)!r} does not exist or is not a file")
    # Bytes, decoded line by line: a non-UTF-8 line is an error naming that line.
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                # utf-8-sig on the first line: editors on Windows start files with a BOM.
                data = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
            except UnicodeDecodeError as exc:
                raise ConfigurationError(
                    f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from None
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{where}: not valid JSON ({exc.msg})") from None
            yield where, data
