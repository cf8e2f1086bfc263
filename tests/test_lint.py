"""Verilator `--lint-only -Wall` of the whole generated core (host interface included): every
warning is fixed or matches a waiver of ``sim/lint.py``, and the waivers do not swallow real
findings."""

from __future__ import annotations

import random

import pytest

from spikeforge.config import load_config
from spikeforge.rtl.top import Top
from spikeforge.sim import runner
from spikeforge.sim.lint import WAIVERS, classify, lint_report
from spikeforge.sim.scenario import random_config
from spikeforge.sim.verilog import write_verilog

TOP = "spikeforge_core"


def _configs():
    yield "digits", load_config("configs/digits.toml")
    for seed in (3, 11):  # random widths, lanes, depths: the waivers must not depend on one shape
        yield f"random{seed}", random_config(random.Random(seed))


@pytest.mark.parametrize("name,cfg", list(_configs()), ids=lambda x: x if isinstance(x, str) else "")
def test_core_lint_clean_or_waived(name, cfg):
    bdir = runner.build_dir_for("lint-core", cfg.to_dict())
    report = lint_report(write_verilog(Top(cfg), bdir, TOP), TOP)
    print(f"\n{name}: {report['warnings']} warnings, waived per class:",
          ", ".join(f"{w['code']} {w['count']}" for w in report["waived"]))
    assert report["clean"], "unwaived Verilator lint warnings:\n" + "\n".join(report["unwaived"][:40])


def test_uart_board_top_lint_clean_or_waived():
    """The board-top logic (UART pins + bridge + core) adds no unwaived warning."""
    from spikeforge.rtl.uart import UartTop

    cfg = load_config("configs/digits.toml")
    bdir = runner.build_dir_for("lint-uart", cfg.to_dict())
    report = lint_report(write_verilog(UartTop(cfg, divisor=104), bdir, "spikeforge_uart"), "spikeforge_uart")
    assert report["clean"], "unwaived Verilator lint warnings:\n" + "\n".join(report["unwaived"][:40])


def test_every_waiver_has_a_reason():
    for code, pattern, reason in WAIVERS:
        assert code.isupper() and pattern.startswith("^") and len(reason) > 40, (code, pattern)


def test_lint_waivers_are_not_blanket():
    """Warnings the waivers were not written for stay failures."""
    verilog = "\n".join([
        "module m(a, q, weight_data);",
        "  assign y = a + b;",
        "  case (mode)",
        "  assign \\w.f  = weight_data[3:0];",
        "  assign \\$7  = fsm_state == 2'h2;",
        "  assign \\$8  = a & b;",
        "  assign \\$9  = 4'h3;",
        "  assign z = a >> b;",
        "endmodule",
        "module \\m.sub (c, d);",
        "  assign \\$9  = c;",
        "endmodule",
    ])
    real = [
        "%Warning-WIDTHTRUNC: x.v:2:3: Operator ASSIGNW expects 4 bits on the Assign RHS, but RHS's VARREF 'y' generates 5 bits.",
        "%Warning-WIDTHTRUNC: x.v:8:3: Operator ASSIGNW expects 4 bits on the Assign RHS, but Assign RHS's ADD generates 5 bits.",
        "%Warning-UNUSEDSIGNAL: x.v:2:3: Bits of signal are not used: 'membrane'[3:0]",
        "%Warning-UNUSEDSIGNAL: x.v:1:3: Signal is not used: 'weight_data'",
        "%Warning-UNUSEDSIGNAL: x.v:11:3: Signal is not used: 'd'",  # a port of the submodule
        "%Warning-UNUSEDSIGNAL: x.v:2:3: Signal is not used: 'y'",
        "%Warning-UNUSEDSIGNAL: x.v:6:3: Signal is not used: '$8'",
        "%Warning-CASEINCOMPLETE: x.v:3:3: Case values incompletely covered (example pattern 0x3)",
        "%Warning-LATCH: x.v:2:3: Latch inferred for signal 'q'",
        "%Warning-UNSIGNED: x.v:2:3: Comparison is constant due to unsigned arithmetic",
    ]
    waived, unwaived = classify(real, verilog)
    assert unwaived == real and not waived
    ok = ["%Warning-UNUSEDSIGNAL: x.v:4:3: Signal is not used: 'w.f'",
          "%Warning-UNUSEDSIGNAL: x.v:5:3: Signal is not used: '$7'",
          "%Warning-UNUSEDSIGNAL: x.v:7:3: Signal is not used: '$9'",
          "%Warning-UNUSEDSIGNAL: x.v:11:3: Signal is not used: '$9'",
          "%Warning-WIDTHTRUNC: x.v:8:3: Operator ASSIGNW expects 4 bits on the Assign RHS, but Assign RHS's SHIFTR generates 8 bits."]
    waived, unwaived = classify(ok, verilog)
    assert not unwaived and sum(waived.values()) == len(ok)
