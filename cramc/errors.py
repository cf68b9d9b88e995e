"""Error types shared by every stage.

`UserError` is a problem with something the user handed in (a program, a model,
a data file, a flag); the CLI prints it as ``file:line:col: message`` with the
source line (a window of `EXCERPT_WIDTH` characters around the column, for long
lines) and a caret and exits non-zero without a traceback.
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


#: Characters of the source line an error shows around its column (a data line can be megabytes long).
EXCERPT_WIDTH = 100
#: Longest message an error prints; longer ones (names or tokens of absurd length) are cut in the middle.
MAX_MESSAGE = 1000


def excerpt(text: str, col: int, width: int = EXCERPT_WIDTH) -> tuple[str, int]:
    """A window of `width` characters of `text` around 0-based column `col`, with '...' where cut; new column."""
    if len(text) <= width:
        return text, col
    start = max(0, min(col - width // 2, len(text) - width))
    head = "..." if start > 0 else ""
    tail = "..." if start + width < len(text) else ""
    return head + text[start : start + width] + tail, col - start + len(head)


def _source_line(source: str, line: int) -> str | None:
    """Line `line` (1-based) of `source`, found without splitting the whole (possibly huge) text."""
    if line < 1:
        return None
    start = 0
    for _ in range(line - 1):
        nl = source.find("\n", start)
        if nl < 0:
            return None
        start = nl + 1
    if start >= len(source) and line > 1:
        return None
    end = source.find("\n", start)
    return (source[start:] if end < 0 else source[start:end]).rstrip("\r")


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, or its start and end around ' ... ' when it is longer than `limit`."""
    if len(text) <= limit:
        return text
    keep = (limit - 5) // 2
    return f"{text[:keep]} ... {text[-keep:]}"


class UserError(Exception):
    """A located problem with user input."""

    def __init__(self, message: str, loc: Loc | None = None, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.source = source

    def render(self) -> str:
        message = clip(self.message)
        if self.loc is None:
            return f"error: {message}"
        head = f"{self.loc}: error: {message}"
        if self.source is None:
            return head
        text = _source_line(self.source, self.loc.line)
        if text is None or not text.strip():
            return head
        text, col = excerpt(text, max(self.loc.col, 1) - 1)
        return f"{head}\n  {text}\n  {' ' * col}^"

    def __str__(self) -> str:
        return self.render()


class InternalError(Exception):
    """A bug in cramc: an invariant that user input cannot break was broken."""
