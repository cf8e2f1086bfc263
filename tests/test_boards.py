"""Board builds (fpga/boards.py): pins, clocks and baud divisors from amaranth-boards, clear
refusals, and the exit-code rule. The full bitstream builds run in `make boards` (minutes each);
`test_small_ulx3s_bitstream` builds one real bitstream inside `make test`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spikeforge.config import load_config
from spikeforge.fpga.boards import VERILOG_TOP, BOARDS, board_exit_code, build_board, uart_divisor

REPO = Path(__file__).resolve().parent.parent
SMALL = load_config(REPO / "fpga" / "small.toml")


@pytest.mark.parametrize("board, constraints, pins, clock", [
    ("ulx3s-85f", "spikeforge.lpf", ('SITE "M1"', 'SITE "L4"'), 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ'),
    ("icebreaker", "spikeforge.pcf", ("set_io uart_0__rx__io 6", "set_io uart_0__tx__io 9"), "uart"),
])
def test_board_tree_has_uart_pins_and_clock(tmp_path, board, constraints, pins, clock):
    r = build_board(SMALL, board, tmp_path, do_build=False)
    text = (tmp_path / constraints).read_text()
    for p in pins:
        assert p in text, f"{board}: {p!r} missing from {constraints}"
    assert clock in text
    # 115200 baud from the board oscillator: 25 MHz / 217, 12 MHz / 104
    assert r["divisor"] == {"ulx3s-85f": 217, "icebreaker": 104}[board]
    rtlil = (tmp_path / "spikeforge.il").read_text()
    if board == "icebreaker":
        # iCE40: the UART top enters as SPRAM-ready Verilog (fpga.synth.spram_ready), instantiated
        verilog = (tmp_path / f"{VERILOG_TOP}.v").read_text()
        assert VERILOG_TOP in rtlil and "uart_rx" in verilog and "host" in verilog
    else:
        assert "uart_rx" in rtlil and "host" in rtlil


def test_bad_board_and_baud_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown board"):
        build_board(SMALL, "de0-nano", tmp_path)
    with pytest.raises(ValueError, match="baud must be a positive integer"):
        uart_divisor(25e6, 0)
    # 3 Mbaud from 25 MHz: divisor 8 gives 3.125 Mbaud, 4 % off
    with pytest.raises(ValueError, match="error 4.2%"):
        build_board(SMALL, "ulx3s-85f", tmp_path, baud=3_000_000)
    assert not any(tmp_path.iterdir()), "a refused build must not leave a build tree"


def test_exit_code_rule():
    assert board_exit_code({"fits": False, "timing_met": None}) == 3
    assert board_exit_code({"fits": True, "timing_met": False}) == 2
    assert board_exit_code({"fits": True, "timing_met": False}, allow_timing_fail=True) == 0
    assert board_exit_code({"fits": True, "timing_met": True}) == 0


def test_cli_refuses_bad_baud_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "spikeforge.cli", "board", "--board", "icebreaker", "--config",
                        str(REPO / "fpga" / "small.toml"), "--baud", "5000000", "--out", str(tmp_path / "b")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "divisor" in r.stderr, r.stderr


def test_boards_table_matches_targets():
    for name, b in BOARDS.items():
        assert b.target in ("ecp5-85f", "ice40-up5k"), name


def test_small_ulx3s_bitstream(tmp_path):
    """A real bitstream: the small core behind the ULX3S UART, placed, routed and packed, with its
    Fmax checked against the board's 25 MHz clock."""
    r = build_board(SMALL, "ulx3s-85f", tmp_path)
    assert r["fits"] is True
    assert r["timing_met"] is True, r["reason"]
    assert r["fmax_mhz"] >= 25.0
    bit = Path(r["bitstream"])
    assert bit.exists() and bit.stat().st_size > 100_000
    assert (tmp_path / "result.json").exists()
    assert board_exit_code(r) == 0
