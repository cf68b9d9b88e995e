"""Pass insert-ecc: choose the error protection of every partial-product bit of every MVM.

The spec (``cramc compile --ecc SPEC``) is a ';'-separated list of rules; for
each MVM layer and each partial-product significance s = b + c (weight bit b,
input bit c) the first rule that matches applies:

    RULE  := SCHEME [':' COND]...
    SCHEME:= none | tmr | vote | dup | tmr_r3 | vote_r3 | dup_r2 | dup_r3   (cramc.ir.ecc.SCHEMES)
    COND  := sig>=N | sig<=N | sig=N | layer=PATTERN[|PATTERN...]   (fnmatch on the ONNX node name)

The schemes, what each costs and buys, are the entries of the registry
cramc.ir.ecc (docs/error-correction.md).  The pass records the choice as
``ecc=[...]`` (one scheme code per (b, c), b major; 0 is none); tiling reserves
the scratch columns it needs and lowering emits the protected micro-program.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import ClassVar

from cramc.errors import UserError
from cramc.ir.ecc import BY_NAME
from cramc.ir.graph import Graph, Op


@dataclass(frozen=True)
class Rule:
    scheme: int
    sig_lo: int = 0
    sig_hi: int = 1 << 30
    layers: tuple[str, ...] = ()

    def matches(self, op: Op, sig: int) -> bool:
        if not self.sig_lo <= sig <= self.sig_hi:
            return False
        if self.layers and not any(
            fnmatch.fnmatchcase(op.origin, p) or fnmatch.fnmatchcase(op.out, p) for p in self.layers
        ):
            return False
        return True


def parse_spec(spec: str) -> list[Rule]:
    rules: list[Rule] = []
    for text in (r.strip() for r in spec.split(";")):
        if not text:
            continue
        head, *conds = text.split(":")
        if head not in BY_NAME:
            raise UserError(f"--ecc: unknown scheme '{head}' in rule '{text}' (schemes: {', '.join(BY_NAME)})")
        r = Rule(BY_NAME[head].code)
        for c in conds:
            c = c.strip()
            try:
                if c.startswith("sig>="):
                    r = Rule(r.scheme, int(c[5:]), r.sig_hi, r.layers)
                elif c.startswith("sig<="):
                    r = Rule(r.scheme, r.sig_lo, int(c[5:]), r.layers)
                elif c.startswith("sig="):
                    r = Rule(r.scheme, int(c[4:]), int(c[4:]), r.layers)
                elif c.startswith("layer="):
                    r = Rule(r.scheme, r.sig_lo, r.sig_hi, tuple(p for p in c[6:].split("|") if p))
                else:
                    raise ValueError
            except ValueError:
                raise UserError(
                    f"--ecc: cannot read condition '{c}' in rule '{text}' "
                    "(use sig>=N, sig<=N, sig=N or layer=NAME|NAME)"
                ) from None
        rules.append(r)
    return rules


def plan_for(op: Op, rules: list[Rule]) -> list[int]:
    wb, xb = op.attrs["wbits"], op.attrs["xbits"]
    out = []
    for b in range(wb):
        for c in range(xb):
            out.append(next((r.scheme for r in rules if r.matches(op, b + c)), 0))
    return out


@dataclass(frozen=True)
class InsertEcc:
    spec: str = ""
    name: str = "insert-ecc"
    #: the plan must be known before tiling reserves each MVM's scratch columns
    requires: ClassVar[frozenset[str]] = frozenset({"no-conv", "untiled"})
    ensures: ClassVar[frozenset[str]] = frozenset()
    changes_input: ClassVar[bool] = True  # sets ecc= on the MVMs in place

    def run(self, g: Graph) -> Graph:
        rules = parse_spec(self.spec)
        for op in g.ops:
            if op.kind != "mvm":
                continue
            plan = plan_for(op, rules)
            if any(plan):
                op.attrs["ecc"] = plan
        return g
