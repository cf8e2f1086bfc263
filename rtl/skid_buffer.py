"""A two-entry stream register slice (skid buffer): full throughput, registered on both sides.

Between a producer and a consumer whose ``ready`` is a deep function (the WG engine's same-word
hazard check, for one), a plain output register still passes ``ready`` straight back into the
producer's state. Here ``i.ready`` is a register (there is room in the skid entry) and
``o.valid`` / ``o.payload`` are registers, so no combinational path crosses the slice in either
direction. When the consumer stalls, the item the producer offered in that cycle lands in the
skid entry, so one item per cycle still flows.

Order is kept, nothing is dropped or duplicated (``tests/test_skid_buffer.py``). The skid entry
only fills while ``o`` holds an item, so ``~o.valid`` means the slice is empty.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    def __init__(self, payload_shape):
        self._shape = payload_shape
        super().__init__({"i": In(stream.Signature(payload_shape)), "o": Out(stream.Signature(payload_shape))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        skid_valid = Signal()
        skid = Signal(self._shape)
        m.d.comb += i.ready.eq(~skid_valid)
        take = i.valid & i.ready
        with m.If(~o.valid | o.ready):  # the output register is free or is being emptied
            with m.If(skid_valid):
                m.d.sync += [o.payload.eq(skid), skid_valid.eq(0)]  # o.valid stays 1
            with m.Else():
                m.d.sync += [o.valid.eq(take), o.payload.eq(i.payload)]
        with m.Elif(take):  # output stalled: the offered item waits in the skid entry
            m.d.sync += [skid.eq(i.payload), skid_valid.eq(1)]
        return m
