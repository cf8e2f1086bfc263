"""A fixed delay in a block RAM: ``o`` is ``i`` of ``cycles`` cycles ago, every cycle.

Why: an engine pipeline carries each item's address and operands along its stages in registers
(a group index and a δ through four stages of BP's accumulate, say). On an iCE40 a flip-flop fed
by another flip-flop takes a whole logic cell, and the UP5K has 5,280 of them but 30 block RAMs.
A RAM written at one address and read ``cycles - 1`` addresses behind, both pointers advancing
every cycle, delays a whole bundle for one block RAM per 16 bits and two small counters.

Only for free-running stages (no stall): the delay counts cycles, not items. The RAM has no reset,
so after a reset the first ``cycles`` outputs are whatever it held; the stages' valid bits stay in
flip-flops and say which outputs are items. The read never meets the write (the pointers differ),
so the RAM is marked no_rw_check and watched (rtl/ram.py).
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .ram import CollisionWatch

__all__ = ["DelayLine"]


class DelayLine(wiring.Component):
    def __init__(self, shape, cycles: int, name: str = "delay"):
        if not isinstance(cycles, int) or cycles < 2:
            raise ValueError(f"DelayLine: cycles must be an integer >= 2 (one is a register), got {cycles!r}")
        self.cycles = cycles
        self.depth = 1 << ceil_log2(cycles)
        self.collisions = CollisionWatch(name)
        self._name = name
        super().__init__({"i": In(shape), "o": Out(shape)})

    def elaborate(self, platform):
        m = Module()
        # a few words deep: Yosys would build it from flip-flops unless told it is a block RAM
        mem = self.collisions.memory(shape=self.i.shape(), depth=self.depth, init=[], attrs={"ram_style": "block"})
        m.submodules.mem = mem
        wr, rd = mem.write_port(), mem.read_port()
        bits = max(1, ceil_log2(self.depth))
        w_ptr = Signal(bits, name="write_ptr")
        r_ptr = Signal(bits, init=(-(self.cycles - 1)) % self.depth, name="read_ptr")
        m.d.sync += [w_ptr.eq(w_ptr + 1), r_ptr.eq(r_ptr + 1)]
        # written at w_ptr, read cycles - 1 entries behind: the RAM's output register adds the last cycle
        m.d.comb += [wr.en.eq(1), wr.addr.eq(w_ptr), wr.data.eq(self.i), rd.en.eq(1), rd.addr.eq(r_ptr),
                     self.o.eq(rd.data)]
        self.collisions.watch(m, self._name, rd, wr)
        self.collisions.drive(m)
        return m
