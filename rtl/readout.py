"""Readout: output spike counts, membrane sums, the predicted class and the output error.

It listens to the output layer's ``neuron_out`` stream during the forward pass (docs/arithmetic.md
§5 "Readout"), keeping per output neuron the count c = Σ s[t] and the membrane sum m = Σ v[t].
The counts are registers; the sums are in a block RAM (one word of P sums per group).
``decide`` walks the neurons once (one per cycle: read, lane pick, compare) for the class with
the largest (c, m), ties to the lowest index. The output error (§6.1) is combinational per group of P neurons:
ε = sat_error((c - y) << output_error_shift), hinge-masked for ``count_hinge``.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.config import SpikeforgeConfig, bits_for_range

from . import arith
from .fp_engine import neuron_group_layout
from .params import CoreParams
from .ram import CollisionWatch

__all__ = ["Readout"]


class Readout(wiring.Component):
    def __init__(self, cfg: SpikeforgeConfig):
        self.cfg = cfg
        self.p = p = CoreParams.from_config(cfg)
        self.n_out = cfg.network.layers[-1]
        T = cfg.network.timesteps
        self.count_bits = max(1, ceil_log2(T + 1))
        self.sum_bits = bits_for_range(T * p.membrane_min, T * p.membrane_max)
        self.groups = -(-self.n_out // p.lanes)
        self.collisions = CollisionWatch("readout")
        gbits = max(1, ceil_log2(self.groups + 1))
        super().__init__(
            {
                "clear": In(1),
                "neuron_in": In(stream.Signature(neuron_group_layout(p))),
                "label": In(max(1, ceil_log2(self.n_out))),
                "decide": In(1),
                "prediction": Out(max(1, ceil_log2(self.n_out))),
                "decided": Out(1),
                "err_group": In(gbits),
                "err_data": Out(data.ArrayLayout(signed(p.error_bits), p.lanes)),
                "count_group": Out(data.ArrayLayout(unsigned(self.count_bits), p.lanes)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p, tr = self.p, self.cfg.training
        P, N, G = p.lanes, self.n_out, self.groups
        counts = Array(Signal(self.count_bits, name=f"count_{j}") for j in range(N))

        # the membrane sums live in a block RAM, a word of P sums per group: read as a group
        # arrives, written back added a cycle later. Consecutive groups differ whenever there
        # are two or more (the FP engine emits 0..G-1 every timestep), so the write never meets
        # a read of its word (no_rw_check, watched). A single group is one word: a register,
        # read back-to-back. `stale` marks a group cleared since its last write: its word reads
        # as zeros (a clear touches no RAM).
        sum_layout = data.ArrayLayout(signed(self.sum_bits), P)
        if G > 1:
            m.submodules.sums = sums = self.collisions.memory(shape=sum_layout, depth=G, init=[])
            s_wr = sums.write_port()
            s_rd = sums.read_port()
            self.collisions.watch(m, "readout_sums", s_rd, s_wr)
            m.d.comb += s_rd.en.eq(0)
            sum_word = s_rd.data  # the word read in the previous cycle

            def read(group):
                m.d.comb += [s_rd.en.eq(1), s_rd.addr.eq(group)]

            def write(group, value):
                m.d.comb += [s_wr.en.eq(1), s_wr.addr.eq(group), s_wr.data.eq(value)]
        else:
            sum_word = Signal(sum_layout, name="sum_word")

            def read(group):
                pass

            def write(group, value):
                m.d.sync += sum_word.eq(value)
        stale = Signal(G, init=(1 << G) - 1, name="sums_stale")

        ni = self.neuron_in
        m.d.comb += ni.ready.eq(1)
        acc_valid = Signal(name="sum_valid")
        acc_group = Signal(range(max(G, 2)), name="sum_group")
        acc_membrane = Signal(ni.payload.membrane.shape(), name="sum_membrane")
        acc_stale = Signal(name="sum_stale")
        m.d.sync += acc_valid.eq(0)
        with m.If(self.clear):
            m.d.sync += [c.eq(0) for c in counts] + [stale.eq((1 << G) - 1)]
        with m.Elif(ni.valid):
            read(ni.payload.group)
            m.d.sync += [acc_valid.eq(1), acc_group.eq(ni.payload.group), acc_membrane.eq(ni.payload.membrane),
                         # (a write of the same group in this cycle makes it fresh: one group, back-to-back)
                         acc_stale.eq(stale.bit_select(ni.payload.group, 1) & ~(acc_valid & (acc_group == ni.payload.group)))]
            for k in range(P):
                for j in range(k, N, P):  # neuron j sits in lane j % P of group j // P
                    with m.If(ni.payload.group == j // P):
                        m.d.sync += counts[j].eq(counts[j] + ni.payload.spikes[k])
        with m.If(acc_valid):
            added = Signal(sum_layout, name="sum_added")
            for k in range(P):
                m.d.comb += added[k].eq(Mux(acc_stale, 0, sum_word[k]) + acc_membrane[k])
            write(acc_group, added)
            with m.If(~self.clear):
                m.d.sync += stale.bit_select(acc_group, 1).eq(0)

        # decide: one neuron per cycle; strict > keeps the lowest index on equal (count, sum).
        # Three stages: neuron idx's group is read (its count registered), its lane is picked
        # from the word, then compared with the best so far, kept by value and by index
        idx = Signal(range(N + 1))
        rd_valid = Signal()
        rd_idx = Signal(range(N))
        rd_c = Signal.like(counts[0])
        rd_stale = Signal()
        cand_valid = Signal()
        cand = Signal(range(N))
        cand_c = Signal.like(counts[0])
        cand_s = Signal(signed(self.sum_bits))
        have_best = Signal()
        best = Signal(range(N))
        best_c = Signal.like(counts[0])
        best_s = Signal(signed(self.sum_bits))
        log_p = P.bit_length() - 1
        m.d.sync += [rd_valid.eq(0), cand_valid.eq(0)]
        with m.If(rd_valid):
            lane = Signal(signed(self.sum_bits), name="decide_sum")
            m.d.comb += lane.eq(sum_word[rd_idx[:log_p]] if P > 1 else sum_word[0])
            m.d.sync += [cand_valid.eq(1), cand.eq(rd_idx), cand_c.eq(rd_c), cand_s.eq(Mux(rd_stale, 0, lane))]
        with m.If(cand_valid & (~have_best | (cand_c > best_c) | ((cand_c == best_c) & (cand_s > best_s)))):
            m.d.sync += [have_best.eq(1), best.eq(cand), best_c.eq(cand_c), best_s.eq(cand_s)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.decided.eq(1)
                with m.If(self.decide):
                    m.d.sync += [idx.eq(0), have_best.eq(0)]
                    m.next = "SCAN"
            with m.State("SCAN"):
                with m.If(idx == N):
                    with m.If(~rd_valid & ~cand_valid):  # the last candidate has been compared
                        m.d.sync += self.prediction.eq(best)
                        m.next = "IDLE"
                with m.Else():
                    group = idx[log_p:] if P > 1 else idx
                    read(group)
                    m.d.sync += [rd_valid.eq(1), rd_idx.eq(idx), rd_c.eq(counts[idx]),
                                 rd_stale.eq(stale.bit_select(group, 1)), idx.eq(idx + 1)]

        emin, emax = -(1 << (p.error_bits - 1)), (1 << (p.error_bits - 1)) - 1
        for k in range(P):
            j = Signal(range(self.groups * P + 1), name=f"err_j_{k}")
            m.d.comb += j.eq(self.err_group * P + k)
            c = Signal(self.count_bits, name=f"err_c_{k}")
            m.d.comb += c.eq(Mux(j < N, counts[j], 0))
            is_label = Signal(name=f"is_label_{k}")
            m.d.comb += is_label.eq(j == self.label)
            e = Signal(signed(self.count_bits + 2), name=f"e_{k}")
            m.d.comb += e.eq(c - Mux(is_label, tr.target_true, tr.target_false))
            if tr.loss == "count_hinge":
                kept = Signal(signed(self.count_bits + 2), name=f"hinge_{k}")
                m.d.comb += kept.eq(Mux(is_label, Mux(e < 0, e, 0), Mux(e > 0, e, 0)))
                e = kept
            shifted = Signal(signed(self.count_bits + 2 + tr.output_error_shift), name=f"es_{k}")
            m.d.comb += shifted.eq(e << tr.output_error_shift)
            sat = arith.saturate(m, shifted, emin, emax, p.error_bits, f"eout_{k}")
            m.d.comb += self.err_data[k].eq(Mux(j < N, sat, 0))
            m.d.comb += self.count_group[k].eq(c)
        self.collisions.drive(m)
        return m
