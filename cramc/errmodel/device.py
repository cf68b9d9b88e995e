"""Device model: a CRAM gate's input-dependent error, energy and latency from MTJ parameters.

A CRAM gate (Zabihi et al. 2019; Lv et al. 2024) presets its output cell and
then applies one voltage pulse V across the input MTJs, which the logic line
connects in parallel, in series with the output MTJ.  Logic 0 is the parallel,
low-resistance state (R_P) and logic 1 the antiparallel, high-resistance state
(R_AP = R_P (1 + TMR)).  The more inputs are 1, the smaller the current through
the output; the output switches away from its preset when that current is large
enough for the pulse.  So a gate is a threshold device: with k of its n inputs
at 1, it switches for k <= k_th and keeps its preset for k > k_th, and its
error depends on k: large next to the threshold, small far from it.

This module turns `DeviceParams` into, per gate and per number of inputs at 1,

* the probability that the output is wrong (`gate_error_table`, the
  ``by_ones = [p0, ..., pn]`` of the error model),
* the energy of one evaluation (`gate_energy_table`, `gate_energy`) and its
  latency (`gate_latency`),

for the bias voltage the gate is operated at (`gate_voltage`, chosen inside the
gate's voltage window, `voltage_window`).  It is pure: numbers in, numbers out,
no state, no I/O.  The equations, the parameters and their sources are in
docs/error-model.md, section "Device model: gate errors from MTJ parameters";
``python -m cramc.errmodel.device`` prints that section's tables.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np

from cramc.errors import InternalError, UserError
from cramc.isa.opcodes import OPCODES, Opcode, Unit

SwitchingModel = Literal["combined", "thermal", "precessional"]
VoltageRule = Literal["minimax", "mid"]
SWITCHING_MODELS: tuple[str, ...] = ("combined", "thermal", "precessional")
VOLTAGE_RULES: tuple[str, ...] = ("minimax", "mid")

#: Reference temperature at which `DeviceParams.delta` is given (K).
T_REF = 300.0


@dataclass(frozen=True)
class DeviceParams:
    """MTJ, cell and pulse parameters of a CRAM array (SI units).

    Defaults describe a present-day STT-MTJ CRAM; the source of each (or the
    reasoning behind it, where it is an assumption) is in docs/error-model.md.
    Invalid values raise `cramc.errors.UserError` naming the field.
    """

    r_p: float = 3.1e3  #: parallel (logic 0) MTJ resistance, ohm
    tmr: float = 1.0  #: TMR ratio (R_AP - R_P) / R_P; 1.0 = 100 %
    r_access: float = 1.0e3  #: series resistance of each cell's path to the logic line (transistor + wire), ohm
    delta: float = 45.0  #: thermal stability factor E_b / (k_B T) at T_REF
    temperature: float = 300.0  #: operating temperature, K (scales delta as T_REF / T)
    i_c0: float = 100e-6  #: intrinsic critical current of the AP -> P switch (to logic 0), A
    ic0_asymmetry: float = 1.0  #: I_c0(P -> AP) / I_c0(AP -> P)
    tau0: float = 1e-9  #: attempt time of thermally activated switching, s
    tau_d: float = 1e-9  #: characteristic time of precessional switching (1 + a^2) / (a gamma mu0 H_k), s
    t_pulse: float = 10e-9  #: logic pulse width, s
    t_preset: float = 3e-9  #: preset write pulse width, s
    preset_overdrive: float = 3.0  #: preset write current / I_c0 of its direction
    preset_mismatch: float = 0.5  #: probability that the output cell must change state to take its preset
    switching_model: SwitchingModel = "combined"  #: which switching-probability model (see `switching_probability`)
    voltage_rule: VoltageRule = "minimax"  #: how a gate's bias voltage is chosen inside its window

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("switching_model", "voltage_rule"):
                allowed = SWITCHING_MODELS if f.name == "switching_model" else VOLTAGE_RULES
                if v not in allowed:
                    raise UserError(f"device parameter {f.name}: {v!r} is not one of {', '.join(allowed)}")
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise UserError(f"device parameter {f.name}: must be a finite number, got {v!r}")
        positive: tuple[str, ...] = ("r_p", "tmr", "delta", "temperature", "i_c0", "ic0_asymmetry", "tau0", "tau_d")
        positive += ("t_pulse", "t_preset", "preset_overdrive")
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"device parameter {name}: must be > 0, got {getattr(self, name)!r}")
        if self.r_access < 0:
            raise UserError(f"device parameter r_access: must be >= 0, got {self.r_access!r}")
        if not 0 <= self.preset_mismatch <= 1:
            raise UserError(
                f"device parameter preset_mismatch: must be a probability in [0, 1], got {self.preset_mismatch!r}"
            )

    @property
    def r_ap(self) -> float:
        """Antiparallel (logic 1) resistance R_P (1 + TMR)."""
        return self.r_p * (1.0 + self.tmr)

    @property
    def delta_eff(self) -> float:
        """Thermal stability at the operating temperature: delta T_REF / T (barrier held fixed)."""
        return self.delta * T_REF / self.temperature

    def with_(self, **changes: float | str) -> DeviceParams:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GateCircuit:
    """How a gate is built: inputs, the preset of its output cell, and where it switches.

    The output switches away from `preset` exactly when at most `threshold` of
    the `n_inputs` inputs are 1 (the current through the output falls as
    inputs go to the high-resistance state 1).
    """

    name: str
    n_inputs: int
    preset: int  # 0 or 1
    threshold: int  # k_th: switches for k <= k_th ones

    def ideal_output(self, ones: int) -> int:
        """The gate's output for `ones` inputs at 1, by construction of the circuit."""
        return 1 - self.preset if ones <= self.threshold else self.preset


