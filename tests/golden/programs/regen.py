"""Rewrite the golden programs and run results in this folder (tests/golden/test_golden_programs.py).

Only regenerate when a change is MEANT to alter what `cramc compile` emits or what `cramc run`
computes or counts, and say so in the commit message, with the reason: these files are the
evidence that a refactor changed neither.  Read ``git diff --stat tests/golden/programs`` (and the
diff of a small case) before committing.

    python tests/golden/programs/regen.py

It runs the golden test in update mode (CRAMC_UPDATE_GOLDEN=1), which compiles every case, writes
the programs, runs them and writes runs/*.json, then checks them as usual.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TEST = Path(__file__).resolve().parents[1] / "test_golden_programs.py"


def main() -> int:
    env = {**os.environ, "CRAMC_UPDATE_GOLDEN": "1"}
    return subprocess.call([sys.executable, "-m", "pytest", "-q", str(TEST)], env=env)


if __name__ == "__main__":
    sys.exit(main())
