"""Generate the ISA reference (docs/isa.md) from the opcode table.

Everything a user needs to read or write a .cram program comes from the code
that implements it: opcodes, operands and attributes from `opcodes.OPCODES`,
header keys, defaults and limits from the verifier, element types from
`data.DTYPES`, gate truth tables by evaluating each gate's logic.  The prose
here only explains what those tables mean, keyed by the enums of the table so
that a new unit, operand kind or attribute kind without an explanation fails
loudly instead of going undocumented.  What each instruction counts is rendered
from the counting rules (cramc.isa.counting), the ones the simulator and the
cost model count by.

`cramc isa-doc -o docs/isa.md` rewrites the file; tests/test_isa_doc.py fails
when the file and `render_isa_reference()` differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cramc.isa import counting, parser, verifier
from cramc.isa import data as tdata
from cramc.isa.opcodes import INPUT_CELLS, OPCODES, OUTPUT_CELL, Access, AKind, Attr, Kind, Opcode, Operand, Shape, Unit

#: How each operand kind is written.
OPERAND_SYNTAX: dict[Kind, tuple[str, str]] = {
    Kind.COL: (
        "`c12`, `w+3`",
        "a column of every array of the set; in a micro-program also a `col` parameter, "
        "optionally plus or minus a constant",
    ),
    Kind.ACC: (
        "`acc3`, `s+1`",
        "one accumulator slot of every array of the set; in a micro-program also an `acc` "
        "parameter plus or minus a constant",
    ),
    Kind.ACCS: ("`acc0:16`, `acc3`", "a range of accumulator slots, end exclusive, or a single slot"),
    Kind.INT: ("`5`, `k-1`", "an integer; in a micro-program also an `int` parameter plus or minus a constant"),
    Kind.TENSOR: (
        "`%h`, `%h[i]`, `%h[2]`",
        "a CMOS tensor; `[i]` selects along its first axis by a `repeat` "
        "variable or a constant (writing `%h[i]` builds the tensor slice by slice)",
    ),
    Kind.SOURCE: ("`%h`, `$w`", "a CMOS tensor (as above) or a data constant"),
    Kind.MICRO: ("`fa`", "the name of a micro-program"),
}

#: How each attribute kind is written.
ATTR_SYNTAX: dict[AKind, str] = {
    AKind.INT: "an integer (or an `int` parameter)",
    AKind.FLOAT: "a number: `0.5`, `-3`, `1e-3`, `inf`",
    AKind.SCALAR_OR_DATA: "a number, or a data constant `$c` holding one value per channel along `axis`",
    AKind.INTS: "a list of integers: `[1, 2]`",
    AKind.RANGE: "`lo:hi`, end exclusive",
    AKind.DTYPE: "an element type name (see the element types)",
}


@dataclass(frozen=True)
class UnitDoc:
    """What a unit is, remarks on what it counts, and which faults apply.

    What an instruction counts is not written here: it is rendered from the unit's
    counting rule (cramc.isa.counting.RULES), the rule the simulator and the cost
    model count by; `counts` and `counts_cell` only add remarks to it.
    """

    title: str
    about: str
    counts: str  # a remark after the rule's text in the unit's section ("" for none)
    faults: str
    counts_cell: str  # a remark after the rule's text in each opcode's row
    faults_cell: str


UNIT_DOC: dict[Unit, UnitDoc] = {
    Unit.GATE: UnitDoc(
        "CRAM logic gates",
        "A row-parallel gate in the array itself: the output cell is preset, then a pulse across the input "
        "cells switches it or not. All operands are columns of the same arrays; every active row of every "
        "array of the set computes at once. **One MTJ per terminal:** `dst` is a column apart from every input "
        f"({OUTPUT_CELL.why}), and no column is two inputs of one gate ({INPUT_CELLS.why}). The verifier rejects "
        "both, at the operand; inside a micro-program when a call binds two parameters to one column, and in the "
        "definition itself when two operands are the same expression. **Each gate includes the preset write of its "
        "output cell and is counted as such**: one gate evaluation is one preset write plus one switching pulse.",
        "`gate_evals` is reported again as `preset_writes`",
        "`[gates] <mnemonic>` (or `default`) in the error model: each output bit flips 0->1 with p01 and "
        "1->0 with p10, judged on its correct value; counted in `faults.gate`",
        "one preset write + one pulse each",
        "`[gates] {mn}`: p01 / p10 on each dst bit",
    ),
    Unit.WRITE: UnitDoc(
        "Writes through the periphery",
        "Host data written into array columns through the normal memory path.",
        "a write is one bit stored in one cell",
        "`[write]`: each written bit is stored flipped with p01 / p10; counted in `faults.write`",
        "",
        "`[write]`: p01 / p10 on each stored bit",
    ),
    Unit.READ: UnitDoc(
        "Reads through the periphery",
        "Columns sensed and handed to the CMOS side as integers.",
        "a read is one bit sensed",
        "`[read]`: each sensed bit is misread with p01 / p10, the cell keeps its value; counted in `faults.read`",
        "",
        "`[read]`: p01 / p10 on each sensed bit",
    ),
    Unit.TREE: UnitDoc(
        "Adder tree (CMOS, beside each array)",
        "Counts the ones of a sensed column over the active rows of each array and adds the count, shifted, "
        "into an exact int64 accumulator: the accumulation of an MVM without sequential MRAM writes.",
        "rows recomputed: the active rows where the two copies of a duplicate-and-compare op differ",
        "`[read]` on every sensed bit (counted in `faults.read`); `tree`: each of the bit_length(active rows) "
        "low bits of the count flips with that probability (counted in `faults.tree`); exact by default",
        "",
        "`[read]` on each sensed bit; `tree` on each bit of the count",
    ),
    Unit.ACC: UnitDoc(
        "Accumulator file (CMOS, beside each array)",
        "The int64 accumulator slots of each array.",
        "",
        "none: exact",
        "",
        "none",
    ),
    Unit.CMOS: UnitDoc(
        "CMOS vector unit",
        "Everything between MVMs: quantisation, activations, pooling, reshapes. Tensors carry one inference "
        "(the simulator adds the sample axis); integer tensors are int64, float tensors float32. The "
        "semantics are the reference implementations in cramc/isa/cmos.py (ONNX semantics where named).",
        "",
        "none: exact",
        "",
        "none",
    ),
    Unit.CONTROL: UnitDoc(
        "Control",
        "Micro-program calls. The verifier inlines every call when it links the program, so a call costs "
        "nothing by itself: its body's instructions are counted.",
        "nothing: the body's instructions count",
        "none (the body's apply)",
        "the body's",
        "the body's",
    ),
}


def _check_complete() -> None:
    missing = (
        [f"unit {u.name}" for u in Unit if u not in UNIT_DOC]
        + [f"operand kind {k.name}" for k in Kind if k not in OPERAND_SYNTAX]
        + [f"attribute kind {k.name}" for k in AKind if k not in ATTR_SYNTAX]
    )
    if missing:
        raise AssertionError("cramc.isa.docgen has no documentation for " + ", ".join(missing))


def _factor_text(f: counting.Factor, op: Opcode | None) -> str:
    """How a factor of a counting rule reads, for one opcode (its own values filled in) or for its unit."""
    if op is not None and op.tree is not None and f is counting.Factor.COPIES:
        return str(op.tree.copies)
    if op is not None and f in (counting.Factor.RECOMPUTE_SENSED, counting.Factor.RECOMPUTED):
        if op.tree is None or not op.tree.recompute:
            return "0"  # nothing to recompute
        if f is counting.Factor.RECOMPUTE_SENSED:
            return str(len(op.tree.recompute))
    if op is not None and f is counting.Factor.COLUMNS:
        span = next((o.span for o in op.operands if o.span is not None), None)
        if span is None:
            return "1"
        parts = [f"`{span.bits}`"]
        if span.fields:
            parts.append(f"`{span.fields}` (at least 1)")
        if span.fields_of:
            parts.append(f"the fields of `{span.fields_of}`")
        return " x ".join(parts)
    return f.value + (" (measured)" if f in counting.MEASURED else "")


def _counts_text(unit: Unit, op: Opcode | None, remark: str) -> str:
    """What an instruction counts, rendered from its unit's counting rule: `counter` += factor x ..."""
    parts = []
    for e in counting.RULES[unit].events:
        factors = [_factor_text(f, op) for f in e.factors]
        if "0" in factors:
            continue  # this opcode never adds to it (e.g. a plain tree op: no recompute)
        product = " x ".join(t for t in factors if t != "1") or "1"
        key = counting.COUNTERS[e.counter]
        if op is not None:
            key = key.replace("<mnemonic>", op.mnemonic)
        parts.append(f"`{key}` += {product}")
    text = "; ".join(parts)
    if remark:
        text = f"{text} ({remark})" if text else remark
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


