"""Spike scanner: turns one timestep of a spike bitmap into a stream of spike events.

Spikes are stored as bitmaps (one P-bit word per neuron group and timestep) because BP and the
readout need them by neuron; the FP and WG engines want *events* (the indices that spiked). The
scanner reads the words of one timestep and emits one event per set bit, lowest index first,
then an end-of-timestep event. A word costs three cycles (read, block RAM, register) plus one per
set bit; the scanner runs ahead of its consumer, whose cost per event is a whole sweep of neuron
groups.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .fp_engine import spike_event_layout

__all__ = ["SpikeScanner"]


class SpikeScanner(wiring.Component):
    def __init__(self, *, lanes: int, max_words: int, depth: int, index_bits: int):
        if lanes < 1 or max_words < 1 or depth < 1:
            raise ValueError(f"SpikeScanner: lanes, max_words and depth must be >= 1, got {lanes}, {max_words}, {depth}")
        self.lanes, self.max_words = lanes, max_words
        super().__init__(
            {
                "start": In(1),  # pulse with base/words/fresh valid
                "base": In(max(1, ceil_log2(depth))),  # address of the timestep's first word
                "words": In(max(1, ceil_log2(max_words + 1))),
                "fresh": In(1),  # copied onto the eot event: first timestep of a sample
                "rd_en": Out(1),
                "rd_addr": Out(max(1, ceil_log2(depth))),
                "rd_data": In(lanes),  # the word, the cycle after rd_en
                "events": Out(stream.Signature(spike_event_layout(index_bits))),
                "done": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        P = self.lanes
        word = Signal(range(self.max_words + 1))
        base = Signal.like(self.base)
        words = Signal.like(self.words)
        fresh = Signal()
        bits = Signal(P)  # bits of the current word not yet sent
        word_q = Signal(P)  # rd_data, registered every cycle
        m.d.sync += word_q.eq(self.rd_data)
        cur = Signal(range(self.max_words + 1))
        lowest = Signal(range(P))
        for k in reversed(range(P)):
            with m.If(bits[k]):
                m.d.comb += lowest.eq(k)
        ev = self.events
        m.d.comb += self.rd_addr.eq(base + word)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.done.eq(~ev.valid)
                with m.If(self.start):
                    m.d.sync += [base.eq(self.base), words.eq(self.words), fresh.eq(self.fresh), word.eq(0)]
                    m.next = "READ"
            with m.State("READ"):
                with m.If(word == words):
                    m.next = "EOT"
                with m.Else():
                    m.d.comb += self.rd_en.eq(1)
                    m.d.sync += [cur.eq(word), word.eq(word + 1)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                # the word goes into a register of its own first: a block RAM's output (most of
                # a cycle on its own) then meets no more than the caller's select
                m.next = "LOAD2"
            with m.State("LOAD2"):
                with m.If(word_q == 0):
                    m.next = "READ"
                with m.Else():
                    m.d.sync += bits.eq(word_q)
                    m.next = "EMIT"
            with m.State("EMIT"):
                with m.If(bits == 0):
                    m.next = "READ"
                with m.Elif(~ev.valid | ev.ready):
                    m.d.sync += [
                        ev.valid.eq(1),
                        ev.payload.index.eq(cur * P + lowest),
                        ev.payload.eot.eq(0),
                        bits.eq(bits & (bits - 1)),
                    ]
            with m.State("EOT"):
                with m.If(~ev.valid | ev.ready):
                    m.d.sync += [ev.valid.eq(1), ev.payload.eot.eq(1), ev.payload.fresh.eq(fresh),
                                 ev.payload.index.eq(0)]
                    m.next = "IDLE"
        with m.If(ev.valid & ev.ready):
            # a handshake empties the output register unless a new payload is loaded this cycle
            with m.If(~(((bits != 0) & fsm.ongoing("EMIT")) | fsm.ongoing("EOT"))):
                m.d.sync += ev.valid.eq(0)
        return m
