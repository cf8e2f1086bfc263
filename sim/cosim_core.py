"""Build the whole core (Top) for a config under Verilator and run one of the cocotb tests of
:mod:`spikeforge.sim.tb.tb_core` on it: the one entry point of pytest's co-simulation, of
``spikeforge train --backend rtl`` and of ``spikeforge bench rtl``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from spikeforge.config import SpikeforgeConfig

from .runner import BUILD_ROOT, CosimResult, build, build_dir_for, run
from .verilog import write_verilog

__all__ = ["TOP", "BENCH", "build_core", "run_core"]

TOP = "spikeforge_core"
BENCH = "spikeforge.sim.tb.tb_core"


def build_core(cfg: SpikeforgeConfig, progress: bool = False) -> Path:
    """Verilog + Verilator build for ``cfg`` (cached: rebuilt only when the Verilog changes)."""
    from spikeforge.rtl.top import Top

    bdir = build_dir_for(TOP, cfg.to_dict())
    if progress:
        print(f"generating Verilog and building the Verilator model in {bdir} (cached after the first time)",
              file=sys.stderr)
    src = write_verilog(Top(cfg), bdir, TOP)
    build(src, TOP, bdir)
    return bdir


def run_core(cfg: SpikeforgeConfig, testcase: str, args: dict[str, Any], run_dir: Path | None = None,
             seed: int = 0, waves: bool = False) -> tuple[CosimResult, dict | None]:
    """Run ``testcase`` with ``args`` (plus config and seed); return the result and the JSON the
    test wrote to ``run_dir/out.json`` (None if it wrote none)."""
    bdir = build_core(cfg)
    run_dir = Path(run_dir) if run_dir else BUILD_ROOT / "runs" / f"{testcase}-{cfg.digest()}-{seed}"
    out = run_dir / "out.json"
    out.unlink(missing_ok=True)
    full = {"config": cfg.to_dict(), "seed": seed, "out": str(out.resolve()), **args}
    res = run(bdir, TOP, BENCH, run_dir=run_dir, args=full, seed=seed, waves=waves, testcase=testcase)
    return res, (json.loads(out.read_text()) if out.is_file() else None)


def train_rtl(cfg: SpikeforgeConfig, dataset: str = "digits", samples: int | None = None, epochs: int | None = None,
              progress: bool = True) -> dict:
    """``spikeforge train --backend rtl``: the training driver against the Verilator model of the
    core, through the host protocol; returns the same JSON report as the golden backend (plus an
    ``rtl`` section: simulated cycles, wall time, counters)."""
    bdir = build_core(cfg, progress=progress)
    return run_training(bdir, TOP, BENCH, BUILD_ROOT / "runs" / f"train-{cfg.digest()}-{samples}-{epochs}", cfg,
                        dataset, samples, epochs, progress, what="the core")


def run_training(bdir: Path, top: str, bench: str, run_dir: Path, cfg: SpikeforgeConfig, dataset: str,
                 samples: int | None, epochs: int | None, progress: bool, what: str) -> dict:
    """Run the cocotb test ``train`` of ``bench`` (the training driver inside the simulation),
    echoing its progress; return the report it wrote."""
    import threading

    report = run_dir / "report.json"
    report.unlink(missing_ok=True)
    stop = threading.Event()
    if progress:
        print(f"simulating {what} under Verilator; log {run_dir / 'sim.log'}", file=sys.stderr)
        threading.Thread(target=_echo_progress, args=(run_dir / "sim.log", stop), daemon=True).start()
    try:
        res = run(bdir, top, bench, run_dir=run_dir, waves=False, testcase="train",
                  args={"config": cfg.to_dict(), "seed": cfg.training.seed,
                        "train": {"dataset": dataset, "samples": samples, "epochs": epochs, "report": str(report),
                                  "progress": progress}})
    finally:
        stop.set()
    if not res.passed or not report.is_file():
        raise RuntimeError(f"RTL training of {what} failed:\n{res.report()}")
    return json.loads(report.read_text())


def federated_worker_rtl(cfg: SpikeforgeConfig, opts, rank: int, world: int, port: int) -> dict | None:
    """One federated worker on the core's Verilator model (``spikeforge federated --backend rtl``):
    the simulator process joins the gloo group itself and runs ``federated.worker_main`` with the
    RTL backend. Returns rank 0's report."""
    import dataclasses

    run_dir = BUILD_ROOT / "runs" / f"federated-{cfg.digest()}-{world}-{rank}"
    out = run_dir / "out.json"
    out.unlink(missing_ok=True)
    res = run(build_core(cfg), TOP, BENCH, run_dir=run_dir, waves=False, testcase="federated",
              args={"config": cfg.to_dict(), "seed": cfg.training.seed, "out": str(out.resolve()),
                    "federated": {"rank": rank, "world": world, "port": port,
                                  "options": {**dataclasses.asdict(opts), "progress": opts.progress and rank == 0}}})
    if not res.passed:
        raise RuntimeError(f"federated worker {rank} failed on the RTL:\n{res.report()}")
    return json.loads(out.read_text()) if rank == 0 else None


