"""The spikeforge core, forward half: encoder → per-layer FP over all timesteps → readout.

Layers run one after another on one FP engine (layer-major, as the golden model): for layer l and
timestep t the spike scanner turns the previous layer's spike bitmap (the encoder's for l = 0)
into events; the FP engine's ``neuron_out`` groups are written to the layer's spike and surrogate
memories (the per-timestep BP storage of docs/arithmetic.md §6.5) and, for the last layer, fed
to the readout.

Backward half (``train`` after the forward pass): for l = L-1 down to 0 and t = T-1 down to 0,
a feeder streams (ε[t], g[t], s[t]) of layer l into the BP engine; δ[t] goes to a one-timestep
delta buffer and ε'[t] to the error memory of layer l-1; then the scanner replays the layer's
input spikes at t into the layer's WG engine, which accumulates δ x. ``update`` runs the WG
engines' row-major updates layer after layer, handing the update LFSR's state from one to the next.

Status: no host interface yet; weights and pixels are loaded through ports driven by the test
harness.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden.backend import update_seed

from .bp_engine import BpEngine, delta_group_layout
from .bp_engine import group_bits as bp_group_bits
from .encoder import Encoder
from .fp_engine import FpEngine, neuron_group_layout
from .params import CoreParams
from .readout import Readout
from .skewed_memory import SkewedMemory
from .spike_scanner import SpikeScanner
from .wg_engine import WgEngine

__all__ = ["Core"]


class Core(wiring.Component):
    def __init__(self, cfg: SpikeforgeConfig, weights_init: list[dict] | None = None):
        self.cfg = cfg
        self.p = p = CoreParams.from_config(cfg)
        L = cfg.network.layers
        self.n_layers = len(L) - 1
        self.T = cfg.network.timesteps
        P = p.lanes
        self.groups = [-(-n // P) for n in L]  # groups of every layer, inputs included
        self.weights = [
            SkewedMemory(lanes=P, width=p.weight_bits, max_outputs=L[l + 1], max_inputs=L[l],
                         init=(weights_init[l] if weights_init else None))
            for l in range(self.n_layers)
        ]
        super().__init__(
            {
                "start": In(1),  # run inference on the loaded pixels
                "seed": In(32),  # encoder seed of the sample
                "px_wr_en": In(1),
                "px_wr_group": In(max(1, ceil_log2(self.groups[0]))),
                "px_wr_data": In(data.ArrayLayout(unsigned(cfg.formats.pixel_bits), P)),
                "done": Out(1),
                "prediction": Out(max(1, ceil_log2(L[-1]))),
                # observation port for tests: every neuron_out payload, with its layer
                "obs_valid": Out(1),
                "obs_layer": Out(max(1, ceil_log2(self.n_layers))),
                "obs": Out(neuron_group_layout(p)),
                "fp_busy": Out(1),
                "train": In(1),  # with start: run BP and WG after the forward pass
                "label": In(max(1, ceil_log2(L[-1]))),
                "update": In(1),  # apply the accumulated gradients
                "lr_shift": In(range(49)),
                "bp_obs_valid": Out(1),  # every δ group, with its layer
                "bp_obs_layer": Out(max(1, ceil_log2(self.n_layers))),
                "bp_obs": Out(delta_group_layout(p, bp_group_bits(p))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg, p = self.cfg, self.p
        P, T, L = p.lanes, self.T, cfg.network.layers
        m.submodules.fp = fp = FpEngine(p)
        m.submodules.readout = readout = Readout(cfg)
        for l, w in enumerate(self.weights):
            m.submodules[f"weights{l}"] = w
        enc = Encoder(lanes=P, inputs=L[0], timesteps=T, pixel_bits=cfg.formats.pixel_bits)
        m.submodules.encoder = enc
        m.submodules.pixels = pixels = Memory(shape=enc.px_data.shape(), depth=self.groups[0], init=[])
        px_wr, px_rd = pixels.write_port(), pixels.read_port()
        m.d.comb += [px_wr.en.eq(self.px_wr_en), px_wr.addr.eq(self.px_wr_group), px_wr.data.eq(self.px_wr_data),
                     px_rd.en.eq(enc.px_en), px_rd.addr.eq(enc.px_group), enc.px_data.eq(px_rd.data),
                     enc.seed.eq(self.seed)]

        # spike bitmaps: index 0 = encoder output, index l+1 = output of LIF layer l
        spike_mems = [Memory(shape=P, depth=T * g, init=[]) for g in self.groups]
        surr_mems = [Memory(shape=P * p.surrogate_bits, depth=T * g, init=[]) for g in self.groups[1:]]
        for k, mem in enumerate(spike_mems):
            m.submodules[f"spikes{k}"] = mem
        for k, mem in enumerate(surr_mems):
            m.submodules[f"surrogates{k + 1}"] = mem
        spike_wr = [mem.write_port() for mem in spike_mems]
        spike_rd = [mem.read_port() for mem in spike_mems]
        surr_wr = [mem.write_port() for mem in surr_mems]
        m.d.comb += [spike_wr[0].en.eq(enc.spk_en), spike_wr[0].addr.eq(enc.spk_addr), spike_wr[0].data.eq(enc.spk_data)]

        depth_max = max(T * g for g in self.groups)
        m.submodules.scanner = scan = SpikeScanner(lanes=P, max_words=max(self.groups), depth=depth_max,
                                                   index_bits=p.input_index_bits)
        layer = Signal(range(self.n_layers + 1))
        backward = Signal()  # BP/WG phase: the scanner feeds WG, weights are read by row
        t = Signal(range(T + 1))
        out_t = Signal(range(T + 1))  # timesteps whose last group has left the FP engine
        out_g = Signal(range(max(self.groups) + 1))

        # the scanner reads the bitmap feeding the current layer; the FP engine reads its weights
        for l in range(self.n_layers):
            with m.If(layer == l):
                m.d.comb += [spike_rd[l].en.eq(scan.rd_en), spike_rd[l].addr.eq(scan.rd_addr),
                             scan.rd_data.eq(spike_rd[l].data), fp.groups.eq(self.groups[l + 1]),
                             fp.neurons.eq(L[l + 1])]
                w = self.weights[l]
                with m.If(~backward):
                    m.d.comb += [w.rd_en.eq(fp.weight_en), w.rd_row.eq(0), w.rd_major.eq(fp.weight_input),
                                 w.rd_group.eq(fp.weight_group)]
                m.d.comb += fp.weight_data.eq(w.rd_data)
        # scanner events go to the FP engine going forward, to the layer's WG engine going backward
        m.d.comb += [fp.spikes_in.payload.eq(scan.events.payload)]
        with m.If(~backward):
            m.d.comb += [fp.spikes_in.valid.eq(scan.events.valid), scan.events.ready.eq(fp.spikes_in.ready)]

        # FP output: to this layer's spike/surrogate memories, the readout, the observation port
        out = fp.neuron_out
        m.d.comb += out.ready.eq(1)
        last_layer = layer == self.n_layers - 1
        with m.If(out.valid):
            for l in range(self.n_layers):
                with m.If(layer == l):
                    g = self.groups[l + 1]
                    addr = out_t * g + out.payload.group
                    m.d.comb += [spike_wr[l + 1].en.eq(1), spike_wr[l + 1].addr.eq(addr),
                                 spike_wr[l + 1].data.eq(out.payload.spikes),
                                 surr_wr[l].en.eq(1), surr_wr[l].addr.eq(addr),
                                 surr_wr[l].data.eq(out.payload.surrogate.as_value())]
        m.d.comb += [readout.neuron_in.valid.eq(out.valid & last_layer), readout.neuron_in.payload.eq(out.payload),
                     self.obs_valid.eq(out.valid), self.obs_layer.eq(layer), self.obs.eq(out.payload),
                     self.fp_busy.eq(fp.busy)]
        layer_groups = Signal(range(max(self.groups) + 1))
        for l in range(self.n_layers):
            with m.If(layer == l):
                m.d.comb += layer_groups.eq(self.groups[l + 1])
        with m.If(out.valid):
            with m.If(out_g == layer_groups - 1):
                m.d.sync += [out_g.eq(0), out_t.eq(out_t + 1)]
            with m.Else():
                m.d.sync += out_g.eq(out_g + 1)

        in_groups = Signal(range(max(self.groups) + 1))
        for l in range(self.n_layers):
            with m.If(layer == l):
                m.d.comb += in_groups.eq(self.groups[l])
        m.d.comb += [scan.base.eq(t * in_groups), scan.words.eq(in_groups), scan.fresh.eq(t == 0)]

        training = Signal()
        label = Signal.like(self.label)
        m.d.comb += readout.label.eq(label)
        bwd = self._backward(m, readout, scan, spike_mems, surr_mems, layer, backward, t)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.done.eq(1)
                with m.If(self.update):
                    m.d.sync += layer.eq(0)
                    m.next = "UPDATE"
                with m.Elif(self.start):
                    m.d.comb += [enc.start.eq(1), readout.clear.eq(1)]
                    m.d.sync += [training.eq(self.train), label.eq(self.label)]
                    m.next = "ENCODE"
            with m.State("ENCODE"):
                with m.If(enc.done):
                    m.d.sync += [layer.eq(0), t.eq(0), out_t.eq(0), out_g.eq(0)]
                    m.next = "SCAN"
            with m.State("SCAN"):
                with m.If(t == T):
                    # every timestep scanned: wait for the FP engine to finish the layer
                    with m.If(out_t == T):
                        with m.If(last_layer):
                            m.d.comb += readout.decide.eq(1)
                            m.next = "DECIDE"
                        with m.Else():
                            m.d.sync += [layer.eq(layer + 1), t.eq(0), out_t.eq(0), out_g.eq(0)]
                with m.Elif(scan.done):
                    m.d.comb += scan.start.eq(1)
                    m.d.sync += t.eq(t + 1)
            with m.State("DECIDE"):
                with m.If(readout.decided):
                    m.d.sync += self.prediction.eq(readout.prediction)
                    with m.If(training):
                        m.d.sync += [backward.eq(1), layer.eq(self.n_layers - 1), t.eq(T - 1)]
                        m.next = "BP_START"
                    with m.Else():
                        m.next = "IDLE"
            with m.State("BP_START"):
                m.d.comb += [bwd["bp"].start.eq(1), bwd["bp"].first.eq(t == T - 1),
                             bwd["bp"].propagate.eq(layer != 0), bwd["feed_start"].eq(1)]
                m.next = "BP_WAIT"
            with m.State("BP_WAIT"):
                with m.If(bwd["bp"].done & bwd["feed_idle"]):
                    m.d.comb += scan.start.eq(1)
                    m.next = "WG_WAIT"
            with m.State("WG_WAIT"):
                with m.If(scan.done & ~bwd["wg_busy"]):
                    with m.If(t == 0):
                        with m.If(layer == 0):
                            m.d.sync += backward.eq(0)
                            m.next = "IDLE"
                        with m.Else():
                            m.d.sync += [layer.eq(layer - 1), t.eq(T - 1)]
                            m.next = "BP_START"
                    with m.Else():
                        m.d.sync += t.eq(t - 1)
                        m.next = "BP_START"
            with m.State("UPDATE"):
                m.d.comb += [bwd["update_start"].eq(1), bwd["updating"].eq(1)]
                m.next = "UPDATE_WAIT"
            with m.State("UPDATE_WAIT"):
                m.d.comb += bwd["updating"].eq(1)
                with m.If(~bwd["wg_busy"]):
                    m.d.comb += bwd["chain"].eq(1)
                    with m.If(layer == self.n_layers - 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
                        m.next = "UPDATE"
        return m

    def _backward(self, m, readout, scan, spike_mems, surr_mems, layer, backward, t):
        """BP engine, feeder, error memories, delta buffer and one WG engine per layer."""
        cfg, p = self.cfg, self.p
        P, T, L, n = p.lanes, self.T, cfg.network.layers, self.n_layers
        groups = self.groups
        m.submodules.bp = bp = BpEngine(p)
        shifts = [cfg.training.lr_shift_at(e) for e in range(cfg.training.epochs)]
        wgs = [WgEngine(p, lr_shifts=sorted(set(shifts)), fan_ins=[L[l]],
                        lfsr_init_seed=update_seed(cfg) if l == 0 else 1) for l in range(n)]
        for l, wg in enumerate(wgs):
            m.submodules[f"wg{l}"] = wg
        lanes_e = data.ArrayLayout(signed(p.error_bits), P)
        # error into layer l (from layer l+1), every timestep: BP of layer l+1 writes, of layer l reads
        eps_mems = [Memory(shape=lanes_e, depth=T * groups[l + 1], init=[]) for l in range(n - 1)]
        for l, mem in enumerate(eps_mems):
            m.submodules[f"errors{l}"] = mem
        eps_wr = [mem.write_port() for mem in eps_mems]
        eps_rd = [mem.read_port() for mem in eps_mems]
        m.submodules.delta_buf = delta_buf = Memory(shape=lanes_e, depth=max(groups[1:]), init=[])
        d_wr, d_rd = delta_buf.write_port(), delta_buf.read_port()
        surr_rd = [mem.read_port() for mem in surr_mems]
        spk_rd = [mem.read_port() for mem in spike_mems[1:]]  # output spikes of layer l, for BP

        # ---- feeder: (ε, g, s) of layer `layer` at timestep t, one group per cycle ----
        feed_start = Signal()
        active = Signal()
        fe_g = Signal(range(max(groups) + 1))
        fe_valid = Signal()
        err_q = Signal(lanes_e)
        G = Signal(range(max(groups) + 1))
        for l in range(n):
            with m.If(layer == l):
                m.d.comb += [G.eq(groups[l + 1]), bp.groups.eq(groups[l + 1]), bp.in_groups.eq(groups[l]),
                             bp.neurons.eq(L[l + 1])]
        ein = bp.error_in
        adv = Signal()
        m.d.comb += adv.eq(active & (~fe_valid | ein.ready))
        addr = Signal(range(T * max(groups) + 1))
        m.d.comb += [addr.eq(t * G + fe_g), readout.err_group.eq(fe_g), ein.valid.eq(fe_valid)]
        for l in range(n):
            with m.If(layer == l):
                m.d.comb += [surr_rd[l].en.eq(adv), surr_rd[l].addr.eq(addr), spk_rd[l].en.eq(adv),
                             spk_rd[l].addr.eq(addr), ein.payload.surrogate.eq(surr_rd[l].data),
                             ein.payload.spikes.eq(spk_rd[l].data)]
                if l < n - 1:
                    m.d.comb += [eps_rd[l].en.eq(adv), eps_rd[l].addr.eq(addr), ein.payload.error.eq(eps_rd[l].data)]
                else:
                    m.d.comb += ein.payload.error.eq(err_q)
        with m.If(feed_start):
            m.d.sync += [active.eq(1), fe_g.eq(0), fe_valid.eq(0)]
        with m.Elif(adv):
            m.d.sync += [fe_valid.eq(fe_g < G), err_q.eq(readout.err_data)]
            with m.If(fe_g < G):
                m.d.sync += fe_g.eq(fe_g + 1)
            with m.Else():
                m.d.sync += active.eq(0)

        # ---- BP outputs: δ to the buffer (and observers), ε' to the previous layer's memory ----
        m.d.comb += [bp.delta_out.ready.eq(1), bp.error_out.ready.eq(1)]
        m.d.comb += [d_wr.en.eq(bp.delta_out.valid), d_wr.addr.eq(bp.delta_out.payload.group),
                     d_wr.data.eq(bp.delta_out.payload.delta)]
        m.d.comb += [self.bp_obs_valid.eq(bp.delta_out.valid), self.bp_obs_layer.eq(layer),
                     self.bp_obs.eq(bp.delta_out.payload)]
        for l in range(1, n):
            with m.If(layer == l):
                m.d.comb += [eps_wr[l - 1].en.eq(bp.error_out.valid),
                             eps_wr[l - 1].addr.eq(t * groups[l] + bp.error_out.payload.group),
                             eps_wr[l - 1].data.eq(bp.error_out.payload.delta)]

        # ---- weights: BP reads rows while going backward, the WG engine updates its layer ----
        update_start = Signal()
        updating = Signal()
        chain = Signal()
        wg_busy = Signal()
        for l, (wg, w) in enumerate(zip(wgs, self.weights)):
            here = layer == l
            m.d.comb += [wg.rows.eq(L[l + 1]), wg.cols.eq(L[l]), wg.lr_shift.eq(self.lr_shift),
                         wg.spikes_in.payload.eq(scan.events.payload), wg.delta_data.eq(d_rd.data)]
            with m.If(here):
                m.d.comb += wg_busy.eq(wg.busy | wg.spikes_in.valid)
                with m.If(backward):
                    m.d.comb += [wg.spikes_in.valid.eq(scan.events.valid), scan.events.ready.eq(wg.spikes_in.ready),
                                 d_rd.en.eq(wg.delta_en), d_rd.addr.eq(wg.delta_group),
                                 w.rd_en.eq(bp.w_rd_en), w.rd_row.eq(1), w.rd_major.eq(bp.w_rd_major),
                                 w.rd_group.eq(bp.w_rd_group), bp.w_rd_data.eq(w.rd_data)]
                with m.If(updating):
                    m.d.comb += [wg.update.eq(update_start),
                                 w.rd_en.eq(wg.w_rd_en), w.rd_row.eq(wg.w_rd_row), w.rd_major.eq(wg.w_rd_major),
                                 w.rd_group.eq(wg.w_rd_group), wg.w_rd_data.eq(w.rd_data),
                                 w.wr_en.eq(wg.w_wr_en), w.wr_row.eq(wg.w_wr_row), w.wr_major.eq(wg.w_wr_major),
                                 w.wr_group.eq(wg.w_wr_group), w.wr_data.eq(wg.w_wr_data), w.wr_mask.eq(wg.w_wr_mask)]
                # the next layer's (after the last: layer 0's) update continues this LFSR stream
                nxt = wgs[(l + 1) % n]
                if n > 1:
                    with m.If(chain):
                        m.d.comb += [nxt.lfsr_load.eq(1), nxt.lfsr_seed.eq(wg.lfsr_state)]
        return {"bp": bp, "feed_start": feed_start, "feed_idle": ~active & ~fe_valid, "wg_busy": wg_busy,
                "update_start": update_start, "updating": updating, "chain": chain, "wgs": wgs}
