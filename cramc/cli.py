"""The `cramc` command line: compile, check, fmt, run, stats."""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cramc.datacheck import check_values
from cramc.errors import UserError
from cramc.fileio import atomic_write, check_outputs, load_npy, load_npz, write_json, write_npz, write_text
from cramc.isa.parser import parse as parse_text
from cramc.isa.parser import parse_file
from cramc.isa.printer import print_program
from cramc.isa.verifier import DEFAULT_MAX_WORK, verify
from cramc.sim.backend import BACKEND_HELP, get_backend

if TYPE_CHECKING:
    from cramc.errmodel import FaultModel
    from cramc.isa.linked import Linked
    from cramc.sim.interp import RunResult


def _cmd_check(args: argparse.Namespace) -> int:
    linked = verify(parse_file(args.program))
    m = linked.machine
    print(f"{args.program}: ok ({m.arrays} arrays of {m.rows} x {m.cols}, {m.accs} accumulators per array)")
    return 0


def _cmd_fmt(args: argparse.Namespace) -> int:
    prog = parse_file(args.program)
    text = print_program(prog)
    if args.check:
        if text != prog.source:
            print(f"{args.program}: not canonical (run cramc fmt -i)", file=sys.stderr)
            return 1
        return 0
    if args.in_place:
        verify(prog)
        write_text(args.program, text)
    else:
        sys.stdout.write(text)
    return 0


MEMORY_HELP = (
    "GiB the simulation may hold: state, tensors and temporaries of all sample lanes, inputs and outputs "
    "(default 2; on a GPU, 40%% of its free memory)"
)


def _budget(gib: float | None) -> int | None:
    if gib is None:
        return None
    if not (gib > 0 and math.isfinite(gib)):
        raise UserError(f"--max-memory must be a positive, finite number of GiB, got {gib}")
    if gib > 2**40:
        raise UserError(f"--max-memory {gib} GiB is more than 2^40 GiB (give what the machine has)")
    return int(gib * 2**30)


WORK_HELP = (
    f"refuse a run whose estimated work is more than N units (default {DEFAULT_MAX_WORK:.0e}, about half an hour "
    "of simulation on a CPU core; inf: no limit). Work = samples x row operations + 65536 x instructions "
    "executed per batch of sample lanes (docs/isa.md, Limits)"
)


def _sci(n: int | float) -> str:
    """A count in 3 significant digits, also for integers too large for a float."""
    if isinstance(n, int) and n.bit_length() > 1000:
        return f"about 10^{int((n.bit_length() - 1) * math.log10(2))}"
    return f"{float(n):.3g}"


