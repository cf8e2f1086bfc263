"""Build the multi-core accelerator (``MultiCoreTop``) for a config under Verilator and run one of
the cocotb tests of :mod:`spikeforge.sim.tb.tb_multicore` on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from spikeforge.config import SpikeforgeConfig

from .runner import BUILD_ROOT, CosimResult, build, build_dir_for, run
from .verilog import write_verilog

__all__ = ["TOP", "BENCH", "build_multicore", "run_multicore", "train_multicore_rtl"]

TOP = "spikeforge_multicore"
BENCH = "spikeforge.sim.tb.tb_multicore"


def build_multicore(cfg: SpikeforgeConfig, progress: bool = False, cxx_opt: str | None = None,
                    link_stalls: int = 0) -> Path:
    """Verilog + Verilator build for ``cfg`` (cached: rebuilt only when the Verilog changes).
    ``cxx_opt="-O0"`` compiles a large build (20 cores: ~160 MB of C++) several times faster and
    simulates it slower: for short runs. ``link_stalls``: percent of cycles every core-network
    link stalls (``MultiCoreTop``; verification only)."""
    from spikeforge.rtl.multicore import MultiCoreTop

    key = cfg.to_dict()
    if cxx_opt:
        key["cxx_opt"] = cxx_opt
    if link_stalls:
        key["link_stalls"] = link_stalls
    bdir = build_dir_for(TOP, key)
    if progress:
        print(f"generating Verilog for {cfg.hardware.cores} cores and building the Verilator model in {bdir} "
              "(cached after the first time)", file=sys.stderr)
    src = write_verilog(MultiCoreTop(cfg, link_stalls=link_stalls), bdir, TOP)
    build(src, TOP, bdir, cxx_opt=cxx_opt)
    return bdir


def run_multicore(cfg: SpikeforgeConfig, testcase: str, args: dict[str, Any], run_dir: Path | None = None,
                  seed: int = 0, waves: bool = False, cxx_opt: str | None = None,
                  link_stalls: int = 0) -> tuple[CosimResult, dict | None]:
    """Run ``testcase`` with ``args`` (plus config and seed); return the result and the JSON the
    test wrote to ``run_dir/out.json`` (None if it wrote none)."""
    bdir = build_multicore(cfg, cxx_opt=cxx_opt, link_stalls=link_stalls)
    run_dir = Path(run_dir) if run_dir else BUILD_ROOT / "runs" / f"mc-{testcase}-{cfg.digest()}-{seed}"
    out = run_dir / "out.json"
    out.unlink(missing_ok=True)
    full = {"config": cfg.to_dict(), "seed": seed, "out": str(out.resolve()), **args}
    res = run(bdir, TOP, BENCH, run_dir=run_dir, args=full, seed=seed, waves=waves, testcase=testcase)
    return res, (json.loads(out.read_text()) if out.is_file() else None)


def train_multicore_rtl(cfg: SpikeforgeConfig, dataset: str = "digits", samples: int | None = None,
                        epochs: int | None = None, progress: bool = True, cxx_opt: str | None = None) -> dict:
    """``spikeforge train --backend rtl-multicore``: the training driver against the Verilator
    model of the multi-core accelerator (``hardware.cores`` cores), through every core's host
    port; returns the same JSON report as the golden backend plus an ``rtl`` section."""
    from .cosim_core import run_training

    bdir = build_multicore(cfg, progress=progress, cxx_opt=cxx_opt)
    return run_training(bdir, TOP, BENCH, BUILD_ROOT / "runs" / f"mc-train-{cfg.digest()}-{samples}-{epochs}", cfg,
                        dataset, samples, epochs, progress, what=f"{cfg.hardware.cores} cores")
