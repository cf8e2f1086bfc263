"""Spike scanner: turns one timestep of a spike bitmap into a stream of spike events.

Spikes are stored as bitmaps (one P-bit word per neuron group and timestep) because BP and the
readout need them by neuron; the FP and WG engines want *events* (the indices that spiked). The
scanner reads the words of one timestep and emits one event per set bit, lowest index first,
then an end-of-timestep event.

Two builds of the same behaviour (the same events in the same order):

- ``queue=True``, a pipeline: a read issues every cycle while a small FIFO has room (the word
  takes two cycles to arrive: block RAM, then a register of its own so the RAM's output meets
  nothing else), non-zero words queue in the FIFO, and the emitter sends one event per cycle,
  taking the next word in the cycle its last bit leaves. A timestep costs about
  max(words, spikes) cycles. A slice core of the multi-core accelerator needs it: its engines
  spend a cycle per event and neuron group, of which it has few, while the bitmap it scans spans
  the whole layer below.
- ``queue=False``, plain: three cycles per word (read, block RAM, register) plus one per set bit,
  and no FIFO. The one-core accelerator's engines sweep whole layers per event, so this keeps up
  almost everywhere, and the iCE40 UP5K build has no logic cells to spare for the queue.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .fp_engine import spike_event_layout

__all__ = ["SpikeScanner"]

#: words read ahead of the emitter: covers the two-cycle read latency with a word to spare
QUEUE_DEPTH = 4


class SpikeScanner(wiring.Component):
    def __init__(self, *, lanes: int, max_words: int, depth: int, index_bits: int, queue: bool = True):
        if lanes < 1 or max_words < 1 or depth < 1:
            raise ValueError(f"SpikeScanner: lanes, max_words and depth must be >= 1, got {lanes}, {max_words}, {depth}")
        self.lanes, self.max_words, self.queue = lanes, max_words, queue
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
        if self.queue:
            self._queued(m)
        else:
            self._plain(m)
        return m

    def _idle(self, m, word, base, words, fresh):
        """The IDLE state of either build: done while the last event has left; a start latches
        the timestep's words and goes reading."""
        m.d.comb += self.done.eq(~self.events.valid)
        with m.If(self.start):
            m.d.sync += [base.eq(self.base), words.eq(self.words), fresh.eq(self.fresh), word.eq(0)]
            m.next = "READ"

    @staticmethod
    def _lowest(m, bits):
        """Index of the lowest set bit of ``bits`` (0 when none)."""
        lowest = Signal(range(len(bits)))
        for k in reversed(range(len(bits))):
            with m.If(bits[k]):
                m.d.comb += lowest.eq(k)
        return lowest

    def _plain(self, m):
        """Three cycles per word (read, block RAM, register) plus one per set bit."""
        P = self.lanes
        word = Signal(range(self.max_words + 1))
        base = Signal.like(self.base)
        words = Signal.like(self.words)
        fresh = Signal()
        bits = Signal(P)  # bits of the current word not yet sent
        word_q = Signal(P)  # rd_data, registered every cycle
        m.d.sync += word_q.eq(self.rd_data)
        cur = Signal(range(self.max_words + 1))
        lowest = self._lowest(m, bits)
        ev = self.events
        m.d.comb += self.rd_addr.eq(base + word)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                self._idle(m, word, base, words, fresh)
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

    def _queued(self, m):
        P = self.lanes
        ev = self.events
        word = Signal(range(self.max_words + 1))  # next word to read
        base = Signal.like(self.base)
        words = Signal.like(self.words)
        fresh = Signal()
        # read pipeline: s1 = the RAM answers this cycle, s2 = word_q holds that answer
        s1, s2 = Signal(), Signal()
        s1_word, s2_word = Signal.like(word), Signal.like(word)
        word_q = Signal(P)
        m.d.sync += [s1.eq(self.rd_en), s1_word.eq(word), s2.eq(s1), s2_word.eq(s1_word), word_q.eq(self.rd_data)]
        m.submodules.queue = queue = SyncFIFO(width=P + len(word), depth=QUEUE_DEPTH)
        m.d.comb += [queue.w_data.eq(Cat(word_q, s2_word)), queue.w_en.eq(s2 & (word_q != 0))]
        # a read issues only if its word will find room: the queue plus the words on their way
        room = Signal()
        m.d.comb += room.eq(queue.level + s1 + s2 < QUEUE_DEPTH)

        # emitter: the bits of the current word not yet sent
        bits = Signal(P)
        cur = Signal.like(word)
        lowest = self._lowest(m, bits)
        rest = bits & (bits - 1)
        free = ~ev.valid | ev.ready  # the output register takes a payload this cycle
        load = Signal()  # a new payload enters the output register
        take = Signal()  # the next queued word becomes the current one
        m.d.comb += [queue.r_en.eq(take)]
        with m.If(take):
            m.d.sync += [bits.eq(queue.r_data[:P]), cur.eq(queue.r_data[P:])]
        with m.If((bits != 0) & free):
            m.d.comb += [load.eq(1), take.eq((rest == 0) & queue.r_rdy)]
            m.d.sync += [ev.payload.index.eq(cur * P + lowest), ev.payload.eot.eq(0)]
            with m.If(~take):
                m.d.sync += bits.eq(rest)
        with m.Elif(bits == 0):
            m.d.comb += take.eq(queue.r_rdy)

        with m.FSM():
            with m.State("IDLE"):
                self._idle(m, word, base, words, fresh)
            with m.State("READ"):
                with m.If(word == words):
                    m.next = "EOT"
                with m.Elif(room):
                    m.d.comb += self.rd_en.eq(1)
                    m.d.sync += word.eq(word + 1)
            with m.State("EOT"):
                # every word read, filed and sent: the timestep ends
                with m.If(~s1 & ~s2 & ~queue.r_rdy & (bits == 0) & free):
                    m.d.comb += load.eq(1)
                    m.d.sync += [ev.payload.eot.eq(1), ev.payload.fresh.eq(fresh), ev.payload.index.eq(0)]
                    m.next = "IDLE"
        m.d.comb += self.rd_addr.eq(base + word)
        with m.If(load):
            m.d.sync += ev.valid.eq(1)
        with m.Elif(ev.ready):
            m.d.sync += ev.valid.eq(0)
