"""Readout: output spike counts, membrane sums, the predicted class and the output error.

It listens to the output layer's ``neuron_out`` stream during the forward pass (docs/arithmetic.md
§5 "Readout"), keeping per output neuron the count c = Σ s[t] and the membrane sum m = Σ v[t].
``decide`` walks the neurons once (one per cycle, a pick stage then a compare stage) for the
class with the largest (c, m), ties to the lowest index. The output error (§6.1) is combinational per group of P neurons:
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
        P, N = p.lanes, self.n_out
        counts = Array(Signal(self.count_bits, name=f"count_{j}") for j in range(N))
        sums = Array(Signal(signed(self.sum_bits), name=f"msum_{j}") for j in range(N))

        ni = self.neuron_in
        m.d.comb += ni.ready.eq(1)
        with m.If(self.clear):
            m.d.sync += [c.eq(0) for c in counts] + [s.eq(0) for s in sums]
        with m.Elif(ni.valid):
            for k in range(P):
                for j in range(k, N, P):  # neuron j sits in lane j % P of group j // P
                    with m.If(ni.payload.group == j // P):
                        m.d.sync += [counts[j].eq(counts[j] + ni.payload.spikes[k]),
                                     sums[j].eq(sums[j] + ni.payload.membrane[k])]

        # decide: one neuron per cycle; strict > keeps the lowest index on equal (count, sum)
        # two stages: neuron idx's (count, sum) is picked and registered, then compared with the
        # best so far, which is kept by value as well as by index (no multiplexer in the compare)
        idx = Signal(range(N + 1))
        best = Signal(range(N))
        best_c = Signal.like(counts[0])
        best_s = Signal.like(sums[0])
        cand_valid = Signal()
        cand = Signal(range(N))
        cand_c = Signal.like(counts[0])
        cand_s = Signal.like(sums[0])
        m.d.sync += cand_valid.eq(0)
        with m.If(cand_valid & ((cand_c > best_c) | ((cand_c == best_c) & (cand_s > best_s)))):
            m.d.sync += [best.eq(cand), best_c.eq(cand_c), best_s.eq(cand_s)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.decided.eq(1)
                with m.If(self.decide):
                    m.d.sync += [idx.eq(1), best.eq(0), best_c.eq(counts[0]), best_s.eq(sums[0])]
                    m.next = "SCAN"
            with m.State("SCAN"):
                with m.If(idx == N):
                    with m.If(~cand_valid):  # the last candidate has been compared
                        m.d.sync += self.prediction.eq(best)
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += [cand_valid.eq(1), cand.eq(idx), cand_c.eq(counts[idx]), cand_s.eq(sums[idx]),
                                 idx.eq(idx + 1)]

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
        return m