def circuit_of(op: Opcode) -> GateCircuit:
    """The preset + threshold circuit that realises gate `op`, read off its truth table in the opcode table.

    A CRAM gate's inputs are alike, so its output can depend only on how many of
    them are 1; the current falls as inputs go to the high-resistance state 1,
    so the output keeps its preset above a threshold count and switches at or
    below it.  Hence preset = the output with every input at 1 and k_th = the
    largest count whose output differs.  A gate in the table whose logic is not
    such a threshold function cannot be built this way (InternalError).
    """
    n = len(op.operands) - 1  # dst, then the inputs
    assert op.logic is not None
    # the truth table per input count: the first k inputs at 1, on one-bit words
    outs = [
        int(op.logic(*(np.array([1 if i < k else 0], dtype=np.uint8) for i in range(n)))[0] & 1) for k in range(n + 1)
    ]
    preset = outs[n]
    flipped = [k for k in range(n + 1) if outs[k] != preset]
    threshold = max(flipped) if flipped else -1
    if flipped != list(range(threshold + 1)):
        raise InternalError(f"gate {op.mnemonic}: outputs by input count {outs} are not a threshold function")
    return GateCircuit(op.mnemonic, n, preset, threshold)


#: Every CRAM gate of the ISA as a preset + threshold circuit, derived from the opcode table: preset-0
#: gates switch P -> AP (to 1) and invert; preset-1 gates switch AP -> P (to 0).  This is the
#: construction of [Zabihi19] and of the reprogrammable MTJ gates of [M14, Tables 4.1-4.2]; a new gate
#: in the table gets its circuit here without an edit.
CIRCUITS: dict[str, GateCircuit] = {op.mnemonic: circuit_of(op) for op in OPCODES.values() if op.unit is Unit.GATE}


def gate_circuit(gate: str) -> GateCircuit:
    """The circuit of gate mnemonic `gate`; a `UserError` for anything that is not a CRAM gate."""
    op = OPCODES.get(gate)
    if gate not in CIRCUITS or op is None or op.unit is not Unit.GATE:
        raise UserError(f"device model: {gate!r} is not a CRAM gate (gates are {', '.join(CIRCUITS)})")
    return CIRCUITS[gate]


# ----------------------------------------------------------------- circuit


