"""Reading user files with line-precise errors, and writing outputs atomically.

Every reader here raises LlaraError(path, line, field) on bad input, so the CLI can print one line
and exit 2. Every writer goes through a temporary name and os.replace, so a killed job never leaves a
half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from llara.errors import LlaraError


# ---------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path: str | Path, rows) -> int:
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


# ---------------------------------------------------------------------------------------- reading
def require_file(path: str | Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise LlaraError(f"{what} not found", path)
    if not path.is_file():
        raise LlaraError(f"{what} is not a regular file", path)
    return path


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 text file, streaming; bad bytes name their line."""
    path = require_file(path)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise LlaraError(f"not valid UTF-8 (byte {e.start})", path, number) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file."""
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LlaraError(f"malformed JSON: {e.msg} (column {e.colno})", path, number) from None
        if not isinstance(row, dict):
            raise LlaraError(f"expected a JSON object, got {type(row).__name__}", path, number)
        yield number, row


def get_str(row: dict, field: str, path, line: int, required: bool = True, allow_empty: bool = False) -> str:
    """A string field of a row, with ints accepted for ids (BEIR files often have numeric ids)."""
    value = row.get(field)
    if value is None:
        if required:
            raise LlaraError("missing", path, line, field)
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise LlaraError(f"expected a string, got {type(value).__name__}", path, line, field)
    value = str(value)
    if required and not allow_empty and not value.strip():
        raise LlaraError("empty", path, line, field)
    return value


def get_str_list(row: dict, field: str, path, line: int) -> list[str]:
    value = row.get(field, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LlaraError("expected a list of strings", path, line, field)
    return value


def check_finite(values, what: str) -> None:
    """Refuse NaN/inf before they poison an index or a metric."""
    import numpy as np

    arr = np.asarray(values)
    if arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(1).nonzero()[0][0]) if arr.ndim > 1 else 0
        raise LlaraError(f"{what} contains NaN or inf (first at row {bad})")


def parse_score(text: str, path, line: int, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LlaraError(f"not a number: {text!r}", path, line, field) from None
    if not math.isfinite(value):
        raise LlaraError(f"not a finite number: {text!r}", path, line, field)
    return value