def _echo_progress(log: Path, stop) -> None:
    """Copy the simulation's progress lines (the driver's epoch bar and summaries) to stderr."""
    pos = 0
    while not stop.wait(1.0):
        if not log.is_file():
            continue
        with log.open("rb") as f:
            f.seek(pos)
            chunk = f.read()
            pos += len(chunk)
        for part in chunk.decode(errors="replace").replace("\r", "\n").splitlines():
            if part.startswith("epoch "):
                print(f"\r  rtl {part.strip()[:100]}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def replay_command(name: str, seed: int, amaranth: bool = False) -> str:
    return (f"python -m spikeforge.sim.cosim_core --scenario {name} --seed {seed}"
            + (" --amaranth" if amaranth else ""))


def run_scenario_verilator(name: str, seed: int, gap: float = 0.2, stall: float = 0.3, waves: bool = True,
                           run_dir: Path | None = None) -> dict:
    """One scenario on Verilator; raises AssertionError with the bench's report on any mismatch."""
    from .scenario import make_scenario

    sc = make_scenario(name, seed)
    res, out = run_core(sc.cfg, "scenarios", {"scenarios": [{"name": name, "seed": seed}], "gap": gap,
                                              "stall": stall, "replay": replay_command(name, seed)},
                        run_dir=run_dir or BUILD_ROOT / "runs" / f"scenario-{name}-{seed}", seed=seed, waves=waves)
    if not res.passed or out is None:
        raise AssertionError(res.report())
    return out["scenarios"][0]


def run_scenario_amaranth(name: str, seed: int, gap: float = 0.2, stall: float = 0.3) -> dict:
    """The same scenario in Amaranth's simulator (no build; slower per cycle)."""
    from spikeforge.rtl.top import Top

    from .amaranth_host import run_client, trace_monitor
    from .driver import Client
    from .scenario import Trace, make_scenario, run_and_check

    sc = make_scenario(name, seed)
    top = Top(sc.cfg)
    trace = Trace()
    return run_client(top, lambda t: run_and_check(Client(t, sc.cfg), sc, trace, replay_command(name, seed, True)),
                      seed=seed, gap=gap, stall=stall, benches=[trace_monitor(top, trace)])


def main(argv=None) -> int:
    """Replay one scenario, or run the full-length regression (``make cosim-full``)."""
    import argparse
    import time

    from .scenario import DIRECTED

    ap = argparse.ArgumentParser(prog="python -m spikeforge.sim.cosim_core", description=main.__doc__)
    ap.add_argument("--scenario", default="random", help=f"'random' or one of: {', '.join(DIRECTED)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--random", type=int, metavar="N", help="regression: N random seeds (from --seed) plus every directed case")
    ap.add_argument("--gap", type=float, default=0.2)
    ap.add_argument("--stall", type=float, default=0.3)
    ap.add_argument("--amaranth", action="store_true", help="Amaranth's simulator instead of Verilator")
    a = ap.parse_args(argv)
    cases = [(a.scenario, a.seed)]
    if a.random is not None:
        cases = [(d, 0) for d in DIRECTED] + [("random", a.seed + k) for k in range(a.random)]
    failed = []
    t0 = time.perf_counter()
    for n, (name, seed) in enumerate(cases):
        t1 = time.perf_counter()
        try:
            if a.amaranth:
                r = run_scenario_amaranth(name, seed, a.gap, a.stall)
            else:
                r = run_scenario_verilator(name, seed, a.gap, a.stall)
            print(f"[{n + 1}/{len(cases)}] {name} seed {seed}: ok, {r['samples']} samples, "
                  f"{r['elements_compared']} elements exact ({time.perf_counter() - t1:.1f} s)", flush=True)
        except AssertionError as e:
            failed.append((name, seed))
            print(f"[{n + 1}/{len(cases)}] {name} seed {seed}: MISMATCH\n{e}", flush=True)
    print(f"{len(cases)} cases run, {len(failed)} mismatches, {time.perf_counter() - t0:.0f} s"
          + ("".join(f"\n  failed: {replay_command(n, s, a.amaranth)}" for n, s in failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
