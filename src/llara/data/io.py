"""Reading user files with line-precise errors, and writing outputs atomically.

Every reader here raises LlaraError(path, line, field) on a row that cannot be used, so the CLI can
print one line and exit 2; under `--skip-bad-rows` (a BadRows policy) a bad row is counted and skipped
instead. A row that is merely odd (an empty document, a judgement of an unknown document) is not an
error: the reader keeps it (or leaves it out on purpose) and notes it, and the CLI prints one warning
line per kind with its count and first file:line.
Every writer goes through a temporary name and os.replace, so a killed job never leaves a
half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from llara.errors import LlaraError

T = TypeVar("T")


# ---------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name beside `target`; on success it replaces `target`.

    A killed job leaves only a hidden `.name.*` folder, never a half-written one under the final
    name. The folder gets ordinary umask permissions (mkdtemp's are 0700).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for path in tmp.rglob("*"):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        if target.exists():  # move the old folder aside first: the swap itself is one rename
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


# ------------------------------------------------------------------------------------- bad rows
Odd = tuple[str, str]  # a kind of odd row: (singular, plural), e.g. ("empty document kept", "empty documents kept")


@dataclass
class BadRows:
    """What readers do with a bad row: stop on it (the default) or skip it and count why; and the
    tally of odd rows that were kept or left out on purpose (`note`), one warning line per kind.

    Only errors about one row (those that carry a line number) can be skipped; a missing file or an
    empty corpus always stops. The CLI installs one policy per command (`--skip-bad-rows`) and prints
    `warnings()` and `summary()` when the command ends.
    """

    skip: bool = False
    count: int = 0
    first: LlaraError | None = None
    by_file: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first few, for logs and metrics.json
    seen: set = field(default_factory=set, repr=False)  # (file, line): a file read twice counts once
    odd: Counter = field(default_factory=Counter)  # kind of odd row -> rows noted
    odd_first: dict[Odd, str] = field(default_factory=dict)  # kind -> "file:line" of its first row
    noted: set = field(default_factory=set, repr=False)  # (kind, file, line), as `seen`

    def handle(self, err: LlaraError) -> None:
        """Raise `err`, or, when skipping a row-level error, record it and return."""
        if not self.skip or err.line is None:
            raise err
        key = (str(err.path), err.line)
        if key in self.seen:
            return
        self.seen.add(key)
        self.count += 1
        self.first = self.first or err
        self.by_file[str(err.path)] += 1
        if len(self.examples) < 10:
            self.examples.append(str(err))

    def summary(self) -> str:
        if not self.count:
            return ""
        return f"skipped {self.count} bad row{'s' if self.count != 1 else ''} (first: {self.first})"

    def note(self, kind: Odd, path: str | Path, line: int | None) -> None:
        """Count an odd row that was kept or left out on purpose (not an error, never skipped)."""
        key = (kind, str(path), line)
        if key in self.noted:  # encode reads its corpus more than once: each row counts once
            return
        self.noted.add(key)
        self.odd[kind] += 1
        self.odd_first.setdefault(kind, f"{path}:{line}" if line is not None else str(path))

    def warnings(self) -> list[str]:
        """One line per kind of odd row: `2 empty documents kept (first: corpus.jsonl:17)`."""
        return [f"{n} {kind[0] if n == 1 else kind[1]} (first: {self.odd_first[kind]})" for kind, n in self.odd.items()]


_policy = BadRows()


def bad_rows() -> BadRows:
    """The policy (and tally) readers use right now."""
    return _policy


def set_bad_rows(policy: BadRows) -> BadRows:
    """Install `policy` for the rest of the process (what the CLI does once per command)."""
    global _policy
    _policy = policy
    return policy


@contextlib.contextmanager
def skip_bad_rows(skip: bool = True) -> Iterator[BadRows]:
    """Within the block, readers skip (or, skip=False, stop on) bad rows; yields the tally."""
    previous = _policy
    try:
        yield set_bad_rows(BadRows(skip=skip))
    finally:
        set_bad_rows(previous)


class skippable:  # lower case: used like a function, `with skippable():`
    """Guard one row's parsing: a LlaraError inside either propagates or, when skipping, is counted
    and swallowed, so the loop moves on to the next row. Put the whole row body inside the block:

        for line, row in iter_jsonl(path):
            with skippable():
                rows.append(parse(row, path, line))

    (A class, not @contextmanager: it runs once per row, and this is three times cheaper.)
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if kind is not None and issubclass(kind, LlaraError):
            _policy.handle(err)  # raises it again unless the policy skips it
            return True
        return False


