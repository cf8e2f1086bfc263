"""On-chip rate encoder (docs/arithmetic.md §4): pixels + seed → the input spike bitmap.

The LFSR is loaded with the sample's seed; then for t = 0..T-1 and pixel groups h = 0..H-1 one
cycle takes P draws (the next P pixels in stream order; N_in mod P for the last group) and writes
the word of spikes u < p. T·H cycles per sample, independent of the pixel values.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .lfsr import LfsrDraws

__all__ = ["Encoder"]


class Encoder(wiring.Component):
    def __init__(self, *, lanes: int, inputs: int, timesteps: int, pixel_bits: int):
        if min(lanes, inputs, timesteps, pixel_bits) < 1:
            raise ValueError(f"Encoder: lanes, inputs, timesteps, pixel_bits must be >= 1, got "
                             f"{lanes}, {inputs}, {timesteps}, {pixel_bits}")
        self.lanes, self.inputs, self.timesteps, self.pixel_bits = lanes, inputs, timesteps, pixel_bits
        self.groups = -(-inputs // lanes)
        self.tail = inputs - (self.groups - 1) * lanes  # pixels in the last group
        depth = timesteps * self.groups
        super().__init__(
            {
                "start": In(1),
                "seed": In(32),
                "px_en": Out(1),
                "px_group": Out(max(1, ceil_log2(self.groups))),
                "px_data": In(data.ArrayLayout(unsigned(pixel_bits), lanes)),  # the cycle after px_en
                "spk_en": Out(1),
                "spk_addr": Out(max(1, ceil_log2(depth))),  # t * groups + h
                "spk_data": Out(lanes),
                "done": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        P, H = self.lanes, self.groups
        shorts = (self.tail,) if self.tail != P else ()
        m.submodules.lfsr = lfsr = LfsrDraws(self.pixel_bits, P, short_counts=shorts)
        t = Signal(range(self.timesteps + 1))
        h = Signal(range(H + 1))
        s1 = Signal()  # the pixel word of (s1_t, s1_h) is on px_data
        s1_h = Signal(range(H))
        # the spike words are written in the order the pixel words are read: one write counter,
        # not an address carried along the pipeline
        addr = Signal(len(self.spk_addr), name="spk_addr_next")
        m.d.comb += [lfsr.seed.eq(self.seed), lfsr.load.eq(self.start), self.px_group.eq(h)]

        # s1: the pixel word is on px_data and the draws are taken; s2: both registered, with the
        # lanes that exist; s3: the spike word (draw < pixel) registered, written to the spike
        # memory. The LFSR's XOR network, the compare and the memory's data setup each get a cycle.
        s2, s3 = Signal(), Signal()
        s2_draws = Signal.like(lfsr.draws)
        s2_px = Signal.like(self.px_data)
        s2_exists = Signal(P)
        s3_data = Signal(P)
        m.d.sync += [s2.eq(s1), s3.eq(s2),
                     s3_data.eq(Cat(*[s2_exists[k] & (s2_draws[k] < s2_px[k]) for k in range(P)]))]
        m.d.comb += [self.spk_en.eq(s3), self.spk_addr.eq(addr), self.spk_data.eq(s3_data)]
        with m.If(s3):
            m.d.sync += addr.eq(addr + 1)
        with m.If(s1):
            last = s1_h == H - 1
            m.d.comb += lfsr.next.eq(1)
            m.d.sync += [s2_draws.eq(lfsr.draws), s2_px.eq(self.px_data),
                         s2_exists.eq(Cat(*[(s1_h * P + k) < self.inputs for k in range(P)]))]
            if shorts:
                m.d.comb += lfsr.take.eq(Mux(last, self.tail, P))

        m.d.sync += s1.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.done.eq(1)
                with m.If(self.start):
                    m.d.sync += [t.eq(0), h.eq(0), addr.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(t == self.timesteps):
                    with m.If(~s1 & ~s2 & ~s3):
                        m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.px_en.eq(1)
                    m.d.sync += [s1.eq(1), s1_h.eq(h)]
                    with m.If(h == H - 1):
                        m.d.sync += [h.eq(0), t.eq(t + 1)]
                    with m.Else():
                        m.d.sync += h.eq(h + 1)
        return m

