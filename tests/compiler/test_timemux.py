"""Time-multiplexing: the digits CNN on chips too small to hold all its layers at once.

- ``--arrays 2``: conv1, conv2 and fc need one array each, so two layers share arrays and reload
  their weights in `.main` on every inference;
- ``--rows 16 --arrays 2``: conv2 (K = 72) needs 5 arrays of 16 rows, more than the chip, so it
  runs in several passes, each reloading its part.
Both must compute exactly what the big-chip program computes (zero faults, whole test split).

Writes: the simulator runs `.init` (the one-time weight load) in every sample lane, so REPORT.json's
`writes` per inference include it; what time-multiplexing adds is writes in `.main`, on every
inference.  The tests split REPORT.json's writes into `.init` and `.main` (by running `.init`
alone) and check that the reloads make `.main` write more than the big chip does, and exactly the
weight bits the program header says it reloads, compared with a chip of the same rows that holds
every layer once.  (The 1024-array chip's *total* is larger than the small chips': it replicates
the layers, and their weights, over its spare arrays.)
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from compilertest import DIGITS, cramc, load_npz

from cramc.isa.parser import parse_file
from cramc.isa.verifier import verify
from cramc.sim.interp import run

CNN = DIGITS["cnn"]
CHIPS = {
    "big": [],  # 1024 arrays of 256 x 256
    "fits": ["--arrays", "3"],  # every layer once, nothing to spare
    "shared": ["--arrays", "2"],
    "fits_r16": ["--rows", "16", "--arrays", "10"],
    "split_r16": ["--rows", "16", "--arrays", "2"],
}
RELOADING = ("shared", "split_r16")


@dataclass
class Chip:
    program: Path
    text: str
    outputs: np.ndarray
    report: dict
    init_writes: int

    @property
    def main(self) -> str:
        return self.text[self.text.index("\n.main {") :]

    @property
    def main_writes(self) -> int:
        return self.report["writes"] - self.init_writes

    @property
    def reload_bits(self) -> int:
        m = re.search(
            r"^; time-multiplexed: \d+ layer\(s\) reload their weights on every inference "
            r"\((\d+) bits written per inference\)$",
            self.text,
            flags=re.M,
        )
        return int(m.group(1)) if m else 0


@pytest.fixture(scope="module")
def chips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Chip]:
    out = tmp_path_factory.mktemp("timemux")
    x = load_npz(CNN.test_x)
    n = x["input"].shape[0]
    result: dict[str, Chip] = {}
    for name, flags in CHIPS.items():
        prog, npz, rep = out / f"{name}.cram", out / f"{name}.npz", out / f"{name}.json"
        res = cramc("compile", str(CNN.model), "-o", str(prog), "--calibration", str(CNN.calib), *flags)
        assert res.rc == 0, res.err
        assert ("reload" in res.err) == (name in RELOADING), res.err
        res = cramc("run", str(prog), "--input", str(CNN.test_x), "--output", str(npz), "--report", str(rep))
        assert res.rc == 0, res.err
        linked = verify(parse_file(str(prog)))
        init_only = run(dataclasses.replace(linked, main=(), outputs=()), dict(x))
        report = json.loads(rep.read_text(encoding="utf-8"))
        assert report["samples"] == n
        result[name] = Chip(
            prog, prog.read_text(encoding="utf-8"), load_npz(npz)["logits"], report, init_only.counts.writes
        )
    return result


@pytest.mark.parametrize("name", RELOADING)
def test_weights_reload_in_main(chips: dict[str, Chip], name: str) -> None:
    chip = chips[name]
    reloads = re.findall(r"^  ; reload the weights of %(\S+)", chip.main, flags=re.M)
    assert reloads
    assert chip.reload_bits > 0
    big = chips["big"]
    assert "reload" not in big.main and big.reload_bits == 0
    assert "; weights of %" in big.text[: big.text.index("\n.main {")]  # resident: written once in .init


def test_layer_larger_than_the_chip_runs_in_passes(chips: dict[str, Chip]) -> None:
    passes = re.findall(r"; reload the weights of %(\S+) \(pass (\d+) of (\d+)\)", chips["split_r16"].main)
    assert passes
    layer, _, total = passes[0]
    assert int(total) > 1
    assert [int(p) for lay, p, _ in passes if lay == layer] == list(range(1, int(total) + 1))
    assert "(pass " not in chips["shared"].main  # every layer of `shared` fits one array


@pytest.mark.parametrize("name", [c for c in CHIPS if c != "big"])
def test_outputs_identical_to_the_big_chip(chips: dict[str, Chip], name: str) -> None:
    # onnxruntime's layout: the model's batch axis is the sample axis
    assert chips[name].outputs.shape == chips["big"].outputs.shape == (360, 10)
    np.testing.assert_array_equal(chips[name].outputs, chips["big"].outputs)


@pytest.mark.parametrize(("name", "resident"), [("shared", "fits"), ("split_r16", "fits_r16")])
def test_reloads_add_writes_on_every_inference(chips: dict[str, Chip], name: str, resident: str) -> None:
    chip, same_rows, big = chips[name], chips[resident], chips["big"]
    n = chip.report["samples"]
    assert chip.report["faults_injected"] == 0
    assert chip.main_writes > big.main_writes
    assert same_rows.reload_bits == 0
    # exactly the reloaded weight bits, per inference, on top of a chip of the same geometry that keeps them
    assert chip.main_writes - same_rows.main_writes == n * chip.reload_bits
    # the reloaded layers no longer load in .init
    assert chip.init_writes < same_rows.init_writes
