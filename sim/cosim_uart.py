"""Build the UART board top (:class:`~spikeforge.rtl.uart.UartTop`) under Verilator and run the
cocotb tests of :mod:`spikeforge.sim.tb.tb_uart` on it: the host protocol over the serial pins,
driven by the same :class:`~spikeforge.sim.driver.Client` and
:class:`~spikeforge.sim.uart_transport.UartTransport` a real host uses.

Replay one seed: ``python -m spikeforge.sim.cosim_uart --seed 3`` (``--waves`` for a VCD).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spikeforge.config import SpikeforgeConfig

from .runner import BUILD_ROOT, CosimResult, build, build_dir_for, run
from .scenario import small_cfg
from .verilog import write_verilog

__all__ = ["TOP", "BENCH", "TESTCASES", "DIVISOR", "build_uart", "run_uart", "replay_command"]

TOP = "spikeforge_uart_top"
BENCH = "spikeforge.sim.tb.tb_uart"
TESTCASES = ("protocol", "line_errors")
#: clock cycles per bit in co-simulation: the minimum, so a byte costs only 40 cycles
DIVISOR = 4

def _build_params(cfg: SpikeforgeConfig, divisor: int, idle_timeout_bits: int) -> dict:
    return {"config": cfg.to_dict(), "divisor": divisor, "idle_timeout_bits": idle_timeout_bits}


def build_uart(cfg: SpikeforgeConfig, divisor: int = DIVISOR, idle_timeout_bits: int | None = None) -> Path:
    """Verilog + Verilator build of ``UartTop(cfg, divisor)`` (cached per parameters and Verilog)."""
    from spikeforge.rtl.uart import DEFAULT_IDLE_TIMEOUT_BITS, UartTop

    idle = DEFAULT_IDLE_TIMEOUT_BITS if idle_timeout_bits is None else idle_timeout_bits
    bdir = build_dir_for(TOP, _build_params(cfg, divisor, idle))
    src = write_verilog(UartTop(cfg, divisor, idle_timeout_bits=idle), bdir, TOP)
    build(src, TOP, bdir)
    return bdir


def replay_command(seed: int) -> str:
    return f"python -m spikeforge.sim.cosim_uart --seed {seed} --waves"


def run_uart(testcase: str | list[str], seed: int = 0, cfg: SpikeforgeConfig | None = None, divisor: int = DIVISOR,
             idle_timeout_bits: int | None = None, waves: bool = False,
             run_dir: Path | None = None) -> tuple[CosimResult, dict | None]:
    """Run the bench's ``testcase`` (one name or a list) with ``seed``; returns the result and the
    JSON the bench wrote (None if none)."""
    from spikeforge.rtl.uart import DEFAULT_IDLE_TIMEOUT_BITS

    cfg = cfg or small_cfg()
    idle = DEFAULT_IDLE_TIMEOUT_BITS if idle_timeout_bits is None else idle_timeout_bits
    bdir = build_uart(cfg, divisor, idle)
    name = testcase if isinstance(testcase, str) else "-".join(testcase)
    run_dir = Path(run_dir) if run_dir else BUILD_ROOT / "runs" / f"uart-{name}-{cfg.digest()}-d{divisor}-{seed}"
    out = run_dir / "out.json"
    out.unlink(missing_ok=True)
    args: dict[str, Any] = {"config": cfg.to_dict(), "seed": seed, "divisor": divisor, "idle_timeout_bits": idle,
                            "replay": replay_command(seed), "out": str(out.resolve())}
    res = run(bdir, TOP, BENCH, run_dir=run_dir, args=args, seed=seed, waves=waves, testcase=testcase)
    return res, (json.loads(out.read_text()) if out.is_file() else None)


def main(argv=None) -> int:
    """Replay the UART co-simulation for one seed."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m spikeforge.sim.cosim_uart", description=main.__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--divisor", type=int, default=DIVISOR, help="clock cycles per bit")
    ap.add_argument("--test", choices=TESTCASES, action="append", help="run only this test (repeatable)")
    ap.add_argument("--waves", action="store_true", help="write a VCD next to the log")
    a = ap.parse_args(argv)
    res, out = run_uart(a.test or list(TESTCASES), seed=a.seed, divisor=a.divisor, waves=a.waves)
    for tc in res.testcases:
        print(f"{tc.name}: {'ok' if tc.passed else 'FAILED'} ({tc.wall_time_s:.1f} s)")
    if out:
        print(json.dumps(out))
    if not res.passed:
        print(res.report())
    return 0 if res.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