#: How each declared tensor shape (cramc.isa.opcodes.Shape) reads in an operand's entry.
SHAPE_DOC: dict[Shape, str] = {
    Shape.SLICED: "integer, shape [n, rows] or [n, rows, F]",
    Shape.SLOTS: "integer, shape [n, slots]",
    Shape.SEMANTIC: "shape and type from the semantics",
}


def _operand(op: Opcode, o: Operand, variadic_last: bool) -> str:
    """An operand's entry: its kind and what the table declares about its dataflow (what the verifier checks)."""
    s = f"`{o.name}`: {o.kind.value}"
    if o.access is not Access.VALUE:
        s += f" ({o.access.value})"
    if o.span is not None:
        fields = f"`{o.span.fields}`" if o.span.fields else f"the F of `{o.span.fields_of}`"
        s += f", spans `{o.span.bits}` x {fields} columns"
    if o.shape is not None:
        s += f", {SHAPE_DOC[o.shape]}"
    if o.bounds is not None:
        s += f", {o.bounds.text}"
    if o.distinct is not None:
        if o.distinct.of_reads:
            others = ", ".join(f"`{p.name}`" for p in op.operands if p.kind is Kind.COL and p.reads)
            s += f", the {o.distinct.what} operand: a column distinct from every input ({others})"
        else:
            others = ", ".join(f"`{p.name}`" for p in op.operands if p.distinct == o.distinct and p is not o)
            article = "an" if o.distinct.what[0] in "aeiou" else "a"
            s += f", {article} {o.distinct.what} operand: a column distinct from {others}"
    if variadic_last:
        s += ", repeatable"
    return s