def path_resistances(gate: str, params: DeviceParams) -> np.ndarray:
    """Series resistance input-network + output of the gate, for k = 0..n inputs at 1 (ohm).

    R(k) = [ (n - k) / (R_P + R_a) + k / (R_AP + R_a) ]^-1 + R_out + R_a, with
    R_out the output MTJ in its preset state and R_a each cell's access path.
    """
    c = gate_circuit(gate)
    k = np.arange(c.n_inputs + 1, dtype=float)
    g_in = (c.n_inputs - k) / (params.r_p + params.r_access) + k / (params.r_ap + params.r_access)
    r_out = params.r_ap if c.preset == 1 else params.r_p
    return 1.0 / g_in + r_out + params.r_access


def gate_currents(gate: str, params: DeviceParams, voltage: float | None = None) -> tuple[float, ...]:
    """Current through the output cell for k = 0..n inputs at 1 (A), at `voltage` or the gate's own."""
    v = gate_voltage(gate, params) if voltage is None else voltage
    return tuple(float(x) for x in v / path_resistances(gate, params))


def _ic0(preset: int, params: DeviceParams) -> float:
    """Critical current of the logic switch away from `preset` (AP -> P when preset is 1)."""
    return params.i_c0 if preset == 1 else params.i_c0 * params.ic0_asymmetry


# --------------------------------------------------------------- switching


def log_no_switch(i: np.ndarray | float, t: float, params: DeviceParams) -> np.ndarray:
    """ln(1 - P_sw) for a pulse of width `t` at normalised current i = I / I_c0 (exact in the tails).

    thermal       P = 1 - exp(-(t / tau0) exp(-Delta (1 - i)))   for i < 1, barrier 0 (i = 1) above
    precessional  P = exp(-(pi^2 Delta / 4) exp(-2 (i - 1) t / tau_d))   for i > 1, 0 below
    combined      1 - P = (1 - thermal) (1 - precessional): two independent ways to switch
    """
    i = np.asarray(i, dtype=float)
    d = params.delta_eff
    with np.errstate(over="ignore", under="ignore"):
        rate = (t / params.tau0) * np.exp(-d * np.maximum(0.0, 1.0 - i))
        lq_th = -rate
        y = 2.0 * np.maximum(i - 1.0, 0.0) * t / params.tau_d
        a = (math.pi**2 * d / 4.0) * np.exp(-y)  # P_prec = exp(-a)
        lq_pr = np.where(i > 1.0, np.log(-np.expm1(-np.maximum(a, 1e-300))), 0.0)
    if params.switching_model == "thermal":
        return lq_th
    if params.switching_model == "precessional":
        return lq_pr
    return lq_th + lq_pr


def switching_probability(i: np.ndarray | float, t: float, params: DeviceParams) -> np.ndarray:
    """Probability that an MTJ switches in a pulse of width `t` at normalised current i = I / I_c0."""
    return -np.expm1(log_no_switch(i, t, params))


def preset_error(gate: str, params: DeviceParams) -> float:
    """Probability that the preset leaves the output cell at the wrong value.

    The preset is a write at `preset_overdrive` x I_c0 of its direction for
    `t_preset`; it fails only when the cell had to change state
    (`preset_mismatch`) and did not switch.
    """
    gate_circuit(gate)  # the write is the same for every gate (overdrive is relative to its direction)
    q = float(np.exp(log_no_switch(params.preset_overdrive, params.t_preset, params)))
    return params.preset_mismatch * q


def _errors_at(gate: str, params: DeviceParams, voltage: float) -> np.ndarray:
    """P(output wrong) for k = 0..n at `voltage`, preset failure included."""
    c = gate_circuit(gate)
    i = (voltage / path_resistances(gate, params)) / _ic0(c.preset, params)
    lq = log_no_switch(i, params.t_pulse, params)
    q_fail = np.exp(lq)  # should switch, does not
    p_false = -np.expm1(lq)  # should not switch, does
    pf = preset_error(gate, params)
    k = np.arange(c.n_inputs + 1)
    # A failed preset leaves the cell at NOT preset, where the pulse cannot move it (it pushes that way).
    return np.where(k <= c.threshold, (1.0 - pf) * q_fail, pf + (1.0 - pf) * p_false)


# ---------------------------------------------------------- bias voltage


