"""lark, imported without the optional `regex` module.

lark imports `regex` when it is installed (0.015-0.04 s at every start of cramc), for grammars that use
Unicode categories (\\p{..}) or Lark(regex=True); neither cram.lark nor ir.lark does.  While lark is first
imported, "regex" is marked absent in sys.modules (lark then uses `re`), and the mark is removed at once,
so a later `import regex` elsewhere works as usual.  When lark or regex is already loaded, nothing changes.
"""

from __future__ import annotations

import sys

if "lark" not in sys.modules and "regex" not in sys.modules:
    sys.modules["regex"] = None  # type: ignore[assignment]  # "import regex" raises ImportError meanwhile
    try:
        import lark
    finally:
        del sys.modules["regex"]

import lark  # noqa: E402
from lark import Lark, Token, Transformer, v_args  # noqa: E402
from lark.exceptions import (  # noqa: E402
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.grammar import Rule  # noqa: E402
from lark.lexer import TerminalDef  # noqa: E402
from lark.tree import Meta, Tree  # noqa: E402

__all__ = [
    "Lark",
    "Meta",
    "Rule",
    "TerminalDef",
    "Token",
    "Transformer",
    "Tree",
    "UnexpectedCharacters",
    "UnexpectedEOF",
    "UnexpectedInput",
    "UnexpectedToken",
    "VisitError",
    "lark",
    "v_args",
]