def _attr(a: Attr) -> str:
    s = f"`{a.name}=` {_cell(a.kind.value)}" + (" **required**" if a.required else "")
    if a.bounds is not None:
        s += f" {a.bounds.text}"
    if a.doc:
        s += f": {_cell(a.doc)}"
    return s


def _syntax(op: Opcode) -> str:
    parts = [op.mnemonic]
    if op.on_arrays:
        parts.append("@lo:hi")
    ops = ", ".join(o.name for o in op.operands) + (", ..." if op.variadic else "")
    text = " ".join(parts) + (" " + ops if ops else "")
    if op.mnemonic == "call":
        text += " name=value ..."
    attrs = " ".join(f"{a.name}=.." if a.required else f"[{a.name}=..]" for a in op.attrs)
    return f"`{text}{' ' + attrs if attrs else ''}`"


def truth_table(op: Opcode) -> str:
    """Outputs of a gate for input patterns 0 .. 2^n - 1 (bit i of the pattern is in<i>), pattern 0 first."""
    n = len(op.operands) - 1
    k = np.arange(1 << n, dtype=np.uint64)
    ins = [
        np.array([np.bitwise_or.reduce(((k >> np.uint64(i)) & np.uint64(1)) << k)], dtype=np.uint64) for i in range(n)
    ]
    out = int(op.logic(*ins)[0])  # type: ignore[misc]
    return "".join(str((out >> j) & 1) for j in range(1 << n))


