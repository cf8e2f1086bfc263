"""A core's inboxes: spike events and error partial sums from the interconnect
(docs/arithmetic.md §7.1).

:class:`SpikeInbox` writes the spike events of the layer below into the input spike bitmap the
spike scanner reads (one bit per flit, through a bit-granular write port: no read-modify-write),
counts the senders' end markers, and clears a sample's bitmap once the core has read it for the
last time.

Both hold ``banks`` samples (samples pipelining through the cores): a flit carries its sample's
bank, the sender's count of forward (spikes) or backward (errors) passes modulo ``banks``, and
the receiver counts its passes the same way. Nothing overwrites a bank still in use because a
sender runs the pass that fills bank b again only after the receiver has freed it (the one-
forward-one-backward order of sim/multicore_driver.py ``pipeline_order``; docs/multicore.md);
and a flit for a bank whose end markers are all in waits instead of mixing two samples.

:class:`ErrorInbox` (step 3 of §7.1):

Every slice of the layer above sends, for each timestep t and each of *this* core's neurons i,
its partial sum A_c[t, i] = sum_j W[j, i] delta[t, j] when it is non-zero, then one end marker.
The inbox adds the partial sums into a wide accumulator per (t, i): exact integer sums, so the
order in which the senders' flits interleave does not matter. When every expected sender's end
marker is in, ``complete`` rises; ``finish`` then walks the accumulators in (t, i) order, hands out
eps[t, i] = sat_error(round(acc >> error_shift)) -- the contract's one rounding and one
saturation -- and clears each word for the next sample.

:class:`ScatterAccumulator` is the memory part: ``mem[addr] = mem[addr] + value`` at one item per
cycle (a read-modify-write whose result is forwarded when the next item hits the same word), and
a drain that reads each word out and zeroes it, one word per cycle.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arith import round_shift, saturate

__all__ = ["ScatterAccumulator", "ErrorInbox", "ErrorOutbox", "SpikeOutbox", "error_flit_layout", "SpikeInbox", "spike_flit_layout"]


class ScatterAccumulator(wiring.Component):
    """``depth`` signed words of ``width`` bits, all zero at reset.

    ``put`` (addr, value): add value into word addr, one item per cycle.
    ``drain``: a request, held until ``draining`` rises (once the last item is written); then
    ``out`` streams (addr, value) for the ``drain_words`` words from ``drain_base`` (sampled with
    the request) in order, one word per cycle, ``addr`` counted from ``drain_base``, and leaves each
    word at zero. ``put`` is not ready while a drain is requested or running.
    Sums wrap at ``width`` bits: the caller sizes ``width`` for the largest total."""

    def __init__(self, depth: int, width: int, drain_words: int | None = None):
        if depth < 1 or width < 2:
            raise ValueError(f"ScatterAccumulator needs depth >= 1 and width >= 2, got {depth}, {width}")
        self.depth, self.width = depth, width
        self.drain_words = drain_words or depth
        if not 1 <= self.drain_words <= depth:
            raise ValueError(f"ScatterAccumulator drains 1..{depth} words, got {drain_words}")
        item = data.StructLayout({"addr": range(depth), "value": signed(width)})
        out_item = data.StructLayout({"addr": range(self.drain_words), "value": signed(width)})
        super().__init__({
            "put": In(stream.Signature(item)),
            "drain": In(1),
            "drain_base": In(range(depth)),
            "out": Out(stream.Signature(out_item)),
            "draining": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=signed(self.width), depth=self.depth, init=[])
        rd = mem.read_port()  # old word when a write of it lands in the same cycle: forwarded below
        wr = mem.write_port()

        # accumulate: read in the cycle an item is taken, add and write in the next
        s1_valid = Signal()
        s1_addr = Signal(range(self.depth))
        s1_value = Signal(signed(self.width))
        last_valid = Signal()  # the word written in the previous cycle, for the next item's read
        last_addr = Signal(range(self.depth))
        last_sum = Signal(signed(self.width))
        take = self.put.valid & self.put.ready
        m.d.comb += self.put.ready.eq(~self.draining & ~self.drain)
        m.d.sync += [s1_valid.eq(take), s1_addr.eq(self.put.payload.addr), s1_value.eq(self.put.payload.value)]
        base = Mux(last_valid & (last_addr == s1_addr), last_sum, rd.data)
        total = Signal(signed(self.width))
        m.d.comb += total.eq(base + s1_value)
        m.d.sync += [last_valid.eq(s1_valid), last_addr.eq(s1_addr), last_sum.eq(total)]

        # drain, one word per cycle: word base + a is offered while base + a + 1 is read (the read
        # port holds its word while the consumer stalls); a taken word is zeroed
        a = Signal(range(self.drain_words))
        drain_at = Signal(range(self.depth))
        last = a == self.drain_words - 1
        with m.FSM():
            with m.State("ACCUMULATE"):
                m.d.comb += [rd.en.eq(1), rd.addr.eq(self.put.payload.addr),
                             wr.en.eq(s1_valid), wr.addr.eq(s1_addr), wr.data.eq(total)]
                with m.If(self.drain & ~s1_valid):
                    m.d.sync += [self.draining.eq(1), a.eq(0), last_valid.eq(0), drain_at.eq(self.drain_base)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += [rd.en.eq(1), rd.addr.eq(drain_at)]
                m.next = "OFFER"
            with m.State("OFFER"):
                m.d.comb += [self.out.valid.eq(1), self.out.payload.addr.eq(a), self.out.payload.value.eq(rd.data),
                             rd.en.eq(self.out.ready & ~last), rd.addr.eq(drain_at + a + 1)]
                with m.If(self.out.ready):
                    m.d.comb += [wr.en.eq(1), wr.addr.eq(drain_at + a), wr.data.eq(0)]
                    m.d.sync += a.eq(a + 1)
                    with m.If(last):
                        m.d.sync += self.draining.eq(0)
                        m.next = "ACCUMULATE"
        return m


def error_flit_layout(timesteps: int, groups: int, acc_bits: int, banks: int = 1, lanes: int = 1) -> data.StructLayout:
    """An error flit's data: the ``lanes`` partial sums of one group of (t, neurons) -- a group of
    the receiver's slice -- or a sender's end marker; with ``banks`` > 1 also the sample's bank
    (the sender's count of backward passes, mod ``banks``)."""
    fields = {"end": 1, "t": range(timesteps), "group": range(max(2, groups)),
              "values": data.ArrayLayout(signed(acc_bits), lanes)}
    if banks > 1:
        fields["bank"] = range(banks)
    return data.StructLayout(fields)


def _bank_of(payload, banks: int):
    return payload.bank if banks > 1 else 0


def _per_bank(m: Module, counters: list, index):
    """counters[index] as a value (index may be a signal)."""
    if len(counters) == 1:
        return counters[0]
    sel = Signal.like(counters[0])
    with m.Switch(index):
        for k, c in enumerate(counters):
            with m.Case(k):
                m.d.comb += sel.eq(c)
    return sel


class ErrorInbox(wiring.Component):
    """Partial sums in, rounded errors out, for one slice of ``neurons`` neurons in groups of
    ``lanes``.

    ``flits``: error flit data (:func:`error_flit_layout`), one group of ``lanes`` sums each. The
    accumulators hold ``banks`` samples (samples pipelining through the cores: the layer above may
    send the partial sums of one sample while this core still works on an earlier one); a flit
    says its bank. ``complete``: all ``senders`` end markers of bank ``bank`` are in; a bank's
    flits after that wait (they belong to the sample ``banks`` later). ``index_neurons``: the
    neurons the flits' group field covers (the largest slice of the layer; default ``neurons``).
    ``finish`` (a pulse once complete): ``eps`` streams bank ``bank``'s (t, group, lanes' values)
    in t-major order, one group per cycle (the bank as it was at the finish); flits wait until
    that is over."""

    def __init__(self, timesteps: int, neurons: int, acc_bits: int, error_bits: int, error_shift: int,
                 rounding: str, senders: int, index_neurons: int | None = None, banks: int = 1, lanes: int = 1):
        if senders < 1:
            raise ValueError(f"an error inbox needs at least one sender, got {senders}")
        if banks < 1:
            raise ValueError(f"an error inbox needs at least one bank, got {banks}")
        self.T, self.n, self.acc_bits, self.P = timesteps, neurons, acc_bits, lanes
        self.G = -(-neurons // lanes)
        self.error_bits, self.error_shift, self.rounding, self.senders = error_bits, error_shift, rounding, senders
        self.banks = banks
        # the senders size the flit's group field for the largest slice of this layer (ErrorOutbox)
        self.flit = error_flit_layout(timesteps, -(-(index_neurons or neurons) // lanes), acc_bits, banks, lanes)
        out = data.StructLayout({"t": range(timesteps), "group": range(max(2, self.G)),
                                 "values": data.ArrayLayout(signed(error_bits), lanes)})
        super().__init__({
            "flits": In(stream.Signature(self.flit)),
            "bank": In(range(banks)),
            "complete": Out(1),
            "finish": In(1),
            "eps": Out(stream.Signature(out)),
        })

    def elaborate(self, platform):
        m = Module()
        T, G, B, P = self.T, self.G, self.banks, self.P
        words = T * G
        # one accumulator per lane, in lockstep (the same addresses, the same handshakes)
        accs = [ScatterAccumulator(B * words, self.acc_bits, drain_words=words) for _ in range(P)]
        for k, a in enumerate(accs):
            m.submodules[f"acc{k}"] = a
        acc = accs[0]
        ends = [Signal(range(self.senders + 1), name=f"ends{k}") for k in range(B)]
        finishing = Signal()
        f = self.flits.payload
        flit_bank = _bank_of(f, B)
        open_ = Signal()  # this flit's bank takes flits
        bank_full = _per_bank(m, ends, flit_bank) == self.senders
        m.d.comb += [
            open_.eq(~bank_full & ~finishing & ~acc.draining),
            self.flits.ready.eq(open_ & (f.end | acc.put.ready)),
            self.complete.eq(_per_bank(m, ends, self.bank) == self.senders),
        ]
        for k, a in enumerate(accs):
            m.d.comb += [a.put.payload.addr.eq(flit_bank * words + f.t * G + f.group), a.put.payload.value.eq(f.values[k]),
                         a.put.valid.eq(self.flits.valid & ~f.end & open_)]
        for k, e in enumerate(ends):
            with m.If(self.flits.valid & self.flits.ready & f.end & (flit_bank == k)):
                m.d.sync += e.eq(e + 1)
            with m.If(self.finish & self.complete & ~finishing & (self.bank == k)):
                m.d.sync += e.eq(0)
        finish_bank = Signal(range(B))  # the bank being finished (``bank`` may move on meanwhile)
        with m.If(self.finish & self.complete & ~finishing):
            m.d.sync += [finishing.eq(1), finish_bank.eq(self.bank)]
        with m.If(acc.draining):
            m.d.sync += finishing.eq(0)
        for a in accs:
            m.d.comb += [a.drain.eq(finishing & ~acc.draining), a.drain_base.eq(finish_bank * words),
                         a.out.ready.eq(self.eps.ready)]
        # the one rounding and saturation, on the way out
        lim = 1 << (self.error_bits - 1)
        for k, a in enumerate(accs):
            rounded = round_shift(m, a.out.payload.value, self.error_shift, self.rounding, f"eps_rounded{k}")
            m.d.comb += self.eps.payload.values[k].eq(saturate(m, rounded, -lim, lim - 1, self.error_bits, f"eps_saturated{k}"))
        addr = acc.out.payload.addr
        m.d.comb += [
            self.eps.valid.eq(acc.out.valid),
            self.eps.payload.t.eq(addr // G),
            self.eps.payload.group.eq(addr % G),
        ]
        return m


def spike_flit_layout(timesteps: int, neurons: int, banks: int = 1) -> data.StructLayout:
    """A spike flit's data: one spike of (t, neuron) of the layer below, or a sender's end marker;
    with ``banks`` > 1 also the sample's bank (the sender's count of forward passes, mod ``banks``)."""
    fields = {"end": 1, "t": range(timesteps), "neuron": range(neurons)}
    if banks > 1:
        fields["bank"] = range(banks)
    return data.StructLayout(fields)


class SpikeInbox(wiring.Component):
    """Spike events in, the input bitmaps of ``banks`` samples out (P-bit words, word
    ``bank * T * groups + t * groups + neuron // P``, bit ``neuron % P``: the spike scanner's
    layout, one block per bank).

    Flits are taken one per cycle, each setting one bit through ``wr_*`` (``wr_en`` is a per-bit
    enable) of its bank (the flit's ``bank``; 0 with one bank). ``complete`` rises when
    ``senders`` end markers of bank ``bank`` are in; a bank's flits after that wait. The bitmaps
    start at zero (memory contents at power-up); ``release`` (a pulse, once the core has read
    bank ``release_bank`` for the last time) clears that bank, one word per cycle from the next
    cycle on (``clearing``; no flit is taken meanwhile, nor in the cycle of the pulse), for the
    sample ``banks`` later."""

    def __init__(self, timesteps: int, neurons: int, lanes: int, senders: int, banks: int = 1):
        if senders < 1 or lanes < 1 or banks < 1:
            raise ValueError(f"a spike inbox needs senders, lanes and banks >= 1, got {senders}, {lanes}, {banks}")
        self.T, self.n, self.P, self.senders, self.banks = timesteps, neurons, lanes, senders, banks
        self.groups = -(-neurons // lanes)
        depth = banks * timesteps * self.groups
        super().__init__({
            "flits": In(stream.Signature(spike_flit_layout(timesteps, neurons, banks))),
            "bank": In(range(banks)),
            "complete": Out(1),
            "release": In(1),
            "release_bank": In(range(banks)),
            "clearing": Out(1),
            "wr_addr": Out(range(depth)),
            "wr_en": Out(lanes),
            "wr_data": Out(lanes),
        })

    def elaborate(self, platform):
        m = Module()
        words = self.T * self.groups
        B = self.banks
        ends = [Signal(range(self.senders + 1), name=f"ends{k}") for k in range(B)]
        clear = Signal(range(B * words))
        clear_last = Signal(range(B * words))
        f = self.flits.payload
        flit_bank = _bank_of(f, B)
        m.d.comb += self.complete.eq(_per_bank(m, ends, self.bank) == self.senders)
        with m.FSM():
            with m.State("TAKE"):
                m.d.comb += self.flits.ready.eq(_per_bank(m, ends, flit_bank) != self.senders)
                with m.If(self.flits.valid & self.flits.ready):
                    with m.If(f.end):
                        for k, e in enumerate(ends):
                            with m.If(flit_bank == k):
                                m.d.sync += e.eq(e + 1)
                    with m.Else():
                        base = flit_bank * words + f.t * self.groups
                        if self.P > 1:
                            lane = Signal(range(self.P))
                            m.d.comb += [lane.eq(f.neuron % self.P), self.wr_addr.eq(base + f.neuron // self.P),
                                         self.wr_en.eq(1 << lane)]
                        else:
                            m.d.comb += [self.wr_addr.eq(base + f.neuron), self.wr_en.eq(1)]
                        m.d.comb += self.wr_data.eq((1 << self.P) - 1)
                with m.If(self.release):
                    m.d.comb += self.flits.ready.eq(0)  # the clear takes the write port
                    m.d.sync += [clear.eq(self.release_bank * words), clear_last.eq(self.release_bank * words + words - 1)]
                    for k, e in enumerate(ends):
                        with m.If(self.release_bank == k):
                            m.d.sync += e.eq(0)
                    m.next = "CLEAR"
            with m.State("CLEAR"):
                m.d.comb += [self.clearing.eq(1), self.wr_addr.eq(clear), self.wr_en.eq((1 << self.P) - 1),
                             self.wr_data.eq(0)]
                m.d.sync += clear.eq(clear + 1)
                with m.If(clear == clear_last):
                    m.next = "TAKE"
        return m


class _LaneOutbox(wiring.Component):
    """Turns words of P lanes into one flit per *set* lane (zero lanes cost nothing), then one
    end marker per sample. Subclasses say which lanes are set, and build each lane's flit and the
    marker. The timestep ``t`` is latched with each word (``t_held``): the producer may move on to
    the next timestep while the word's lanes are still going out. With ``banks`` > 1 every flit,
    the marker too, carries the sample's ``bank`` (latched with each word, and with ``end``).

    ``buffer`` > 0 puts a FIFO of that many words (with their t and bank) in front: a producer
    that emits a burst of words (the BP engine: a timestep's partial sums, one group per cycle,
    then many cycles of work) is not held back while their lanes leave one per cycle. The marker
    then leaves after the last buffered word; no word is taken between ``end`` and the marker."""

    def __init__(self, lanes: int, item, flit_data, core: int, timesteps: int, banks: int = 1, buffer: int = 0):
        from .noc import flit_layout

        self.P, self.core, self.flit_data, self.banks, self.buffer = lanes, core, flit_data, banks, buffer
        self.flit = flit_layout(flit_data.size)
        super().__init__({
            "items": In(stream.Signature(item)),
            "end": In(1),
            "flits": Out(stream.Signature(self.flit)),
            "idle": Out(1),
            "t": In(range(timesteps)),
            **({"bank": In(range(banks))} if banks > 1 else {}),
        })
        self.t_held = Signal(range(timesteps), name="t_held")
        self.bank_held = Signal(range(banks), name="bank_held")  # the held word's
        self.end_bank = Signal(range(banks), name="end_bank")  # the pending marker's

    def set_lanes(self, payload):
        raise NotImplementedError

    def lane_flit(self, m: Module, word, lane):
        """(dst_lo, dst_hi, data) of the flit for ``lane`` of the held ``word``."""
        raise NotImplementedError

    def marker(self, m: Module):
        """(dst_lo, dst_hi, data) of the end marker."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        P = self.P
        word = Signal.like(self.items.payload)
        left = Signal(P)  # set lanes of the held word still to send
        end_pending = Signal()
        lane = Signal(range(max(2, P)))
        for k in reversed(range(P)):  # the lowest lane still to send
            with m.If(left[k]):
                m.d.comb += lane.eq(k)
        out = self.flits
        # the words to send: the producer's, or the FIFO's (each with its t and bank)
        src = SimpleNamespace(valid=self.items.valid, payload=self.items.payload, t=self.t,
                              bank=self.bank if self.banks > 1 else None, ready=self.items.ready)
        buffered = Const(0)  # words in the FIFO
        if self.buffer:
            entry = data.StructLayout({"item": self.items.payload.shape(), "t": self.t.shape(),
                                       "bank": range(self.banks)})
            m.submodules.fifo = fifo = SyncFIFOBuffered(width=entry.size, depth=self.buffer)
            w, r = Signal(entry), Signal(entry)
            m.d.comb += [w.item.eq(self.items.payload), w.t.eq(self.t), fifo.w_data.eq(w), r.eq(fifo.r_data),
                         fifo.w_en.eq(self.items.valid & ~end_pending), self.items.ready.eq(fifo.w_rdy & ~end_pending)]
            if self.banks > 1:
                m.d.comb += w.bank.eq(self.bank)
            src = SimpleNamespace(valid=fifo.r_rdy, payload=r.item, t=r.t, bank=r.bank if self.banks > 1 else None,
                                  ready=fifo.r_en)
            buffered = fifo.level != 0
        m.d.comb += [out.payload.src.eq(self.core),
                     self.idle.eq(~left.any() & ~end_pending & ~self.items.valid & ~buffered)]
        with m.If(left.any()):
            lo, hi, d = self.lane_flit(m, word, lane)
            m.d.comb += [out.valid.eq(1), out.payload.dst_lo.eq(lo), out.payload.dst_hi.eq(hi), out.payload.data.eq(d)]
            with m.If(out.ready):
                m.d.sync += left.eq(left & (left - 1))  # clear the lowest set lane
        with m.Elif(end_pending & ~buffered):
            lo, hi, d = self.marker(m)
            m.d.comb += [out.valid.eq(1), out.payload.dst_lo.eq(lo), out.payload.dst_hi.eq(hi), out.payload.data.eq(d)]
            with m.If(out.ready):
                m.d.sync += end_pending.eq(0)
        # take the next word when the held one is done, or its last lane leaves this cycle
        last = ~left.any() | (out.ready & ((left & (left - 1)) == 0))
        # unbuffered, the producer's next word waits for the marker; buffered words are all
        # this sample's (none enter after ``end``), so they go before it
        m.d.comb += src.ready.eq(last & (src.valid if self.buffer else ~end_pending))
        with m.If(src.valid & src.ready):
            m.d.sync += [word.eq(src.payload), left.eq(self.set_lanes(src.payload)), self.t_held.eq(src.t)]
            if self.banks > 1:
                m.d.sync += self.bank_held.eq(src.bank)
        with m.If(self.end):
            m.d.sync += end_pending.eq(1)
            if self.banks > 1:
                m.d.sync += self.end_bank.eq(self.bank)
        return m

    def _stamp(self, m: Module, d, bank) -> None:
        if self.banks > 1:
            m.d.comb += d.bank.eq(bank)


class ErrorOutbox(_LaneOutbox):
    """A slice's unrounded partial sums (the BP engine's ``partial`` output) to the error network.

    Each input group of P sums with any non-zero sum becomes one flit, addressed to the core that
    holds that group of input neurons (the slices are cut at multiples of P, so a group has one
    owner), with the group's index inside that core's slice. ``owners`` lists the layer below's
    slices as (core, lo, hi), in neuron order (a constant of the generated core, from the
    placement). ``t`` is the timestep of the groups arriving. ``end`` (a pulse, once the sample's
    last group has been taken) sends one end marker to all of them, multicast."""

    def __init__(self, lanes: int, acc_bits: int, timesteps: int, owners: list[tuple[int, int, int]], core: int,
                 banks: int = 1, buffer: int = 0):
        if not owners or owners[0][1] != 0 or any(a[2] != b[1] for a, b in zip(owners, owners[1:])):
            raise ValueError(f"owners must cover the layer below from neuron 0 without gaps, got {owners}")
        if any(lo % lanes for _, lo, _ in owners):
            raise ValueError(f"the layer below's slices must start at multiples of the {lanes} lanes, got {owners}")
        self.owners, self.values_lanes = owners, lanes
        self.groups = -(-owners[-1][2] // lanes)
        width = max(-(-(hi - lo) // lanes) for _, lo, hi in owners)
        item = data.StructLayout({"group": range(max(2, self.groups)), "delta": data.ArrayLayout(signed(acc_bits), lanes)})
        # one "lane" per word: the whole group travels in one flit
        super().__init__(1, item, error_flit_layout(timesteps, width, acc_bits, banks, lanes), core, timesteps, banks,
                         buffer)

    def set_lanes(self, payload):
        return Cat(*[payload.delta[k] != 0 for k in range(self.values_lanes)]).any()

    def lane_flit(self, m, word, lane):
        dst = Signal(5)
        d = Signal(self.flit_data)
        m.d.comb += d.t.eq(self.t_held)
        for k in range(self.values_lanes):
            m.d.comb += d.values[k].eq(word.delta[k])
        self._stamp(m, d, self.bank_held)
        P = self.values_lanes
        for core, lo, hi in self.owners:  # owner of the input group, and its group index there
            with m.If((word.group >= lo // P) & (word.group < -(-hi // P))):
                m.d.comb += [dst.eq(core), d.group.eq(word.group - lo // P)]
        return dst, dst, d

    def marker(self, m):
        d = Signal(self.flit_data)
        m.d.comb += d.end.eq(1)
        self._stamp(m, d, self.end_bank)
        cores = [c for c, _, _ in self.owners]
        return min(cores), max(cores), d


class SpikeOutbox(_LaneOutbox):
    """A slice's output spikes (the FP engine's neuron groups) to the spike network: one flit per
    spike, multicast to the cores ``dst`` = (first, last) that hold the next layer, carrying the
    neuron's index in the whole layer (``offset`` = the slice's first neuron). ``t`` is the
    timestep of the groups arriving; ``end`` sends the sample's end marker."""

    def __init__(self, lanes: int, timesteps: int, layer_neurons: int, offset: int, slice_groups: int,
                 dst: tuple[int, int], core: int, banks: int = 1, buffer: int = 0):
        self.offset, self.dst, self.layer_neurons = offset, dst, layer_neurons
        item = data.StructLayout({"group": range(max(2, slice_groups)), "spikes": lanes})
        super().__init__(lanes, item, spike_flit_layout(timesteps, layer_neurons, banks), core, timesteps, banks,
                         buffer)

    def set_lanes(self, payload):
        return payload.spikes

    def lane_flit(self, m, word, lane):
        d = Signal(self.flit_data)
        m.d.comb += [d.t.eq(self.t_held), d.neuron.eq(self.offset + word.group * self.P + lane)]
        self._stamp(m, d, self.bank_held)
        return self.dst[0], self.dst[1], d

    def marker(self, m):
        d = Signal(self.flit_data)
        m.d.comb += d.end.eq(1)
        self._stamp(m, d, self.end_bank)
        return self.dst[0], self.dst[1], d
