"""The one error type a user sees: it names the file, the line and the field at fault."""

from __future__ import annotations

from pathlib import Path


class LlaraError(Exception):
    """A problem with the user's input or setup. The CLI prints it on one line and exits 2."""

    def __init__(
        self, message: str, path: str | Path | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        self.message, self.path, self.line, self.field = message, path, line, field
        super().__init__(self.__str__())

    def __reduce__(self):  # keep the fields when an error crosses a process boundary (workers, pools)
        return type(self), (self.message, self.path, self.line, self.field)

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}"
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        if self.field is not None:
            where += f"field {self.field!r}: "
        return where + self.message