def _machine_section() -> list[str]:
    limits = {
        "arrays": verifier.MAX_ARRAYS,
        "rows": verifier.MAX_ROWS,
        "cols": verifier.MAX_COLS,
        "accs": verifier.MAX_ACCS,
    }
    defaults = {"accs": str(verifier.DEFAULT_ACCS)}
    what = {
        "arrays": "CRAM arrays on the chip (each with its own adder tree and accumulators)",
        "rows": "rows per array: the SIMD width of a gate",
        "cols": "columns (bit cells) per row",
        "accs": "int64 accumulator slots beside each array",
    }
    out = [
        "## Machine model",
        "",
        "A chip is `arrays` CRAM arrays of `rows` x `cols` one-bit cells. A gate names columns; every active "
        "row of every array of its array set computes at once. Operands of a gate sit in the same row: moving "
        "a bit to another row or array goes through the periphery (`rd`, CMOS, `wr`). Beside each array a CMOS "
        "adder tree counts ones of a column into exact int64 accumulators; a CMOS vector unit holds tensors "
        "and does everything between matrix-vector products.",
        "",
        "A chip starts zeroed and runs `.init` once (its weights are resident: what `.init` writes, write "
        "faults included, stays for every inference on that chip; `cramc run --chip-seed S` names the chip, "
        "`--chips N` runs several). Each sample (inference) then runs `.main` on a copy of that chip's state, "
        "side by side in sample lanes; their `.main` faults are independent. An `.init` that reads an "
        "inference input runs per sample.",
        "",
        "The header `.machine key=value ...` sizes the chip:",
        "",
        "| key | required | default | limit | meaning |",
        "|---|---|---|---|---|",
    ]
    for k, req in verifier.MACHINE_KEYS.items():
        out.append(f"| `{k}` | {'yes' if req else 'no'} | {defaults.get(k, '-')} | {limits[k]} | {what.get(k, '')} |")
    out += [
        "",
        f"The chip may hold at most {verifier.MAX_CELLS} cells (arrays x cols x rows rounded up to 64) per "
        "sample, checked before anything is allocated.",
        "",
    ]
    return out


