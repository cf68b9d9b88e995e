"""Error types shared by every stage.

`UserError` is a problem with something the user handed in (a program, a model,
a data file, a flag); the CLI prints it as ``file:line:col: message`` with the
source line and a caret and exits non-zero without a traceback.
`InternalError` is a bug in cramc itself and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class UserError(Exception):
    """A located problem with user input."""

    def __init__(self, message: str, loc: Loc | None = None, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.source = source

    def render(self) -> str:
        if self.loc is None:
            return f"error: {self.message}"
        head = f"{self.loc}: error: {self.message}"
        if self.source is None:
            return head
        lines = self.source.splitlines()
        if not 1 <= self.loc.line <= len(lines):
            return head
        text = lines[self.loc.line - 1]
        caret = " " * (max(self.loc.col, 1) - 1) + "^"
        return f"{head}\n  {text}\n  {caret}"

    def __str__(self) -> str:
        return self.render()


class InternalError(Exception):
    """A bug in cramc: an invariant that user input cannot break was broken."""
