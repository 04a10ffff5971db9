"""Errors a user can act on: each names the file, line, field and value at fault."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a malformed file, an unknown option value, an empty graph."""

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        value: object = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        self.field = field
        self.value = value
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = str(self.path)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        what = ""
        if self.field is not None:
            what = f"field '{self.field}'"
            if self.value is not None:
                what += f" value {self.value!r}"
            what += ": "
        return f"{where}{what}{self.reason}"