def _structure_section() -> list[str]:
    types = ", ".join(f"`{k}`" for k in tdata.DTYPES)
    narrow = "; ".join(f"`{k}` holds {lo}..{hi}" for k, (lo, hi) in tdata.NARROW.items())
    return [
        "## Program structure",
        "",
        "A program is line oriented: one statement per line, `;` starts a comment to the end of the line, "
        "blocks open with `{` at the end of a line and close with `}` on a line of its own. `cramc fmt` prints "
        "the canonical form.",
        "",
        "| statement | where | meaning |",
        "|---|---|---|",
        "| `.machine arrays=N rows=N cols=N [accs=N]` | top, once | the chip (see the machine model) |",
        '| `.input NAME : TYPE [batch=AXIS] [name="..."]` | top | a program input, one tensor per sample, e.g. '
        "`.input x : u8[4,256,2]`; `batch=AXIS`: that axis (of size 1) is the model's batch axis, so data files "
        "carry the samples on it (`f32[1,784] batch=0` reads `[N, 784]`, and also `[N, 1, 784]`), as onnxruntime "
        "does; without it the samples are an extra leading axis; `name=`: the input's name in data files, a "
        'JSON string (the ONNX name, e.g. `name="gpu_0/data_0"`), when it differs from NAME |',
        '| `.output NAME : TYPE [batch=AXIS] [name="..."]` | top | a program output; `.main` must define tensor '
        "`%NAME` with this shape; `batch=` and `name=` as for `.input` (`f32[1,10] batch=0` is written `[N, 10]`) |",
        "| `.data $NAME : TYPE = PAYLOAD` | top | a constant: an inline list `[1, -2, 3]` or the little-endian "
        'bytes in base64, `b64"..."`, or zlib-compressed base64, `b64z"..."` |',
        "| `.expect NAME=$DATA ... [tol=X]` | top, at most once | validation vectors: for every input and output "
        "a data constant with a leading sample axis; `cramc run` without `--input` runs the inputs and compares "
        "the outputs within `tol` (default 0) |",
        "| `.expect_float NAME=$DATA ...` | top, at most once, with `.expect` | the float model's outputs for the "
        "inputs of `.expect`, shape `[N, *shape]` per output: `.expect` holds onnxruntime's outputs of the "
        "quantised model, so a match checks compilation and simulation, and `cramc run` also reports the top-1 "
        "agreement with the float model |",
        "| `.trace NAME=$DATA ...` | top | reference values of intermediate tensors for sample 0 of the "
        "validation vectors, shape `[1, *shape]` (`cramc run --trace`) |",
        "| `.micro NAME(col a, acc s, int k) {` ... `}` | top | a micro-program: instructions without array sets, "
        "run on the array set of each `call`; parameters are columns, accumulator slots or integers |",
        "| `.init {` ... `}` | top, optional | runs before `.main` (e.g. writes the weights) |",
        "| `.main {` ... `}` | top, required | the computation |",
        "| `repeat VAR N {` ... `}` | inside a block | runs its body N times with VAR = 0 .. N-1; VAR indexes "
        "tensors, `%h[VAR]` |",
        "| `MNEMONIC [@lo:hi] OPERANDS [ATTR=VALUE ...]` | inside a block | an instruction (below) |",
        "",
        f"Element types: {types}. {narrow} (stored one per byte). A TYPE is `dtype[d0,d1,...]`, the shape of "
        "one sample's tensor.",
        "",
        "### Instructions",
        "",
        "`@lo:hi` is the array set, arrays lo .. hi-1 (`@3` is array 3 alone). Instructions that act on arrays "
        "need one outside micro-programs and take none inside (the call gives it). `rows=lo:hi` restricts an "
        "array instruction to rows lo .. hi-1; instructions inside a micro-program without `rows=` inherit the "
        "call's. The verifier checks operand kinds and counts, ranges against the header, and dataflow: no "
        "column read before it is written, no tensor used before it is defined, CMOS shapes. It reads what "
        "each instruction's table below declares per operand: whether the instruction reads it, writes it (a "
        "tensor: defines it) or both (all reads come first, so an instruction may write what it reads), how "
        "many columns a column operand spans, the shape a tensor operand has (n: the arrays of the set, or "
        "for a source of `wr` one entry per `repeat` arrays or a single entry for all; rows: the active rows; "
        "slots: the accumulator range), the values an integer may take, and which operands must name "
        "distinct columns. Accumulator slots start at 0, so reading one before writing it is allowed.",
        "",
        "| operand kind | written as | meaning |",
        "|---|---|---|",
        *(f"| {k.value} | {syntax} | {meaning} |" for k, (syntax, meaning) in OPERAND_SYNTAX.items()),
        "",
        "| attribute kind | written as |",
        "|---|---|",
        *(f"| {_cell(k.value)} | {syntax} |" for k, syntax in ATTR_SYNTAX.items()),
        "",
    ]


def _unit_section(unit: Unit, ops: list[Opcode]) -> list[str]:
    doc = UNIT_DOC[unit]
    out = [
        f"## {doc.title} (unit `{unit.value}`)",
        "",
        doc.about,
        "",
        f"- **Counts** (each execution, per sample; `opcodes.<mnemonic>.instructions` counts executions x "
        f"samples): {_counts_text(unit, None, doc.counts)}.",
        f"- **Faults:** {doc.faults}.",
        "",
    ]
    gate = unit is Unit.GATE
    if gate:
        out += [
            "The truth table lists the output for input patterns 0, 1, 2, ... where bit i of the pattern is "
            "`in<i>`: `and` is `0001`, 1 only when in0 = in1 = 1.",
            "",
        ]
    cols = ["mnemonic", "syntax", "operands", "attributes", "semantics", "counts", "faults"]
    if gate:
        cols.insert(5, "truth table")
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for op in ops:
        operands = "<br>".join(
            _operand(op, o, op.variadic and i == len(op.operands) - 1) for i, o in enumerate(op.operands)
        )
        attrs = "<br>".join(_attr(a) for a in op.attrs) or "-"
        cells = [f"`{op.mnemonic}`", _syntax(op), operands, attrs, _cell(op.semantics or op.summary)]
        if gate:
            cells.append(f"`{truth_table(op)}`")
        cells += [_counts_text(unit, op, doc.counts_cell), doc.faults_cell.format(mn=op.mnemonic)]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def _e(x: float, digits: int = 1) -> str:
    """5e13, 7.6e8: a large number in scientific notation without the '+' and leading zeros."""
    mant, exp = f"{float(x):.{digits - 1}e}".split("e")
    return f"{mant}e{int(exp)}"


