"""Performance counters: one 32-bit wrapping counter per named event, cleared together, kept in a
small RAM.

The core pulses ``inc[name]`` in every cycle the event holds (a phase, an engine's busy or stalled
signal, an event it processed); the host reads a counter with ``rd_en`` / ``rd_index`` and gets
its value on ``rd_data`` :data:`READ_LATENCY` cycles later. The names and their order are
:data:`spikeforge.rtl.protocol.COUNTERS`.

Why a RAM: 18 free-running 32-bit registers, each with its own incrementer, and the multiplexer
the host reads them through cost more logic than any engine of a one-lane core (1.1k of the
iCE40 UP5K's 5.3k logic cells, measured). Here each counter is a small free-running *pending*
counter in flip-flops (an incrementer, nothing else); a walk visits one counter per cycle and
stores in the RAM its 32-bit total together with the pending value it has folded in so far
(``last``): total += (pending - last) mod 2**pending_bits. One 32-bit adder serves all counters
and the host's reads, in turn.

Exactness: a read returns total + (pending - last) mod 2**pending_bits from any consistent
(total, last) pair, so it does not matter whether a visit's write lands before or after it. Only a
visit writing the very word being read, in the read's cycle, needs care: the read then takes the
word the visit itself read a cycle earlier, which the RAM's read port still shows (older than the
write, and as consistent). A read thus always equals what a plain register counter would hold:
every event up to one cycle before ``rd_en`` (the event and clear inputs are registered first,
as the events come from deep in the engines' control). The RAM never reads and writes one word
in the same cycle (no_rw_check, watched: rtl/ram.py).

The pending counts are exact while a walk round takes at most ``round_limit`` cycles (two rounds
of events stay below 2**pending_bits): the walk takes one counter per cycle and pauses for reads
(the host takes nine cycles per word; the limit allows reads every other cycle). A sticky
``overflow`` rises when a round takes longer, i.e. when a value may be wrong (STATUS.flags bit 2
for the host; ``clear`` resets it); tests assert it stays low.

``clear`` zeroes everything at once without touching the RAM: every counter is marked *stale* (its
RAM word counts as zeros) and the pending counts restart from 0; the walk overwrites the stale
word.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .ram import CollisionWatch

__all__ = ["PerfCounters", "COUNTER_BITS", "READ_LATENCY"]

COUNTER_BITS = 32
READ_LATENCY = 3  # cycles from rd_en to rd_data


class PerfCounters(wiring.Component):
    def __init__(self, names, read_gap: int = 2):
        names = tuple(names)
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n.isidentifier() for n in names):
            self._MustUse__silence = True  # a refused construction is not an unused design
            raise ValueError(f"PerfCounters: names must be distinct identifiers, got {names!r}")
        self.names = names
        n = len(names)
        #: walk period: one visit per counter, at least two slots so a visit's write (one cycle
        #: after its read) always lands before the same counter is visited again
        self.period = max(n, 2)
        #: a walk round may take this many cycles and the pending counts stay exact: a period,
        #: plus one paused cycle per read, reads at least ``read_gap`` cycles apart (a round of L
        #: cycles holds at most ceil(L / read_gap) reads)
        if isinstance(read_gap, bool) or not isinstance(read_gap, int) or read_gap < 2:
            self._MustUse__silence = True
            raise ValueError(f"PerfCounters: read_gap must be an integer >= 2 (a read pauses the walk), got {read_gap!r}")
        self.read_gap = read_gap
        self.round_limit = -(-(self.period + 1) * read_gap // (read_gap - 1))
        #: two rounds of events between two visits of a counter, and one more so that the
        #: difference taken mod 2**pending_bits is exact
        self.pending_bits = ceil_log2(2 * self.round_limit + 1)
        self.collisions = CollisionWatch("counters")
        super().__init__(
            {
                "inc": In(data.StructLayout({nm: 1 for nm in names})),
                "clear": In(1),
                "rd_en": In(1),
                "rd_index": In(range(n)),
                "rd_data": Out(COUNTER_BITS),
                # sticky until clear: a walk round took too long (reads came too often), the
                # values may be wrong; STATUS.flags shows it to the host
                "overflow": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        names, n = self.names, len(self.names)
        pb = self.pending_bits
        inc = Signal(n, name="inc_q")
        clear = Signal(name="clear_q")
        m.d.sync += [clear.eq(self.clear), inc.eq(Cat(*[self.inc[nm] for nm in names]))]

        # the read request is registered too: the walk's pause then depends on registers only
        rd_en = Signal(name="rd_en_q")
        rd_index = Signal.like(self.rd_index, name="rd_index_q")
        m.d.sync += [rd_en.eq(self.rd_en), rd_index.eq(self.rd_index)]

        word = data.StructLayout({"total": COUNTER_BITS, "last": pb})
        m.submodules.totals = totals = self.collisions.memory(shape=word, depth=n, init=[])
        rd, wr = totals.read_port(), totals.write_port()
        self.collisions.watch(m, "counter_totals", rd, wr)
        pending = [Signal(pb, name=f"pending_{nm}") for nm in names]
        stale = Signal(n, name="stale")  # the RAM word counts as zeros (cleared since the last write)
        for k in range(n):
            with m.If(clear):
                m.d.sync += pending[k].eq(0)
            with m.Elif(inc[k]):
                m.d.sync += pending[k].eq(pending[k] + 1)

        def pick(items, idx, name):
            sel = Signal(len(items[0]), name=name)
            with m.Switch(idx):
                for k, item in enumerate(items):
                    with m.Case(k):
                        m.d.comb += sel.eq(item)
            return sel

        def fold(total, last, is_stale, now):
            """total + (now - last) mod 2**pb, with a stale word as zeros"""
            return Mux(is_stale, 0, total) + (now - Mux(is_stale, 0, last))[:pb]

        ptr = Signal(range(self.period), name="walk_ptr")
        visit = Signal(name="visit")  # this cycle's walk slot visits counter ptr
        m.d.comb += visit.eq(~rd_en & ~clear & (ptr < n))
        with m.If(~rd_en):
            m.d.sync += ptr.eq(Mux(ptr == self.period - 1, 0, ptr + 1))
        # A visit and a read each take one cycle here (a read pauses the walk) and one in the
        # next, where the RAM word is folded with the pending count: for the visit's write, or
        # into rd_data. So they share one pick of the pending counts and one fold.
        index = Mux(rd_en, rd_index, ptr)
        v1 = Signal(name="visit_q")
        r1 = Signal(name="read_q")
        k1 = Signal(range(max(n, 2)), name="index_q")
        f1 = Signal(pb, name="pending_q")
        st1 = Signal(name="stale_q")
        m.d.sync += [v1.eq(visit), r1.eq(rd_en), k1.eq(index), f1.eq(pick(pending, index, "pending_pick")),
                     st1.eq(stale.bit_select(index, 1))]
        folded = Signal(COUNTER_BITS, name="folded")
        m.d.comb += folded.eq(fold(rd.data.total, rd.data.last, st1, f1))
        # a read of the counter whose visit writes in this cycle does not read the RAM: its read
        # port still shows that counter's word as the visit read it (older than the write, and as
        # consistent), and keeps showing it into the next cycle; the stale bit was picked before
        # the write too
        fly = Signal(name="read_in_flight")
        m.d.comb += fly.eq(v1 & rd_en & (rd_index == k1))
        m.d.comb += [rd.en.eq(visit | (rd_en & ~fly)), rd.addr.eq(index),
                     wr.en.eq(v1), wr.addr.eq(k1), wr.data.last.eq(f1), wr.data.total.eq(folded)]
        with m.If(clear):
            m.d.sync += stale.eq((1 << n) - 1)
        with m.Elif(v1):
            m.d.sync += stale.bit_select(k1, 1).eq(0)
        with m.If(r1):
            m.d.sync += self.rd_data.eq(folded)

        # a walk round longer than round_limit cycles: a pending count may have wrapped
        round_cycles = Signal(range(self.round_limit + 1), name="round_cycles")
        overflow = Signal(name="overflow_q")
        with m.If(clear):
            m.d.sync += [overflow.eq(0), round_cycles.eq(0)]
        with m.Elif(~rd_en & (ptr == self.period - 1)):
            m.d.sync += round_cycles.eq(0)
        with m.Elif(round_cycles == self.round_limit):
            m.d.sync += overflow.eq(1)
        with m.Else():
            m.d.sync += round_cycles.eq(round_cycles + 1)
        m.d.comb += self.overflow.eq(overflow)
        self.collisions.drive(m)
        return m
