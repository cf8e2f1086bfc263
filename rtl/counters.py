"""Performance counters: one 32-bit wrapping counter per named event, cleared together, kept in a
small RAM.

The core pulses ``inc[name]`` in every cycle the event holds (a phase, an engine's busy or stalled
signal, an event it processed); the host reads a counter with ``rd_en`` / ``rd_index`` and gets
its value on ``rd_data`` :data:`READ_LATENCY` cycles later. The names and their order are
:data:`spikeforge.rtl.protocol.COUNTERS`.

Why a RAM: 18 free-running 32-bit registers, each with its own incrementer, and the multiplexer
the host reads them through cost more logic than any engine of a one-lane core (1.1k of the
iCE40 UP5K's 5.3k logic cells, measured). Here each counter keeps only a few *pending* bits in
flip-flops; a walk visits one counter per cycle and adds its pending count to the 32-bit total in
the RAM, so there is one 32-bit adder for all of them (and one more for reads).

Exactness: a read returns total + pending of its counter, and a visit in flight (its RAM write
lands in the cycle of the read) is added from its own registers, so a read always equals what a
plain register counter would hold: every event up to one cycle before ``rd_en`` (the event and
clear inputs are registered first, as the events come from deep in the engines' control). A read
pauses the walk for that cycle; the pending bits are sized for reads at most every other cycle
(the host takes nine cycles per word). A sticky ``overflow`` says that was broken and the values
are wrong (STATUS.flags bit 2 for the host; ``clear`` resets it); tests assert it stays low.

``clear`` zeroes everything at once without touching the RAM: every counter is marked *stale*
(its RAM total counts as 0) and its pending bits are zeroed; the walk writes the first new total
over the stale one.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["PerfCounters", "COUNTER_BITS", "READ_LATENCY"]

COUNTER_BITS = 32
READ_LATENCY = 3  # cycles from rd_en to rd_data


class PerfCounters(wiring.Component):
    def __init__(self, names):
        names = tuple(names)
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n.isidentifier() for n in names):
            self._MustUse__silence = True  # a refused construction is not an unused design
            raise ValueError(f"PerfCounters: names must be distinct identifiers, got {names!r}")
        self.names = names
        n = len(names)
        #: walk period: one visit per counter, at least two slots so a visit's write (one cycle
        #: after its read) always lands before the same counter is read again
        self.period = max(n, 2)
        #: events one counter can gather between two visits: a period, plus one paused cycle per
        #: read, reads coming at most every other cycle
        self.pending_bits = ceil_log2(2 * self.period + 1)
        super().__init__(
            {
                "inc": In(data.StructLayout({nm: 1 for nm in names})),
                "clear": In(1),
                "rd_en": In(1),
                "rd_index": In(range(n)),
                "rd_data": Out(COUNTER_BITS),
                # sticky until clear: a pending count wrapped (reads came too often), the values
                # are wrong; STATUS.flags shows it to the host
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

        m.submodules.totals = totals = Memory(shape=COUNTER_BITS, depth=n, init=[])
        rd, wr = totals.read_port(), totals.write_port()
        pending = [Signal(pb, name=f"pending_{nm}") for nm in names]
        stale = Signal(n, name="stale")  # the RAM total counts as 0 (cleared since last visit)

        ptr = Signal(range(self.period), name="walk_ptr")
        visit = Signal(name="visit")  # this cycle's walk slot visits counter ptr
        m.d.comb += visit.eq(~rd_en & ~clear & (ptr < n))
        with m.If(~rd_en):
            m.d.sync += ptr.eq(Mux(ptr == self.period - 1, 0, ptr + 1))
        index = Mux(rd_en, rd_index, ptr)
        m.d.comb += [rd.en.eq(visit | rd_en), rd.addr.eq(index)]

        def pick(items, idx, name):
            sel = Signal(len(items[0]), name=name)
            with m.Switch(idx):
                for k, item in enumerate(items):
                    with m.Case(k):
                        m.d.comb += sel.eq(item)
            return sel

        # the walk and a read each pick their counter straight from their own register (ptr,
        # rd_index), not through the RAM's address multiplexer
        walk_pending = pick(pending, ptr, "walk_pending")

        # the visit in flight: read this cycle, added and written next cycle
        v1 = Signal(name="visit_q")
        k1 = Signal(range(max(n, 2)), name="visit_index_q")
        f1 = Signal(pb, name="visit_pending_q")
        st1 = Signal(name="visit_stale_q")
        m.d.sync += [v1.eq(visit), k1.eq(ptr), f1.eq(walk_pending), st1.eq(stale.bit_select(ptr, 1))]
        total = Signal(COUNTER_BITS, name="visit_total")
        m.d.comb += total.eq(Mux(st1, 0, rd.data) + f1)
        m.d.comb += [wr.en.eq(v1), wr.addr.eq(k1), wr.data.eq(total)]

        overflow = Signal(name="overflow_q")
        with m.If(clear):
            m.d.sync += overflow.eq(0)
        for k in range(n):
            visited = visit & (ptr == k)
            nxt = Signal(pb, name=f"pending_next_{names[k]}")  # wraps only past the overflow check
            m.d.comb += nxt.eq(Mux(visited, 0, pending[k]) + inc[k])
            with m.If(clear):
                m.d.sync += [pending[k].eq(0), stale[k].eq(1)]
            with m.Else():
                m.d.sync += pending[k].eq(nxt)
                # the count wraps: all ones and one more (a compare of registers, not the adder's carry)
                with m.If(inc[k] & ~visited & pending[k].all()):
                    m.d.sync += overflow.eq(1)
                with m.If(visited):
                    m.d.sync += stale[k].eq(0)
        m.d.comb += self.overflow.eq(overflow)

        # a read: the RAM word (old, if a visit of the same counter writes it in this cycle: that
        # visit's stale bit and pending count then stand in for the counter's own) + pending
        # (registered as picked; added up in the next cycle, with the RAM word)
        r_pending = Signal(pb, name="read_pending")
        r_fly = Signal(name="read_in_flight")
        r_fly_pending = Signal(pb, name="read_fly_pending")
        r_stale = Signal(name="read_stale")
        with m.If(rd_en):
            fly = v1 & (k1 == rd_index)
            m.d.sync += [r_pending.eq(pick(pending, rd_index, "read_pick")), r_fly.eq(fly), r_fly_pending.eq(f1),
                         r_stale.eq(Mux(fly, st1, stale.bit_select(rd_index, 1)))]
        r_valid = Signal(name="read_q")
        m.d.sync += r_valid.eq(rd_en)
        with m.If(r_valid):
            m.d.sync += self.rd_data.eq(Mux(r_stale, 0, rd.data) + r_pending + Mux(r_fly, r_fly_pending, 0))
        return m
