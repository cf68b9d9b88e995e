"""Build docs/tutorial.md from docs/tutorial/tutorial.src.md by running its commands.

The tutorial quotes what cramc prints. So that it cannot drift from what the
commands print, its source holds only the commands; this script runs every
one of them in a fresh scratch directory (never in the repository) and
writes their outputs into the page, and the test suite re-runs the fast ones
and compares (tests/docs/test_tutorial.py).

Source syntax (everything else is copied as it is):

- A fenced block opened with three backticks and `console` (optionally
  followed by `slow`) holds commands, one per line, each starting with
  `$ `. Each is run with bash in the scratch directory, with `MODELS` set to
  the repository's models/ folder, and its standard output and error are
  written below it. `slow` marks blocks the test suite skips.
- `<!-- let NAME = REGEX -->` after a block: group 1 of REGEX searched in that
  block's output becomes `{{NAME}}`, usable in the prose that follows.
- `<!-- copy FILE -> PATH -->` copies FILE from the scratch directory to PATH
  (relative to docs/), e.g. a plot the commands made.

Usage: python docs/tutorial/make_tutorial.py [--check] [--fast]
  --check   compare with docs/tutorial.md instead of writing it (exit 1 on a difference)
  --fast    run only the blocks not marked slow (with --check: compare only those)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
REPO = DOCS.parent
SOURCE = HERE / "tutorial.src.md"
TARGET = DOCS / "tutorial.md"

FENCE = "```"
LET = re.compile(r"^<!-- let (\w+) = (.+) -->$")
COPY = re.compile(r"^<!-- copy (\S+) -> (\S+) -->$")
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# wall-clock figures differ from run to run; everything else cramc prints is fixed by the seeds
TIMING = re.compile(r"\b\d+(?:\.\d+)? s\b")


@dataclass
class Block:
    """One console block: its commands and, once run, their outputs."""

    commands: list[str]
    slow: bool
    outputs: list[str] = field(default_factory=list)


def normalise(text: str) -> str:
    """The output with wall-clock times masked, for comparisons."""
    return TIMING.sub("<time> s", text)


def run_command(cmd: str, cwd: Path, timeout: float = 3600) -> str:
    env = dict(os.environ, MODELS=str(REPO / "models"), COLUMNS="120")
    env.pop("CRAMC_MAX_MEMORY", None)
    p = subprocess.run(
        ["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if p.returncode != 0:
        raise SystemExit(f"tutorial command failed (exit {p.returncode}): {cmd}\n{p.stdout}{p.stderr}")
    return (p.stdout + p.stderr).rstrip("\n")


def parse_blocks(lines: list[str]) -> list[tuple[int, int, Block]]:
    """(first line, line after the closing fence, block) of every console block."""
    out = []
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        if head.startswith(FENCE + "console"):
            slow = head.split()[1:] == ["slow"]
            j = i + 1
            cmds = []
            while lines[j].strip() != FENCE:
                if lines[j].startswith("$ "):
                    cmds.append(lines[j][2:])
                j += 1
            out.append((i, j + 1, Block(cmds, slow)))
            i = j + 1
        else:
            i += 1
    return out


def build(fast: bool, scratch: Path) -> tuple[str, list[Block]]:
    """Run the source's commands in `scratch` and return the page and its blocks."""
    src = SOURCE.read_text().splitlines()
    blocks = parse_blocks(src)
    values: dict[str, str] = {}
    page: list[str] = []
    last: Block | None = None
    pos = 0
    for start, end, block in blocks:
        page += _prose(src[pos:start], values, last, scratch, fast)
        if not (fast and block.slow):
            for cmd in block.commands:
                print(f"$ {cmd}", file=sys.stderr)
                block.outputs.append(run_command(cmd, scratch))
        page.append(FENCE + "console")
        for cmd, out in zip(block.commands, block.outputs or [""] * len(block.commands), strict=True):
            page.append(f"$ {cmd}")
            if out:
                page += out.splitlines()
        page.append(FENCE)
        last = block
        pos = end
    page += _prose(src[pos:], values, last, scratch, fast)
    return "\n".join(page) + "\n", [b for _, _, b in blocks]


def _prose(lines: list[str], values: dict[str, str], last: Block | None, scratch: Path, fast: bool) -> list[str]:
    out = []
    for line in lines:
        m = LET.match(line.strip())
        if m:
            if last is not None and last.outputs:
                found = re.search(m.group(2), "\n".join(last.outputs), re.MULTILINE)
                if not found:
                    raise SystemExit(f"tutorial: {m.group(2)!r} not found in the output of {last.commands}")
                values[m.group(1)] = found.group(1)
            continue
        m = COPY.match(line.strip())
        if m:
            if not fast:
                shutil.copyfile(scratch / m.group(1), DOCS / m.group(2))
            continue
        out.append(PLACEHOLDER.sub(lambda k: values.get(k.group(1), "{{" + k.group(1) + "}}"), line))
    return out


def quoted_outputs(page: str) -> list[tuple[str, str]]:
    """(command, quoted output) of every command in a generated page."""
    lines = page.splitlines()
    res = []
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith(FENCE + "console"):
            i += 1
            cmd, buf = None, []
            while lines[i].strip() != FENCE:
                if lines[i].startswith("$ "):
                    if cmd is not None:
                        res.append((cmd, "\n".join(buf)))
                    cmd, buf = lines[i][2:], []
                else:
                    buf.append(lines[i])
                i += 1
            if cmd is not None:
                res.append((cmd, "\n".join(buf)))
        i += 1
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with docs/tutorial.md, write nothing")
    ap.add_argument("--fast", action="store_true", help="run only the blocks not marked slow")
    args = ap.parse_args(argv)
    if args.fast and not args.check:
        ap.error("--fast only with --check: the page needs every block's output")
    with tempfile.TemporaryDirectory(prefix="cramc-tutorial-") as tmp:
        page, blocks = build(args.fast, Path(tmp))
    if not args.check:
        TARGET.write_text(page)
        print(f"wrote {TARGET.relative_to(REPO)}", file=sys.stderr)
        return 0
    want = dict(quoted_outputs(TARGET.read_text()))
    bad = 0
    for block in blocks:
        for cmd, out in zip(block.commands, block.outputs, strict=False):
            if cmd not in want:
                print(f"not in docs/tutorial.md: $ {cmd}", file=sys.stderr)
                bad += 1
            elif normalise(out) != normalise(want[cmd]):
                print(f"differs: $ {cmd}\n--- docs/tutorial.md\n{want[cmd]}\n--- now\n{out}", file=sys.stderr)
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
