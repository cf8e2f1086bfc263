"""FP engine under Verilator (cocotb bench ``sim/tb/tb_fp_engine.py``) vs golden ``lif_forward``,
exactly; Verilator lint of the generated FP engine with an explicit waiver list; co-sim speed.

Hardware parameters are pytest parameters (one Verilator build per combination, reused across
seeds and runs); seeds are runtime: ``SPIKEFORGE_SEED=7`` (or ``=3,4,5``) replaces the default
seeds, and a failure prints the seed, the first mismatch and the one-line replay command.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest
import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.rtl.fp_engine import FpEngine
from spikeforge.rtl.params import CoreParams
from spikeforge.sim import runner
from spikeforge.sim.lint import lint_report
from spikeforge.sim.tb.tb_fp_engine import CLOCK_NS, FpEngineTop
from spikeforge.sim.verilog import write_verilog

TB_MODULE = "spikeforge.sim.tb.tb_fp_engine"
TOP = "fp_engine_top"
DEFAULT_SEEDS = (0, 1)
DENSITIES = (0.1, 0.5, 1.0)
SAMPLES = 2  # back to back per stimulus: the second one checks that `fresh` clears the state

# One Verilator build each. Widths are chosen so that the stimuli below reach both membrane
# rails, fire, and land near the threshold (non-zero surrogate) within T = 5 steps.
HARDWARE = {
    "l1-subtract-rect": dict(lanes=1, layers=[10, 5], reset="subtract", surrogate="rect",
                             leak_rounding="half_up", membrane_bits=10, weight_bits=8, beta=0.75),
    "l4-zero-triangle": dict(lanes=4, layers=[16, 13], reset="zero", surrogate="triangle",
                             leak_rounding="floor", membrane_bits=10, weight_bits=7, beta=0.875),
    # digits-like hidden layer: membrane floor, fractional membrane bits
    "l8-subtract-triangle": dict(lanes=8, layers=[64, 40], reset="subtract", surrogate="triangle",
                                 leak_rounding="half_up", membrane_bits=14, weight_bits=8, beta=0.875,
                                 threshold=600, membrane_floor=-1024, membrane_frac_bits=1),
    "l8-zero-rect": dict(lanes=8, layers=[12, 20], reset="zero", surrogate="rect",
                         leak_rounding="floor", membrane_bits=9, weight_bits=7, beta=0.5),
}


def hw_config(hw_id: str) -> SpikeforgeConfig:
    h = HARDWARE[hw_id]
    vbits = h["membrane_bits"]
    thr = h.get("threshold", ((1 << (vbits - 1)) - 1) // 3)
    if h["surrogate"] == "triangle":
        surrogate = {"kind": "triangle", "width": 1 << max(4, vbits - 5), "bits": 3}
    else:
        surrogate = {"kind": "rect", "width": thr // 2 + 1, "bits": 1}
    neuron = {"threshold": thr, "beta": h["beta"], "beta_bits": 4, "reset": h["reset"],
              "leak_rounding": h["leak_rounding"]}
    if "membrane_floor" in h:
        neuron["membrane_floor"] = h["membrane_floor"]
    return SpikeforgeConfig().replace(
        network={"layers": h["layers"], "timesteps": 5},
        neuron=neuron,
        formats={"membrane_bits": vbits, "weight_bits": h["weight_bits"],
                 "membrane_frac_bits": h.get("membrane_frac_bits", 0)},
        surrogate=surrogate,
        hardware={"lanes": h["lanes"]},
        training={"target_true": 4, "target_false": 1},
    )


def seeds() -> list[int]:
    env = os.environ.get("SPIKEFORGE_SEED", "").strip()
    return [int(s) for s in env.split(",")] if env else list(DEFAULT_SEEDS)


def stimuli(cfg: SpikeforgeConfig, seed: int) -> list[dict]:
    """Weights and Bernoulli input spikes at every density in DENSITIES. Each neuron's weights
    scatter around its own random mean, so some neurons sit at the top rail, some at the floor
    and some fire now and then, near the threshold where the surrogate is non-zero."""
    n_out, n_in = cfg.layer_shapes[0]
    w_lo, w_hi = -(1 << (cfg.formats.weight_bits - 1)), (1 << (cfg.formats.weight_bits - 1)) - 1
    out = []
    for k, density in enumerate(DENSITIES):
        g = torch.Generator().manual_seed(seed * 1000 + k)
        mean = torch.randint(w_lo, w_hi + 1, (n_out, 1), generator=g, dtype=torch.int64)
        spread = torch.randint(w_lo // 2, w_hi // 2 + 1, (n_out, n_in), generator=g, dtype=torch.int64)
        weights = (mean + spread).clamp(w_lo, w_hi)
        inputs = (torch.rand(cfg.network.timesteps, SAMPLES, n_in, generator=g) < density).to(torch.int64)
        out.append({"density": density, "weights": weights.tolist(), "inputs": inputs.tolist()})
    return out


def built(hw_id: str) -> tuple[SpikeforgeConfig, CoreParams, Path]:
    """The Verilator build of FpEngineTop for ``hw_id`` (made once, then reused)."""
    cfg = hw_config(hw_id)
    params = CoreParams.from_config(cfg)
    bdir = runner.build_dir_for(TOP, params)
    src = write_verilog(FpEngineTop(params), bdir, TOP)
    runner.build(src, TOP, bdir)
    return cfg, params, bdir


def replay_command(nodeid: str, seed: int) -> str:
    py = os.path.relpath(sys.executable)
    py = sys.executable if py.startswith("..") else py
    return f"SPIKEFORGE_SEED={seed} {py} -m pytest '{nodeid}'"


@pytest.mark.parametrize("hw_id", list(HARDWARE))
def test_fp_engine_matches_golden(hw_id, request):
    cfg, params, bdir = built(hw_id)
    for seed in seeds():
        args = {
            "config": cfg.to_dict(),
            "params": dataclasses.asdict(params),
            "seed": seed,
            "replay": replay_command(request.node.nodeid, seed),
            "stimuli": stimuli(cfg, seed),
        }
        res = runner.run(bdir, TOP, TB_MODULE, run_dir=bdir / "runs" / f"seed{seed}", args=args, seed=seed,
                         testcase="matches_golden")
        assert res.passed, f"{hw_id}, seed {seed}:\n{res.report()}"
        print(f"{hw_id} seed {seed}: {len(res.testcases)} cocotb tests passed, "
              f"{res.cycles_per_second(CLOCK_NS):,.0f} simulated cycles/s with waves")


def test_cosim_speed():
    """Simulated cycles per second of one Verilator build, printed (not asserted): with the
    bench driving and sampling both streams every cycle, and free running."""
    hw_id = "l8-subtract-triangle"
    cfg, params, bdir = built(hw_id)
    args = {"config": cfg.to_dict(), "params": dataclasses.asdict(params), "seed": 0, "replay": "-",
            "stimuli": stimuli(cfg, 0), "free_running_cycles": 200_000}
    res = runner.run(bdir, TOP, TB_MODULE, run_dir=bdir / "runs" / "speed", args=args, seed=0, waves=False,
                     testcase=["matches_golden", "free_running"])
    assert res.passed, res.report()
    bench = [tc for tc in res.testcases if tc.name.startswith("matches_golden")]
    free = [tc for tc in res.testcases if tc.name == "free_running"]
    assert bench and free, [tc.name for tc in res.testcases]
    print(f"\nVerilator co-sim speed ({hw_id}, waves off):")
    for tc in bench + free:
        cps = tc.sim_time_ns / CLOCK_NS / tc.wall_time_s
        print(f"  {tc.name:32s} {tc.sim_time_ns / CLOCK_NS:9,.0f} cycles {tc.wall_time_s:7.2f} s {cps:12,.0f} cycles/s")


# ---------------------------------------------------------------------------------------------
# lint: every `verilator --lint-only -Wall` warning of the FP engine is fixed or waived (sim/lint.py)


@pytest.mark.parametrize("hw_id", list(HARDWARE))
def test_fp_engine_lint(hw_id):
    """`verilator --lint-only -Wall` on the generated FP engine: nothing left but the waivers."""
    params = CoreParams.from_config(hw_config(hw_id))
    bdir = runner.build_dir_for("lint-fp_engine", params)
    report = lint_report(write_verilog(FpEngine(params), bdir, "fp_engine"), "fp_engine")
    print(f"\n{hw_id}: {report['warnings']} lint warnings, all but {len(report['unwaived'])} waived")
    assert report["clean"], "unwaived Verilator lint warnings:\n" + "\n".join(report["unwaived"])