def _limits_section() -> list[str]:
    """The bounds that keep an untrusted program from exhausting memory, time or the stack."""
    work = verifier.DEFAULT_MAX_WORK
    return [
        "## Limits",
        "",
        "A program can come from anywhere, so every resource it can ask for is bounded; each bound is a located "
        "error of `cramc check` (the last one of `cramc run`), never a crash:",
        "",
        "| what | limit | checked |",
        "|---|---|---|",
        f"| program text | {parser.MAX_SOURCE_BYTES} bytes | before the file is read |",
        f"| decoded data constants, all together | {tdata.MAX_DATA_BYTES} bytes ({tdata.MAX_DATA_BYTES >> 20} MiB) "
        "| before each constant is decoded, from its declared type; a `b64z` payload is inflated by a streaming "
        "decompressor that stops at the declared size, so a small file cannot inflate to more |",
        f"| elements of one data constant | {tdata.MAX_ELEMENTS} | from the declared type |",
        f"| elements of one CMOS tensor per sample | {verifier.MAX_TENSOR_ELEMENTS} | declared or inferred shapes |",
        f"| cells of the chip per sample | {verifier.MAX_CELLS} | the `.machine` header |",
        f"| nesting of blocks | {parser.MAX_NESTING} levels | `.init`, `.main`, `.micro` and `repeat` blocks in the "
        "text; loops and micro-program calls together, counted through calls |",
        f"| instructions of the linked program | {verifier.MAX_LINKED} | micro-program calls are inlined, so calls "
        "inside called micro-programs multiply |",
        f"| work of a run | {_e(work)} units unless `cramc run --max-work N` (`inf`: no limit) | before the "
        "simulation starts; the error states the estimate |",
        "",
        "The work of a run is what the simulator does, counted statically (loops unrolled by their trip counts, "
        "calls inlined, `.init` and `.main` together): samples x row operations per sample (an instruction on the "
        "arrays: arrays x active rows; a CMOS instruction: the elements it reads and writes) + "
        f"{verifier.DISPATCH_COST} x instructions and loop iterations executed, once per batch of sample lanes "
        "(dispatching an instruction costs about as much as that many row operations). The default admits about "
        "half an hour of simulation on one CPU core. Measured: light ResNet-50 of onnx's model zoo needs 1.5e13 "
        "for its 4 validation vectors (2.0e8 instructions, 5.4e11 row operations per sample), MNIST LeNet-5 "
        "(models/) 1.0e9 for its validation vectors and 5.8e11 for 10 000 images; a program that executes "
        f"{_e(work // verifier.DISPATCH_COST + 1, 2)} instructions or more needs `--max-work`.",
        "",
    ]


def render_isa_reference() -> str:
    """The full ISA reference as Markdown (the content of docs/isa.md)."""
    _check_complete()
    out = [
        "# CRAM-ER instruction set reference",
        "",
        "<!-- Generated from cramc/isa/opcodes.py by `cramc isa-doc -o docs/isa.md`; do not edit by hand. -->",
        "",
        "CRAM-ER is the assembly language of cramc: the compiler emits it, `cramc check` verifies it, "
        "`cramc run` executes it on the bit-level, fault-injecting simulator. This reference is generated "
        "from the single opcode table (cramc/isa/opcodes.py) and the verifier's limits; "
        "docs/error-model.md describes the fault model and its parameters.",
        "",
        "Contents: machine model; program structure; limits; one section per unit: "
        + ", ".join(UNIT_DOC[u].title for u in Unit if any(op.unit is u for op in OPCODES.values()))
        + ".",
        "",
    ]
    out += _machine_section()
    out += _structure_section()
    out += _limits_section()
    for unit in Unit:
        ops = [op for op in OPCODES.values() if op.unit is unit]
        if ops:
            out += _unit_section(unit, ops)
    return "\n".join(out).rstrip("\n") + "\n"
