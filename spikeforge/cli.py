"""``spikeforge`` command line: train, federated, bench, map, generate, synth, board, compare, config.

Every user error (bad config, bad option, missing file) ends in one line on stderr and exit code 2;
a traceback means a bug in spikeforge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spikeforge.config import ConfigError, SpikeforgeConfig, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "digits.toml"


class UsageError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _load(args: argparse.Namespace) -> SpikeforgeConfig:
    path = Path(args.config) if args.config else DEFAULT_CONFIG
    if not args.config and not path.is_file():
        raise UsageError(f"no --config given and the default {path} is missing")
    cfg = load_config(path)
    if getattr(args, "seed", None) is not None:
        cfg = cfg.replace(training={"seed": args.seed})
    return cfg


def _write(report: dict, path: str | None) -> None:
    if path:
        from spikeforge.train import write_report

        write_report(report, path)
        print(f"report written to {path}")


def cmd_train(args: argparse.Namespace) -> int:
    from spikeforge.train import train

    cfg = _load(args)
    if (args.nir_in or args.nir_out) and args.backend != "golden":
        raise UsageError("--nir-in / --nir-out work with --backend golden (train there, then compare the weights)")
    start = None
    if args.nir_in:
        from spikeforge.nir_io import read_nir

        cfg, start = read_nir(args.nir_in, cfg)
        print(f"network from {args.nir_in}: layers {list(cfg.network.layers)}, reset {cfg.neuron.reset}")
    if args.backend == "rtl":
        from spikeforge.sim.cosim_core import train_rtl

        r = train_rtl(cfg, dataset=args.dataset, samples=args.samples, epochs=args.epochs, progress=not args.quiet)
    elif args.backend == "rtl-multicore":
        from spikeforge.rtl.multicore import default_placement
        from spikeforge.sim.cosim_multicore import train_multicore_rtl

        print(f"{cfg.hardware.cores} cores:\n{default_placement(cfg).describe()}")
        r = train_multicore_rtl(cfg, dataset=args.dataset, samples=args.samples, epochs=args.epochs,
                                progress=not args.quiet)
    elif args.backend == "uart":
        r = train(cfg, backend=_uart_backend(cfg, args), dataset=args.dataset, samples=args.samples,
                  epochs=args.epochs, progress=not args.quiet).report
    else:
        from spikeforge.golden import GoldenBackend

        res = train(cfg, backend=GoldenBackend(cfg, start), dataset=args.dataset, samples=args.samples,
                    epochs=args.epochs, progress=not args.quiet)
        r = res.report
        if args.nir_out:
            from spikeforge.nir_io import write_nir

            write_nir(args.nir_out, cfg, res.backend.weights)
            print(f"trained network written to {args.nir_out} (NIR)")
    _write(r, args.report)
    print(_train_summary(r))
    return 0


def _uart_backend(cfg, args: argparse.Namespace):
    """The same driver as ``--backend rtl``, over a serial port to a board (docs/host-protocol.md §1)."""
    from spikeforge.sim.driver import Client, HostError, RtlBackend
    from spikeforge.sim.uart_transport import UartTransport, open_serial

    if not args.port:
        raise UsageError("--backend uart needs --port DEV (e.g. /dev/ttyUSB1, or a pyserial URL)")
    try:
        port = open_serial(args.port, args.baud, timeout=args.timeout)
    except Exception as e:  # pyserial raises its own SerialException for a missing device
        raise UsageError(f"cannot open serial port {args.port!r}: {e}") from None
    try:
        backend = RtlBackend(Client(UartTransport(port), cfg))
    except (HostError, TimeoutError, RuntimeError) as e:
        raise UsageError(f"no spikeforge core built from this config answers on {args.port}: {e}") from None
    backend.name = "uart"
    return backend


def _train_summary(r: dict) -> str:
    c = r["config"]
    rows = [
        ("backend", r["backend"]),
        ("dataset", f"{r['dataset']} ({r['samples']} train / {r['test_samples']} test samples)"),
        ("network", f"{'-'.join(map(str, c['network']['layers']))}, T={c['network']['timesteps']}"),
        ("formats", f"weights {c['formats']['weight_bits']} b, membrane {c['formats']['membrane_bits']} b, "
                    f"errors {c['formats']['error_bits']} b"),
        ("epochs", str(r["epochs"])),
        ("train accuracy", f"{r['train_accuracy']:.4f}"),
        ("test accuracy", f"{r['test_accuracy']:.4f}"),
        ("weights sha256", r["weights_sha256"][:16] + "…"),
        ("time", f"{r['train_seconds']:.1f} s"),
    ]
    if "rtl" in r:
        rows.append(("simulated", f"{r['rtl']['cycles']:,} core cycles, {r['rtl']['simulated_cycles_per_s']:,} cycles/s "
                                  "(Verilator, host protocol included)"))
    w = max(len(k) for k, _ in rows)
    return "\n".join(["spikeforge training summary"] + [f"  {k:<{w}}  {v}" for k, v in rows])


def cmd_bench(args: argparse.Namespace) -> int:
    from spikeforge import bench

    cfg = _load(args)
    if args.what == "scaling":
        from spikeforge.scaling import CORE_COUNTS, bench_scaling, bench_scaling_rtl, scaling_summary

        counts = CORE_COUNTS
        if args.cores:
            try:
                counts = tuple(int(c) for c in args.cores.split(","))
            except ValueError:
                raise UsageError(f"--cores must be comma-separated integers, got {args.cores!r}") from None
            if not counts or any(not 1 <= c <= 20 for c in counts):
                raise UsageError(f"--cores must list core counts from 1 to 20, got {args.cores!r}")
        if args.rtl:
            samples = args.samples if args.samples != 512 else None
            report = bench_scaling_rtl(cfg, counts, samples=samples, progress=not args.quiet, buffers=args.buffers)
        else:
            report = bench_scaling(cfg, counts, batches=args.batches, buffers=args.buffers or 8, progress=not args.quiet)
        _write(report, args.report)
        print(scaling_summary(report))
        return 1 if report["goal_met"] is False else 0
    if args.what == "rtl":
        try:
            densities = [float(d) for d in args.densities.split(",")]
        except ValueError:
            raise UsageError(f"--densities must be comma-separated numbers, got {args.densities!r}") from None
        if not densities or any(not 0.0 < d <= 1.0 for d in densities):
            raise UsageError(f"--densities must lie in (0, 1], got {args.densities!r}")
        report = bench.bench_rtl(cfg, densities, samples=args.samples if args.samples != 512 else None,
                                 progress=not args.quiet)
        _write(report, args.report)
        print(bench.rtl_summary(report))
        return 0 if report["goal_met"] else 1
    report = bench.bench_golden(cfg, samples=args.samples, repeats=args.repeats, progress=not args.quiet)
    _write(report, args.report)
    print(bench.summary(report))
    return 0


def cmd_federated(args: argparse.Namespace) -> int:
    import os

    from spikeforge.federated import FederatedOptions, run_federated, worker_config, worker_main

    cfg = _load(args)
    opts = FederatedOptions(workers=args.workers, rounds=args.rounds or cfg.training.epochs, local_epochs=args.local_epochs,
                            backend=args.backend, dataset=args.dataset, samples=args.samples,
                            test_samples=args.test_samples, lr_shift=args.lr_shift, progress=not args.quiet)
    opts.validate()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        # one worker of a multi-machine run (MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE set)
        import torch.distributed as dist

        if opts.backend != "golden":
            raise UsageError("a multi-machine run (RANK/WORLD_SIZE set) supports --backend golden only")
        dist.init_process_group("gloo")
        try:
            world = dist.get_world_size()
            report = worker_main(worker_config(cfg, opts, world), opts, dist.get_rank(), world)
        finally:
            dist.destroy_process_group()
        if report is None:
            return 0
    else:
        report = run_federated(cfg, opts, centralised=not args.no_baseline)
    _write(report, args.report)
    rows = [("workers", f"{report['workers']} ({opts.backend}), shards {report['shard_sizes']}"),
            ("rounds", f"{report['rounds']} x {report['local_epochs']} local epoch(s)"),
            ("final_test_accuracy", f"{report['final_test_accuracy']:.4f} on {report['test_samples']} test samples")]
    if "centralised_test_accuracy" in report:
        rows.append(("centralised", f"{report['centralised_test_accuracy']:.4f} on the same test samples "
                                    f"(gap {report['accuracy_gap_points']:+.2f} points)"))
    rows.append(("weights_sha256", report["weights_sha256"]))
    w = max(len(k) for k, _ in rows)
    print("\n".join(["spikeforge federated summary"] + [f"  {k:<{w}}  {v}" for k, v in rows]))
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    from spikeforge.mapper import place_config

    cfg = _load(args)
    source = cfg.name
    if args.nir:
        from spikeforge.nir_io import read_nir

        cfg, _ = read_nir(args.nir, cfg)
        source = f"{args.nir} (NIR; hardware from {cfg.name})"
    if args.rtl:
        from spikeforge.mapper import place_pipeline

        hw = cfg.hardware
        p = place_pipeline(cfg.network.layers, args.cores or hw.cores, hw.core_neurons, hw.core_synapses,
                           align=hw.lanes, neuron_cost=hw.neuron_cost or None)
    else:
        p = place_config(cfg, args.cores)
    if args.json:
        print(json.dumps(p.to_dict(), indent=2))
    else:
        print(f"{source}: layers {list(cfg.network.layers)} on {p.n_cores} cores "
              f"(capacity {cfg.hardware.core_neurons} neurons, {cfg.hardware.core_synapses} synapses per core)")
        if args.rtl:
            basis = (f"work = neurons x hardware.neuron_cost {list(cfg.hardware.neuron_cost)}" if cfg.hardware.neuron_cost
                     else "synapses (no hardware.neuron_cost profile)")
            print(f"the multi-core RTL's placement: cut at groups of {hw.lanes} neurons for the least {basis} "
                  "on the busiest core (a core may hold the end of one layer and the start of the next)")
        print(p.describe())
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from spikeforge.generate import generate

    cfg = _load(args)
    s = generate(cfg, args.out, lint=args.lint)
    print(f"wrote {s['verilog']} ({s['verilog_bytes']:,} bytes) in {s['generate_seconds']} s")
    print(f"memories: {s['memory_bits_total']:,} bits in {len(s['memories'])} memories; "
          f"summary in {args.out}/summary.md and summary.json")
    lint = s["lint"]
    if lint is None:
        return 0
    print(f"lint ({lint['tool']}): {lint['warnings']:,} warnings, "
          f"{sum(w['count'] for w in lint['waived']):,} waived in {len(lint['waived'])} classes, "
          f"{len(lint['unwaived'])} unwaived")
    for u in lint["unwaived"][:20]:
        print("  " + u)
    return 0 if lint["clean"] else 1


def cmd_synth(args: argparse.Namespace) -> int:
    from spikeforge.fpga.synth import SynthError, exit_code, summary_lines, synth

    cfg = _load(args)
    out = Path(args.out) if args.out else REPO_ROOT / "build" / "synth" / f"{args.target}-{cfg.name}-{cfg.digest()}"
    print(f"synthesizing {cfg.name} for {args.target} in {out} (Yosys, then nextpnr: minutes)", file=sys.stderr)
    try:
        r = synth(cfg, args.target, out, seed=args.seed, freq_mhz=args.freq, router=args.router)
    except SynthError as e:
        raise UsageError(str(e)) from None
    r["config_file"] = str(args.config or DEFAULT_CONFIG)
    _write(r, args.report)
    print("\n".join(summary_lines(r)))
    rc = exit_code(r, args.allow_timing_fail)
    if rc == 2:
        print(f"spikeforge: timing FAILED: {r['fmax_mhz']} MHz < {r['constraint_mhz']} MHz "
              f"(--allow-timing-fail to exit 0 anyway)", file=sys.stderr)
    elif rc == 3:
        print(f"spikeforge: does not fit {args.target}: {r.get('reason')}", file=sys.stderr)
    return rc


def cmd_board(args: argparse.Namespace) -> int:
    from spikeforge.fpga.boards import board_exit_code, board_summary_lines, build_board
    from spikeforge.fpga.synth import SynthError

    cfg = _load(args)
    out = Path(args.out) if args.out else REPO_ROOT / "build" / "board" / f"{args.board}-{cfg.name}-{cfg.digest()}"
    print(f"building the {args.board} bitstream of {cfg.name} in {out} (Yosys, nextpnr, pack: minutes)",
          file=sys.stderr)
    try:
        r = build_board(cfg, args.board, out, baud=args.baud, seed=args.seed, allow_timing_fail=args.allow_timing_fail)
    except (SynthError, ValueError) as e:
        raise UsageError(str(e)) from None
    r["config_file"] = str(args.config or DEFAULT_CONFIG)
    _write(r, args.report)
    print("\n".join(board_summary_lines(r)))
    rc = board_exit_code(r, args.allow_timing_fail)
    if rc == 2:
        print(f"spikeforge: timing FAILED at the board clock: {r['fmax_mhz']} MHz < {r['clock_mhz']:g} MHz",
              file=sys.stderr)
    elif rc == 3:
        print(f"spikeforge: does not fit {args.board}: {r.get('reason')}", file=sys.stderr)
    return rc


def cmd_compare(args: argparse.Namespace) -> int:
    """Exit 0 when every report ends with the same weights (weights_sha256), else 1."""
    reports = []
    for path in args.reports:
        try:
            r = json.loads(Path(path).read_text())
            reports.append((path, r.get("backend", "?"), r["weights_sha256"]))
        except FileNotFoundError:
            raise UsageError(f"report {path} does not exist") from None
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(f"{path} is not a training report (no weights_sha256)") from None
    for path, backend, sha in reports:
        print(f"  {backend:<8} {sha}  {path}")
    same = len({sha for _, _, sha in reports}) == 1
    print("same weights" if same else "WEIGHTS DIFFER")
    return 0 if same else 1


def cmd_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    if args.json:
        print(json.dumps(cfg.to_dict(), indent=2))
    else:
        print(f"{args.file}: ok ({cfg.name}, layers {list(cfg.network.layers)}, digest {cfg.digest()})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spikeforge", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a network on a backend and write a JSON report")
    t.add_argument("--backend", default="golden", choices=["golden", "rtl", "rtl-multicore", "uart"],
                   help="where the arithmetic runs: golden model, the core's RTL under Verilator, the "
                        "multi-core accelerator's RTL (hardware.cores cores) under Verilator, or a board over a "
                        "serial port (--port)")
    t.add_argument("--port", help="--backend uart: serial device or pyserial URL")
    t.add_argument("--baud", type=int, default=115200, help="--backend uart: baud rate (default 115200)")
    t.add_argument("--timeout", type=float, default=5.0, help="--backend uart: seconds to wait for a response")
    t.add_argument("--dataset", default="digits", choices=["digits"])
    t.add_argument("--config", help=f"TOML config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    t.add_argument("--epochs", type=int, help="override training.epochs")
    t.add_argument("--samples", type=int, help="use only the first N training samples")
    t.add_argument("--seed", type=int, help="override training.seed")
    t.add_argument("--report", help="write the JSON report here")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--nir-in", help="start from this NIR graph's network and weights (--config supplies the rest)")
    t.add_argument("--nir-out", help="write the trained network as a NIR graph here")
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("bench", help="benchmarks that print measured figures")
    b.add_argument("what", choices=["golden", "rtl", "scaling"],
                   help="golden: golden model vs snnTorch float BPTT training speed; "
                        "rtl: engine busy cycles (hardware counters) vs the work bound, on Verilator; "
                        "scaling: throughput and efficiency on 1..20 cores and off-chip traffic (cycle model)")
    b.add_argument("--config", help=f"TOML config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    b.add_argument("--samples", type=int, default=512,
                   help="training samples per measurement (rtl: per density, at most one batch; default one batch)")
    b.add_argument("--densities", default="0.1,0.5,1.0", help="rtl: input spike densities")
    b.add_argument("--repeats", type=int, default=3, help="measurements per side; the best is reported")
    b.add_argument("--batches", type=int, default=2, help="scaling: training batches per core count")
    b.add_argument("--buffers", type=int, default=None,
                   help="scaling: samples whose state a core holds (model: default 8; --rtl: default the config's "
                        "hardware.sample_buffers)")
    b.add_argument("--rtl", action="store_true",
                   help="scaling: measure on the multi-core RTL under Verilator instead of the cycle model "
                        "(one build per core count; --samples per count, default one batch)")
    b.add_argument("--cores", help="scaling: comma-separated core counts (default 1,2,4,8,16,20)")
    b.add_argument("--seed", type=int, help="override training.seed")
    b.add_argument("--report", help="write the JSON report here")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_bench)

    mp_ = sub.add_parser("map", help="place a network's layers on cores and print the placement")
    mp_.add_argument("--config", help=f"TOML config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    mp_.add_argument("--cores", type=int, help="override hardware.cores")
    mp_.add_argument("--nir", help="place this NIR graph's network instead of the config's")
    mp_.add_argument("--json", action="store_true")
    mp_.add_argument("--rtl", action="store_true",
                     help="the placement the multi-core RTL runs (per core: one slice, whole layers, or the end of one layer and the start of the next)")
    mp_.set_defaults(func=cmd_map)

    f = sub.add_parser("federated", help="FedAvg training of several accelerator instances over torch.distributed (gloo)")
    f.add_argument("--workers", type=int, default=5, help="accelerator instances, one process each (default 5)")
    f.add_argument("--backend", default="golden", choices=["golden", "rtl"])
    f.add_argument("--dataset", default="digits", choices=["digits"])
    f.add_argument("--rounds", type=int, help="FedAvg rounds (default: training.epochs)")
    f.add_argument("--local-epochs", type=int, default=1, help="passes over the worker's shard per round (default 1)")
    f.add_argument("--config", help=f"TOML config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    f.add_argument("--samples", type=int, help="use only the first N training samples (before sharding)")
    f.add_argument("--test-samples", type=int, help="evaluate on the first N test samples")
    f.add_argument("--lr-shift", type=int,
                   help="the workers' training.lr_shift (default: the config's minus floor(log2(workers)))")
    f.add_argument("--seed", type=int, help="override training.seed")
    f.add_argument("--no-baseline", action="store_true", help="skip the centralised training run for comparison")
    f.add_argument("--report", help="write the JSON report here")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=cmd_federated)

    g = sub.add_parser("generate", help="write the core's Verilog and a summary (memories, lanes, formats)")
    g.add_argument("--config", help=f"TOML config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--no-lint", dest="lint", action="store_false", help="skip the Verilator lint pass")
    g.set_defaults(func=cmd_generate)

    y = sub.add_parser("synth", help="Yosys + nextpnr: fit, Fmax, LUT/FF/BRAM/DSP from nextpnr's JSON report")
    y.add_argument("--target", required=True, choices=["ice40-up5k", "ecp5-25f", "ecp5-85f"])
    y.add_argument("--config", help=f"TOML config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    y.add_argument("--report", help="write the JSON report here")
    y.add_argument("--out", help="build directory (default build/synth/TARGET-CONFIG-DIGEST)")
    y.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    y.add_argument("--freq", type=float, help="clock constraint in MHz (default: 30 iCE40, 100 ECP5)")
    y.add_argument("--router", choices=["router1", "router2"], help="nextpnr router (default: router1)")
    y.add_argument("--allow-timing-fail", action="store_true",
                   help="exit 0 when the design fits but misses the clock (the report still says so)")
    y.set_defaults(func=cmd_synth)

    bd = sub.add_parser("board", help="bitstream for a real board (amaranth-boards): the core behind the board's UART")
    bd.add_argument("--board", required=True, choices=["ulx3s-85f", "icebreaker"])
    bd.add_argument("--config", help=f"TOML config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    bd.add_argument("--report", help="write the JSON report here")
    bd.add_argument("--out", help="build directory (default build/board/BOARD-CONFIG-DIGEST)")
    bd.add_argument("--baud", type=int, default=115_200, help="UART baud rate (default 115200)")
    bd.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    bd.add_argument("--allow-timing-fail", action="store_true",
                    help="keep the bitstream even when the board clock is not met (it may miscompute)")
    bd.set_defaults(func=cmd_board)

    k = sub.add_parser("compare", help="check that training reports end with the same weights (sha256)")
    k.add_argument("reports", nargs="+", help="JSON reports of spikeforge train")
    k.set_defaults(func=cmd_compare)

    c = sub.add_parser("config", help="validate a config file")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="print every value, defaults filled in")
    c.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for opt in ("epochs", "samples", "repeats", "rounds", "workers", "local_epochs", "test_samples", "batches", "buffers"):
        v = getattr(args, opt, None)
        if v is not None and v < 1:
            print(f"spikeforge: error: --{opt.replace('_', '-')} must be >= 1, got {v}", file=sys.stderr)
            raise SystemExit(2)
    try:
        return args.func(args)
    except (ConfigError, UsageError, ValueError, FileNotFoundError) as e:  # MappingError is a ValueError
        print(f"spikeforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikeforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (head, less) went away: stop quietly, as other command-line tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