def _sci_up(n: int) -> str:
    """`n` rounded up to 3 significant digits (a --max-work value that admits it)."""
    exp = len(str(n)) - 3
    if exp <= 0:
        return str(n)
    mant = -(-n // 10**exp)
    if mant == 1000:
        mant, exp = 100, exp + 1
    return f"{mant // 100}.{mant % 100:02d}e{exp + 2}"


def _run_preflight(args: argparse.Namespace, linked, inputs: dict[str, np.ndarray], backend) -> None:  # noqa: ANN001
    """Before the simulation: every output can be written and is none of the inputs; the work is allowed."""
    from cramc.sim.interp import lanes_for

    n = 1 if args.trace else (next(iter(inputs.values())).shape[0] if inputs else 1)
    per_sample = sum(math.prod(o.shape) * (4 if o.dtype.startswith("f") else 8) for o in linked.outputs)
    check_outputs(
        [("--output", args.output), ("--report", args.report)],
        [
            ("the program", args.program),
            ("--input", args.input),
            ("--labels", args.labels),
            ("--tech", args.tech),
            ("--error-model", args.error_model),
        ],
        need_bytes={"--output": n * per_sample},
    )
    limit = args.max_work
    if math.isnan(limit) or limit <= 0:
        raise UserError(f"--max-work must be a positive number of work units (or inf), got {limit}")
    budget = _budget(args.max_memory) or backend.memory_budget()
    lanes = lanes_for(linked, n, budget)
    work = linked.work
    est = work.estimate(n, lanes)
    if est > limit:
        raise UserError(
            f"{args.program}: this run needs an estimated {_sci(est)} units of work ({n} sample(s) x "
            f"{_sci(work.row_ops)} row operations + {_sci(work.instructions)} instructions x 65536 per batch of "
            f"{lanes} lane(s)), more than the limit of {_sci(limit)}; to run it anyway, pass --max-work "
            f"{_sci_up(est) if est < 1e300 else 'inf'}"
        )


def _fault_model(args: argparse.Namespace):  # noqa: ANN202 - FaultModel, imported lazily
    from cramc.errmodel import FaultModel, load_error_model

    fm = load_error_model(args.error_model) if args.error_model else FaultModel()
    if args.gate_error is not None:
        fm = fm.with_gate_error(args.gate_error) if args.error_model else FaultModel.uniform(args.gate_error)
    return fm


def _tech(path: str | None, faults):  # noqa: ANN001, ANN202 - FaultModel, Tech: imported lazily
    """The cost model's technology (defaults merged with --tech), its CRAM gate energy and latency taken from
    the error model's [device] section when it has one (cramc.errmodel.device.cost_overrides)."""
    from cramc.cost.params import Tech

    tech = Tech.load(path)
    if faults is not None and faults.device is not None:
        from cramc.errmodel.device import cost_overrides

        tech = tech.with_overrides(cost_overrides(faults.device, tech.name))
    return tech


def _cmd_run(args: argparse.Namespace) -> int:
    from cramc.sim.interp import run
    from cramc.sim.layout import program_inputs, user_outputs
    from cramc.sim.report import accuracy, build_report, check_labels, compare, format_table

    if args.seed < 0:
        raise UserError("--seed must be non-negative")
    _check_chips(args)
    if args.trace:
        # the trace compares with reference tensors embedded for validation sample 0 only
        given = [f for f, v in (("--input", args.input), ("--labels", args.labels), ("--output", args.output),
                                ("--report", args.report)) if v]  # fmt: skip
        if given:
            raise UserError(
                f"--trace compares validation sample 0 with the reference tensors embedded in the program; it "
                f"takes no {', '.join(given)}"
            )
    linked = verify(parse_file(args.program))
    faults = _fault_model(args)
    validating = args.input is None
    if validating:
        if linked.expect is None:
            raise UserError(f"{args.program} embeds no validation vectors (.expect); give --input DATA.npz")
        inputs = dict(linked.expect.inputs)
    else:
        data = load_npz(args.input)
        check_values(data, args.input)
        inputs = program_inputs(linked, data, args.input)
    labels = load_npy(args.labels) if args.labels else None
    backend = get_backend(args.backend)
    _run_preflight(args, linked, inputs, backend)
    if args.trace:
        return _trace(linked, faults, args)
    if labels is not None:
        n_in = next(iter(inputs.values())).shape[0] if inputs else 1
        if not linked.outputs:
            raise UserError(f"--labels {args.labels}: the program has no output to classify with")
        first_out = linked.outputs[0]
        labels = check_labels(labels, n_in, int(np.prod(first_out.shape)), args.labels, first_out.key)
    lines: list[str] = []  # printed after the output files are written (a closed pipe cannot lose them)
    t0 = time.perf_counter()
    budget = _budget(args.max_memory)
    chip_seeds = [(args.chip_seed or 0) + i for i in range(args.chips)]
    results = [run(linked, inputs, faults, args.seed, budget, backend=backend, chip_seed=c) for c in chip_seeds]
    result = results[0] if len(results) == 1 else _merged(results)
    wall = time.perf_counter() - t0
    extra: dict[str, object] = {
        "program": args.program,
        "wall_s": wall,
        "backend": backend.label,
        # .init loads the weights once per chip; the simulator repeats it for every sample lane, so its
        # events are included in the totals above and listed here to subtract (per-inference = total - init)
        "init": result.init,
    }
    status = 0
    lines.append(
        f"ran {result.samples} sample(s) in {wall:.2f} s on {backend.label}; error model: {faults.name}; "
        f"{result.counts.gate_evals} gate evaluations, {result.counts.faults_injected} faults injected"
    )
    if validating:
        assert linked.expect is not None  # validating means the program has .expect
        want = {k: np.concatenate([v] * len(results)) for k, v in linked.expect.outputs.items()}
        rows = [compare(o.name, result.outputs[o.name], want[o.name], linked.expect.tol) for o in linked.outputs]
        lines.append(format_table(rows))
        extra["validation"] = [r.to_dict() for r in rows]
        lines.extend(_validation_notes(linked, results[0].outputs, extra))  # the first chip
        if faults.fault_free and not all(r.ok for r in rows):
            print("error: outputs differ from the embedded expected outputs at zero faults", file=sys.stderr)
            status = 1
    if labels is not None:
        first = linked.outputs[0]
        acc = accuracy(result.outputs[first.name], np.tile(labels, len(results)))  # every chip's samples in turn
        lines.append(f"accuracy ({first.key} argmax vs labels): {acc:.4f} over {result.samples} samples")
        extra["accuracy"] = acc
    _chips_report(args, linked, results, faults, labels, lines, extra)
    if args.output:
        write_npz(args.output, user_outputs(linked, result.outputs))
    cost = _run_cost(args, result, linked, faults, lines) if args.report or args.tech else None
    if args.report:
        rep = build_report(result.counts, result.samples, args.seed, faults, extra, cost=cost)
        if cost is not None:  # the timeline's figures beside the summed latency_s (cramc.cost.timeline)
            t = cost["timeline"]
            keys = ("latency_overlap_s", "latency_no_overlap_s", "interval_s", "throughput_per_s")
            rep.update({k: t[k] for k in (*keys, "energy_per_inference_j")})
        write_json(args.report, rep)
    print("\n".join(lines))
    return status


def _run_cost(
    args: argparse.Namespace, result: RunResult, linked: Linked, faults: FaultModel, lines: list[str]
) -> dict[str, Any]:
    """The cost of a run (the dynamic estimate and the program's timeline); its lines appended to `lines`."""
    from cramc.cost.model import dynamic_estimate
    from cramc.cost.report import one_line, si
    from cramc.cost.timeline import timeline

    tech = _tech(args.tech, faults)
    est = dynamic_estimate(result.counts, result.samples, linked, tech)
    lines.append(one_line(est))
    cost = est.as_dict()
    tl = timeline(linked, tech)  # from the program: the schedule does not depend on data or faults
    tl.energy_j = est.energy_j
    cost["timeline"] = tl.as_dict()
    lines.append(
        f"latency with overlap {si(tl.latency_s, 's')} (without {si(tl.serial_s, 's')}); pipeline interval "
        f"{si(tl.interval_s, 's')}, throughput {tl.throughput:.4g} inferences/s"
    )
    return cost


def _check_chips(args: argparse.Namespace) -> None:
    """--chips and --chip-seed: a positive count, a non-negative seed; one chip's outputs for --output/--trace."""
    if args.chip_seed is not None and args.chip_seed < 0:
        raise UserError("--chip-seed must be non-negative")
    if args.chips < 1:
        raise UserError(f"--chips must be at least 1, got {args.chips}")
    if args.chips > 1:
        for flag, given in (("--output", args.output), ("--trace", args.trace)):
            if given:
                raise UserError(
                    f"{flag} takes one chip's outputs; with --chips {args.chips}, rerun chip i alone with "
                    f"--chip-seed {args.chip_seed or 0}+i (the same --seed gives the same inference faults)"
                )


def _merged(results: list[RunResult]) -> RunResult:
    """The results of several chips as one: counts summed, outputs and samples of all chips in turn."""
    from cramc.isa.counting import Counts
    from cramc.sim.interp import RunResult

    total = Counts()
    init: dict[str, int] = {}
    for r in results:
        total.merge(r.counts)
        for k, v in r.init.items():
            init[k] = init.get(k, 0) + v
    outs = {k: np.concatenate([r.outputs[k] for r in results]) for k in results[0].outputs}
    return RunResult(outs, total, sum(r.samples for r in results), {}, init, results[0].chip_seed, {})


def _chips_report(args, linked, results: list, faults, labels, lines: list[str], extra: dict) -> None:  # noqa: ANN001
    """REPORT.json's "chips" (given --chips, --chip-seed or [defects]): the chip seeds, the [defects] densities,
    each chip's .init, defects, faults and accuracy (labels) or validated samples (embedded vectors), and the
    spread across chips apart from the spread across inferences (cramc.sweep.stats.chip_spread); a line per
    chip and the spread into `lines`."""
    if not (args.chips > 1 or args.chip_seed is not None or faults.defects.any):
        return
    from cramc.sweep.stats import chip_spread  # imports cramc.sweep (0.05-0.08 s): only for a report on chips

    per_chip: list[dict[str, Any]] = []
    correct: list[list[int]] = []
    for r in results:
        d = dict(r.chip)
        d["faults"] = dict(r.counts.faults)
        k = _samples_right(linked, r.outputs, labels)
        if k is not None:
            d["samples_right"] = k
            correct.append([k])
        per_chip.append(d)
    out: dict[str, object] = {
        "count": len(results),
        "chip_seeds": [r.chip_seed for r in results],
        "defects": faults.defects.to_dict() if faults.defects.any else None,
        "per_chip": per_chip,
    }
    what = "accuracy" if labels is not None else "validated samples"
    for d in per_chip:
        right = f"; {what} {d['samples_right'] / results[0].samples:.4f}" if "samples_right" in d else ""
        defects = d.get("defects")
        dtext = f"; defects {', '.join(f'{k} {v}' for k, v in defects.items())}" if defects else ""
        lines.append(f"chip {d['chip_seed']}: .init faults {sum(d['init_faults'].values())}{dtext}{right}")
    if correct and len(results) > 1:
        sp = chip_spread(correct, results[0].samples)
        out["spread"] = {"metric": what, **sp}
        lines.append(
            f"{what} over {len(results)} chips: mean {sp['acc_mean']:.4f}; between chips sd {sp['chip_sd']:.4f}, "
            f"95% t-interval of the mean [{sp['chip_ci_low']:.4f}, {sp['chip_ci_high']:.4f}]; within a chip "
            f"(binomial, {results[0].samples} inferences) sd {sp['within_sd']:.4f}, 95% Wilson "
            f"[{sp['within_low']:.4f}, {sp['within_high']:.4f}]"
        )
    extra["chips"] = out


def _samples_right(linked, outputs: dict[str, np.ndarray], labels) -> int | None:  # noqa: ANN001
    """Samples whose first output's argmax is the label, or (no labels, embedded vectors) whose every output
    matches the expected outputs within tolerance; None when neither applies."""
    if labels is not None:
        first = outputs[linked.outputs[0].name]
        return int((first.reshape(first.shape[0], -1).argmax(axis=1) == labels.reshape(-1)).sum())
    exp = linked.expect
    if exp is None:
        return None
    ok = None
    for o in linked.outputs:
        w = exp.outputs[o.name].astype(np.float64)
        g = outputs[o.name].astype(np.float64).reshape(w.shape)
        within = (np.abs(g - w) <= exp.tol + 1e-9 * np.maximum(1.0, np.abs(w))).reshape(w.shape[0], -1).all(axis=1)
        ok = within if ok is None else ok & within
    return int(ok.sum()) if ok is not None else None


def _validation_notes(linked, outputs: dict[str, np.ndarray], extra: dict[str, object]) -> list[str]:  # noqa: ANN001
    """What the validation compared with, and how the outputs agree with the float model's (if embedded)."""
    from cramc.sim.report import float_agreement

    exp = linked.expect
    if not exp.float_outputs:
        extra["validation_reference"] = "the outputs embedded in the program (.expect)"
        return ["validation reference: the outputs embedded in the program (.expect)"]
    extra["validation_reference"] = "onnxruntime on cramc's quantised model"
    lines = [
        "validation reference: onnxruntime on cramc's own quantised (QDQ) model: a match checks the compilation "
        "and the simulation, not the quantisation"
    ]
    agree = [float_agreement(o.key, outputs[o.name], exp.float_outputs[o.name]) for o in linked.outputs
             if o.name in exp.float_outputs]  # fmt: skip
    lines.extend(a.line() for a in agree)
    extra["float_model"] = [a.to_dict() for a in agree]
    return lines


def _cmd_stats(args: argparse.Namespace) -> int:
    from cramc.cost.model import static_estimate
    from cramc.cost.report import format_stats
    from cramc.cost.timeline import timeline
    from cramc.errmodel import load_error_model

    if args.vary or args.compare or args.plot:
        return _stats_vary(args)
    check_outputs(
        [("--json", args.json)],
        [("the program", args.program), ("--tech", args.tech), ("--error-model", args.error_model)],
    )
    faults = load_error_model(args.error_model) if args.error_model else None
    linked = verify(parse_file(args.program))
    tech = _tech(args.tech, faults)
    est = static_estimate(linked, tech)
    tl = timeline(linked, tech)
    tl.energy_j = est.energy_j
    print(format_stats(est, args.program, tl))
    if args.json:
        write_json(args.json, {"program": args.program, **est.as_dict(), "timeline": tl.as_dict()})
    return 0


def _stats_vary(args: argparse.Namespace) -> int:
    """cramc stats --vary/--compare/--plot: the estimate at every value of technology keys (cramc.cost.sensitivity)."""
    from pathlib import Path

    from cramc.cost.sensitivity import format_sweep, parse_vary, plot_sweep, sweep
    from cramc.errmodel import load_error_model

    if args.plot and not args.vary:
        raise UserError("--plot needs --vary KEY=v1,v2,... (the plot's x axis is the first varied key)")
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserError(f"--plot {args.plot}: expected a .png, .pdf or .svg file name")
    check_outputs(
        [("--json", args.json), ("--plot", args.plot)],
        [
            ("the program", args.program),
            ("--compare", args.compare),
            ("--tech", args.tech),
            ("--error-model", args.error_model),
        ],
    )
    faults = load_error_model(args.error_model) if args.error_model else None
    tech = _tech(args.tech, faults)
    varies = [parse_vary(v, tech) for v in args.vary or []]
    keys = [k for v in varies for k in v.keys]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"--vary: {', '.join(twice)} given in more than one --vary")
    points = math.prod(len(v.values) for v in varies)
    if points > 100000:
        raise UserError(f"--vary: the grid has {points} points; at most 100000")
    linked = verify(parse_file(args.program))
    other = (args.compare, verify(parse_file(args.compare))) if args.compare else None
    res = sweep(args.program, linked, tech, varies, other)
    print(format_sweep(res))
    if args.plot:
        plot_sweep(res, args.plot)
    if args.json:
        write_json(args.json, res.as_dict())
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    from cramc.compiler import Options, compile_model

    check_outputs(
        [("-o", args.output)],
        [("the model", args.model), ("--calibration", args.calibration), ("--error-model", args.error_model)],
    )

    if (args.gate_error is not None or args.error_model) and args.ecc != "auto":
        flag = "--gate-error" if args.gate_error is not None else "--error-model"
        raise UserError(
            f"{flag} tunes --ecc auto and does nothing without it; the fault rate of a simulation is an option "
            "of cramc run"
        )
    calib = load_npz(args.calibration) if args.calibration else None
    if calib is not None:
        check_values(calib, args.calibration)
    opts = Options(
        arrays=args.arrays,
        rows=args.rows,
        cols=args.cols,
        accs=args.accs,
        weight_bits=args.weight_bits,
        act_bits=args.act_bits,
        n_validation=args.validation,
        print_ir_after_all=args.print_ir_after_all,
        trace=not args.no_trace,
        reduce=args.reduce,
        ecc=args.ecc or "",
        ecc_budget=args.ecc_budget,
        gate_error=args.gate_error,
        error_model=args.error_model,
        double_buffer=not args.no_double_buffer,
    )
    t0 = time.perf_counter()
    text = compile_model(args.model, calib, opts)
    try:
        prog = verify(parse_text(text, args.output))
    except UserError as e:
        # nothing was written: the program is only in memory
        raise UserError(
            f"the compiled program does not verify (not written to {args.output}): {e.message}"
            + (f" [generated line {e.loc.line}]" if e.loc else "")
        ) from None
    write_text(args.output, text)
    m = prog.machine
    print(
        f"wrote {args.output}: {len(text) / 1e6:.2f} MB, {m.arrays} arrays of {m.rows} x {m.cols}, "
        f"compiled in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from cramc.sweep import SweepOptions, format_table, main_sweep, parse_protections, parse_rates

    opts = SweepOptions(
        model=args.model,
        rates=parse_rates(args.gate_error),
        protections=parse_protections(args.protection),
        seeds=args.seeds,
        ecc=args.ecc,
        ecc_budget=args.ecc_budget,
        finetuned=args.finetuned,
        error_model=args.error_model,
        mode=args.mode,
        samples=args.samples,
        max_memory=_budget(args.max_memory),
        tech=args.tech,
        workers=args.workers,
        scheduler=args.scheduler,
        backend=args.backend,
        chips=args.chips,
        keep_shape=args.keep_shape,
    )
    if args.workers < 0:
        raise UserError("--workers must be 0 (in-process) or more")
    check_outputs(
        [("-o", args.output), ("--plot", args.plot)],
        [
            ("the model", args.model),
            ("--data", args.data),
            ("--labels", args.labels),
            ("--calibration", args.calibration),
            ("--finetuned", args.finetuned),
            ("--tech", args.tech),
            ("--error-model", args.error_model),
        ],
    )
    t0 = time.perf_counter()
    res = main_sweep(
        opts,
        args.data,
        args.labels,
        args.calibration,
        args.output,
        args.plot,
        progress=lambda: not args.no_progress and sys.stderr.isatty(),
    )
    print(format_table(res))
    wrote = [p for p in (args.output, args.plot) if p]
    print(
        f"swept {len(res.rows)} points x {opts.seeds} seed(s) on {res.config['samples']} samples in "
        f"{time.perf_counter() - t0:.1f} s" + (f"; wrote {', '.join(wrote)}" if wrote else "")
    )
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    """cramc explore: the grid (cramc.sweep.explore), its files and Pareto plots (cramc.sweep.explore_output)."""
    from cramc.sweep import explore as ex
    from cramc.sweep.explore_output import format_table, main_explore

    ems = ex.parse_error_models(args.error_model)
    opts = ex.ExploreOptions(
        model=args.model,
        arrays=ex.parse_ints("--arrays", args.arrays),
        rows=ex.parse_ints("--rows", args.rows),
        cols=ex.parse_ints("--cols", args.cols),
        wbits=ex.parse_ints("--wbits", args.wbits, ex.WEIGHT_BITS),
        xbits=ex.parse_ints("--xbits", args.xbits, ex.ACT_BITS),
        reduce=ex.parse_choices("--reduce", args.reduce, ex.REDUCTIONS),
        ecc=ex.parse_ecc(args.ecc),
        error_model=ems,
        gate_error=ex.parse_gate_errors(args.gate_error),
        tech=ex.parse_techs(args.tech, ems),
        accs=args.accs,
        seeds=args.seeds,
        samples=args.samples,
        mode="statistical" if args.statistical else "gate",
        workers=args.workers,
        scheduler=args.scheduler,
        max_memory=_budget(args.max_memory),
        backend=args.backend,
    )
    ex.check_explore(opts)
    ex.points(opts)
    for flag, path in (("--data", args.data), ("--labels", args.labels), ("--calibration", args.calibration)):
        if path and not os.path.isfile(path):
            raise UserError(f"{flag} {path}: no such file")
    t0 = time.perf_counter()
    res, wrote = main_explore(opts, args.data, args.labels, args.calibration, args.output)
    print(format_table(res.rows, res.config))
    print(
        f"explored {len(res.rows)} points ({res.config['compiled']} compiled) x {opts.seeds} seed(s) on "
        f"{res.config['samples']} samples in {time.perf_counter() - t0:.1f} s"
        + (f"; wrote {', '.join(wrote)}" if wrote else "")
    )
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    """Error-aware fine-tuning; PyTorch is imported by cramc.train.finetune only, and only here."""
    from cramc.train.finetune import Options, finetune

    if args.gate_error is None and not args.error_model:
        raise UserError("cramc finetune needs the fault rate to train for: --gate-error P or --error-model FILE")
    faults = _fault_model(args)
    check_outputs(  # say so before training, not after
        [("-o", args.output)],
        [
            ("the model", args.model),
            ("--data", args.data),
            ("--labels", args.labels),
            ("--calibration", args.calibration),
            ("--error-model", args.error_model),
        ],
    )
    data = load_npz(args.data)
    labels = load_npy(args.labels)
    check_values(data, args.data)
    calib = load_npz(args.calibration) if args.calibration else None
    if calib is not None:
        check_values(calib, args.calibration)
    opts = Options(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed, rows=args.rows, noise=args.noise
    )
    res = finetune(args.model, data, labels, faults, opts, calib, log=sys.stdout)
    blob = res.model.SerializeToString()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(blob)

    atomic_write(args.output, write)
    print(
        f"wrote {args.output}: fine-tuned for {faults.name} in {res.wall_s:.1f} s; compile it with the same "
        f"calibration data ({args.calibration or f'the first 64 samples of {args.data}'})"
    )
    return 0


def _trace(linked, faults, args: argparse.Namespace) -> int:  # noqa: ANN001 - Linked, FaultModel
    """Compare every traced intermediate tensor with onnxruntime's, in program order."""
    from cramc.sim.interp import run

    if not linked.trace or linked.expect is None:
        raise UserError(f"{args.program} embeds no trace data (.trace); compile it without --no-trace")
    inputs = {k: v[:1] for k, v in linked.expect.inputs.items()}
    res = run(linked, inputs, faults, seed=args.seed, keep_tensors=True, backend=args.backend)
    print(f"trace of validation sample 0 against onnxruntime ({faults.name}):")
    print(f"{'tensor':<48} {'elements':>9} {'differ':>7} {'max |diff|':>11}  verdict")
    first = None
    first_any = None
    for name, ref in linked.trace.items():
        got = res.tensors[name][:1].astype(np.float64)
        want = ref.astype(np.float64)
        diff = np.abs(got - want)
        is_int = np.issubdtype(ref.dtype, np.integer)
        tol = 1.0 if is_int else linked.expect.tol + 1e-4 * float(np.abs(want).max(initial=0.0))
        bad = diff > tol + 1e-12
        verdict = "ok" if not bad.any() else "DIVERGES"
        if bad.any() and first is None:
            first = name
        if (diff > 0).any() and first_any is None:
            first_any = name
        print(f"{name:<48} {diff.size:>9} {int((diff > 0).sum()):>7} {float(diff.max(initial=0)):>11.4g}  {verdict}")
    if first is None:
        print(
            "no layer diverges beyond one quantisation step"
            + (f" (the first small difference is in %{first_any})" if first_any else "")
        )
        return 0
    print(f"first divergence: %{first}")
    return 0 if not faults.fault_free else 1


def _cmd_errmodel_show(args: argparse.Namespace) -> int:
    from cramc.errmodel import load_error_model
    from cramc.errmodel.show import format_model, model_table

    check_outputs([("--json", args.json)], [("the error model", args.model)])
    fm = load_error_model(args.model)
    print(format_model(fm, args.model), end="")
    if args.json:
        write_json(args.json, model_table(fm, args.model))
    return 0


def _cmd_isa_doc(args: argparse.Namespace) -> int:
    from cramc.isa.docgen import render_isa_reference

    text = render_isa_reference()
    if args.output:
        write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _version() -> str:
    """The installed distribution's version (what pip installed), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cramc")
    except PackageNotFoundError:  # running from a source tree that was never installed
        from cramc import __version__

        return __version__


class _VersionAction(argparse.Action):
    """argparse's "version" action, but the version is looked up when --version is given: importlib.metadata
    (with the email package it loads) takes 0.05-0.08 s, which every other command would pay at start-up."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: Any):
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None):
        parser._print_message(f"cramc {_version()}\n", sys.stdout)
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cramc", description=__doc__)
    p.add_argument("--version", action=_VersionAction, help="show program's version number and exit")
    sub = p.add_subparsers(dest="command", required=True)

    k = sub.add_parser("compile", help="compile an ONNX model to a .cram program")
    k.add_argument("model", help="MODEL.onnx (float, QDQ or QOperator)")
    k.add_argument("-o", "--output", required=True, help="PROG.cram to write")
    k.add_argument("--calibration", help="DATA.npz: one array per model input, leading axis = samples")
    k.add_argument("--weight-bits", type=int, default=8, help="weight precision for float models (8 or 4)")
    k.add_argument("--act-bits", type=int, default=8, help="activation precision for float models (8 or 16)")
    k.add_argument("--arrays", type=int, default=1024, help="CRAM arrays on the chip (default 1024)")
    k.add_argument("--rows", type=int, default=256, help="rows per array (default 256)")
    k.add_argument("--cols", type=int, default=256, help="columns per array (default 256)")
    k.add_argument("--accs", type=int, default=64, help="accumulators beside each array (default 64)")
    k.add_argument(
        "--validation",
        type=int,
        default=4,
        help="validation vectors to embed, the first of the calibration samples (default 4; 0: none)",
    )
    k.add_argument(
        "--reduce",
        choices=["tree", "cram", "cram-serial"],
        default="tree",
        help="tree: CRAM-ER hybrid with a CMOS adder tree (default); cram: CRAM-only, log-depth baseline (rows "
        "summed in ceil(log2 K) in-array levels); cram-serial: CRAM-only, serial baseline of prior work (rows "
        "added one after another by in-array ripple-carry adders)",
    )
    k.add_argument(
        "--ecc",
        help="error correction, e.g. 'tmr', 'vote:sig>=8', 'dup:layer=conv1;vote:sig>=10' (docs/error-correction.md)",
    )
    k.add_argument(
        "--ecc-budget",
        type=float,
        default=0.2,
        help="--ecc auto: allowed extra in-array operations as a fraction (default 0.2)",
    )
    k.add_argument("--gate-error", type=float, help="--ecc auto: the gate error rate to tune the protection for")
    k.add_argument("--error-model", help="--ecc auto: tune for this error model (TOML file or preset name)")
    k.add_argument(
        "--no-double-buffer",
        action="store_true",
        help="tree: one set of scratch columns per layer (the adder tree and the next AND cannot overlap)",
    )
    k.add_argument("--print-ir-after-all", action="store_true", help="print the IR after each pass to stderr")
    k.add_argument("--no-trace", action="store_true", help="do not embed intermediate tensors for run --trace")
    k.set_defaults(fn=_cmd_compile)

    c = sub.add_parser("check", help="parse and verify a .cram program")
    c.add_argument("program")
    c.set_defaults(fn=_cmd_check)

    f = sub.add_parser("fmt", help="print a .cram program in canonical form")
    f.add_argument("program")
    f.add_argument("-i", "--in-place", action="store_true", help="rewrite the file")
    f.add_argument("--check", action="store_true", help="exit 1 if the file is not canonical")
    f.set_defaults(fn=_cmd_fmt)

    r = sub.add_parser("run", help="run a program on the fault-injecting simulator")
    r.add_argument("program")
    r.add_argument("--input", help="DATA.npz: one array per program input, leading axis = samples")
    r.add_argument("--output", help="write outputs to OUT.npz")
    r.add_argument("--gate-error", type=float, help="flip probability of every gate output (symmetric)")
    r.add_argument(
        "--error-model",
        help="FILE.toml with per-gate, write and read fault rates, or a shipped "
        "preset: early, near_term, projected (docs/error-model.md); a [device] section also sets the gate "
        "energy and latency of the report",
    )
    r.add_argument("--seed", type=int, default=0, help="seed of the per-inference faults (default 0)")
    r.add_argument(
        "--chip-seed",
        type=int,
        help="the chip instance: seed of its .init faults and static defects (default 0; docs/error-model.md)",
    )
    r.add_argument(
        "--chips",
        type=int,
        default=1,
        help="run N chip instances (chip seeds S..S+N-1, the same --seed) and report the spread across chips "
        "apart from the spread across inferences (default 1)",
    )
    r.add_argument("--report", help="write REPORT.json with counts, faults and results")
    r.add_argument("--labels", help="LABELS.npy: class labels; report argmax accuracy of the first output")
    r.add_argument(
        "--trace",
        action="store_true",
        help="compare each layer with onnxruntime's intermediate tensors (embedded) and name the first that diverges",
    )
    r.add_argument("--max-memory", type=float, help=MEMORY_HELP)
    r.add_argument("--max-work", type=float, default=float(DEFAULT_MAX_WORK), metavar="N", help=WORK_HELP)
    r.add_argument("--backend", default="numpy", help=f"where the simulator state lives: {BACKEND_HELP}")
    r.add_argument(
        "--tech",
        help="FILE.toml: technology parameters for the latency/energy in the report "
        "(merged over the defaults; docs/cost-model.md)",
    )
    r.set_defaults(fn=_cmd_run)

    s = sub.add_parser("stats", help="static latency, energy and area of a program, per layer and in total")
    s.add_argument("program")
    s.add_argument("--tech", help="FILE.toml: technology parameters merged over the defaults (docs/cost-model.md)")
    s.add_argument(
        "--error-model",
        help="FILE.toml or preset: with a [device] section, CRAM gate energy and latency come from it "
        "(docs/cost-model.md)",
    )
    s.add_argument("--json", help="write the estimate (with --vary: every point and break-even) to OUT.json")
    s.add_argument(
        "--vary",
        action="append",
        metavar="KEY=v1,v2,...",
        help="re-cost at each value of a technology key, a dotted path into cramc/cost/tech/default.toml "
        "(gate.energy_j, tree.latency_s, read.energy_j, write.ops_per_cycle, gate.maj5.energy_j; a+b sets several "
        "to the same value; LO:HI:N: N geometric values); repeat for a grid; prints latency, energy, EDP per value "
        "(chip size: recompile, bench/bench_sensitivity.py)",
    )
    s.add_argument(
        "--compare",
        metavar="PROG2.cram",
        help="a second design: its figures, the ratio PROG2 / PROG per value and the break-even value where it "
        "crosses 1 along the first --vary (interpolated)",
    )
    s.add_argument("--plot", metavar="FILE.png", help="with --vary: plot the ratio (or the figures) against it")
    s.set_defaults(fn=_cmd_stats)

    s = sub.add_parser("sweep", help="accuracy under gate faults: error rates x protections x seeds")
    s.add_argument("model", help="MODEL.onnx")
    s.add_argument("--data", required=True, help="DATA.npz: the labelled inputs (leading axis = samples)")
    s.add_argument("--labels", required=True, help="LABELS.npy: class labels, one per sample")
    s.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run the sweep points on a local Dask cluster of N worker processes (default: in-process)",
    )
    s.add_argument("--scheduler", help="run on an existing Dask cluster (scheduler address, e.g. tcp://host:8786)")
    s.add_argument("--calibration", help="DATA.npz for quantisation and auto-ecc (as for compile)")
    s.add_argument(
        "--gate-error",
        default="1e-4,1e-3,3e-3,1e-2",
        help="comma-separated gate error rates (default 1e-4,1e-3,3e-3,1e-2)",
    )
    s.add_argument(
        "--protection", default="none,ecc", help="comma-separated: none, ecc, finetuned, both (default none,ecc)"
    )
    s.add_argument("--seeds", type=int, default=5, help="simulator seeds 0..N-1 per point (default 5)")
    s.add_argument(
        "--chips",
        type=int,
        default=1,
        help="gate mode: chip instances 0..N-1 per point, each with every seed; adds the spread across chips "
        "apart from the spread across inferences (default 1)",
    )
    s.add_argument(
        "--ecc",
        default="auto",
        help="error correction of ecc/both: a spec as for compile, or auto (tuned per gate error rate; default)",
    )
    s.add_argument(
        "--ecc-budget",
        type=float,
        default=0.2,
        help="--ecc auto: allowed extra in-array operations as a fraction (default 0.2)",
    )
    s.add_argument("--finetuned", help="TUNED.onnx from cramc finetune (for finetuned, both)")
    s.add_argument("--error-model", help="base error model (TOML or preset) whose gate rates are swept")
    s.add_argument(
        "--keep-shape",
        action="store_true",
        help="each --gate-error level scales the error model's own gate rates (every gate, every input "
        "state of a by_ones table) so that the largest is the level; default: every gate at the level",
    )
    s.add_argument(
        "--mode",
        choices=["gate", "statistical"],
        default="gate",
        help="gate: bit-level simulator (default); statistical: binomial MVM fault model on the IR",
    )
    s.add_argument("--samples", type=int, help="use only the first N samples of --data")
    s.add_argument("-o", "--output", help="write results to FILE.csv or FILE.json")
    s.add_argument("--plot", help="write accuracy vs gate error to PLOT.png")
    s.add_argument("--tech", help="FILE.toml: technology parameters of the latency/energy columns (docs/cost-model.md)")
    s.add_argument("--max-memory", type=float, help=MEMORY_HELP)
    s.add_argument("--backend", default="numpy", help=f"gate mode: where the simulator state lives: {BACKEND_HELP}")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(fn=_cmd_sweep)

    x = sub.add_parser(
        "explore",
        help="the design space: chip size, bits, reduction, error correction, error model and technology, "
        "compiled, costed and run per point; CSV and Pareto plots of accuracy against energy, latency, area",
    )
    x.add_argument("model", help="MODEL.onnx")
    x.add_argument("--data", required=True, help="DATA.npz: the labelled inputs (leading axis = samples)")
    x.add_argument("--labels", required=True, help="LABELS.npy: class labels, one per sample")
    x.add_argument("--calibration", help="DATA.npz for quantisation and auto-ecc (as for compile)")
    x.add_argument("--arrays", default="1024", help="comma-separated CRAM arrays on the chip (default 1024)")
    x.add_argument("--rows", default="256", help="comma-separated rows per array (default 256)")
    x.add_argument("--cols", default="256", help="comma-separated columns per array (default 256)")
    x.add_argument("--accs", type=int, default=64, help="accumulators beside each array (default 64)")
    x.add_argument("--wbits", default="8", help="comma-separated weight bits: 8, 4 (default 8)")
    x.add_argument("--xbits", default="8", help="comma-separated activation bits: 8, 16 (default 8)")
    x.add_argument("--reduce", default="tree", help="comma-separated: tree, cram, cram-serial (default tree)")
    x.add_argument(
        "--ecc",
        default="none",
        help="comma-separated error correction: none, auto (budget 0.2), auto:BUDGET, or a spec as for compile "
        "(rules joined by ';'); auto is tuned for each point's fault model (default none)",
    )
    x.add_argument(
        "--error-model", default="none", help="comma-separated error models: none, presets or TOML files"
    )
    x.add_argument(
        "--gate-error",
        default="none",
        help="comma-separated gate error rates, as for run (every gate at P, or the error model's gates at P); "
        "none: the error model as it is (default none: with no error model, fault-free)",
    )
    x.add_argument(
        "--tech", default="default", help="comma-separated technology files: default, cmos7nm, projected or TOML"
    )
    x.add_argument("--seeds", type=int, default=3, help="simulator seeds 0..N-1 per point (default 3)")
    x.add_argument("--samples", type=int, help="use only the first N samples of --data")
    x.add_argument(
        "--statistical",
        action="store_true",
        help="run each point on the statistical fault model (binomial MVM errors on the IR) instead of the "
        "gate-level simulator",
    )
    x.add_argument("--workers", type=int, default=0, help="run the points on a local Dask cluster of N processes")
    x.add_argument("--scheduler", help="run on an existing Dask cluster (scheduler address, e.g. tcp://host:8786)")
    x.add_argument("--max-memory", type=float, help=MEMORY_HELP)
    x.add_argument("--backend", default="numpy", help=f"gate level: where the simulator state lives: {BACKEND_HELP}")
    x.add_argument(
        "-o",
        "--output",
        metavar="OUTDIR",
        help="write explore.csv, explore.json and accuracy_vs_{energy,latency,area}.png into OUTDIR",
    )
    x.set_defaults(fn=_cmd_explore)

    t = sub.add_parser(
        "finetune",
        help="error-aware fine-tuning of a float ONNX classifier (needs PyTorch: pip install 'cramc[train]')",
    )
    t.add_argument("model", help="MODEL.onnx (float)")
    t.add_argument("--data", required=True, help="DATA.npz: training inputs, one array per model input")
    t.add_argument("--labels", required=True, help="LABELS.npy: class labels of the training inputs")
    t.add_argument("--gate-error", type=float, help="train for this gate flip probability (symmetric)")
    t.add_argument("--error-model", help="train for this error model (TOML file or preset name)")
    t.add_argument("-o", "--output", required=True, help="TUNED.onnx to write")
    t.add_argument("--epochs", type=int, default=10, help="passes over the training data (default 10)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--batch-size", type=int, default=32, help="samples per step (default 32)")
    t.add_argument("--seed", type=int, default=0, help="seed of the shuffling and the injected faults")
    t.add_argument(
        "--calibration", help="DATA.npz that cramc compile will quantise with (default: the first 64 training samples)"
    )
    t.add_argument("--rows", type=int, default=256, help="rows per CRAM array, as given to compile (default 256)")
    t.add_argument(
        "--noise",
        choices=["binomial", "normal"],
        default="binomial",
        help="binomial: exact draws of the gate-level error distribution (default); normal: a normal "
        "with its exact mean and variance (an approximation)",
    )
    t.set_defaults(fn=_cmd_finetune)

    e = sub.add_parser("errmodel", help="inspect error models (docs/error-model.md)")
    esub = e.add_subparsers(dest="errmodel_command", required=True)
    es = esub.add_parser(
        "show",
        help="print an error model's gate error per number of inputs at 1 (and its [device] parameters, "
        "operating voltage, energy and latency per gate)",
    )
    es.add_argument("model", help="FILE.toml or a preset name (early, near_term, projected)")
    es.add_argument("--json", help="also write the tables to OUT.json")
    es.set_defaults(fn=_cmd_errmodel_show)

    d = sub.add_parser("isa-doc", help="print the ISA reference (docs/isa.md), generated from the opcode table")
    d.add_argument("-o", "--output", help="write it to FILE instead of standard output")
    d.set_defaults(fn=_cmd_isa_doc)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except UserError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk while writing scratch files (outputs say so themselves, cramc.fileio)
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        where = f" writing {e.filename}" if e.filename else " writing a scratch file"
        print(f"error: {e.strerror}{where}; free some space (or set TMPDIR) and try again", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (cramc run ... | head): not an error of ours; stop writing to the pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MemoryError:
        print("error: out of memory; lower --max-memory or use a smaller chip", file=sys.stderr)
        return 1
    except RuntimeError as e:  # a device out of memory (torch.cuda.OutOfMemoryError) is a RuntimeError
        if "out of memory" not in str(e).lower():
            raise
        print(f"error: the device ran out of memory ({str(e).splitlines()[0]}); lower --max-memory", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