def iter_records(path: str | Path, parse: Callable[[dict, Path, int], T]) -> Iterator[T]:
    """parse(row, path, line) for each row of a JSONL file, bad rows skipped or raised by the policy."""
    path = Path(path)
    for line, row in iter_jsonl(path):
        try:
            value = parse(row, path, line)
        except LlaraError as e:
            _policy.handle(e)
            continue
        yield value


# ---------------------------------------------------------------------------------------- reading
def require_file(path: str | Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise LlaraError(f"{what} not found", path)
    if not path.is_file():
        raise LlaraError(f"{what} is not a regular file", path)
    return path


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 text file, streaming; bad bytes name their line (or are
    skipped under `--skip-bad-rows`). A leading byte-order mark is dropped; the line keeps its end
    (LF or Windows' CRLF), which every caller strips and JSON ignores."""
    path = require_file(path)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            elif number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # what Windows tools often write
                raise LlaraError("UTF-16 text (byte-order mark); save the file as UTF-8", path)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                _policy.handle(LlaraError(f"not valid UTF-8 (byte {e.start})", path, number))
                continue
            yield number, text


def _json_row(line: str, path: Path, number: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise LlaraError(f"malformed JSON: {e.msg} (column {e.colno})", path, number) from None
    except (ValueError, RecursionError) as e:  # over-long integers, absurd nesting
        raise LlaraError(f"malformed JSON: {str(e).split(';')[0][:100]}", path, number) from None
    if not isinstance(row, dict):
        raise LlaraError(f"expected a JSON object, got {type(row).__name__}", path, number)
    return row


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file."""
    path = Path(path)
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            row = _json_row(line, path, number)
        except LlaraError as e:
            _policy.handle(e)
            continue
        yield number, row


def get_str(row: dict, field: str, path, line: int, required: bool = True, allow_empty: bool = False) -> str:
    """A string field of a row, with ints accepted for ids (BEIR files often have numeric ids).

    A required field must be present; where empty is allowed, `null` reads as "" (exporters such as
    pandas write null for an empty value, and BEIR's own loader reads both the same way)."""
    value = row.get(field)
    if value is None:
        if required and (field not in row or not allow_empty):
            raise LlaraError("missing", path, line, field)
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise LlaraError(f"expected a string, got {type(value).__name__}", path, line, field)
    value = str(value)
    if required and not allow_empty and not value.strip():
        raise LlaraError("empty", path, line, field)
    if not value.isascii():  # ASCII cannot hold a surrogate; skip the encode on the common path
        _check_unicode(value, path, line, field)
    return value


def _check_unicode(value: str, path, line: int | None, field: str) -> None:
    """JSON escapes can spell lone surrogates ("\\ud800") that no tokenizer or UTF-8 file accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise LlaraError(f"invalid Unicode: lone surrogate at character {e.start}", path, line, field) from None


def get_str_list(row: dict, field: str, path, line: int, allow_empty: bool = True) -> list[str]:
    """A list of strings (a bare string counts as a list of one); allow_empty=False refuses [] and ""."""
    value = row.get(field, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LlaraError("expected a list of strings", path, line, field)
    if not allow_empty:
        if not value:
            raise LlaraError("empty list", path, line, field)
        if any(not v.strip() for v in value):
            raise LlaraError(
                f"empty string at position {next(i for i, v in enumerate(value) if not v.strip())}", path, line, field
            )
    for v in value:
        _check_unicode(v, path, line, field)
    return value


def check_finite(values, what: str, path: str | Path | None = None) -> None:
    """Refuse NaN/inf before they poison an index or a metric; names the first bad row."""
    import numpy as np

    arr = np.asarray(values)
    if arr.size and not np.isfinite(arr).all():
        bad_rows_mask = ~np.isfinite(arr).reshape(len(arr), -1).all(1) if arr.ndim > 1 else ~np.isfinite(arr)
        rows = np.flatnonzero(bad_rows_mask)
        raise LlaraError(f"{what} contains NaN or inf in {len(rows)} row(s) (first: row {int(rows[0])})", path)


def parse_score(text: str, path, line: int, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LlaraError(f"not a number: {text!r}", path, line, field) from None
    if not math.isfinite(value):
        raise LlaraError(f"not a finite number: {text!r}", path, line, field)
    return value
