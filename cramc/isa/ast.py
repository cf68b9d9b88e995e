"""The parsed form of a .cram program: frozen dataclasses carrying source positions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cramc.errors import Loc

# ---- operand and attribute values -------------------------------------------------


@dataclass(frozen=True)
class ArraySet:
    """@lo or @lo:hi, end exclusive."""

    lo: int
    hi: int
    loc: Loc | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True)
class Col:
    index: int
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AccRef:
    """acc3 (hi is None) or acc0:16 (end exclusive)."""

    lo: int
    hi: int | None = None
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Expr:
    """A micro-program parameter plus a constant offset (w+3), or a bare name."""

    name: str
    offset: int = 0
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TensorRef:
    """%name, or %name[i] / %name[3] indexing the first axis."""

    name: str
    index: str | int | None = None
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ConstRef:
    name: str
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Num:
    value: int | float
    text: str = field(default="", compare=False)
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Range:
    lo: int
    hi: int
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ListVal:
    items: tuple[int | float, ...]
    loc: Loc | None = field(default=None, compare=False)


Value = Col | AccRef | Expr | TensorRef | ConstRef | Num | Range | ListVal


@dataclass(frozen=True)
class AttrVal:
    name: str
    value: Value
    loc: Loc | None = field(default=None, compare=False)


# ---- statements -----------------------------------------------------------------


@dataclass(frozen=True)
class Comment:
    text: str  # including the leading ';'
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Blank:
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Instr:
    mnemonic: str
    arrays: ArraySet | None
    operands: tuple[Value, ...]
    attrs: tuple[AttrVal, ...] = ()
    comment: str | None = None
    loc: Loc | None = field(default=None, compare=False)

    def attr(self, name: str) -> Value | None:
        for a in self.attrs:
            if a.name == name:
                return a.value
        return None


@dataclass(frozen=True)
class Repeat:
    var: str
    count: int
    body: tuple[Stmt, ...]
    comment: str | None = None
    loc: Loc | None = field(default=None, compare=False)


Stmt = Instr | Repeat | Comment | Blank


@dataclass(frozen=True)
class Param:
    kind: str  # "col" | "acc" | "int"
    name: str
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Micro:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    comment: str | None = None
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Section:
    name: str  # "init" | "main"
    body: tuple[Stmt, ...]
    comment: str | None = None
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Machine:
    attrs: tuple[AttrVal, ...]
    comment: str | None = None
    loc: Loc | None = field(default=None, compare=False)

    def get(self, name: str) -> int | None:
        for a in self.attrs:
            if a.name == name and isinstance(a.value, Num):
                return int(a.value.value)
        return None


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class IODecl:
    """`.input NAME : TYPE [batch=AXIS] [name="..."]` (or `.output`).

    `batch`: the axis of TYPE that is the model's batch axis (size 1: one sample), so that data files
    carry the samples on that axis, as onnxruntime does, instead of on an extra leading one.
    `data_name`: the tensor's name in data files (the ONNX name, when the program spells it differently).
    """

    direction: str  # "input" | "output"
    name: str
    type: TensorType
    comment: str | None = None
    loc: Loc | None = field(default=None, compare=False)
    batch: int | None = None
    data_name: str | None = None

    @property
    def key(self) -> str:
        """The name in data files: `data_name` if given, else the program's name."""
        return self.data_name if self.data_name is not None else self.name


@dataclass(frozen=True, eq=False)
class DataDecl:
    """A constant in the data section. `encoding` is "list", "b64" or "b64z"."""

    name: str
    type: TensorType
    values: np.ndarray
    encoding: str
    comment: str | None = None
    loc: Loc | None = field(default=None, compare=False)
    raw: str | None = field(default=None, compare=False)  # the payload as parsed, printed verbatim


@dataclass(frozen=True)
class Expect:
    """Embedded validation vectors: input/output name -> data constant, plus tolerance."""

    attrs: tuple[AttrVal, ...]
    comment: str | None = None
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ExpectFloat:
    """The float model's outputs for the validation inputs of `.expect` (output name -> data constant)."""

    attrs: tuple[AttrVal, ...]
    comment: str | None = None
    loc: Loc | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Trace:
    """Reference values of intermediate tensors for sample 0 of the validation vectors (cramc run --trace)."""

    attrs: tuple[AttrVal, ...]
    comment: str | None = None
    loc: Loc | None = field(default=None, compare=False)


TopItem = Machine | IODecl | DataDecl | Expect | ExpectFloat | Trace | Micro | Section | Comment | Blank


@dataclass(frozen=True, eq=False)
class Program:
    items: tuple[TopItem, ...]
    file: str = "<input>"
    source: str = ""

    @property
    def machine(self) -> Machine | None:
        return next((i for i in self.items if isinstance(i, Machine)), None)

    @property
    def micros(self) -> dict[str, Micro]:
        return {i.name: i for i in self.items if isinstance(i, Micro)}

    @property
    def data(self) -> dict[str, DataDecl]:
        return {i.name: i for i in self.items if isinstance(i, DataDecl)}

    def ios(self, direction: str) -> list[IODecl]:
        return [i for i in self.items if isinstance(i, IODecl) and i.direction == direction]

    def section(self, name: str) -> Section | None:
        return next((i for i in self.items if isinstance(i, Section) and i.name == name), None)

    @property
    def expects(self) -> list[Expect]:
        return [i for i in self.items if isinstance(i, Expect)]