def _bisect(f, lo: float, hi: float, iters: int = 200) -> float:  # noqa: ANN001 - a scalar predicate
    """The point in [lo, hi] where the decreasing sign of f(x) changes (geometric bisection)."""
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi / lo - 1.0 < 1e-14:
            break
    return math.sqrt(lo * hi)


def half_switching_current(params: DeviceParams, preset: int = 1) -> float:
    """The current (A) that switches the output away from `preset` with probability 1/2 in one pulse."""
    ic = _ic0(preset, params)
    i50 = _bisect(lambda i: 0.5 - float(switching_probability(i, params.t_pulse, params)), 1e-6, 1e6)
    return i50 * ic


def voltage_window(gate: str, params: DeviceParams) -> tuple[float, float]:
    """(V_min, V_max): the bias range in which the gate realises its truth table.

    Inside it the threshold state k_th gets more than the half-switching
    current I_50 of the pulse and state k_th + 1 less:
    V_min = I_50 R(k_th), V_max = I_50 R(k_th + 1).
    """
    c = gate_circuit(gate)
    r = path_resistances(gate, params)
    i50 = half_switching_current(params, c.preset)
    return float(i50 * r[c.threshold]), float(i50 * r[c.threshold + 1])


def gate_voltage(gate: str, params: DeviceParams) -> float:
    """The bias voltage the gate runs at, chosen inside its window by `params.voltage_rule`.

    ``mid``: the middle of `voltage_window`.  ``minimax``: the voltage that
    minimises the worst error over the input counts; errors fall away from the
    threshold, so that is where the threshold state's failure to switch equals
    the next state's false switch (both decreasing/increasing in V: one root).
    """
    c = gate_circuit(gate)
    lo, hi = voltage_window(gate, params)
    if params.voltage_rule == "mid":
        return 0.5 * (lo + hi)

    def gap(v: float) -> float:
        e = _errors_at(gate, params, v)
        fail, false = e[c.threshold], e[c.threshold + 1]
        return math.log(max(fail, 1e-320)) - math.log(max(false, 1e-320))

    return _bisect(gap, lo * 1e-3, hi * 1e3)


# ------------------------------------------------------------ the tables


def gate_error_table(gate: str, params: DeviceParams, voltage: float | None = None) -> tuple[float, ...]:
    """P(output wrong) with k = 0..n of the gate's inputs at 1 (``by_ones``; not/copy have 2 entries)."""
    v = gate_voltage(gate, params) if voltage is None else _check_voltage(voltage)
    return tuple(float(x) for x in _errors_at(gate, params, v))


def realised_outputs(gate: str, params: DeviceParams, voltage: float | None = None) -> tuple[int, ...]:
    """The output the gate most likely produces for k = 0..n ones (switching probability > 1/2)."""
    c = gate_circuit(gate)
    v = gate_voltage(gate, params) if voltage is None else _check_voltage(voltage)
    i = (v / path_resistances(gate, params)) / _ic0(c.preset, params)
    switched = switching_probability(i, params.t_pulse, params) > 0.5
    return tuple(int(1 - c.preset if s else c.preset) for s in switched)


def preset_energy(params: DeviceParams, preset: int = 1) -> float:
    """Energy of the preset write (J): I_w^2 (R_mean + R_a) t_preset, I_w = overdrive x I_c0.

    The cell's value before the preset is unknown, so its resistance is taken
    as the mean of R_P and R_AP.
    """
    i_w = params.preset_overdrive * _ic0(1 - preset, params)
    r = 0.5 * (params.r_p + params.r_ap) + params.r_access
    return i_w * i_w * r * params.t_preset


def gate_energy_table(gate: str, params: DeviceParams, voltage: float | None = None) -> tuple[float, ...]:
    """Energy of one evaluation (J) for k = 0..n inputs at 1: V I(k) t_pulse + the preset write."""
    c = gate_circuit(gate)
    v = gate_voltage(gate, params) if voltage is None else _check_voltage(voltage)
    i = v / path_resistances(gate, params)
    return tuple(float(x) for x in v * i * params.t_pulse + preset_energy(params, c.preset))


