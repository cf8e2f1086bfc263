"""BP engine: backprop through time for one LIF layer, one timestep per call, t = T-1 down to 0.

Per timestep (docs/arithmetic.md §6.2):

A. **delta step**, one group of P neurons per cycle, fed by ``error_in`` (ε[t], the stored
   surrogate g[t] and spike s[t] of each group, in group order):
   δ[t] = sat_error(ε·g (rounded for triangle) + leak(δ[t+1]) [masked by s under zero reset]).
   δ[t] leaves on ``delta_out`` (to the WG engine and for comparison); the engine keeps δ[t]
   for the next (earlier) timestep, and remembers which groups hold a non-zero δ.
B. **propagation** (only when ``propagate`` is set, i.e. not the first layer): for every non-zero
   δ_j — zero entries cost no cycles — walk the input groups h, reading the weight row
   W[j, hP..hP+P-1] from the weight SkewedMemory and accumulating W·δ_j wide, one group a cycle.
C. **error out**: for each input group, ε'[t] = sat_error(round(acc >> error_shift)) leaves on
   ``error_out`` and the accumulator is cleared. With ``partial=True`` (a slice of a layer on a
   multi-core accelerator, docs/arithmetic.md §7.1) the unrounded sums leave instead, at the
   accumulator's full width, for the receiving cores to add before the one rounding.

Cycles per timestep: G (A) + nnz(δ[t])·H (B) + H (C) plus a few cycles of pipeline fill.

With ``overlap=True`` the accumulators have two banks and C is a process of its own: at the end
of B the engine hands its bank to C and is done, so the next timestep's A and B (into the other
bank) run while C puts out and clears this one; ``round_start`` marks the hand-over (whoever
stamps the outputs latches the timestep then) and ``rounding`` stays high until the last output
has been taken. Per timestep that hides C's H cycles, which on a multi-core slice are as many
as its whole share of the propagation. Two banks cost a memory and a multiplexer in the
accumulate's path: the one-core build keeps one bank (its clock target has no room for the mux).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.config import bits_for_range

from . import arith
from .delay_line import DelayLine
from .params import CoreParams
from .ram import CollisionWatch

__all__ = ["BpEngine", "error_group_layout", "delta_group_layout", "partial_group_layout", "group_bits",
           "accumulator_bits"]


def group_bits(p: CoreParams) -> int:
    """Width of the BP engine's group indices and counts (neuron groups and input groups)."""
    return max(1, ceil_log2(max(p.max_groups, -(-p.max_inputs // p.lanes)) + 1))


def error_group_layout(p: CoreParams) -> data.StructLayout:
    return data.StructLayout(
        {
            "error": data.ArrayLayout(signed(p.error_bits), p.lanes),
            "surrogate": data.ArrayLayout(unsigned(p.surrogate_bits), p.lanes),
            "spikes": unsigned(p.lanes),
        }
    )


def delta_group_layout(p: CoreParams, group_bits: int) -> data.StructLayout:
    return data.StructLayout({"group": unsigned(group_bits), "delta": data.ArrayLayout(signed(p.error_bits), p.lanes)})


def partial_group_layout(p: CoreParams, group_bits: int, acc_bits: int) -> data.StructLayout:
    """An input group's unrounded W^T delta sums (``partial`` mode)."""
    return data.StructLayout({"group": unsigned(group_bits), "delta": data.ArrayLayout(signed(acc_bits), p.lanes)})


def accumulator_bits(p: CoreParams) -> int:
    """Width of the W^T delta sums: |sum_j W_ji delta_j| over a whole layer, exact (no overflow)."""
    emin = -(1 << (p.error_bits - 1))
    wmin, wmax = -(1 << (p.weight_bits - 1)), (1 << (p.weight_bits - 1)) - 1
    return bits_for_range(p.max_neurons * emin * wmax, p.max_neurons * emin * wmin)


class BpEngine(wiring.Component):
    def __init__(self, params: CoreParams, partial: bool = False, overlap: bool = False):
        if not isinstance(params, CoreParams):
            raise TypeError(f"BpEngine needs CoreParams, got {type(params).__name__}")
        if overlap and params.compact:
            self._MustUse__silence = True  # refused: never to be elaborated
            raise ValueError("BpEngine: overlap=True needs the dual-port layout (the compact one has no room for a "
                             "second accumulator bank)")
        self.p = p = params
        self.partial = partial
        self.overlap = overlap
        self.in_groups_max = -(-p.max_inputs // p.lanes)
        self.gbits = group_bits(p)
        self.acc_bits = accumulator_bits(p)
        self.collisions = CollisionWatch("bp")
        super().__init__(
            {
                "error_in": In(stream.Signature(error_group_layout(p))),
                "delta_out": Out(stream.Signature(delta_group_layout(p, self.gbits))),
                "error_out": Out(stream.Signature(partial_group_layout(p, self.gbits, self.acc_bits) if partial
                                                  else delta_group_layout(p, self.gbits))),
                "start": In(1),  # pulse: begin one timestep
                "first": In(1),  # with start: this is t = T-1, so δ[t+1] = 0
                "propagate": In(1),  # with start: compute ε' for the previous layer
                "groups": In(self.gbits),
                "in_groups": In(self.gbits),
                # weight memory, row access: W[j, hP+k] in lane k READ_LATENCY (3) cycles after w_rd_en
                "w_rd_en": Out(1),
                "w_rd_major": Out(max(1, ceil_log2(max(p.max_inputs, p.max_neurons)))),
                "w_rd_group": Out(self.gbits),
                "w_rd_data": In(data.ArrayLayout(signed(p.weight_bits), p.lanes)),
                "done": Out(1),  # idle, ready for the next start
                # this timestep's δ have all left on delta_out (until the next start): what reads
                # them may start while the propagation and the error out go on
                "deltas_out": Out(1),
                "busy": Out(1),
                # overlap: a pulse as C takes the bank B has just filled; high until its last
                # error has left error_out
                "round_start": Out(1),
                "rounding": Out(1),
                "stalled": Out(1),
                "event": Out(1),  # one non-zero δ propagated
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.lanes
        G = p.max_groups
        H = self.in_groups_max
        emin, emax = -(1 << (p.error_bits - 1)), (1 << (p.error_bits - 1)) - 1

        # δ of the timestep after, read two stages before the same group's new δ is written;
        # within a timestep every group passes once, and the propagation reads after the last
        # write: a read never meets a write of its word (watched)
        m.submodules.delta_mem = delta_mem = self.collisions.memory(shape=data.ArrayLayout(signed(p.error_bits), P),
                                                                    depth=G, init=[])
        d_wr = delta_mem.write_port()
        d_rd = delta_mem.read_port()
        self.collisions.watch(m, "bp_delta", d_rd, d_wr)
        # each δ group's non-zero lanes, filed with the non-zero list: the propagation starts from
        # a stored mask instead of testing P words that just left a memory
        m.submodules.lane_mask_mem = lane_mask_mem = self.collisions.memory(shape=P, depth=G, init=[])
        lm_wr, lm_rd = lane_mask_mem.write_port(), lane_mask_mem.read_port()
        m.d.comb += lm_rd.en.eq(0)  # FETCH reads it
        self.collisions.watch(m, "bp_lane_mask", lm_rd, lm_wr)
        # read at q3, written at q4: the next item's read meets the write, of another group when
        # every layer has two or more (watched), else through a transparent port
        spread = p.min_groups >= 2

        def acc_bank(name):
            m.submodules[name] = acc_mem = (self.collisions.memory if spread else Memory)(
                shape=data.ArrayLayout(signed(self.acc_bits), P), depth=H, init=[])
            wr = acc_mem.write_port()
            if spread:
                rd = acc_mem.read_port()
                self.collisions.watch(m, name, rd, wr)
            else:
                rd = acc_mem.read_port(transparent_for=(wr,))
            return rd, wr

        # the accumulate (B) and the error out (C) each see one read and one write port: the same
        # bank's, or with overlap, each its own bank's (the two swap at every hand-over)
        if not self.overlap:
            b_rd, b_wr = c_rd, c_wr = acc_bank("acc_mem")
        else:
            # B's bank, the bank C puts out, and whether C has one
            a_bank, r_bank, r_active = Signal(name="acc_bank"), Signal(name="round_bank"), Signal(name="round_active")
            banks = [acc_bank(f"acc_mem{i}") for i in range(2)]

            def port_view(rd, wr, side):
                return (SimpleNamespace(addr=Signal.like(rd.addr, name=f"{side}_rd_addr"), en=Signal(name=f"{side}_rd_en"),
                                        data=Signal.like(rd.data, name=f"{side}_rd_data")),
                        SimpleNamespace(addr=Signal.like(wr.addr, name=f"{side}_wr_addr"), en=Signal(name=f"{side}_wr_en"),
                                        data=Signal.like(wr.data, name=f"{side}_wr_data")))

            (b_rd, b_wr), (c_rd, c_wr) = port_view(*banks[0], "acc"), port_view(*banks[0], "round")
            for i, (rd, wr) in enumerate(banks):
                acc_here = a_bank == i  # else the error out's (C only ever takes the other bank)
                m.d.comb += [rd.addr.eq(Mux(acc_here, b_rd.addr, c_rd.addr)), rd.en.eq(Mux(acc_here, b_rd.en, c_rd.en)),
                             wr.addr.eq(Mux(acc_here, b_wr.addr, c_wr.addr)), wr.en.eq(Mux(acc_here, b_wr.en, c_wr.en)),
                             wr.data.eq(Mux(acc_here, b_wr.data, c_wr.data))]
            m.d.comb += [b_rd.data.eq(Mux(a_bank, banks[1][0].data, banks[0][0].data)),
                         c_rd.data.eq(Mux(r_bank, banks[1][0].data, banks[0][0].data))]
        m.d.comb += d_rd.en.eq(0)  # DELTA and FETCH read it
        # groups with a non-zero δ, in order: the propagation walks only these
        m.submodules.nz_mem = nz_mem = self.collisions.memory(shape=unsigned(self.gbits), depth=G, init=[])
        nz_wr, nz_rd = nz_mem.write_port(), nz_mem.read_port()
        # read continuously (FETCH uses the entry read a cycle before), except while an entry is
        # written, so a read never meets a write (nothing to watch): the list is read only after
        # its last write
        m.d.comb += nz_rd.en.eq(~nz_wr.en)
        nz_count = Signal(range(G + 1))

        first = Signal()
        propagate = Signal()
        group = Signal(self.gbits)

        # ---------------- A: delta step ---------------------------------------------------------
        # accepting registers a group's (ε, g, s) (it may come straight from a block RAM), stage 0
        # forms ε·g and issues the δ[t-1] read, stage 1 leaks δ[t-1] and rounds ε·g, stage 2
        # adds, saturates, writes δ[t] back and emits it, and the cycle after that files the group
        # in the non-zero list if δ[t] is non-zero. All stages move together on ``advance``. A
        # pass visits each group once, and the pass for t starts only after the pass for t-1 has
        # drained, so every δ[t-1] read sees its write.
        out = self.delta_out
        advance = Signal()
        m.d.comb += advance.eq(~out.valid | out.ready)
        s0_valid = Signal()
        s0_group = Signal(self.gbits)
        s0 = Signal(error_group_layout(p))
        s1_valid = Signal()
        s1_group = Signal(self.gbits)
        s1 = Signal(error_group_layout(p))
        # ε·g is formed in stage 0 and registered into stage 1, so the multiplier has a cycle of
        # its own between the input register and the rounding/leak/saturate chain
        # products are data (their valid bits carry the reset): reset-less, so the iCE40 flow can
        # keep them in the DSP's own output register
        s1_eg = [Signal(signed(p.error_bits + p.surrogate_bits + 1), name=f"eg_{k}", reset_less=True) for k in range(P)] \
            if p.surrogate != "rect" else []
        s2_valid = Signal()
        s2_group = Signal(self.gbits)
        s2_a, s2_c = [], []
        for k in range(P):
            eps = s1.error[k]
            g = s1.surrogate[k]
            if p.surrogate == "rect":
                a = Signal(signed(p.error_bits), name=f"a_{k}")
                m.d.comb += a.eq(Mux(g, eps, 0))
            else:
                a = arith.round_shift(m, s1_eg[k], p.surrogate_bits, p.error_rounding, f"a_{k}")
            prev = Signal(signed(p.error_bits), name=f"dprev_{k}")
            m.d.comb += prev.eq(Mux(first, 0, d_rd.data[k]))
            c = arith.leak(m, prev, p.beta_q, p.beta_bits, p.leak_rounding, f"c_{k}")
            if p.reset == "zero":
                c_eff = Signal(signed(len(c)), name=f"cz_{k}")
                m.d.comb += c_eff.eq(Mux(s1.spikes[k], 0, c))
                c = c_eff
            a_q, c_q = Signal(signed(len(a)), name=f"s2_a_{k}"), Signal(signed(len(c)), name=f"s2_c_{k}")
            with m.If(advance):
                m.d.sync += [a_q.eq(a), c_q.eq(c)]
            s2_a.append(a_q)
            s2_c.append(c_q)
        with m.If(advance):
            m.d.sync += [s1_valid.eq(s0_valid), s1_group.eq(s0_group), s1.eq(s0),
                         s2_valid.eq(s1_valid), s2_group.eq(s1_group)]
            m.d.sync += [eg.eq(s0.error[k] * s0.surrogate[k]) for k, eg in enumerate(s1_eg)]
        nz_pending = Signal()  # the group emitted last cycle, to be filed if non-zero
        nz_group = Signal(self.gbits)
        delta_drained = Signal()
        m.d.comb += delta_drained.eq(~s0_valid & ~s1_valid & ~s2_valid & ~nz_pending)
        lanes_d = []
        for k in range(P):
            total = Signal(signed(max(len(s2_a[k]), len(s2_c[k])) + 1), name=f"dsum_{k}")
            m.d.comb += total.eq(s2_a[k] + s2_c[k])
            lanes_d.append(arith.saturate(m, total, emin, emax, p.error_bits, f"delta_{k}"))
        m.d.sync += nz_pending.eq(s2_valid & advance)
        with m.If(s2_valid & advance):
            m.d.sync += [out.valid.eq(1), out.payload.group.eq(s2_group), nz_group.eq(s2_group)]
            m.d.sync += [out.payload.delta[k].eq(lanes_d[k]) for k in range(P)]
            m.d.comb += [d_wr.en.eq(1), d_wr.addr.eq(s2_group)]
            m.d.comb += [d_wr.data[k].eq(lanes_d[k]) for k in range(P)]
        with m.Elif(advance):
            m.d.sync += out.valid.eq(0)
        # the emitted δ is still in the output register this cycle (a new one lands at its end)
        nonzero = Signal()
        nz_lanes = Signal(P)  # which lanes of that group are non-zero: stored for the propagation
        m.d.comb += [nz_lanes.eq(Cat(*[out.payload.delta[k] != 0 for k in range(P)])), nonzero.eq(nz_lanes.any())]
        with m.If(nz_pending):
            m.d.comb += [lm_wr.en.eq(1), lm_wr.addr.eq(nz_group), lm_wr.data.eq(nz_lanes)]
        with m.If(nz_pending & nonzero):
            m.d.comb += [nz_wr.en.eq(1), nz_wr.addr.eq(nz_count), nz_wr.data.eq(nz_group)]
            m.d.sync += nz_count.eq(nz_count + 1)

        # ---------------- B: propagation --------------------------------------------------------
        nz_index = Signal(range(G + 1))
        cur_group = Signal(self.gbits)
        lane_mask = Signal(P)  # non-zero lanes of the current δ group still to propagate
        # the δ word FETCH read: in the compact layout the memory's output itself, which holds it
        # (nothing reads the δ memory again before the next FETCH), else a register
        cur_delta = d_rd.data if p.compact else Signal(data.ArrayLayout(signed(p.error_bits), P))
        # the lane being propagated: the lowest set lane of lane_mask, kept in a register (formed
        # whenever lane_mask changes) so the weight address is a register, not a priority encoder
        lane = Signal(range(P))

        def lowest_set(mask, name):
            low = Signal(range(P), name=name)
            for k in reversed(range(P)):
                with m.If(mask[k]):
                    m.d.comb += low.eq(k)
            return low

        loaded_mask = Signal(P)
        m.d.comb += loaded_mask.eq(lm_rd.data)
        next_mask = Signal(P)  # lane_mask without the lane just propagated
        m.d.comb += next_mask.eq(lane_mask & (lane_mask - 1))
        first_lane, next_lane = lowest_set(loaded_mask, "first_lane"), lowest_set(next_mask, "next_lane")
        dj = Signal(signed(p.error_bits))
        m.d.comb += dj.eq(cur_delta[lane])
        h = Signal(self.gbits)
        # the accumulate pipeline, one weight group per cycle: q0 the read request is registered
        # (in the memory) → q1 the weight read is in the block RAM → q2 the bank words are
        # registered (in the memory) → q3 weights rotated and
        # registered → q4 w·δ registered (the multiplier in its own cycle), acc read issued → q4
        # acc += w·δ written. Each item reads acc one cycle before it writes it, so the next
        # item's read of the same group meets that write on the transparent port: no group is
        # ever read stale.
        q0_valid, q1_valid, q2_valid, q3_valid, q4_valid = Signal(), Signal(), Signal(), Signal(), Signal()
        q0_group, q1_group, q2_group, q3_group, q4_group = (Signal(self.gbits, name=f"q{n}_group") for n in range(5))
        q0_delta, q1_delta, q2_delta, q3_delta = (Signal(signed(p.error_bits), name=f"q{n}_delta") for n in range(4))
        q3_w = Signal(data.ArrayLayout(signed(p.weight_bits), P))
        q4_prod = Signal(data.ArrayLayout(signed(p.weight_bits + p.error_bits), P), reset_less=True)  # (as eg)
        m.d.sync += [q1_valid.eq(q0_valid), q2_valid.eq(q1_valid), q3_valid.eq(q2_valid), q3_w.eq(self.w_rd_data),
                     q4_valid.eq(q3_valid), q4_group.eq(q3_group)]
        if p.compact:
            # (h, δ_j) as PROPAGATE issues them reach q3 four cycles later through a block RAM
            m.submodules.q_line = q_line = DelayLine(unsigned(self.gbits + p.error_bits), 4, "bp_q_line")
            self.collisions.include(q_line.collisions)
            m.d.comb += [q_line.i.eq(Cat(h, dj)), Cat(q3_group, q3_delta).eq(q_line.o)]
        else:
            m.d.sync += [q1_group.eq(q0_group), q1_delta.eq(q0_delta), q2_group.eq(q1_group), q2_delta.eq(q1_delta),
                         q3_group.eq(q2_group), q3_delta.eq(q2_delta)]
        m.d.sync += [q4_prod[k].eq(q3_w[k] * q3_delta) for k in range(P)]
        with m.If(q4_valid):
            m.d.comb += [b_wr.en.eq(1), b_wr.addr.eq(q4_group)]
            for k in range(P):
                m.d.comb += b_wr.data[k].eq(b_rd.data[k] + q4_prod[k])
        m.d.sync += q0_valid.eq(0)
        draining = Signal()
        m.d.comb += draining.eq(q0_valid | q1_valid | q2_valid | q3_valid | q4_valid)

        # ---------------- C: error out ---------------------------------------------------------
        eo = self.error_out
        eo_adv = Signal()
        m.d.comb += eo_adv.eq(~eo.valid | eo.ready)
        c_valid = Signal()
        c_group = Signal(self.gbits)
        with m.If(c_valid & eo_adv):
            m.d.sync += [eo.valid.eq(1), eo.payload.group.eq(c_group)]
            for k in range(P):
                if self.partial:
                    m.d.sync += eo.payload.delta[k].eq(c_rd.data[k])
                    continue
                r = arith.round_shift(m, c_rd.data[k], p.error_shift, p.error_rounding, f"eps_r_{k}")
                m.d.sync += eo.payload.delta[k].eq(arith.saturate(m, r, emin, emax, p.error_bits, f"eps_s_{k}"))
            m.d.comb += [c_wr.en.eq(1), c_wr.addr.eq(c_group), c_wr.data.eq(0)]
        with m.Elif(eo_adv):
            m.d.sync += eo.valid.eq(0)
        if self.overlap:
            # C on its own: reads group r_h of the handed-over bank a cycle before putting it out
            r_h, r_groups = Signal(self.gbits, name="round_group"), Signal(self.gbits, name="round_groups")
            m.d.comb += [self.rounding.eq(r_active | eo.valid), c_rd.addr.eq(r_h)]
            with m.If(r_active):
                m.d.comb += [c_rd.en.eq(eo_adv), self.busy.eq(1)]
                with m.If(eo_adv):
                    m.d.sync += c_valid.eq(0)
                    with m.If(r_h < r_groups):
                        m.d.sync += [c_valid.eq(1), c_group.eq(r_h), r_h.eq(r_h + 1)]
                    with m.Elif(~c_valid):
                        m.d.sync += r_active.eq(0)

        # ---------------- control ---------------------------------------------------------------
        m.d.comb += [self.w_rd_major.eq(Cat(lane, cur_group) if P > 1 else cur_group), self.w_rd_group.eq(h)]
        m.d.comb += [d_rd.addr.eq(s0_group), nz_rd.addr.eq(nz_index), b_rd.en.eq(q3_valid)]  # the accumulate's read
        m.d.comb += b_rd.addr.eq(q3_group if self.overlap else Mux(q3_valid, q3_group, h))  # (ROUND reads too)
        ein = self.error_in
        with m.FSM():
            with m.State("IDLE"):
                # (with overlap, C's outputs are the rounding's business)
                m.d.comb += self.done.eq(~out.valid & (1 if self.overlap else ~eo.valid))
                with m.If(self.start):
                    m.d.sync += [first.eq(self.first), propagate.eq(self.propagate), group.eq(0),
                                 nz_count.eq(0), nz_index.eq(0), self.deltas_out.eq(0)]
                    m.next = "DELTA"
            with m.State("DELTA"):
                m.d.comb += self.busy.eq(1)
                m.d.comb += d_rd.en.eq(advance & s0_valid)  # a bubble reads nothing
                with m.If(advance):
                    m.d.sync += s0_valid.eq(0)
                    with m.If(group < self.groups):
                        m.d.comb += ein.ready.eq(1)
                        with m.If(ein.valid):
                            m.d.sync += [s0_valid.eq(1), s0_group.eq(group), s0.eq(ein.payload), group.eq(group + 1)]
                        with m.Else():
                            m.d.comb += self.stalled.eq(1)
                    with m.Elif(delta_drained):
                        # the last δ group has left: the nz list is complete (its last entry was
                        # written a cycle ago, so FETCH's read of entry 0 already sees it)
                        m.d.sync += [h.eq(0), self.deltas_out.eq(1)]
                        with m.If(propagate):
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.stalled.eq(1)
            with m.State("FETCH"):
                # the nz memory read for nz_index is on its port now; the δ word needs one more cycle
                m.d.comb += self.busy.eq(1)
                with m.If(nz_index == nz_count):
                    m.d.sync += h.eq(0)
                    m.next = "ROUND"
                with m.Else():
                    m.d.comb += [d_rd.addr.eq(nz_rd.data), d_rd.en.eq(1), lm_rd.addr.eq(nz_rd.data), lm_rd.en.eq(1)]
                    m.d.sync += [cur_group.eq(nz_rd.data), nz_index.eq(nz_index + 1)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [lane_mask.eq(loaded_mask), lane.eq(first_lane), h.eq(0)]
                if not p.compact:
                    m.d.sync += cur_delta.eq(d_rd.data)
                m.next = "PROPAGATE"
            with m.State("PROPAGATE"):
                m.d.comb += [self.busy.eq(1), self.w_rd_en.eq(1)]
                m.d.sync += [q0_valid.eq(1), q0_group.eq(h), q0_delta.eq(dj)]
                with m.If(h == self.in_groups - 1):
                    m.d.comb += self.event.eq(1)
                    # clear the lowest set lane: the one just propagated
                    m.d.sync += [h.eq(0), lane_mask.eq(next_mask), lane.eq(next_lane)]
                    with m.If(next_mask == 0):
                        m.next = "FETCH"
                with m.Else():
                    m.d.sync += h.eq(h + 1)
            with m.State("ROUND"):
                m.d.comb += self.busy.eq(1)
                if self.overlap:
                    # the bank is complete once the accumulate has drained; C takes it when it has
                    # put out the one before
                    with m.If(~draining & ~r_active):
                        m.d.comb += self.round_start.eq(1)
                        m.d.sync += [r_active.eq(1), r_bank.eq(a_bank), a_bank.eq(~a_bank), r_h.eq(0),
                                     r_groups.eq(self.in_groups)]
                        m.next = "IDLE"
                else:
                    # the accumulate pipeline may still be draining into ROUND: its acc reads go on
                    m.d.comb += b_rd.en.eq(eo_adv | q3_valid)
                    with m.If(eo_adv):
                        m.d.sync += c_valid.eq(0)
                        with m.If(~draining & (h < self.in_groups)):
                            m.d.sync += [c_valid.eq(1), c_group.eq(h), h.eq(h + 1)]
                        with m.Elif(~draining & ~c_valid):
                            m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.stalled.eq(1)
        self.collisions.drive(m)
        return m
