"""Block RAMs whose reads never meet a write of the same word in the same cycle, and the
simulation flag that proves it.

An Amaranth read port that is not transparent returns the *old* word when a write of the same
address lands in the same cycle. Block RAMs do not promise that (iCE40 EBR; ECP5 DP16KD between
its two ports), so Yosys keeps the promise in logic behind every such port: the write data and
address in registers, an address compare and a multiplexer. On the iCE40 UP5K core that came to
332 of its logic cells (measured with ``synth --no-rw-check``).

Most of the core's memories never see such a collision: they are written and read in different
phases (host accesses while the core is idle, BP reading what FP wrote a pass ago), or a pipeline
keeps the write of one entry away from the next read of it. Those are made with
:meth:`CollisionWatch.memory`, which marks them ``no_rw_check`` so Yosys leaves the bypass out,
and :meth:`CollisionWatch.watch` puts a sticky flag beside each pair of ports that rises if a read
ever meets a write of its address. Nothing reads the flags in hardware (Yosys removes them); every
simulation of the core asserts that they stayed low, so a change that breaks the claim fails the
tests instead of the FPGA.

Memories that do depend on the old-data (or new-data) behaviour keep Amaranth's default (or
``transparent_for``) and Yosys' bypass: they are not made here.
"""

from __future__ import annotations

from amaranth import Cat, Signal
from amaranth.lib.memory import Memory

__all__ = ["NO_RW_CHECK", "CollisionWatch"]

#: the Yosys memory attribute: a same-cycle read/write of one address may read anything
NO_RW_CHECK = "no_rw_check"


class CollisionWatch:
    """The ``no_rw_check`` memories of one component, with a sticky flag per watched port pair.

    ``rw_collision`` (created with the watch, so a parent can read it before this component is
    elaborated) is the OR of the flags; ``flags`` maps each watched pair's name to its own flag,
    for a failing test to say which memory it was.
    """

    def __init__(self, name: str):
        self.rw_collision = Signal(name=f"{name}_rw_collision")
        self.flags: dict[str, Signal] = {}
        self.ports: dict[str, tuple] = {}
        self._children: list[CollisionWatch] = []

    @staticmethod
    def memory(*, shape, depth: int, init=(), attrs: dict | None = None) -> Memory:
        return Memory(shape=shape, depth=depth, init=init, attrs={**(attrs or {}), NO_RW_CHECK: 1})

    def watch(self, m, name: str, rd, wr) -> None:
        """Flag a cycle in which read port ``rd`` reads the address write port ``wr`` writes."""
        if name in self.flags:
            raise ValueError(f"CollisionWatch: {name!r} is watched twice")
        flag = Signal(name=f"rw_collision_{name}")
        wen = wr.en if len(wr.en) == 1 else wr.en.any()  # (a 1-bit .any() leaves an unused copy)
        with m.If(rd.en & wen & (rd.addr == wr.addr)):
            m.d.sync += flag.eq(1)
        self.flags[name] = flag
        self.ports[name] = (rd, wr)

    def include(self, child: CollisionWatch) -> None:
        """Fold a sub-component's watch into this one's ``rw_collision``."""
        self._children.append(child)

    def drive(self, m) -> None:
        """Drive ``rw_collision``; call once, after the last watch."""
        terms = list(self.flags.values()) + [c.rw_collision for c in self._children]
        m.d.comb += self.rw_collision.eq(Cat(*terms).any() if terms else 0)

    def raised(self, ctx) -> list[str]:
        """In an Amaranth simulation: the names of the flags that are set, children included."""
        return [n for n, f in self.flags.items() if ctx.get(f)] + [n for c in self._children for n in c.raised(ctx)]