def gate_energy(gate: str, params: DeviceParams, p_one: float = 0.5) -> float:
    """Mean energy of one evaluation (J) when each input is 1 independently with probability `p_one`."""
    if isinstance(p_one, bool) or not isinstance(p_one, (int, float)) or not 0 <= p_one <= 1:
        raise UserError(f"device model: p_one must be a probability in [0, 1], got {p_one!r}")
    c = gate_circuit(gate)
    e = np.asarray(gate_energy_table(gate, params))
    w = np.array([math.comb(c.n_inputs, k) * p_one**k * (1 - p_one) ** (c.n_inputs - k) for k in range(c.n_inputs + 1)])
    return float(np.dot(w, e))


def gate_latency(gate: str, params: DeviceParams) -> float:
    """Time of one evaluation (s): the preset write, then the logic pulse."""
    gate_circuit(gate)
    return params.t_preset + params.t_pulse


#: What the gate energy that feeds the cost model assumes about the inputs (`cost_overrides`).
COST_INPUT_ASSUMPTION = "each input 1 with probability 1/2, independently"


def cost_overrides(params: DeviceParams, base_name: str = "") -> dict[str, object]:
    """Cost-model overrides ({"gate": {mnemonic: {...}}, "name": ...}) for `cramc.cost.params.Tech.with_overrides`.

    Per gate: ``energy_j`` (per row-level evaluation) is `gate_energy` averaged over input states with each
    input 1 with probability 1/2 (`COST_INPUT_ASSUMPTION`; the measured input distribution is not used), and
    ``latency_s`` (per instruction, every row in parallel) is `gate_latency`.  They replace the technology
    file's [gate.*] figures; the name says so in every cost report.
    """
    gates = {g: {"energy_j": gate_energy(g, params), "latency_s": gate_latency(g, params)} for g in CIRCUITS}
    note = f"CRAM gate energy and latency from the error model's [device] ({COST_INPUT_ASSUMPTION})"
    return {"gate": gates, "name": f"{base_name}; {note}" if base_name else note}


def _check_voltage(v: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise UserError(f"device model: voltage must be a positive number of volts, got {v!r}")
    return float(v)


# ------------------------------------------------------- docs tables


def _fmt(p: float) -> str:
    return "0" if p == 0 else f"{p:.1e}"


def markdown_tables(
    params: DeviceParams | None = None, pulses: tuple[float, ...] = (1e-9, 2e-9, 3e-9, 5e-9, 10e-9, 20e-9, 50e-9)
) -> str:
    """The tables of docs/error-model.md's device section, generated from the model."""
    p = params or DeviceParams()
    head = "| gate | n | preset | switches for k <= | window (V) | V | by_ones [p0 .. pn] |"
    out = [head + " energy (pJ, mean) | latency (ns) |"]
    out.append("|---|---|---|---|---|---|---|---|---|")
    for g, c in CIRCUITS.items():
        lo, hi = voltage_window(g, p)
        errs = ", ".join(_fmt(x) for x in gate_error_table(g, p))
        out.append(
            f"| `{g}` | {c.n_inputs} | {c.preset} | {c.threshold} | {lo:.3f} .. {hi:.3f} | {gate_voltage(g, p):.3f} "
            f"| [{errs}] | {gate_energy(g, p) * 1e12:.3f} | {gate_latency(g, p) * 1e9:g} |"
        )
    out.append("")
    names = ("nand", "and", "maj3", "maj5")
    out.append(
        "| t_pulse (ns) | "
        + " | ".join(f"`{g}` worst error" for g in names)
        + " | "
        + " | ".join(f"`{g}` pJ" for g in names)
        + " |"
    )
    out.append("|---" * (1 + 2 * len(names)) + "|")
    for t in pulses:
        q = p.with_(t_pulse=t)
        worst = [_fmt(max(gate_error_table(g, q))) for g in names]
        ens = [f"{gate_energy(g, q) * 1e12:.3f}" for g in names]
        out.append(f"| {t * 1e9:g} | " + " | ".join(worst) + " | " + " | ".join(ens) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover - prints the docs tables
    sys.stdout.write(markdown_tables())
